#!/usr/bin/env python3
"""Checks that a directory written by `bert distill` (or `bert finetune --task distill`) is a
sentence-transformers model with the same vectors: sentence-transformers loads it (modules.json,
pooling, normalisation) with no missing or unexpected weights, and its embeddings of the given texts
equal `bert embed`'s within 1e-4 (cosine >= 0.99999).

    python scripts/check_distill_roundtrip.py OUT_DIR TEXTS_FILE [--bert target/release/bert] [--limit 200]
"""
import argparse
import json
import subprocess
import sys

import numpy as np
from sentence_transformers import SentenceTransformer
from transformers import AutoModel


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("texts", help="a file with one text per line")
    parser.add_argument("--bert", default="target/release/bert")
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()][: args.limit]
    _, info = AutoModel.from_pretrained(args.model, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"transformers reports {problems}")
    theirs = SentenceTransformer(args.model, device="cpu").encode(texts, batch_size=32)
    out = subprocess.run([args.bert, "embed", "--model", args.model], input="\n".join(texts) + "\n",
                         capture_output=True, text=True, check=True)
    ours = np.array([json.loads(line)["embedding"] for line in out.stdout.splitlines()])
    worst = float(np.abs(ours - theirs).max())
    cosines = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"{len(texts)} texts: largest difference {worst:.2e}, lowest cosine {cosines.min():.6f}")
    if worst > 1e-4 or cosines.min() < 0.99999:
        sys.exit("bert embed and sentence-transformers disagree")


if __name__ == "__main__":
    main()
