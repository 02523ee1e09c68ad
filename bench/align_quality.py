#!/usr/bin/env python3
"""Bitext mining quality: `bert align` on two files known to be line-by-line translations (held-out
Bible chapters: scripts/datasets.sh OUT bible gives bible/test.en and bible/test.fr), the target's
lines shuffled with a fixed seed for --mode mine and kept in order for --mode parallel. A pair is right
when it joins a line to its translation; prints precision, recall and F1 of the pairs found in each
mode, and the time each run took (the model load included). Then translation retrieval accuracy both
ways from `bert embed`'s vectors: the share of lines whose most similar line of the other file (by
cosine) is their translation.

    python bench/align_quality.py --model M --source bible/test.en --target bible/test.fr
        [--threshold 1.06] [--parallel-threshold 1.0] [--threads 2]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BERT = os.path.join(ROOT, "target", "release", "bert")


def align(args, source, target, mode, threshold):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    out = subprocess.run([BERT, "align", "--model", args.model, "--mode", mode, "--threshold", str(threshold),
                          source, target], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines()], time.perf_counter() - started


def embed(args, path):
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    with open(path, encoding="utf-8") as f:
        out = subprocess.run([BERT, "embed", "--model", args.model], stdin=f, capture_output=True, text=True,
                             env=env)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return [json.loads(line)["embedding"] for line in out.stdout.splitlines()]


def retrieval(args):
    """Accuracy source -> target and target -> source of the nearest line by cosine."""
    import numpy as np
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    source, target = (unit(np.array(embed(args, p), dtype=np.float64)) for p in (args.source, args.target))
    similarity = source @ target.T
    right = np.arange(len(source))
    return (similarity.argmax(1) == right).mean(), (similarity.argmax(0) == right).mean()


def scores(found, right, total):
    precision = right / len(found) if found else 0.0
    recall = right / total
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--source", required=True, help="one sentence per line")
    parser.add_argument("--target", required=True, help="the source's translations, line by line")
    parser.add_argument("--threshold", type=float, default=1.06)
    parser.add_argument("--parallel-threshold", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = open(args.source, encoding="utf-8").read().splitlines()
    target = open(args.target, encoding="utf-8").read().splitlines()
    if len(source) != len(target) or any(not line.strip() for line in source + target):
        sys.exit(f"{args.source} ({len(source)} lines) and {args.target} ({len(target)} lines) must be "
                 "translations line by line, without blank lines")
    order = list(range(len(target)))
    random.Random(args.seed).shuffle(order)
    work = tempfile.mkdtemp(prefix="bert-align-")
    shuffled = os.path.join(work, "target.shuffled")
    with open(shuffled, "w", encoding="utf-8") as f:
        f.write("\n".join(target[i] for i in order) + "\n")
    print(f"{args.model}: {len(source)} sentence pairs ({args.source}, {args.target}), {args.threads} threads")
    print("| mode | threshold | pairs | precision | recall | F1 | seconds |\n| --- | --- | --- | --- | --- | --- | --- |")
    found, seconds = align(args, args.source, shuffled, "mine", args.threshold)
    right = sum(order[p["target_line"] - 1] == p["source_line"] - 1 for p in found)
    p, r, f1 = scores(found, right, len(source))
    print(f"| mine (target shuffled) | {args.threshold} | {len(found)} | {p:.3f} | {r:.3f} | {f1:.3f} | {seconds:.1f} |")
    found, seconds = align(args, args.source, args.target, "parallel", args.parallel_threshold)
    right = sum(p["target_line"] == p["source_line"] for p in found)
    p, r, f1 = scores(found, right, len(source))
    print(f"| parallel (in order) | {args.parallel_threshold} | {len(found)} | {p:.3f} | {r:.3f} | {f1:.3f} | "
          f"{seconds:.1f} |")
    forward, backward = retrieval(args)
    print(f"retrieval accuracy: source -> target {forward:.3f}, target -> source {backward:.3f}")


if __name__ == "__main__":
    main()
