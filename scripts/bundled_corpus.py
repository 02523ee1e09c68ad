#!/usr/bin/env python3
"""The sentences the bundled sentence encoder is distilled on, from the data `scripts/datasets.sh`
fetches (never SQuAD's dev set, which `bench/search_quality.py` measures on):

- English, for the student to embed as the teacher does: SQuAD v1.1 train questions and the sentences
  of its contexts (CC BY-SA 4.0), chitchat-dataset turns (MIT), Rotten Tomatoes training snippets
  (Apache-2.0 package); a seeded sample of each;
- English -> French, for the student to map both to the teacher's English vector: every training
  Bible verse pair (World English Bible / Louis Segond 1910, public domain).

Writes OUTDIR/en.txt (one sentence a line) and OUTDIR/pairs.{en,fr} (line for line): the English
sentences first, each paired with itself, then the Bible pairs, shuffled together, so one
`bert distill --train pairs.en --train-target pairs.fr` run learns both.

    python scripts/bundled_corpus.py DATADIR OUTDIR [--questions N] [--contexts N] [--chitchat N]
        [--reviews N] [--verses N] [--seed 42]
"""
import argparse
import csv
import json
import os
import random
import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def squad(path):
    """Questions and context sentences of a SQuAD file."""
    questions, sentences = [], []
    for article in json.load(open(path, encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            sentences.extend(s for s in SENTENCE_END.split(paragraph["context"]) if len(s) > 20)
            questions.extend(qa["question"].strip() for qa in paragraph["qas"])
    return questions, sentences


def chitchat(path):
    with open(path, encoding="utf-8") as f:
        return sorted({json.loads(line)["source"] for line in f})


def reviews(path):
    with open(path, encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def sample(rng, items, n):
    items = [" ".join(s.split()) for s in items]
    items = [s for s in items if s]
    return rng.sample(items, min(n, len(items)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--questions", type=int, default=20000)
    parser.add_argument("--contexts", type=int, default=20000)
    parser.add_argument("--chitchat", type=int, default=5000)
    parser.add_argument("--reviews", type=int, default=5000)
    parser.add_argument("--verses", type=int, default=1000000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    questions, contexts = squad(os.path.join(args.data, "squad", "train-v1.1.json"))
    english = (sample(rng, questions, args.questions) + sample(rng, contexts, args.contexts)
               + sample(rng, chitchat(os.path.join(args.data, "chitchat", "train.jsonl")), args.chitchat)
               + sample(rng, reviews(os.path.join(args.data, "sentiment_rt_train.csv")), args.reviews))
    bible = os.path.join(args.data, "bible")
    verses = list(zip(lines(os.path.join(bible, "train.en")), lines(os.path.join(bible, "train.fr"))))
    verses = rng.sample(verses, min(args.verses, len(verses)))
    pairs = [(s, s) for s in english] + verses
    rng.shuffle(pairs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "en.txt"), "w", encoding="utf-8") as f:
        f.writelines(s + "\n" for s in english)
    for side, name in ((0, "pairs.en"), (1, "pairs.fr")):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            f.writelines(p[side] + "\n" for p in pairs)
    print(f"{len(english)} English sentences, {len(verses)} verse pairs, {len(pairs)} pairs in all")


if __name__ == "__main__":
    main()
