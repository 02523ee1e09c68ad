#!/usr/bin/env python3
"""Checks that a checkpoint directory written by `bert finetune` loads in transformers with the same outputs:
no missing or unexpected weights, the labels of config.json, and on the given texts
- classification: `bert classify --function-to-apply none` logits equal to transformers' within 1e-4;
- NER: `bert ner --ignore-labels ''` tokens, labels and scores equal to transformers' token-classification
  pipeline within 1e-4;
- QA (TEXTS_FILE holds JSON lines {"question", "context"} with contexts that fit one window): `bert qa`
  answers equal to the best span of transformers' start/end logits (the question-answering pipeline's
  rule: softmax over context tokens, start x end, at most 15 tokens, widened to words), scores within 1e-4.

    python scripts/check_finetune_roundtrip.py OUT_DIR TEXTS_FILE [--bert target/release/bert]
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline


def load_checked(cls, path):
    """Loads a checkpoint with transformers, failing on any missing, unexpected or mismatched weight."""
    model, info = cls.from_pretrained(path, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"transformers reports {problems}")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("texts", help="a file with one text per line")
    parser.add_argument("--bert", default="target/release/bert")
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()][: args.limit]
    architecture = AutoConfig.from_pretrained(args.model).architectures[0]
    if architecture == "BertForTokenClassification":
        return check_tagger(args, texts)
    if architecture == "BertForQuestionAnswering":
        return check_answerer(args, texts)
    model = load_checked(AutoModelForSequenceClassification, args.model)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    ours = subprocess.run([args.bert, "classify", "--model", args.model, "--function-to-apply", "none"],
                          input="\n".join(texts) + "\n", capture_output=True, text=True, check=True).stdout
    worst = 0.0
    for text, line in zip(texts, ours.splitlines()):
        enc = tok(text, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            logits = model(**enc).logits[0]
        scores = json.loads(line)["scores"]
        for index, label in model.config.id2label.items():
            worst = max(worst, abs(logits[int(index)].item() - scores[label]))
    print(f"ok: transformers loads {args.model} ({model.config.architectures[0]}, labels "
          f"{list(model.config.id2label.values())}) with no missing or unexpected weights; "
          f"logits of {len(texts)} texts agree within {worst:.2e}")
    if worst > 1e-4:
        sys.exit("logits differ by more than 1e-4")


def check_tagger(args, texts):
    from transformers import AutoModelForTokenClassification

    model = load_checked(AutoModelForTokenClassification, args.model)
    tagger = pipeline("token-classification", model=args.model, aggregation_strategy="none", device="cpu")
    ours = subprocess.run([args.bert, "ner", "--model", args.model, "--ignore-labels", ""],
                          input="\n".join(texts) + "\n", capture_output=True, text=True, check=True).stdout
    worst = 0.0
    for text, line, theirs in zip(texts, ours.splitlines(), tagger(texts, ignore_labels=[])):
        mine = json.loads(line)["entities"]
        if [(e["entity"], e["start"], e["end"]) for e in mine] != [(e["entity"], e["start"], e["end"]) for e in theirs]:
            sys.exit(f"{text!r}: tokens or labels differ")
        worst = max([worst] + [abs(a["score"] - float(b["score"])) for a, b in zip(mine, theirs)])
    print(f"ok: transformers loads {args.model} (BertForTokenClassification) with no missing or unexpected "
          f"weights; labels and scores of {len(texts)} texts agree within {worst:.2e}")
    if worst > 1e-4:
        sys.exit("scores differ by more than 1e-4")


def check_answerer(args, lines):
    import numpy as np
    from transformers import AutoModelForQuestionAnswering

    model = load_checked(AutoModelForQuestionAnswering, args.model)
    model.eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    ours = subprocess.run([args.bert, "qa", "--model", args.model, "--jsonl"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, check=True).stdout.splitlines()
    worst = 0.0
    for line, mine in zip(lines, ours):
        item, mine = json.loads(line), json.loads(mine)
        enc = tok(item["question"], item["context"], return_tensors="pt")
        with torch.no_grad():
            out = model(**enc)
        allowed = np.array([s == 1 for s in enc.sequence_ids(0)])
        allowed[0] = True
        probs = []
        for logits in (out.start_logits[0].numpy(), out.end_logits[0].numpy()):
            x = np.where(allowed, logits, -10000.0)
            p = np.exp(x - x.max())
            p /= p.sum()
            p[0] = 0.0
            probs.append(p)
        scores = np.tril(np.triu(np.outer(*probs)), 14)
        scores[:, ~allowed] = 0
        scores[~allowed, :] = 0
        # The 12 best spans, widened to words; spans giving the same text add up.
        merged = {}
        for flat in np.argsort(-scores, axis=None, kind="stable")[:12]:
            s, e = np.unravel_index(flat, scores.shape)
            if scores[s, e] <= 0:
                continue
            start = enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0]
            end = enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]
            key = item["context"][start:end].lower()
            first = merged.setdefault(key, [0.0, start, end])
            first[0] += float(scores[s, e])
        score, start, end = max(merged.values(), key=lambda v: v[0])
        if (mine["start"], mine["end"]) != (start, end):
            sys.exit(f"{item['question']!r}: transformers' best span is {start}-{end}, bert's {mine['start']}-{mine['end']}")
        worst = max(worst, abs(mine["score"] - score))
    print(f"ok: transformers loads {args.model} (BertForQuestionAnswering) with no missing or unexpected weights; "
          f"best answers to {len(lines)} questions agree, scores within {worst:.2e}")
    if worst > 1e-4:
        sys.exit("scores differ by more than 1e-4")


if __name__ == "__main__":
    main()
