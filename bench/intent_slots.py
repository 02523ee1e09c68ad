#!/usr/bin/env python3
"""Joint intent detection and slot filling on ATIS: `bert finetune --task intent-slots` beside a PyTorch
reference of the same model and recipe, from the same checkpoint, with the same seed and thread count,
once per --seeds seed.

    cargo build --release
    scripts/datasets.sh DATA atis          # DATA/atis/{train,dev,test}.txt; needs torch, transformers
    python bench/intent_slots.py --data DATA [--model M] [--seeds 42,43,44] [--epochs 3] [--train-limit 0]
        [--work /tmp/bert-intent-slots-bench] [--only bert|torch]

M (a checkpoint directory) defaults to $BERT_TEST_MODELS/all-MiniLM-L6-v2.

The model (bert's BertForIntentAndSlots): BertModel with its pooler; the pooled [CLS] state -> dropout ->
intent_classifier, every token's state -> dropout -> slot_classifier (new heads: normal(0,
initializer_range) weights, zero biases); a word's tag sits on its first sub-token. Loss: intent
cross-entropy (mean over utterances) + --slot-loss-coef x slot cross-entropy (mean over words).
The recipe, `bert finetune`'s defaults mirrored in PyTorch: AdamW (betas 0.9/0.999, eps 1e-8, no decay on
biases and LayerNorm weights), linear warm-up over ceil(--warmup-ratio x steps) then linear decay to 0,
global gradient norm clipped to 1.0, examples shuffled each epoch (a partial last batch kept), the dev set
scored after each epoch and the best model by --metric-for-best kept (default: the dev joint loss).

Test scores: `bert finetune --test` scores the kept model on the test set (OUT/test_results.json); the
PyTorch model is scored by this script: intent accuracy, seqeval's default-mode (conlleval chunks)
entity-level slot precision/recall/F1, sentence accuracy (intent and every tag right), test intents and
tags that the training data lacks counted wrong, words past --max-length left out (as bert does). As a
check of the two scorers, bert's weights are also loaded into the PyTorch model and scored by this script
("bert weights, PyTorch scoring"): it should match the `bert` row.

Training time: the whole `bert finetune` process (start-up, reading and tokenizing the data, loading the
checkpoint, training, dev evaluations, writing the best model, scoring it on the test set); for PyTorch the
same steps in this process after its imports.

Prints Markdown tables and writes WORK/results.json. Steps whose output exists in WORK are not run again
(WORK/settings.json must match the flags: use another --work for other settings).
"""
import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
METRICS = ["intent_accuracy", "slot_precision", "slot_recall", "slot_f1", "sentence_accuracy"]
# Chen, Zhuo and Wang 2019, "BERT for Joint Intent Classification and Slot Filling", BERT-base on ATIS.
PAPER = {"intent_accuracy": 97.5, "slot_f1": 96.1, "sentence_accuracy": 88.2}


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def read_atis(path):
    """(words, tags, intent) per line, as bert reads `word:TAG ... <=> intent`: the intent after the last
    `<=>`, words on whitespace, each split at its last colon (`8:30:B-time`), blank lines skipped."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for number, line in enumerate(f.read().split("\n"), 1):  # Rust's str::lines()
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            tagged, _, intent = line.rpartition("<=>")  # no `<=>`: no words, an error below
            pairs = [item.rsplit(":", 1) for item in tagged.split()]
            if not pairs or not intent.strip() or any(len(p) < 2 or not all(p) for p in pairs):
                sys.exit(f"{path}:{number}: expected `word:TAG ... <=> intent`")
            rows.append(([w for w, _ in pairs], [t for _, t in pairs], intent.strip()))
    return rows


def entities(sequences):
    """seqeval's get_entities in its default mode (conlleval): {(sentence, type, first, last)}."""
    found = set()
    for s, tags in enumerate(sequences):
        prev_tag, prev_type, begin = "O", "", 0
        for i, chunk in enumerate(list(tags) + ["O"]):
            tag, kind = chunk[0], chunk[1:].split("-", 1)[-1] or "_"
            if (prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O"))
                    or (prev_tag not in ("O", ".") and prev_type != kind)):
                found.add((s, prev_type, begin, i - 1))
            if (tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I"))
                    or (tag not in ("O", ".") and prev_type != kind)):
                begin = i
            prev_tag, prev_type = tag, kind
    return found


def score(gold, intents, tags, drop_missing=False):
    """Metrics of predicted `intents` and per-word `tags` against `gold` rows. A word with no prediction
    (None: cut by --max-length) is tagged O, or with drop_missing left out, as bert's dev scoring does."""
    truth, predicted, sentences = [], [], 0
    for (_, true_tags, intent), best_intent, best_tags in zip(gold, intents, tags):
        pairs = [(t, p or "O") for t, p in zip(true_tags, best_tags) if p is not None or not drop_missing]
        truth.append([t for t, _ in pairs])
        predicted.append([p for _, p in pairs])
        sentences += best_intent == intent and truth[-1] == predicted[-1]
    true_set, predicted_set = entities(truth), entities(predicted)
    right = len(true_set & predicted_set)
    precision = right / len(predicted_set) if predicted_set else 0.0
    recall = right / len(true_set) if true_set else 0.0
    return {"intent_accuracy": sum(p == g[2] for p, g in zip(intents, gold)) / len(gold),
            "slot_precision": precision, "slot_recall": recall,
            "slot_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "sentence_accuracy": sentences / len(gold), "_tags": predicted}


class Reference:
    """The PyTorch side: tokenization, the joint model, its loss and batched prediction."""

    def __init__(self, args, intents, tags):
        import torch
        from transformers import AutoTokenizer
        torch.set_num_threads(args.threads)
        self.torch, self.args, self.intents, self.tags = torch, args, intents, tags
        self.tok = AutoTokenizer.from_pretrained(args.model)

    def encode(self, rows):
        """Per utterance: token ids, the intent id, per-token slot ids (the word's tag id on its first
        sub-token, -100 elsewhere and for labels the training data lacks), each word's first sub-token."""
        intent_ids = {l: i for i, l in enumerate(self.intents)}
        tag_ids = {l: i for i, l in enumerate(self.tags)}
        enc = self.tok([w for w, _, _ in rows], is_split_into_words=True, truncation=True,
                       max_length=self.args.max_length)
        items = []
        for i, (words, word_tags, intent) in enumerate(rows):
            first, previous = [None] * len(words), None
            for position, word in enumerate(enc.word_ids(i)):
                if word is not None and word != previous:
                    first[word] = position
                previous = word
            slots = [-100] * len(enc["input_ids"][i])
            for word, position in enumerate(first):
                if position is not None:
                    slots[position] = tag_ids.get(word_tags[word], -100)
            items.append((enc["input_ids"][i], intent_ids.get(intent, -100), slots, first))
        return items

    def model(self):
        torch, nn = self.torch, self.torch.nn
        from transformers import BertModel
        n_intents, n_tags = len(self.intents), len(self.tags)

        class Joint(nn.Module):
            def __init__(self, path):
                super().__init__()
                self.bert = BertModel.from_pretrained(path, add_pooling_layer=True)
                c = self.bert.config
                dropout = c.classifier_dropout
                self.dropout = nn.Dropout(c.hidden_dropout_prob if dropout is None else dropout)
                self.intent_classifier = nn.Linear(c.hidden_size, n_intents)
                self.slot_classifier = nn.Linear(c.hidden_size, n_tags)
                for head in (self.intent_classifier, self.slot_classifier):
                    nn.init.normal_(head.weight, std=c.initializer_range)
                    nn.init.zeros_(head.bias)

            def forward(self, ids, mask):
                out = self.bert(input_ids=ids, attention_mask=mask)
                return (self.intent_classifier(self.dropout(out.pooler_output)),
                        self.slot_classifier(self.dropout(out.last_hidden_state)))

        return Joint(self.args.model)

    def tensors(self, items, index):
        torch = self.torch
        width = max(len(items[i][0]) for i in index)
        ids = torch.full((len(index), width), self.tok.pad_token_id)
        mask, slots = torch.zeros_like(ids), torch.full_like(ids, -100)
        for row, i in enumerate(index):
            n = len(items[i][0])
            ids[row, :n], mask[row, :n], slots[row, :n] = torch.tensor(items[i][0]), 1, torch.tensor(items[i][2])
        return ids, mask, torch.tensor([items[i][1] for i in index]), slots

    def loss(self, intent_logits, slot_logits, intents, slots):
        """Intent CE + coef x slot CE, each a mean over its labelled terms; a term with none is left out."""
        F = self.torch.nn.functional
        loss = intent_logits.new_zeros(())
        if (intents != -100).any():
            loss = loss + F.cross_entropy(intent_logits, intents, ignore_index=-100)
        if (slots != -100).any():
            slot_loss = F.cross_entropy(slot_logits.flatten(0, 1), slots.flatten(), ignore_index=-100)
            loss = loss + self.args.slot_loss_coef * slot_loss
        return loss

    def predict(self, model, items):
        """Intents, per-word tags (None past --max-length) and the joint loss, batched as bert evaluates:
        utterances sorted by length, each batch's mean loss weighted by its size."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        intents, tags, loss = [None] * len(items), [None] * len(items), 0.0
        model.eval()
        with self.torch.no_grad():
            for b in range(0, len(order), self.args.batch_size):
                index = order[b:b + self.args.batch_size]
                ids, mask, intent_ids, slot_ids = self.tensors(items, index)
                intent_logits, slot_logits = model(ids, mask)
                loss += float(self.loss(intent_logits, slot_logits, intent_ids, slot_ids)) * len(index)
                best_intents, best_tags = intent_logits.argmax(-1).tolist(), slot_logits.argmax(-1).tolist()
                for row, i in enumerate(index):
                    intents[i] = self.intents[best_intents[row]]
                    tags[i] = [None if p is None else self.tags[best_tags[row][p]] for p in items[i][3]]
        return intents, tags, loss / len(items)

    def checkpoint(self, out, test):
        """A `bert finetune` output's weights in the reference model, its test predictions."""
        from safetensors.torch import load_file
        model = self.model()
        weights = load_file(os.path.join(out, "model.safetensors"))  # bert.*, intent_classifier.*, ...
        missing = model.load_state_dict(weights, strict=False).missing_keys
        if missing:
            sys.exit(f"{out}: the bert checkpoint lacks {missing[:5]}")
        return self.predict(model, self.encode(test))[:2]

    def train(self, seed, train, dev, test, out):
        torch, args = self.torch, self.args
        from transformers import get_linear_schedule_with_warmup
        torch.manual_seed(seed)
        start = time.perf_counter()
        train_items, dev_items = self.encode(train), self.encode(dev)
        model = self.model()
        no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name  # noqa: E731
        params = list(model.named_parameters())
        optimizer = torch.optim.AdamW(
            [{"params": [p for n, p in params if not no_decay(n)], "weight_decay": args.weight_decay},
             {"params": [p for n, p in params if no_decay(n)], "weight_decay": 0.0}],
            lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        steps = math.ceil(len(train_items) / args.batch_size) * args.epochs
        schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(args.warmup_ratio * steps), steps)
        shuffle = torch.Generator().manual_seed(seed)
        metric = args.metric_for_best.removeprefix("eval_")
        greater = "loss" not in metric  # as bert: lower is better for losses, higher for the rest
        best, history = None, []
        for epoch in range(1, args.epochs + 1):
            model.train()
            order = torch.randperm(len(train_items), generator=shuffle).tolist()
            for b in range(0, len(order), args.batch_size):
                ids, mask, intent_ids, slot_ids = self.tensors(train_items, order[b:b + args.batch_size])
                loss = self.loss(*model(ids, mask), intent_ids, slot_ids)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
            intents, tags, loss = self.predict(model, dev_items)
            metrics = {k: v for k, v in score(dev, intents, tags, drop_missing=True).items() if k[0] != "_"}
            history.append(dict(metrics, loss=loss, epoch=epoch))
            value = history[-1][metric]
            if best is None or (value > best["value"] if greater else value < best["value"]):
                best = {"value": value, "metrics": history[-1]}
                torch.save(model.state_dict(), out + ".best.pt")
            print(f"torch seed {seed} epoch {epoch}: {history[-1]}", file=sys.stderr, flush=True)
        model.load_state_dict(torch.load(out + ".best.pt"))
        intents, tags, _ = self.predict(model, self.encode(test))
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "dev": best["metrics"], "history": history, "intents": intents, "tags": tags}


def run_bert(args, seed, train_path, dev_path, test_path, test, reference):
    bert = os.path.join(ROOT, "target", "release", "bert")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = os.path.join(args.work, f"bert-{seed}")
    if not os.path.exists(out + ".time.json"):
        command = [bert, "finetune", "--task", "intent-slots", "--model", args.model, "--train", train_path,
                   "--eval", dev_path, "--test", test_path, "--out", out, "--overwrite", "--epochs", str(args.epochs),
                   "--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate),
                   "--max-length", str(args.max_length), "--slot-loss-coef", str(args.slot_loss_coef),
                   "--warmup-ratio", str(args.warmup_ratio), "--weight-decay", str(args.weight_decay),
                   "--metric-for-best", args.metric_for_best, "--seed", str(seed), "--log-every", "50",
                   "--save-steps", "0"]  # the best model alone is written, as on the PyTorch side
        start = time.perf_counter()
        sh(command, env=env)
        json.dump({"seconds": time.perf_counter() - start}, open(out + ".time.json", "w"))
    dev = json.load(open(os.path.join(out, "eval_results.json")))
    result = {"seconds": json.load(open(out + ".time.json"))["seconds"],
              "dev": {k: v for k, v in dev.items() if isinstance(v, (int, float))},
              "test": json.load(open(os.path.join(out, "test_results.json")))}
    if reference:
        result["torch_intents"], result["torch_tags"] = reference.checkpoint(out, test)
    return result


def cell(values, percent=True):
    k = 100 if percent else 1
    return f"{k * statistics.mean(values):.2f} ({k * min(values):.2f}..{k * max(values):.2f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="directory holding atis/{train,dev,test}.txt")
    p.add_argument("--model", help="default: $BERT_TEST_MODELS/all-MiniLM-L6-v2")
    p.add_argument("--work", default="/tmp/bert-intent-slots-bench")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--slot-loss-coef", type=float, default=1.0)
    p.add_argument("--warmup-ratio", type=float, default=0.0, help="bert finetune's default")
    p.add_argument("--weight-decay", type=float, default=0.0, help="bert finetune's default")
    p.add_argument("--metric-for-best", default="loss", help="loss (lower is better), intent_accuracy, "
                   "slot_f1 or sentence_accuracy; default: bert finetune's, the dev joint loss")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=0, help="training utterances, a fixed sample (0: all)")
    p.add_argument("--only", choices=["bert", "torch"])
    args = p.parse_args()
    if args.model is None:
        if not os.environ.get("BERT_TEST_MODELS"):
            p.error("give --model, or set BERT_TEST_MODELS to a folder holding all-MiniLM-L6-v2/")
        args.model = os.path.join(os.environ["BERT_TEST_MODELS"], "all-MiniLM-L6-v2")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # bert, and the tokenizers library in this process
    os.makedirs(args.work, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("seeds", "only", "work")}
    settings_path = os.path.join(args.work, "settings.json")
    if os.path.exists(settings_path) and json.load(open(settings_path)) != settings:
        p.error(f"{settings_path} holds other settings: use another --work, or empty it")
    json.dump(settings, open(settings_path, "w"), indent=1)

    atis = os.path.join(args.data, "atis")
    train, dev, test = (read_atis(os.path.join(atis, f"{n}.txt")) for n in ("train", "dev", "test"))
    if args.train_limit:  # a fixed sample, in file order, the same for every seed and both sides
        kept = random.Random(0).sample(range(len(train)), min(args.train_limit, len(train)))
        train = [train[i] for i in sorted(kept)]
    train_path = os.path.join(args.work, "train.txt")
    with open(train_path, "w", encoding="utf-8") as f:
        f.write("".join(" ".join(f"{w}:{t}" for w, t in zip(ws, ts)) + f" <=> {i}\n" for ws, ts, i in train))
    intents, tags = sorted({i for _, _, i in train}), sorted({t for _, ts, _ in train for t in ts})
    unseen = (sum(i not in intents for _, _, i in test), sum(t not in tags for _, ts, _ in test for t in ts))
    sides = [s for s in ("bert", "torch") if args.only in (None, s)]
    reference = Reference(args, intents, tags)

    runs = {}
    for seed in seeds:
        for side in sides:
            path = os.path.join(args.work, f"{side}-{seed}.json")
            if not os.path.exists(path):
                result = (run_bert(args, seed, train_path, os.path.join(atis, "dev.txt"),
                                   os.path.join(atis, "test.txt"), test, reference)
                          if side == "bert" else reference.train(seed, train, dev, test, path[:-5]))
                json.dump(result, open(path, "w"))
            runs[side, seed] = json.load(open(path))
    rows = {}  # (name, seed) -> test metrics, training seconds, best epoch
    for (side, seed), r in runs.items():
        if side == "bert":
            rows["bert", seed] = {k: r["test"][k] for k in METRICS}
            rows["bert", seed].update(seconds=r["seconds"], epoch=r["dev"].get("epoch"), _tags=None)
        predictions = {"bert": [("bert weights, PyTorch scoring", "torch_")],
                       "torch": [("PyTorch reference", "")]}[side]
        for name, prefix in predictions:
            if prefix + "intents" in r:
                m = score(test, r[prefix + "intents"], r[prefix + "tags"], drop_missing=True)
                rows[name, seed] = dict(m, seconds=r["seconds"], epoch=r["dev"].get("epoch"))
    for m in rows.values():
        del m["_tags"]

    print(f"\nATIS, {os.path.basename(args.model.rstrip('/'))}: {len(train)} train, {len(dev)} dev, {len(test)} "
          f"test utterances ({unseen[0]} test intents, {unseen[1]} test tags unseen in training); {args.epochs} "
          f"epochs, batch {args.batch_size}, lr {args.learning_rate}, max length {args.max_length}, slot loss x "
          f"{args.slot_loss_coef}, best epoch by dev {args.metric_for_best}, {args.threads} threads\n")
    print("| model | seed | intent acc | slot P | slot R | slot F1 | sentence acc | best epoch | train s |")
    print("| --- " * 9 + "|")
    order = ["bert", "bert weights, PyTorch scoring", "PyTorch reference"]
    rows = dict(sorted(rows.items(), key=lambda item: (order.index(item[0][0]), item[0][1])))
    for (name, seed), m in rows.items():
        scores = " | ".join(f"{100 * m[k]:.2f}" for k in METRICS)
        print(f"| {name} | {seed} | {scores} | {m['epoch']} | {m['seconds']:.0f} |")
    by_name = {}
    for (name, _), m in rows.items():
        by_name.setdefault(name, []).append(m)
    print("\nmean (min..max) over seeds\n\n| model | " + " | ".join(METRICS) + " | train s |")
    print("| --- " * (len(METRICS) + 2) + "|")
    for name, ms in by_name.items():
        scores = " | ".join(cell([m[k] for m in ms]) for k in METRICS)
        print(f"| {name} | {scores} | {cell([m['seconds'] for m in ms], percent=False)} |")
    print("| Chen et al. 2019, BERT-base (paper) | " + " | ".join(str(PAPER.get(k, "")) for k in METRICS) + " | |")
    summary = {}
    if len(sides) == 2:
        ratios = [runs["bert", s]["seconds"] / runs["torch", s]["seconds"] for s in seeds]
        summary["time_ratio_median"] = statistics.median(ratios)
        print(f"\ntraining time bert / PyTorch (median over seeds): {summary['time_ratio_median']:.2f}x")
        reference_rows = by_name["PyTorch reference"]
        spread = {k: (min(m[k] for m in reference_rows), max(m[k] for m in reference_rows)) for k in METRICS}
        for name in [n for n in by_name if n.startswith("bert")]:
            means = {k: statistics.mean(m[k] for m in by_name[name]) for k in METRICS}
            where = {k: "below" if means[k] < spread[k][0] else "above" if means[k] > spread[k][1] else "within"
                     for k in METRICS}
            summary[name + ": mean against the PyTorch seed range"] = where
            print(f"{name}, mean against the PyTorch seed range (min..max): "
                  + ", ".join(f"{k} {w}" for k, w in where.items()))
    results = {"args": vars(args), "unseen_test_intents": unseen[0], "unseen_test_tags": unseen[1],
               "rows": [dict(m, model=n, seed=s) for (n, s), m in rows.items()], "summary": summary,
               "dev": {f"{side}-{seed}": r["dev"] for (side, seed), r in runs.items()}, "paper": PAPER}
    json.dump(results, open(os.path.join(args.work, "results.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
