#!/usr/bin/env python3
"""Distillation side by side: `bert distill` and sentence-transformers' own recipe (its MSELoss, trained
with SentenceTransformerTrainer) distil a teacher into a student of every second of its layers
(DistilBERT's initialisation, both sides) on the same sentences, with the same epochs, batch size,
learning rate, seed and thread count. Both students are then embedded by the same engine they were
trained with (`bert embed`, `SentenceTransformer.encode`) on held-out sentences and scored against the
teacher's vectors there: the mean-squared error (x 100) and how often a student's vector of a sentence
has the teacher's vector of that same sentence as its nearest (out of all held-out sentences). Prints
the wall time of each training run (the teacher's embeddings included) and the ratio.

    python bench/distill.py --teacher M --train sentences.txt --eval held_out.txt [--epochs 1]
        [--batch-size 16] [--learning-rate 5e-5] [--seed 42] [--threads 2] [--limit 2000] [--group-by-length]

Needs sentence-transformers, datasets and torch in the Python environment.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BERT = os.path.join(ROOT, "target", "release", "bert")


def read(path, limit):
    lines = [l.strip() for l in open(path, encoding="utf-8") if l.strip()]
    return lines[:limit]


def scores(student, teacher):
    mse = float(((student - teacher) ** 2).mean()) * 100
    s = student / np.linalg.norm(student, axis=1, keepdims=True)
    t = teacher / np.linalg.norm(teacher, axis=1, keepdims=True)
    accuracy = float((np.argmax(s @ t.T, axis=1) == np.arange(len(s))).mean())
    return mse, accuracy


def run_bert(args, train, work):
    out = os.path.join(work, "bert-student")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    cmd = [BERT, "distill", "--teacher", args.teacher, "--model", args.teacher, "--keep-layers-every", "2",
           "--train", train, "--out", out, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--learning-rate", str(args.learning_rate), "--seed", str(args.seed), "--overwrite"]
    if args.group_by_length:
        cmd.append("--group-by-length")
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(done.stderr)
    return out, seconds


def bert_embed(model, texts, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    done = subprocess.run([BERT, "embed", "--model", model], input="\n".join(texts) + "\n", capture_output=True,
                          text=True, env=env, check=True)
    return np.array([json.loads(line)["embedding"] for line in done.stdout.splitlines()])


def run_sentence_transformers(args, sentences):
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MSELoss

    started = time.perf_counter()
    teacher = SentenceTransformer(args.teacher, device="cpu")
    student = SentenceTransformer(args.teacher, device="cpu")
    layers = student[0].auto_model.encoder.layer
    student[0].auto_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in range(0, len(layers), 2)])
    student[0].auto_model.config.num_hidden_layers = len(student[0].auto_model.encoder.layer)
    labels = teacher.encode(sentences, batch_size=32)
    data = Dataset.from_dict({"sentence": sentences, "label": [list(map(float, v)) for v in labels]})
    training = SentenceTransformerTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="st-distill-"), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, warmup_ratio=0.0,
        seed=args.seed, save_strategy="no", report_to=[], logging_steps=50, use_cpu=True,
        dataloader_num_workers=0)
    SentenceTransformerTrainer(model=student, args=training, train_dataset=data,
                               loss=MSELoss(student)).train()
    return student, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--train", required=True, help="sentences, one a line")
    parser.add_argument("--eval", required=True, help="held-out sentences, one a line")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=2000, help="training sentences used")
    parser.add_argument("--group-by-length", action="store_true",
                        help="bert distill batches sentences of similar length together (sentence-transformers' "
                             "trainer has no such option: its batch samplers replace transformers' length grouping)")
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="bert-distill-bench-")
    sentences = read(args.train, args.limit)
    train = os.path.join(work, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    held_out = read(args.eval, 1000)
    bert_dir, bert_s = run_bert(args, train, work)
    st_student, st_s = run_sentence_transformers(args, sentences)
    teacher = SentenceTransformer(args.teacher, device="cpu").encode(held_out, batch_size=32)
    ours = scores(bert_embed(bert_dir, held_out, args.threads), teacher)
    theirs = scores(st_student.encode(held_out, batch_size=32), teacher)
    print(f"teacher {args.teacher}, student: every second layer; {len(sentences)} sentences, {args.epochs} epoch(s), "
          f"batch {args.batch_size}, lr {args.learning_rate}, seed {args.seed}, {args.threads} threads; "
          f"{len(held_out)} held-out sentences")
    grouped = " --group-by-length" if args.group_by_length else ""
    print("| engine | training wall time | held-out MSE x 100 | nearest teacher vector is its own |")
    print("| --- | --- | --- | --- |")
    print(f"| bert distill{grouped} | {bert_s:.1f} s | {ours[0]:.4f} | {ours[1]:.3f} |")
    print(f"| sentence-transformers MSELoss | {st_s:.1f} s | {theirs[0]:.4f} | {theirs[1]:.3f} |")
    print(f"time ratio bert / sentence-transformers: {bert_s / st_s:.2f}x")


if __name__ == "__main__":
    main()
