#!/usr/bin/env python3
"""Writes the reference fixtures of the encoder-decoder (BERT2BERT) parity and generation tests.

Every number and token the tests assert comes from `transformers`' `EncoderDecoderModel` (a `BertModel`
encoder and a `BertLMHeadModel` decoder with cross-attention) through this script, so the tests need no
Python. Run it from the repository root, in the environment `scripts/make_fixtures.py` names:

    python scripts/make_generation_fixtures.py

It writes, under crates/bert/tests/fixtures/:
  tiny-seq2seq/         a random encoder-decoder (separate encoder and decoder weights), as
                        `EncoderDecoderModel.save_pretrained` writes it, with a tokenizer
  tiny-seq2seq-shared/  the same with `tie_encoder_decoder` (the decoder's BERT is the encoder: BERTShare)
  */reference.json      a padded batch of sources and targets, the logits and the loss of teacher forcing
                        (and with label smoothing 0.1, as `Seq2SeqTrainer` computes it), and the token ids
                        `generate()` gives for greedy and beam-search settings
  tiny-seq2seq/grads.safetensors  every parameter's gradient of the teacher-forcing loss (dropout off)
"""
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file
from transformers.trainer_pt_utils import LabelSmoother
from transformers import BertConfig, BertLMHeadModel, BertModel, EncoderDecoderConfig, EncoderDecoderModel

from make_fixtures import OUT, dump, init_randomly, tiny_vocab, write_tokenizer

SOURCES = [
    "The capital of France is Paris.",
    "a good movie",
    "Who wrote this story? The people of the north country wrote it.",
    "the sea at night",
]
TARGETS = [
    "paris is the capital",
    "the movie was good, not bad",
    "people",
    "a dark sea",
]
# The model is trained a little on the first pairs, so that it ends some replies ([SEP]) and not others.
TRAIN_PAIRS = 3
TRAIN_STEPS = 30

# Each case is generate()'s keyword arguments; the tests run the same settings.
CASES = [
    dict(max_new_tokens=12),
    dict(max_new_tokens=12, min_new_tokens=6),
    dict(max_new_tokens=10, no_repeat_ngram_size=2),
    dict(max_new_tokens=12, num_beams=4),
    dict(max_new_tokens=12, num_beams=3, length_penalty=2.0),
    dict(max_new_tokens=12, num_beams=3, length_penalty=-1.0, early_stopping=True),
    dict(max_new_tokens=12, num_beams=4, early_stopping="never", no_repeat_ngram_size=3),
    dict(max_new_tokens=9, num_beams=2, min_new_tokens=5, num_return_sequences=2),
]


def configs(vocab, tie, layers):
    common = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=0,
        hidden_act="gelu",
    )
    encoder = BertConfig(num_hidden_layers=2, **common)
    decoder = BertConfig(num_hidden_layers=layers, is_decoder=True, add_cross_attention=True, **common)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.tie_encoder_decoder = tie
    return config


def build(vocab, tie, seed, layers):
    config = configs(vocab, tie, layers)
    torch.manual_seed(seed)
    model = EncoderDecoderModel(
        config=config,
        encoder=BertModel(config.encoder, add_pooling_layer=False),
        decoder=BertLMHeadModel(config.decoder),
    )
    init_randomly(model, seed)
    if tie:
        share_encoder(model)
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    for target in (model.config, model.generation_config):
        target.decoder_start_token_id = cls
        target.pad_token_id = 0
        target.eos_token_id = sep
    return model


def share_encoder(model):
    """Makes the decoder's BERT use the encoder's embeddings and blocks (cross-attention stays its own), as
    `tie_encoder_decoder` did in transformers 4 (transformers 5 reads the key but no longer ties)."""
    decoder = model.decoder.bert
    decoder.embeddings = model.encoder.embeddings
    for mine, theirs in zip(decoder.encoder.layer, model.encoder.encoder.layer):
        mine.attention, mine.intermediate, mine.output = theirs.attention, theirs.intermediate, theirs.output
    model.decoder.cls.predictions.decoder.weight = model.encoder.embeddings.word_embeddings.weight


def untied_copy(model, vocab):
    """The same weights in a model whose tensors are not shared, as save_pretrained writes it."""
    copy = build(vocab, tie=False, seed=0, layers=len(model.decoder.bert.encoder.layer))
    copy.config.tie_encoder_decoder = model.config.tie_encoder_decoder
    copy.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})
    return copy


def train_a_little(model, tok):
    """A few steps of Adam on the first pairs (dropout off), so that generation meets [SEP]."""
    enc = tok(SOURCES[:TRAIN_PAIRS], padding=True, return_tensors="pt")
    labels = target_labels(tok, TARGETS[:TRAIN_PAIRS])
    model.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad()
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss.backward()
        optimizer.step()
    return model


def target_labels(tok, targets):
    """Target ids without the leading [CLS] (the decoder's start token), padding as -100."""
    labels = tok(targets, padding=True, return_tensors="pt")["input_ids"][:, 1:]
    return labels.masked_fill(labels == 0, -100)


def teacher_forcing(model, tok, grads_file=None):
    enc = tok(SOURCES, padding=True, return_tensors="pt")
    labels = target_labels(tok, TARGETS)
    model.zero_grad()
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
    out.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    grads["loss"] = out.loss.detach().reshape(1)
    if grads_file:
        save_file(grads, grads_file)
    smoothed = LabelSmoother(epsilon=0.1)({"logits": out.logits.detach()}, labels, shift_labels=False)
    return {
        "loss_label_smoothing_0.1": float(smoothed),
        "input_ids": enc["input_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "labels": labels.tolist(),
        "logits": dump(out.logits.detach()),
        "loss": float(out.loss),
    }


def generations(model, tok):
    enc = tok(SOURCES, padding=True, return_tensors="pt")
    cases = []
    for case in CASES:
        with torch.no_grad():
            out = model.generate(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], do_sample=False, **case
            )
        cases.append({"settings": case, "sequences": out.tolist()})
    return cases


def write(name, model, tok, grads=False):
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    model.eval()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    reference = {"sources": SOURCES, "targets": TARGETS, "teacher_forcing": teacher_forcing(
        model, tok, os.path.join(directory, "grads.safetensors") if grads else None)}
    reference["generate"] = generations(model, tok)
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(reference, f)
    print("wrote", directory)


def main():
    vocab = tiny_vocab()
    with tempfile.TemporaryDirectory() as scratch:
        tok = write_tokenizer(scratch, vocab, lowercase=True)
    write("tiny-seq2seq", train_a_little(build(vocab, tie=False, seed=11, layers=3), tok), tok, grads=True)
    shared = train_a_little(build(vocab, tie=True, seed=12, layers=2), tok)
    write("tiny-seq2seq-shared", untied_copy(shared, vocab), tok)


if __name__ == "__main__":
    main()
