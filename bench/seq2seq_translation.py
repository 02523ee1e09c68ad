#!/usr/bin/env python3
"""English -> French translation with BERT2BERT, `bert` beside transformers, one run.

    scripts/datasets.sh DATA bible && pip install torch transformers accelerate sacrebleu
    python bench/seq2seq_translation.py --data DATA [--work DIR] [--threads 2] [--pairs 12000]
        [--pretrain-steps 4000] [--pretrain-length 64] [--epochs 3] [--test 0] [--torch-seeds 42,43,44] [--repeat 3]

1. A shared English+French WordPiece vocabulary (`bert vocab`, cased) and a small bilingual BERT pretrained
   on the training chapters (`bert pretrain`, masked LM + next sentence).
2. BERT2BERT warm-started from it, fine-tuned on the first --pairs training verses with
   `bert finetune --task seq2seq`, and with transformers' Seq2SeqTrainer (EncoderDecoderModel from the same
   checkpoint; same hyper-parameters, seed, thread count; once per --torch-seeds seed for the spread).
3. The same encoder-decoder randomly initialised, trained by `bert` the same way: what warm-starting adds.
4. The held-out test chapters translated with beam search (4 beams) by each model: BLEU and chrF
   (`bert score`, equal to sacreBLEU), BERTScore F1 (`bert score --metric bertscore` with the pretrained
   bilingual BERT, its last layer), and beam-search throughput of `bert generate` against transformers'
   `generate()` on the same fine-tuned checkpoint.

Prints a Markdown table and writes WORK/results.json. Steps whose output exists are not run again.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HYPER = dict(batch=32, lr=5e-4, warmup=0.1, decay=0.01, smoothing=0.1, max_len=64, beams=4)


def sh(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def lines(path, n=None):
    with open(path, encoding="utf-8") as f:
        out = [l.rstrip("\n") for l in f]
    return out[:n] if n else out


def write_lines(path, items):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(i + "\n" for i in items))


def pretrain(args, bert, work):
    tok, model = os.path.join(work, "tokenizer"), os.path.join(work, "pretrained")
    corpus = os.path.join(args.data, "bible", "pretrain.txt")
    if not os.path.exists(os.path.join(tok, "vocab.txt")):
        sh([bert, "vocab", corpus, "--out", tok, "--vocab-size", str(args.vocab)])
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        sh([bert, "pretrain", corpus, "--tokenizer", tok, "--size", args.size, "--max-seq-length",
            str(args.pretrain_length), "--max-steps", str(args.pretrain_steps), "--batch-size", "32",
            "--learning-rate", str(args.pretrain_lr),
            "--warmup-ratio", "0.05", "--eval-documents", "0", "--seed", "1", "--out", model, "--overwrite"])
    return model


def bert_finetune(args, bert, start, out, train_src, train_tgt, random_init=False):
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return json.load(open(out + ".time.json"))["seconds"]
    cmd = [bert, "finetune", "--task", "seq2seq", "--model", start, "--train", train_src,
           "--train-target", train_tgt, "--output-dir", out, "--overwrite-output-dir",
           "--num-train-epochs", str(args.epochs), "--per-device-train-batch-size", str(HYPER["batch"]),
           "--learning-rate", str(HYPER["lr"]), "--warmup-ratio", str(HYPER["warmup"]),
           "--weight-decay", str(HYPER["decay"]), "--label-smoothing-factor", str(HYPER["smoothing"]),
           "--max-length", str(HYPER["max_len"]), "--max-target-length", str(HYPER["max_len"]),
           "--seed", "42", "--logging-steps", "50"]
    began = time.perf_counter()
    sh(cmd)
    seconds = time.perf_counter() - began
    json.dump({"seconds": seconds}, open(out + ".time.json", "w"))
    return seconds


def random_start(start, out):
    """A checkpoint of the pretrained model's size and vocabulary whose weights are freshly initialised
    (transformers' initialisation): the encoder-decoder warm-started from it starts from nothing."""
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return out
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast
    import torch
    torch.manual_seed(7)
    BertForPreTraining(BertConfig.from_pretrained(start)).save_pretrained(out)
    BertTokenizerFast.from_pretrained(start).save_pretrained(out)
    return out


def torch_finetune(args, start, out, sources, targets, seed):
    if os.path.exists(os.path.join(out, "model.safetensors")):
        return json.load(open(out + ".time.json"))["seconds"]
    import torch
    from transformers import (BertTokenizerFast, DataCollatorForSeq2Seq, EncoderDecoderModel,
                              Seq2SeqTrainer, Seq2SeqTrainingArguments)
    torch.set_num_threads(args.threads)
    tok = BertTokenizerFast.from_pretrained(start)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(start, start)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tok.cls_token_id
        config.pad_token_id = tok.pad_token_id
        config.eos_token_id = tok.sep_token_id

    class Pairs(torch.utils.data.Dataset):
        def __init__(self):
            src = tok(sources, max_length=HYPER["max_len"], truncation=True)
            tgt = tok(targets, max_length=HYPER["max_len"], truncation=True)
            self.items = [{"input_ids": s, "attention_mask": m, "labels": t[1:]}
                          for s, m, t in zip(src["input_ids"], src["attention_mask"], tgt["input_ids"])]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            return self.items[i]

    training = Seq2SeqTrainingArguments(
        output_dir=out + ".trainer", per_device_train_batch_size=HYPER["batch"], learning_rate=HYPER["lr"],
        warmup_steps=HYPER["warmup"], weight_decay=HYPER["decay"], label_smoothing_factor=HYPER["smoothing"],
        num_train_epochs=args.epochs, seed=seed, save_strategy="no", eval_strategy="no", logging_steps=50,
        report_to=[], use_cpu=True, dataloader_num_workers=0, lr_scheduler_type="linear")
    trainer = Seq2SeqTrainer(model=model, args=training, train_dataset=Pairs(),
                             data_collator=DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100))
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    model.save_pretrained(out)
    tok.save_pretrained(out)
    json.dump({"seconds": seconds}, open(out + ".time.json", "w"))
    return seconds


def bert_translate(bert, model, sources, out):
    """Beam-search translations by `bert generate`, and the seconds it took (loading included)."""
    began = time.perf_counter()
    done = sh([bert, "generate", "--model", model, "--num-beams", str(HYPER["beams"]), "--max-new-tokens",
               str(HYPER["max_len"]), "--batch-size", "32", "--max-length", str(HYPER["max_len"])],
              input="".join(s + "\n" for s in sources), capture_output=True, text=True)
    seconds = time.perf_counter() - began
    texts = [json.loads(l)["generated_text"] for l in done.stdout.splitlines()]
    write_lines(out, texts)
    return seconds


def torch_translate(args, model_dir, sources, out):
    import torch
    from transformers import BertTokenizerFast, EncoderDecoderModel
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    tok = BertTokenizerFast.from_pretrained(model_dir)
    model = EncoderDecoderModel.from_pretrained(model_dir).eval()
    texts = []
    with torch.no_grad():
        for i in range(0, len(sources), 32):
            batch = tok(sources[i:i + 32], padding=True, truncation=True, max_length=HYPER["max_len"],
                        return_tensors="pt")
            ids = model.generate(**batch, num_beams=HYPER["beams"], max_new_tokens=HYPER["max_len"])
            texts += tok.batch_decode(ids, skip_special_tokens=True)
    seconds = time.perf_counter() - began
    write_lines(out, texts)
    return seconds


def scores(bert, bertscore_model, predictions, references):
    out = {}
    for metric in ["bleu", "chrf"]:
        done = sh([bert, "score", "--metric", metric, "--references", references, "--predictions", predictions],
                  capture_output=True, text=True)
        out[metric] = json.loads(done.stdout)["score"]
    done = sh([bert, "score", "--metric", "bertscore", "--model", bertscore_model, "--references", references,
               "--predictions", predictions], capture_output=True, text=True)
    out["bertscore_f1"] = json.loads(done.stdout)["f1"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--work", default="/tmp/bert-seq2seq-bench")
    p.add_argument("--bert", default=os.path.join(ROOT, "target", "release", "bert"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="tiny")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--pairs", type=int, default=12000)
    p.add_argument("--test", type=int, default=0, help="test verses translated (0: all)")
    p.add_argument("--pretrain-steps", type=int, default=4000)
    p.add_argument("--pretrain-length", type=int, default=64, help="tokens per pretraining sequence")
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--torch-seeds", default="42,43,44")
    p.add_argument("--repeat", type=int, default=3, help="beam-search timing runs per side (median reported)")
    args = p.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    work = args.work
    os.makedirs(work, exist_ok=True)
    bible = os.path.join(args.data, "bible")
    train_src, train_tgt = os.path.join(work, "train.en"), os.path.join(work, "train.fr")
    write_lines(train_src, lines(os.path.join(bible, "train.en"), args.pairs))
    write_lines(train_tgt, lines(os.path.join(bible, "train.fr"), args.pairs))
    test_src, test_ref = lines(os.path.join(bible, "test.en"), args.test), os.path.join(work, "test.fr")
    write_lines(test_ref, lines(os.path.join(bible, "test.fr"), args.test))

    pretrained = pretrain(args, args.bert, work)
    rows = {}
    seconds = bert_finetune(args, args.bert, pretrained, os.path.join(work, "bert"), train_src, train_tgt)
    rows["bert, warm-started"] = {"train_seconds": seconds, "model": os.path.join(work, "bert")}
    scratch = random_start(pretrained, os.path.join(work, "random-start"))
    seconds = bert_finetune(args, args.bert, scratch, os.path.join(work, "bert-random"), train_src, train_tgt)
    rows["bert, random init"] = {"train_seconds": seconds, "model": os.path.join(work, "bert-random")}
    sources, targets = lines(train_src), lines(train_tgt)
    for seed in [int(s) for s in args.torch_seeds.split(",")]:
        out = os.path.join(work, f"torch-{seed}")
        seconds = torch_finetune(args, pretrained, out, sources, targets, seed)
        rows[f"transformers, warm-started, seed {seed}"] = {"train_seconds": seconds, "model": out}

    for name, row in rows.items():
        predictions = os.path.join(row["model"] + ".test.fr")
        row["generate_seconds"] = bert_translate(args.bert, row["model"], test_src, predictions)
        row.update(scores(args.bert, pretrained, predictions, test_ref))
    # Beam-search throughput on one checkpoint, both implementations, alternating; medians.
    ours = rows["bert, warm-started"]
    theirs_file = os.path.join(work, "bert.test.torch.fr")
    ours_file = os.path.join(work, "bert.test.again.fr")
    bert_runs, torch_runs = [ours["generate_seconds"]], []
    for run in range(args.repeat):
        torch_runs.append(torch_translate(args, ours["model"], test_src, theirs_file))
        if run > 0:
            bert_runs.append(bert_translate(args.bert, ours["model"], test_src, ours_file))
    bert_seconds, torch_seconds = statistics.median(bert_runs), statistics.median(torch_runs)
    same = sum(a == b for a, b in zip(lines(theirs_file), lines(ours["model"] + ".test.fr")))
    throughput = {"sentences": len(test_src), "bert_seconds": bert_seconds, "transformers_seconds": torch_seconds,
                  "bert_runs": bert_runs, "transformers_runs": torch_runs,
                  "speedup": torch_seconds / bert_seconds, "identical_outputs": same}
    torch_rows = [r for n, r in rows.items() if n.startswith("transformers")]
    json.dump({"rows": rows, "throughput": throughput, "hyper": HYPER, "args": vars(args)},
              open(os.path.join(work, "results.json"), "w"), indent=1)
    print(f"\n{args.pairs} training pairs, {args.epochs} epochs, {len(test_src)} test verses, beam {HYPER['beams']}, "
          f"{args.threads} threads\n")
    print("| model | train s | test BLEU | chrF | BERTScore F1 |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['train_seconds']:.0f} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['bertscore_f1']:.4f} |")
    ratio = rows["bert, warm-started"]["train_seconds"] / min(r["train_seconds"] for r in torch_rows)
    print(f"\ntraining time, bert / transformers: {ratio:.2f}x")
    print(f"beam search ({len(test_src)} sentences, beam {HYPER['beams']}, median of {args.repeat}): "
          f"bert {bert_seconds:.1f} s, "
          f"transformers {torch_seconds:.1f} s: {throughput['speedup']:.2f}x; identical outputs "
          f"{same}/{len(test_src)}")


if __name__ == "__main__":
    main()
