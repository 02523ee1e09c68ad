#!/usr/bin/env python3
"""Writes the reference fixtures that the Rust parity tests compare against.

Every number the tests assert comes from Hugging Face `transformers` (and `sentence-transformers`) through
this script, so the tests themselves need no Python. Run it from the repository root:

    python3 -m venv .venv && . .venv/bin/activate
    pip install torch transformers safetensors sentence-transformers
    python scripts/make_fixtures.py [--minilm $BERT_TEST_MODELS/all-MiniLM-L6-v2 | --skip-minilm]
    python scripts/make_fixtures.py --only-intent-slots   # only tiny-intent-slots/ and its gradients
    python scripts/make_fixtures.py --only-serving        # only serving.json

It writes, under crates/bert/tests/fixtures/:
  tiny-*/            tiny random checkpoints of every head (config.json, weights, tokenizer files)
  tiny-*/reference.json  inputs, token ids and the model's outputs for a padded batch of texts
  tokenizer/         cased/uncased vocab-only tokenizers and HF fast-tokenizer ids for them
  serving.json       what the server's extra routes must answer: attention probabilities
                     (output_attentions), every token's state (embed_all) and SPLADE vectors
  minilm/            HF fast-tokenizer ids for a varied set of lines, and sentence-transformers embeddings
"""
import argparse
import json
import os
import random
import shutil

import torch
from safetensors.torch import save_file
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForNextSentencePrediction,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "bert", "tests", "fixtures")

WORDS = (
    "the a an of to and in is it that was for on are with as his they be at one have this from or had by "
    "hot word but what some we can out other were all there when up use your how said each she which do "
    "their time if will way about many then them write would like so these her long make thing see him two "
    "has look more day could go come did number sound no most people my over know water than call first who "
    "may down side been now find head stand own page should country found answer school grow study still "
    "learn plant cover food sun four between state keep eye never last let thought city tree cross farm hard "
    "start might story saw far sea draw left late run don't while press close night real life few north "
    "paris france capital bert model token mask sentence question answer good bad great terrible movie "
    "café naïve résumé"
).split()
PIECES = ["##s", "##ed", "##ing", "##er", "##ly", "##e", "##a", "##o", "##i", "##n", "##t", "##r", "##l"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-()") + ["中", "文", "日", "本", "é", "ï"]


def tiny_vocab():
    vocab, seen = [], set()
    for tok in SPECIAL + CHARS + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"] + PIECES + WORDS:
        if tok not in seen:
            seen.add(tok)
            vocab.append(tok)
    return vocab


TEXTS = [
    "The capital of France is Paris.",
    "a good movie",
    "Naïve café owners write their résumé while the sun is hot.",
]
PAIRS = [
    ("Who wrote this story?", "The people of the north country wrote it."),
    ("is it good", "no, it was terrible"),
    ("where", "paris"),
]
MASKED = ["the capital of france is [MASK].", "a [MASK] movie", "[MASK] people [MASK] the sea."]


def write_tokenizer(directory, vocab, lowercase=True):
    os.makedirs(directory, exist_ok=True)
    vocab_file = os.path.join(directory, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file, do_lower_case=lowercase, model_max_length=64)
    tok.save_pretrained(directory)
    return tok


def tensor_list(t):
    return [round(float(x), 7) for x in t.detach().reshape(-1).tolist()]


def dump(t):
    return {"shape": list(t.shape), "data": tensor_list(t)}


def make_config(vocab, **extra):
    base = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=0,
    )
    base.update(extra)
    return BertConfig(**base)


def init_randomly(model, seed):
    """Random weights far from init (LayerNorm and biases included) so every tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    if hasattr(model, "tie_weights"):  # a `transformers` model; the joint intent-slot model is a plain module
        model.tie_weights()


def run_reference(name, model, tok, pairs, labels_fn, save_kwargs, extra_files=None):
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    model.eval()
    pytorch_bin = save_kwargs.pop("pytorch_bin", False)
    model.save_pretrained(directory, **save_kwargs)
    if pytorch_bin:  # transformers 5 writes only safetensors; older checkpoints ship a zip-format torch file
        os.remove(os.path.join(directory, "model.safetensors"))
        torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    tok.save_pretrained(directory)
    first = [p[0] for p in pairs]
    second = [p[1] for p in pairs] if len(pairs[0]) == 2 else None
    texts = first if second is None else None
    enc = tok(first, second, padding=True, return_tensors="pt") if second else tok(first, padding=True, return_tensors="pt")
    with torch.no_grad():
        labels = labels_fn(enc)
        out = model(**enc, **labels, output_hidden_states=True)
    ref = {
        "texts": texts if texts is not None else [list(p) for p in pairs],
        "input_ids": enc["input_ids"].tolist(),
        "token_type_ids": enc["token_type_ids"].tolist(),
        "attention_mask": enc["attention_mask"].tolist(),
        "outputs": {},
        "labels": {k: v.tolist() for k, v in labels.items()},
    }
    if hasattr(out, "last_hidden_state"):
        ref["outputs"]["last_hidden_state"] = dump(out.last_hidden_state)
        ref["outputs"]["pooler_output"] = dump(out.pooler_output)
    else:
        ref["outputs"]["last_hidden_state"] = dump(out.hidden_states[-1])
    for key in ["logits", "prediction_logits", "seq_relationship_logits", "start_logits", "end_logits", "loss"]:
        value = getattr(out, key, None)
        if value is not None:
            ref["outputs"][key] = dump(value.reshape(1) if value.dim() == 0 else value)
    if extra_files:
        extra_files(directory)
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(ref, f)
    print("wrote", directory)


def tiny_models(vocab):
    tok_dir = os.path.join(OUT, "tokenizer", "uncased")
    tok = write_tokenizer(tok_dir, vocab, lowercase=True)
    single = [(t,) for t in TEXTS]

    def no_labels(enc):
        return {}

    torch.manual_seed(0)
    m = BertModel(make_config(vocab, hidden_act="gelu", architectures=["BertModel"]))
    init_randomly(m, 1)
    run_reference("tiny-base", m, tok, single, no_labels, {})

    # Same weights, legacy names: no `bert.` prefix is BertModel's own layout; rename LayerNorm to gamma/beta.
    legacy_dir = os.path.join(OUT, "tiny-legacy")
    shutil.rmtree(legacy_dir, ignore_errors=True)
    shutil.copytree(os.path.join(OUT, "tiny-base"), legacy_dir)
    os.remove(os.path.join(legacy_dir, "model.safetensors"))
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v.contiguous()
          for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(legacy_dir, "model.safetensors"), metadata={"format": "pt"})
    print("wrote", legacy_dir)

    def mlm_labels(enc):
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        labels[:, 0] = -100
        return {"labels": labels}

    masked = [(t,) for t in MASKED]
    m = BertForMaskedLM(make_config(vocab, hidden_act="gelu_new", layer_norm_eps=1e-7, architectures=["BertForMaskedLM"]))
    init_randomly(m, 2)
    run_reference("tiny-mlm", m, tok, masked, mlm_labels, {})

    def nsp_labels(enc):
        return {"labels": torch.tensor([0, 1, 0])}

    m = BertForNextSentencePrediction(make_config(vocab, hidden_act="relu", architectures=["BertForNextSentencePrediction"]))
    init_randomly(m, 3)
    # pytorch_model.bin (zip format), as older checkpoints ship.
    run_reference("tiny-nsp", m, tok, PAIRS, nsp_labels, {"pytorch_bin": True})

    def pretraining_labels(enc):
        labels = mlm_labels(enc)["labels"]
        return {"labels": labels, "next_sentence_label": torch.tensor([1, 0, 1])}

    m = BertForPreTraining(make_config(vocab, hidden_act="gelu_pytorch_tanh", architectures=["BertForPreTraining"]))
    init_randomly(m, 4)
    # Sharded safetensors with an index file.
    run_reference("tiny-pretraining", m, tok, PAIRS, pretraining_labels, {"max_shard_size": "40KB"})

    id2label = {0: "negative", 1: "neutral", 2: "positive"}
    m = BertForSequenceClassification(make_config(
        vocab, num_labels=3, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        problem_type="single_label_classification", classifier_dropout=0.2,
        architectures=["BertForSequenceClassification"]))
    init_randomly(m, 5)
    run_reference("tiny-classify", m, tok, single, lambda e: {"labels": torch.tensor([2, 0, 1])}, {})

    id2label = {0: "sports", 1: "politics", 2: "science", 3: "art"}
    m = BertForSequenceClassification(make_config(
        vocab, num_labels=4, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        problem_type="multi_label_classification", architectures=["BertForSequenceClassification"]))
    init_randomly(m, 6)
    run_reference("tiny-multilabel", m, tok, single,
                  lambda e: {"labels": torch.tensor([[1.0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]])}, {})

    m = BertForSequenceClassification(make_config(
        vocab, num_labels=1, problem_type="regression", architectures=["BertForSequenceClassification"]))
    init_randomly(m, 7)
    run_reference("tiny-regression", m, tok, PAIRS, lambda e: {"labels": torch.tensor([0.5, -1.0, 2.0])}, {})

    id2label = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    m = BertForTokenClassification(make_config(
        vocab, num_labels=5, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        architectures=["BertForTokenClassification"]))
    init_randomly(m, 8)

    def token_labels(enc):
        g = torch.Generator().manual_seed(9)
        labels = torch.randint(0, 5, enc["input_ids"].shape, generator=g)
        labels[enc["attention_mask"] == 0] = -100
        return {"labels": labels}

    run_reference("tiny-ner", m, tok, single, token_labels, {})

    m = BertForQuestionAnswering(make_config(vocab, architectures=["BertForQuestionAnswering"]))
    init_randomly(m, 10)
    run_reference("tiny-qa", m, tok, PAIRS,
                  lambda e: {"start_positions": torch.tensor([9, 7, 4]), "end_positions": torch.tensor([11, 9, 4])}, {})


TOKENIZER_LINES = [
    "Hello, world!", "  leading and trailing spaces  ", "UPPER lower MiXeD", "Café naïve résumé Ångström",
    "中文日本語한국어", "emoji 😀👍🏽 and flags 🇫🇷", "tabs\tand\u000bvertical\u000cfeeds", "control\u0001chars\u0007here",
    "zero\u200bwidth\u200djoiners", "x" * 150, "supercalifragilisticexpialidocious" * 3, "", " ", ".", "a",
    "don't won't can't", "e-mail: someone@example.com, url https://example.org/a?b=c", "1,234.56 $ € ¥ 100%",
    "ÀÉÎÕÜ àéîõü ß ø æ œ", "Ελληνικά Русский עברית العربية हिन्दी", "\u0301combining first", "ｆｕｌｌｗｉｄｔｈ",
    "[MASK] is [CLS] not [SEP] special", "line with\u00a0nbsp", "\ufeffbyte order mark", "(parens) {braces} <angles>",
]


def varied_lines(n, seed=1234):
    """A reproducible, varied set of lines: plain English, accents, CJK, emoji, control characters,
    long words and near-empty lines."""
    rng = random.Random(seed)
    words = WORDS + ["internationalization", "Transformers", "BERT's", "pre-training", "self-attention", "São",
                     "Zürich", "Kraków", "naïveté", "façade", "東京", "北京大学", "ありがとう", "🤗", "🚀", "—", "…",
                     "«quotes»", "“curly”", "l'été", "12:30", "3.14159", "#hashtag", "@user", "C++", "x86_64"]
    ranges = [(0x20, 0x7e), (0xc0, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff), (0x4e00, 0x4fff), (0x3040, 0x30ff),
              (0xac00, 0xac80), (0x1f600, 0x1f64f), (0x0, 0x1f), (0x2000, 0x206f), (0x300, 0x36f)]
    lines = list(TOKENIZER_LINES)
    while len(lines) < n:
        kind = rng.random()
        if kind < 0.5:
            line = " ".join(rng.choice(words) for _ in range(rng.randint(1, 25)))
            if rng.random() < 0.5:
                line = line.capitalize() + rng.choice([".", "?", "!", ""])
        elif kind < 0.8:
            chars = []
            for _ in range(rng.randint(1, 40)):
                lo, hi = rng.choice(ranges)
                chars.append(chr(rng.randint(lo, hi)))
            line = "".join(chars)
        elif kind < 0.9:
            line = rng.choice(words) * rng.randint(5, 40)
        else:
            line = rng.choice(["", " ", "\t", "a", ".", "  x  ", "\u3000", "🤗"])
        lines.append(line)
    return lines


def tokenizer_fixtures(vocab):
    directory = os.path.join(OUT, "tokenizer")
    cased_dir = os.path.join(directory, "cased")
    write_tokenizer(cased_dir, vocab, lowercase=False)
    lines = varied_lines(120, seed=7)
    cases = []
    for sub in ["uncased", "cased"]:
        tok = BertTokenizerFast.from_pretrained(os.path.join(directory, sub))
        for text in lines:
            enc = tok(text, return_offsets_mapping=True)
            cases.append({"tokenizer": sub, "text": text, "ids": enc["input_ids"], "type_ids": enc["token_type_ids"],
                          "offsets": enc["offset_mapping"]})
        for a, b in PAIRS:
            for strategy in ["longest_first", "only_first", "only_second"]:
                case = {"tokenizer": sub, "text": a, "pair": b, "truncation": strategy, "max_length": 12}
                try:
                    enc = tok(a, b, truncation=strategy, max_length=12, return_offsets_mapping=True)
                    case.update(ids=enc["input_ids"], type_ids=enc["token_type_ids"], offsets=enc["offset_mapping"])
                except Exception:  # the sequence to truncate is too short: an error in both implementations
                    case["error"] = True
                cases.append(case)
    # Vocabulary-only directories: the tokenizer.json must not be there, to test building from vocab.txt.
    for sub in ["uncased", "cased"]:
        for f in ["tokenizer.json"]:
            path = os.path.join(directory, sub, f)
            if os.path.exists(path):
                os.remove(path)
    with open(os.path.join(directory, "cases.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False)
    print("wrote", directory)


def minilm_fixtures(path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    directory = os.path.join(OUT, "minilm")
    os.makedirs(directory, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(path)
    lines = varied_lines(600, seed=2026)
    with open(os.path.join(directory, "token_ids.jsonl"), "w") as f:
        for text in lines:
            enc = tok(text, truncation=True, max_length=512, return_offsets_mapping=True)
            f.write(json.dumps({"text": text, "ids": enc["input_ids"], "offsets": enc["offset_mapping"]},
                               ensure_ascii=False) + "\n")
    model = SentenceTransformer(path, device="cpu")
    rng = random.Random(99)
    embed_texts = [
        "A man is eating food.", "A man is riding a horse.", "The new movie is awesome",
        "Rust is a systems programming language.", "Le chat dort sur le canapé.", "東京は日本の首都です。",
        "How do I reset my password?", "book a flight to Berlin tomorrow morning",
        "word " * 300,  # longer than max_seq_length: truncated to 256 tokens
    ] + [line.replace("\n", " ").replace("\r", " ") for line in rng.sample(lines, 23)]  # one text per line for the CLI
    emb = model.encode(embed_texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    with open(os.path.join(directory, "embeddings.jsonl"), "w") as f:
        for text, e in zip(embed_texts, emb):
            f.write(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in e]}, ensure_ascii=False) + "\n")
    print("wrote", directory, "max_seq_length", model.max_seq_length)


def training_fixtures():
    """One training step's loss and every gradient of the tiny BertForPreTraining (dropout off), and the
    losses of ten AdamW steps with warm-up, linear decay and clipping: what the Rust trainer must match."""
    from safetensors.torch import save_file as save_tensors
    from transformers import get_linear_schedule_with_warmup

    src = os.path.join(OUT, "tiny-pretraining")
    directory = os.path.join(OUT, "training")
    os.makedirs(directory, exist_ok=True)
    model = BertForPreTraining.from_pretrained(src, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.train()
    tok = BertTokenizerFast.from_pretrained(src)
    enc = tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    g = torch.Generator().manual_seed(11)
    labels = torch.full_like(enc["input_ids"], -100)
    mask_id = tok.convert_tokens_to_ids("[MASK]")
    input_ids = enc["input_ids"].clone()
    special = (input_ids == tok.cls_token_id) | (input_ids == tok.sep_token_id) | (enc["attention_mask"] == 0)
    chosen = (torch.rand(input_ids.shape, generator=g) < 0.3) & ~special
    labels[chosen] = input_ids[chosen]
    input_ids[chosen] = mask_id
    nsp = torch.tensor([0, 1, 1])
    batch = dict(input_ids=input_ids, token_type_ids=enc["token_type_ids"], attention_mask=enc["attention_mask"])

    out = model(**batch, labels=labels, next_sentence_label=nsp)
    out.loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if name.endswith("decoder.bias"):
            name = name.replace("decoder.bias", "bias")
        grads[name] = p.grad.detach().clone().contiguous()
    save_tensors(grads, os.path.join(directory, "grads.safetensors"))

    model.zero_grad()
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=3, num_training_steps=10)
    losses, lrs = [], []
    for _ in range(10):
        out = model(**batch, labels=labels, next_sentence_label=nsp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lrs.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(out.loss.item())
    reference = {
        "input_ids": batch["input_ids"].tolist(),
        "token_type_ids": batch["token_type_ids"].tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "labels": labels.tolist(),
        "next_sentence_label": nsp.tolist(),
        "losses": losses,
        "lrs": lrs,
        "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-6, "weight_decay": 0.01,
                      "warmup_steps": 3, "total_steps": 10, "max_grad_norm": 1.0},
    }
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(reference, f)
    print("wrote", directory)


HEAD_MODELS = {
    "tiny-classify": "BertForSequenceClassification",
    "tiny-multilabel": "BertForSequenceClassification",
    "tiny-regression": "BertForSequenceClassification",
    "tiny-ner": "BertForTokenClassification",
    "tiny-qa": "BertForQuestionAnswering",
}


def head_gradient_fixtures():
    """Every parameter's gradient of one step of each fine-tuning head (dropout off), on the batch and
    labels of its reference.json: what the Rust heads and losses must match."""
    import transformers
    from safetensors.torch import save_file as save_tensors

    directory = os.path.join(OUT, "training")
    os.makedirs(directory, exist_ok=True)
    for name, architecture in HEAD_MODELS.items():
        src = os.path.join(OUT, name)
        with open(os.path.join(src, "reference.json")) as f:
            ref = json.load(f)
        cls = getattr(transformers, architecture)
        model = cls.from_pretrained(src, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                    classifier_dropout=0.0)
        model.train()
        batch = {k: torch.tensor(ref[k]) for k in ["input_ids", "token_type_ids", "attention_mask"]}
        labels = {k: torch.tensor(v) for k, v in ref["labels"].items()}
        out = model(**batch, **labels)
        out.loss.backward()
        grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
        grads["loss"] = out.loss.detach().reshape(1)
        save_tensors(grads, os.path.join(directory, f"{name}-grads.safetensors"))
        print("wrote gradients of", name)


# Utterances of the joint intent and slot fixture: (words, one slot tag a word, intent). Several words
# split into sub-tokens (farm ##er, look ##ed, stand ##s, sea .), so slot labels sit on first ones.
INTENT_SLOT_UTTERANCES = [
    (["show", "trees", "in", "paris", "france"], ["O", "B-thing", "O", "B-city", "B-country"], "find"),
    (["the", "farmer", "looked", "at", "the", "north", "sea."],
     ["O", "B-person", "O", "O", "O", "B-place", "I-place"], "describe"),
    (["who", "stands", "in", "new", "york", "city"], ["O", "O", "O", "B-city", "I-city", "I-city"], "ask"),
]
SLOT_LOSS_COEF = 0.5  # not 1, so that the weighting is tested


class JointIntentSlots(torch.nn.Module):
    """The Rust crate's `BertForIntentAndSlots` (Chen et al. 2019), which `transformers` lacks: `BertModel`
    with its pooler, dropout, `intent_classifier` on the pooled output and `slot_classifier` on every
    token's state. Parameter names are the Rust ones (`bert.*`, `intent_classifier.*`, `slot_classifier.*`)."""

    def __init__(self, config, intents, tags):
        super().__init__()
        self.bert = BertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = torch.nn.Dropout(dropout)
        self.intent_classifier = torch.nn.Linear(config.hidden_size, intents)
        self.slot_classifier = torch.nn.Linear(config.hidden_size, tags)

    def forward(self, input_ids, token_type_ids, attention_mask):
        out = self.bert(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return (self.intent_classifier(self.dropout(out.pooler_output)),
                self.slot_classifier(self.dropout(out.last_hidden_state)))


def intent_slots_fixtures(vocab):
    """tiny-intent-slots/: a tiny random joint intent and slot checkpoint (config.json with both label maps,
    sorted as the Rust task sorts them) and reference.json (its utterances, tokenized as words with each
    word's tag on its first sub-token); training/tiny-intent-slots-grads.safetensors: every parameter's
    gradient of one step (dropout off) of intent cross-entropy (mean over utterances) plus SLOT_LOSS_COEF
    times slot cross-entropy (mean over labelled tokens), and the loss."""
    from safetensors.torch import load_file

    name = "tiny-intent-slots"
    directory = os.path.join(OUT, name)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    tok = BertTokenizerFast.from_pretrained(os.path.join(OUT, "tiny-base"))
    tok.save_pretrained(directory)
    intents = sorted({intent for _, _, intent in INTENT_SLOT_UTTERANCES})
    tags = sorted({tag for _, word_tags, _ in INTENT_SLOT_UTTERANCES for tag in word_tags})
    config = make_config(vocab, architectures=["BertForIntentAndSlots"])
    model = JointIntentSlots(config, len(intents), len(tags))
    init_randomly(model, 12)
    weights = os.path.join(directory, "model.safetensors")
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, weights, metadata={"format": "pt"})
    config.save_pretrained(directory)
    config_path = os.path.join(directory, "config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["intent_id2label"] = {str(i): label for i, label in enumerate(intents)}
    saved["slot_id2label"] = {str(i): label for i, label in enumerate(tags)}
    with open(config_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)

    enc = tok([words for words, _, _ in INTENT_SLOT_UTTERANCES], is_split_into_words=True, padding=True,
              return_tensors="pt")
    slot_labels = torch.full_like(enc["input_ids"], -100)
    for row, (_, word_tags, _) in enumerate(INTENT_SLOT_UTTERANCES):
        previous = None
        for position, word in enumerate(enc.word_ids(row)):
            if word is not None and word != previous:
                slot_labels[row, position] = tags.index(word_tags[word])
            previous = word
    intent_labels = torch.tensor([intents.index(intent) for _, _, intent in INTENT_SLOT_UTTERANCES])

    # As head_gradient_fixtures: the saved weights in a model with dropout off, in training mode.
    run_config = BertConfig.from_pretrained(directory, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                            classifier_dropout=0.0)
    model = JointIntentSlots(run_config, len(intents), len(tags))
    model.load_state_dict(load_file(weights))
    model.train()
    batch = {k: enc[k] for k in ["input_ids", "token_type_ids", "attention_mask"]}
    intent_logits, slot_logits = model(**batch)
    cross_entropy = torch.nn.functional.cross_entropy  # mean over the labels that are not -100
    loss = (cross_entropy(intent_logits, intent_labels)
            + SLOT_LOSS_COEF * cross_entropy(slot_logits.reshape(-1, len(tags)), slot_labels.reshape(-1)))
    loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    grads["loss"] = loss.detach().reshape(1)
    os.makedirs(os.path.join(OUT, "training"), exist_ok=True)
    save_file(grads, os.path.join(OUT, "training", f"{name}-grads.safetensors"))

    ref = {
        "utterances": [{"words": w, "tags": t, "intent": i} for w, t, i in INTENT_SLOT_UTTERANCES],
        "slot_loss_coef": SLOT_LOSS_COEF,
        "input_ids": batch["input_ids"].tolist(),
        "token_type_ids": batch["token_type_ids"].tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "labels": {"intent_labels": intent_labels.tolist(), "slot_labels": slot_labels.tolist()},
        "outputs": {"intent_logits": dump(intent_logits), "slot_logits": dump(slot_logits),
                    "loss": dump(loss.reshape(1))},
    }
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(ref, f)
    print("wrote", directory, "and its gradients")


NER_TEXTS = [
    "The capital of France is Paris.",
    "Naïve café owners write their résumé while the sun is hot.",
    "Peter and Mary saw the sea from the north country of 中文 zzzzqqq.",
]


def pipeline_fixtures():
    """transformers' token-classification pipeline outputs for the tiny NER checkpoint, for every
    aggregation strategy: what `bert ner` must give."""
    from transformers import pipeline

    src = os.path.join(OUT, "tiny-ner")
    outputs = {}
    for strategy in ["none", "simple", "first", "average", "max"]:
        tagger = pipeline("token-classification", model=src, aggregation_strategy=strategy, device="cpu")
        results = tagger(NER_TEXTS, ignore_labels=[])
        outputs[strategy] = [[{k: (float(v) if k == "score" else int(v) if k in ("index", "start", "end") else v)
                               for k, v in e.items()} for e in r] for r in results]
    with open(os.path.join(src, "pipeline.json"), "w") as f:
        json.dump({"texts": NER_TEXTS, "outputs": outputs}, f, ensure_ascii=False, indent=1)
    print("wrote token-classification pipeline outputs")


SERVING_TEXTS = ["the sea is calm tonight", "a good movie", "hello world, again and again"]


def serving_fixtures():
    """Attention probabilities and last hidden states of tiny-base, and SPLADE vectors of tiny-mlm
    (log(1 + relu(logits)) max-pooled over each text's tokens, as text-embeddings-inference computes
    them), one text at a time (no padding)."""
    base = os.path.join(OUT, "tiny-base")
    tok = BertTokenizerFast.from_pretrained(base)
    model = BertModel.from_pretrained(base, attn_implementation="eager").eval()
    mlm = BertForMaskedLM.from_pretrained(os.path.join(OUT, "tiny-mlm")).eval()
    attentions, states, splade = [], [], []
    with torch.no_grad():
        for text in SERVING_TEXTS:
            enc = tok(text, return_tensors="pt")
            out = model(**enc, output_attentions=True)
            attentions.append([tensor_list(a[0]) for a in out.attentions])  # [layer][head][query][key]
            states.append(tensor_list(out.last_hidden_state[0]))
            logits = mlm(**enc).logits[0]  # (T, V)
            weights = torch.log1p(torch.relu(logits)).max(dim=0).values
            splade.append([[int(i), float(weights[i])] for i in torch.nonzero(weights).flatten()])
    with open(os.path.join(OUT, "serving.json"), "w") as f:
        json.dump({"texts": SERVING_TEXTS, "attentions": attentions, "last_hidden_state": states,
                   "splade": splade}, f)
    print("wrote serving.json")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default=os.path.join(os.environ.get("BERT_TEST_MODELS", ""), "all-MiniLM-L6-v2"),
                        help="all-MiniLM-L6-v2 (default: $BERT_TEST_MODELS/all-MiniLM-L6-v2)")
    parser.add_argument("--skip-minilm", action="store_true", help="leave the MiniLM fixtures as they are")
    parser.add_argument("--only-intent-slots", action="store_true",
                        help="write only the joint intent and slot fixtures (tiny-intent-slots/ and its gradients)")
    parser.add_argument("--only-serving", action="store_true", help="write only serving.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = tiny_vocab()
    if args.only_intent_slots:
        intent_slots_fixtures(vocab)
        return
    if args.only_serving:
        serving_fixtures()
        return
    tiny_models(vocab)
    tokenizer_fixtures(vocab)
    training_fixtures()
    head_gradient_fixtures()
    intent_slots_fixtures(vocab)
    pipeline_fixtures()
    serving_fixtures()
    if not args.skip_minilm:
        minilm_fixtures(args.minilm)


if __name__ == "__main__":
    main()
