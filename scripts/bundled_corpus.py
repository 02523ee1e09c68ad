#!/usr/bin/env python3
"""The sentences the bundled sentence encoder is distilled on, from the data `scripts/datasets.sh`
fetches (never SQuAD's dev set, which `bench/search_quality.py` measures on):

- English, for the student to embed as the teacher does: SQuAD v1.1 train questions, the sentences
  of its contexts and passages of consecutive sentences (up to --passage-words words, as a search
  index cuts documents) (CC BY-SA 4.0), chitchat-dataset turns (MIT), Rotten Tomatoes training
  snippets (Apache-2.0 package); a seeded sample of each;
- English -> French, for the student to map both to the teacher's English vector: every training
  Bible verse pair (World English Bible / Louis Segond 1910, public domain).

With --kjv FILE (`scripts/kjv_corpus.sh`'s King James Bible, public domain), also OUTDIR/mlm.txt: its
verses for masked-LM training, without the chapters `bert pretrain` and `bench/fill_mask_quality.py`
hold out (every 20th, the first 50 of them).

Writes OUTDIR/en.txt (one sentence a line) and OUTDIR/pairs.{en,fr} (line for line): the English
sentences first, each paired with itself, then the Bible pairs, shuffled together, so one
`bert distill --train pairs.en --train-target pairs.fr` run learns both.

    python scripts/bundled_corpus.py DATADIR OUTDIR [--questions N] [--contexts N] [--chitchat N]
        [--reviews N] [--verses N] [--passages N] [--passage-words 60] [--kjv FILE] [--seed 42]
"""
import argparse
import csv
import json
import os
import random
import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def squad(path, passage_words):
    """Questions, context sentences and passages (consecutive sentences of a context, up to
    `passage_words` words) of a SQuAD file."""
    questions, sentences, passages = [], [], []
    for article in json.load(open(path, encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            split = SENTENCE_END.split(paragraph["context"])
            sentences.extend(s for s in split if len(s) > 20)
            passages.extend(windows(split, passage_words))
            questions.extend(qa["question"].strip() for qa in paragraph["qas"])
    return questions, sentences, passages


def windows(sentences, words):
    """Consecutive sentences joined while they stay within `words` words."""
    out, current = [], []
    for sentence in sentences:
        if current and len(" ".join(current + [sentence]).split()) > words:
            out.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        out.append(" ".join(current))
    return out


def kjv_training_verses(path, stride=20, held_out=50):
    """The verses of the chapters (blank-line separated) that are not held out."""
    chapters = open(path, encoding="utf-8").read().split("\n\n")
    chapters = [c.strip() for c in chapters if c.strip()]
    kept = [c for i, c in enumerate(chapters) if not (i % stride == stride - 1 and i // stride < held_out)]
    return [line for c in kept for line in c.splitlines() if line.strip()]


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
    parser.add_argument("--passages", type=int, default=0)
    parser.add_argument("--passage-words", type=int, default=60)
    parser.add_argument("--kjv", help="King James Bible (one verse a line, chapters blank-line separated)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    questions, contexts, passages = squad(os.path.join(args.data, "squad", "train-v1.1.json"),
                                          args.passage_words)
    english = (sample(rng, questions, args.questions) + sample(rng, contexts, args.contexts)
               + sample(rng, passages, args.passages)
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
    if args.kjv:
        verses_mlm = kjv_training_verses(args.kjv)
        with open(os.path.join(args.out, "mlm.txt"), "w", encoding="utf-8") as f:
            f.writelines(v + "\n" for v in verses_mlm)
        print(f"{len(verses_mlm)} King James verses for masked LM")
    print(f"{len(english)} English sentences, {len(verses)} verse pairs, {len(pairs)} pairs in all")


if __name__ == "__main__":
    main()
