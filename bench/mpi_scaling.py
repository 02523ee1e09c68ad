#!/usr/bin/env python3
"""Data-parallel scaling of `bert pretrain` under MPI on one machine, and a model of it on N machines.

    python bench/mpi_scaling.py [--size mini] [--batch 16] [--seq 128] [--steps 12]

Needs `bert` built with `cargo build --release --features bert-cli/mpi` and `mpirun` (OpenMPI or
MPICH). Runs, on the same corpus and per-rank batch:
  1 rank  x 1 thread  (batch B)
  2 ranks x 1 thread  (mpirun -np 2; global batch 2B)
  1 rank  x 2 threads (batch 2B), in two shards (one per thread, the default) and in one shard
          (each op on both threads), for comparison
and prints median step time, tokens/s, and the share of the step spent summing gradients
(`exchange_seconds` in metrics.jsonl). Then models N machines from the measured one-rank compute time and
the ring all-reduce volume, parameters x 4 bytes x 2(N-1)/N per step, at 10 and 100 Gbit/s (no overlap:
candle's backward pass gives no per-tensor hook, so the exchange follows the backward pass).
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BERT = os.path.join(ROOT, "target", "release", "bert")


def corpus(path, documents=400, sentences=60):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(20000)]
    with open(path, "w") as f:
        for _ in range(documents):
            for _ in range(sentences):
                f.write(" ".join(rng.choice(words) for _ in range(12)) + " .\n")
            f.write("\n")


def pretrain(args, work, name, batch, threads, ranks, shards):
    out = os.path.join(work, name)
    cmd = [BERT, "pretrain", os.path.join(work, "corpus.txt"), "--tokenizer", os.path.join(work, "vocab"),
           "--out", out, "--size", args.size, "--batch-size", str(batch), "--max-seq-length", str(args.seq),
           "--short-seq-prob", "0", "--max-steps", str(args.steps), "--eval-documents", "0",
           "--eval-every", "0", "--save-every", "0", "--log-every", "1", "--overwrite", "--shards", str(shards)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "core", "-np", str(ranks)] + cmd
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    steps = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"step_seconds"' in l]
    steps = steps[2:]  # the first steps warm up
    step = statistics.median(s["step_seconds"] for s in steps)
    tokens = statistics.median(s["tokens_per_second"] for s in steps)
    exchange = [s["exchange_seconds"] / s["step_seconds"] for s in steps if "exchange_seconds" in s]
    return {"step": step, "tokens": tokens, "exchange": statistics.median(exchange) if exchange else None,
            "out": out}


def parameters(out):
    """Parameters of the trained model, from its safetensors header."""
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    total = 0
    for name, meta in header.items():
        if name != "__metadata__":
            n = 1
            for d in meta["shape"]:
                n *= d
            total += n
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mini")
    parser.add_argument("--batch", type=int, default=16, help="per-rank batch")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bert-mpi-bench-")
    corpus(os.path.join(work, "corpus.txt"))
    subprocess.run([BERT, "vocab", "--vocab-size", str(args.vocab), "--out", os.path.join(work, "vocab"),
                    os.path.join(work, "corpus.txt")], check=True, capture_output=True)
    runs = [
        ("1 rank x 1 thread", args.batch, 1, 1, 1),
        ("2 ranks x 1 thread (mpirun)", args.batch, 1, 2, 1),
        ("1 rank x 2 threads, 2 shards (the default)", 2 * args.batch, 2, 1, 2),
        ("1 rank x 2 threads, 1 shard (--shards 1)", 2 * args.batch, 2, 1, 1),
    ]
    results = []
    for i, (name, batch, threads, ranks, shards) in enumerate(runs):
        r = pretrain(args, work, f"run{i}", batch, threads, ranks, shards)
        results.append((name, batch * ranks, r))
    base = results[0][2]
    print(f"\nBERT-{args.size}, {args.seq} tokens, per-rank batch {args.batch}, {args.steps} steps (median of the "
          f"last {args.steps - 2}), vocab {args.vocab}\n")
    print("| run | global batch | step | tokens/s | vs 1 rank | exchange share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, batch, r in results:
        share = f"{100 * r['exchange']:.1f}%" if r["exchange"] is not None else "-"
        print(f"| {name} | {batch} | {1000 * r['step']:.0f} ms | {r['tokens']:.0f} | "
              f"{r['tokens'] / base['tokens']:.2f}x | {share} |")

    params = parameters(base["out"])
    compute = base["step"]
    print(f"\nModel for N machines, one rank each: step = {1000 * compute:.0f} ms of compute (1 rank x 1 thread, "
          f"measured) + all-reduce of {params / 1e6:.1f}M parameters x 4 bytes x 2(N-1)/N, no overlap\n")
    print("| N | all-reduce per step | step at 10 Gbit/s | efficiency | step at 100 Gbit/s | efficiency |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in [2, 4, 8, 16, 64]:
        volume = params * 4 * 2 * (n - 1) / n
        row = [f"{n}", f"{volume / 1e6:.0f} MB"]
        for gbit in [10, 100]:
            comm = volume / (gbit * 1e9 / 8)
            row += [f"{1000 * (compute + comm):.0f} ms", f"{100 * compute / (compute + comm):.0f}%"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
