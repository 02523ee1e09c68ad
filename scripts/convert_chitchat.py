#!/usr/bin/env python3
"""Dialogue pairs from chitchat-dataset's `dataset.json` (7,168 conversations, MIT): each turn (a
speaker's consecutive messages, joined) is the context of the next turn, its reply. Conversations are
split 90/5/5 (every 20th for dev, every 20th from the 10th for test), so no conversation is in two.

    python scripts/convert_chitchat.py dataset.json OUTDIR

Writes OUTDIR/chitchat/{train,dev,test}.jsonl: {"source": context, "target": reply} per line.
"""
import json
import os
import sys


def main():
    data = json.load(open(sys.argv[1], encoding="utf-8"))
    out = os.path.join(sys.argv[2], "chitchat")
    os.makedirs(out, exist_ok=True)
    files = {split: open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8")
             for split in ["train", "dev", "test"]}
    counts = dict.fromkeys(files, 0)
    for i, key in enumerate(sorted(data)):
        split = "dev" if i % 20 == 0 else "test" if i % 20 == 10 else "train"
        turns = [" ".join(" ".join(m["text"].split()) for m in turn) for turn in data[key]["messages"]]
        turns = [t for t in turns if t]
        for context, reply in zip(turns, turns[1:]):
            files[split].write(json.dumps({"source": context, "target": reply}, ensure_ascii=False) + "\n")
            counts[split] += 1
    for split, f in files.items():
        f.close()
        print(f"{split}: {counts[split]} pairs")


if __name__ == "__main__":
    main()
