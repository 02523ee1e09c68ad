#!/usr/bin/env python3
"""Pretraining step time and peak memory: `bert pretrain` against transformers' BertForPreTraining on the
same config, batch, sequence length and thread count, one run, medians and ratios.

    python bench/pretrain_step.py [--size mini] [--batch 32] [--seq 128] [--steps 20] [--threads 2]
        [--bf16] [--gradient-checkpointing] [--engines bert,torch]

With --bf16 both train in mixed precision: `bert pretrain --bf16` and PyTorch under
`torch.autocast("cpu", dtype=torch.bfloat16)` (what transformers' Trainer does for `--bf16`). With
--gradient-checkpointing both recompute each layer in the backward pass (`bert pretrain
--gradient-checkpointing`, transformers' `gradient_checkpointing_enable()`). --engines bert runs one side.

Both sides train on full-length instances (short_seq_prob 0) with 20 masked positions each, AdamW and
clipping, dropout on. PyTorch gets random token ids (its data pipeline is not timed); `bert` runs its whole
pipeline (tokenizing, instance building, masking are inside its step time). Peak memory is the process's
maximum RSS. Needs torch and transformers in the Python environment.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def corpus(path, vocab_words, documents=400, sentences=60):
    rng = random.Random(0)
    with open(path, "w") as f:
        for _ in range(documents):
            for _ in range(sentences):
                f.write(" ".join(rng.choice(vocab_words) for _ in range(12)) + " .\n")
            f.write("\n")


def run_bert(args, work):
    vocab_dir = os.path.join(work, "vocab")
    text = os.path.join(work, "corpus.txt")
    words = [f"w{i}" for i in range(20000)]  # enough distinct words for the vocabulary to fill up
    corpus(text, words)
    bert = os.path.join(ROOT, "target", "release", "bert")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), CANDLE_NUM_THREADS=str(args.threads))
    subprocess.run([bert, "vocab", "--vocab-size", str(args.vocab), "--out", vocab_dir, text], check=True,
                   capture_output=True, env=env)
    out = os.path.join(work, "out")
    cmd = ["/usr/bin/time", "-f", "%M", bert, "pretrain", text, "--tokenizer", vocab_dir, "--out", out,
           "--size", args.size, "--batch-size", str(args.batch), "--max-seq-length", str(args.seq),
           "--short-seq-prob", "0", "--max-steps", str(args.steps), "--eval-documents", "0", "--eval-every", "0",
           "--save-every", "0", "--log-every", "1", "--max-predictions-per-seq", "20", "--overwrite"]
    if args.bf16:
        cmd.append("--bf16")
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(done.stderr)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    vocab_lines = sum(1 for _ in open(os.path.join(vocab_dir, "vocab.txt")))
    if vocab_lines != args.vocab:
        sys.exit(f"the benchmark vocabulary has {vocab_lines} tokens, not {args.vocab}")
    steps = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"step_seconds"' in l]
    times = [s["step_seconds"] for s in steps[2:]]  # the first steps warm up
    return statistics.median(times), peak_kb / 1024


def run_torch(args):
    import torch
    from transformers import BertConfig, BertForPreTraining

    torch.set_num_threads(args.threads)
    layers, hidden = SIZES[args.size]
    config = BertConfig(vocab_size=args.vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)
    model = BertForPreTraining(config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, eps=1e-6)
    g = torch.Generator().manual_seed(0)
    masks = min(20, round(0.15 * args.seq))  # what `bert pretrain` predicts per full-length instance
    times = []
    for _ in range(args.steps):
        ids = torch.randint(5, args.vocab, (args.batch, args.seq), generator=g)
        labels = torch.full_like(ids, -100)
        for row in range(args.batch):
            pos = torch.randperm(args.seq - 2, generator=g)[:masks] + 1
            labels[row, pos] = ids[row, pos]
        types = torch.zeros_like(ids)
        types[:, args.seq // 2:] = 1
        nsp = torch.randint(0, 2, (args.batch,), generator=g)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids, token_type_ids=types, labels=labels, next_sentence_label=nsp).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times[2:]), peak_mb


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="mini", choices=SIZES)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--bf16", action="store_true", help="mixed precision on both sides")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute each layer in the backward pass, on both sides")
    parser.add_argument("--engines", default="bert,torch", help="which sides to run (bert, torch or both)")
    args = parser.parse_args()
    engines = args.engines.split(",")
    print(f"BERT-{args.size}, batch {args.batch} x {args.seq}, vocab {args.vocab}, {args.threads} threads, "
          f"{'bf16 mixed precision' if args.bf16 else 'f32'}"
          f"{', gradient checkpointing' if args.gradient_checkpointing else ''}, median of {args.steps - 2} steps")
    print(f"| engine | step time | peak RSS |")
    print(f"| --- | --- | --- |")
    if "bert" in engines:
        with tempfile.TemporaryDirectory() as work:
            ours, our_mb = run_bert(args, work)
        print(f"| bert pretrain | {ours * 1000:.0f} ms | {our_mb:.0f} MB |")
    if "torch" in engines:
        theirs, their_mb = run_torch(args)
        print(f"| PyTorch (transformers BertForPreTraining) | {theirs * 1000:.0f} ms | {their_mb:.0f} MB |")
    if "bert" in engines and "torch" in engines:
        print(f"step-time ratio bert / PyTorch: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
