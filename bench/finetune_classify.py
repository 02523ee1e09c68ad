#!/usr/bin/env python3
"""Fine-tuning side by side: `bert finetune` and transformers' Trainer fine-tune the same checkpoint on
the same real data with the same hyper-parameters, seed and thread count; both pick the best epoch on the
dev set by loss, and both are scored on the held-out test set with scikit-learn. Prints accuracy,
macro-F1, training wall time and peak RSS during training (for PyTorch, of the whole Python process), and
the time ratio.

Data: Rotten Tomatoes critic snippets (scripts/datasets.sh OUT sentiment).

    cargo build --release
    scripts/datasets.sh /tmp/data sentiment
    python bench/finetune_classify.py --data /tmp/data [--model M] [--train-limit 2000] [--epochs 3] [--bf16]

M (a directory or a Hub id) defaults to $BERT_TEST_MODELS/all-MiniLM-L6-v2. Needs transformers, torch and
scikit-learn in the Python environment.

With --bf16 both train in mixed precision: `bert finetune --bf16` and the Trainer with `bf16=True`.
"""

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def scores(truth, predicted):
    from sklearn.metrics import accuracy_score, f1_score
    return accuracy_score(truth, predicted), f1_score(truth, predicted, average="macro")


def run_bert(args, train, dev, test, work):
    bert = os.path.join(ROOT, "target", "release", "bert")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = os.path.join(work, "bert-out")
    command = [bert, "finetune", "--model", args.model, "--train", train, "--eval", dev, "--out", out,
               "--overwrite", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--learning-rate", str(args.learning_rate), "--max-length", str(args.max_length),
               "--seed", str(args.seed), "--log-every", "50"] + (["--bf16"] if args.bf16 else [])
    peak = os.path.join(work, "bert-peak-kb")
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak] + command, env=env, check=True)
    seconds = time.perf_counter() - start
    peak_mb = int(open(peak).read().split()[-1]) / 1024
    texts = "\n".join(t.replace("\n", " ") for t, _ in test) + "\n"
    result = subprocess.run([bert, "classify", "--model", out, "--batch-size", "64"], input=texts.encode(),
                            env=env, check=True, capture_output=True)
    predicted = [json.loads(line)["label"] for line in result.stdout.decode().splitlines()]
    return seconds, peak_mb, predicted


def run_pytorch(args, train, dev, test, work):
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)

    torch.set_num_threads(args.threads)
    labels = sorted({l for _, l in train})
    label2id = {l: i for i, l in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args.model)

    def dataset(rows):
        enc = tok([t for t, _ in rows], truncation=True, max_length=args.max_length)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": label2id[l]} for i, (_, l) in enumerate(rows)]

    train_set, dev_set, test_set = dataset(train), dataset(dev), dataset(test)
    start = time.perf_counter()
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    training = TrainingArguments(
        output_dir=os.path.join(work, "pytorch-out"), num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate, seed=args.seed, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, metric_for_best_model="loss", save_total_limit=1,
        logging_steps=50, report_to=[], use_cpu=True, dataloader_num_workers=0, bf16=args.bf16)
    trainer = Trainer(model=model, args=training, train_dataset=train_set, eval_dataset=dev_set,
                      data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logits = trainer.predict(test_set).predictions
    predicted = [labels[i] for i in np.argmax(logits, axis=1)]
    return seconds, peak_mb, predicted


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="directory holding sentiment_rt_{train,dev,test}.csv")
    parser.add_argument("--model", help="default: $BERT_TEST_MODELS/all-MiniLM-L6-v2")
    parser.add_argument("--train-limit", type=int, default=2000, help="training examples (a seeded sample)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["bert", "pytorch"])
    parser.add_argument("--bf16", action="store_true", help="mixed precision on both sides")
    args = parser.parse_args()
    if args.model is None:
        if not os.environ.get("BERT_TEST_MODELS"):
            parser.error("give --model, or set BERT_TEST_MODELS to a folder holding all-MiniLM-L6-v2/")
        args.model = os.path.join(os.environ["BERT_TEST_MODELS"], "all-MiniLM-L6-v2")

    train = read(os.path.join(args.data, "sentiment_rt_train.csv"))
    random.Random(args.seed).shuffle(train)
    train = train[: args.train_limit]
    dev = read(os.path.join(args.data, "sentiment_rt_dev.csv"))
    test = read(os.path.join(args.data, "sentiment_rt_test.csv"))
    truth = [l for _, l in test]
    with tempfile.TemporaryDirectory() as work:
        paths = [os.path.join(work, f"{n}.csv") for n in ("train", "dev", "test")]
        for path, rows in zip(paths, (train, dev, test)):
            write(path, rows)
        results = {}
        runs = {
            "bert": lambda: run_bert(args, paths[0], paths[1], test, work),
            "PyTorch (transformers Trainer)": lambda: run_pytorch(args, train, dev, test, work),
        }
        for name, run in runs.items():
            if args.only and not name.lower().startswith(args.only):
                continue
            seconds, peak_mb, predicted = run()
            results[name] = (seconds, peak_mb, *scores(truth, predicted))
            print(f"{name}: {seconds:.1f}s", file=sys.stderr)
    print(f"\nall-MiniLM-L6-v2 on Rotten Tomatoes: {len(train)} train, {len(dev)} dev, {len(test)} test; "
          f"{args.epochs} epochs, batch {args.batch_size}, lr {args.learning_rate}, {args.threads} threads, "
          f"{'bf16 mixed precision' if args.bf16 else 'f32'}\n")
    print("| engine | test accuracy | test macro-F1 | training wall time | peak RSS (training) |")
    print("| --- | --- | --- | --- | --- |")
    for name, (seconds, peak_mb, accuracy, f1) in results.items():
        print(f"| {name} | {accuracy:.4f} | {f1:.4f} | {seconds:.0f} s | {peak_mb:.0f} MB |")
    if len(results) == 2:
        (a, *_), (b, *_) = results.values()
        print(f"\ntime ratio bert / PyTorch: {a / b:.2f}x")


if __name__ == "__main__":
    main()
