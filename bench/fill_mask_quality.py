#!/usr/bin/env python3
"""Fill-mask quality of a model on held-out verses: in each verse of the chapters `bert pretrain` held
out (every --eval-stride-th chapter, counting from 1, up to --eval-documents), one word the model's
vocabulary holds whole is replaced by [MASK] (seeded choice); `bert fill-mask --top-k 5` predicts it.
Prints top-1 and top-5 accuracy and the quick start's prediction.

    python bench/fill_mask_quality.py --model M --corpus kjv.txt [--eval-documents 50]
        [--eval-stride 20] [--verses 1000] [--seed 0]

The corpus is `bert pretrain`'s: one sentence a line, a blank line between documents
(`scripts/kjv_corpus.sh kjv.txt` for the King James Bible).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BERT = os.path.join(ROOT, "target", "release", "bert")
QUICK_START = "in the beginning god created the [MASK] and the earth."


def documents(path):
    docs, current = [], []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            docs.append(current)
            current = []
    if current:
        docs.append(current)
    return docs


def fill(model, lines):
    out = subprocess.run([BERT, "fill-mask", "--model", model, "--top-k", "5"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return [[p["token"] for p in json.loads(line)["predictions"]] for line in out.stdout.splitlines()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--eval-documents", type=int, default=50)
    parser.add_argument("--eval-stride", type=int, default=20)
    parser.add_argument("--verses", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    vocab = set(open(os.path.join(args.model, "vocab.txt"), encoding="utf-8").read().split("\n"))
    held_out = [doc for i, doc in enumerate(documents(args.corpus))
                if i % args.eval_stride == args.eval_stride - 1 and i // args.eval_stride < args.eval_documents]
    rng = random.Random(args.seed)
    verses = [v for doc in held_out for v in doc]
    rng.shuffle(verses)
    masked, answers = [], []
    for verse in verses[: args.verses]:
        words = [m for m in re.finditer(r"[A-Za-z]+", verse) if m.group().lower() in vocab]
        if not words:
            continue
        word = rng.choice(words)
        masked.append(verse[: word.start()] + "[MASK]" + verse[word.end():])
        answers.append(word.group().lower())
    predictions = fill(args.model, masked)
    top1 = sum(p[:1] == [a] for p, a in zip(predictions, answers)) / len(answers)
    top5 = sum(a in p for p, a in zip(predictions, answers)) / len(answers)
    print(f"{args.model}: {len(answers)} masked words in {len(held_out)} held-out documents")
    print(f"| top-1 accuracy | top-5 accuracy |\n| --- | --- |\n| {top1:.3f} | {top5:.3f} |")
    print(f'"{QUICK_START}" -> {", ".join(fill(args.model, [QUICK_START])[0])}')


if __name__ == "__main__":
    main()
