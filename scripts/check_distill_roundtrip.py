#!/usr/bin/env python3
"""Checks that a directory written by `bert distill` (or `bert finetune --task distill`) is a
sentence-transformers model with the same vectors: sentence-transformers loads it (modules.json,
pooling, normalisation) with no missing or unexpected weights (but the masked-LM head `cls.*` of a
student trained with --mlm-text, which the encoder does not use), and its embeddings of the given
texts equal `bert embed`'s within 1e-4 (cosine >= 0.99999). A student with that head must also fill
in masks as transformers' fill-mask pipeline does (the same top 5, scores within 1e-4).

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
    info["unexpected_keys"] = {k for k in info.get("unexpected_keys", ()) if not k.startswith("cls.")}
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
    config = json.load(open(f"{args.model}/config.json", encoding="utf-8"))
    if "BertForMaskedLM" in config.get("architectures", []):
        check_fill_mask(args)


def check_fill_mask(args):
    from transformers import pipeline
    text = "in the beginning god created the [MASK] and the earth."
    theirs = [(r["token_str"], r["score"]) for r in pipeline("fill-mask", model=args.model)(text, top_k=5)]
    out = subprocess.run([args.bert, "fill-mask", "--model", args.model, "--top-k", "5", text],
                         capture_output=True, text=True, check=True)
    ours = [(p["token"], p["score"]) for p in json.loads(out.stdout)["predictions"]]
    print(f"fill-mask top 5: {[t for t, _ in ours]}")
    if [t for t, _ in ours] != [t for t, _ in theirs] or max(
            abs(a[1] - b[1]) for a, b in zip(ours, theirs)) > 1e-4:
        sys.exit(f"bert fill-mask and transformers disagree: {ours} vs {theirs}")


if __name__ == "__main__":
    main()
