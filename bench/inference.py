#!/usr/bin/env python3
"""Inference speed, side by side: `bert` (this toolkit) against PyTorch (transformers) and ONNX Runtime
(with its BERT fusions), on the same random BERT-base weights, the same shapes and the same thread count,
in one run, in each number format: f32 (bert, PyTorch, ONNX Runtime), bf16 (bert --dtype bf16, PyTorch
under bf16 autocast) and int8 (bert --dtype int8, ONNX Runtime's dynamic quantization of the fused
model). Each engine warms up for at least the given runs and 0.5 s. Prints median milliseconds per forward, sequences per second, GFLOP/s and each reference's
ratio to bert in the same format; then, given a text file, end-to-end embedding throughput
(tokenization included) on all-MiniLM-L6-v2 against sentence-transformers, with each format's cosine
to bert's f32 embeddings, and, given a fine-tuned classifier, each format's label agreement with f32.

    python bench/inference.py [--threads 2] [--shapes 1x16,32x128,8x512] [--dtypes f32,bf16,int8]
        [--texts FILE [--minilm DIR] [--classifier DIR]] [--cli]

--cli adds `bert embed` (the command line, end to end) on the same BERT-base: whole processes over 32
and 160 inputs of 128 tokens (so that start-up and loading cancel in the difference), against ONNX
Runtime's fused model run over the same token ids in batches of 32, with the cosine of bert's mean
pooled vectors to ONNX Runtime's.

--minilm (all-MiniLM-L6-v2, for the end-to-end run) defaults to $BERT_TEST_MODELS/all-MiniLM-L6-v2.

Needs torch, transformers, onnxruntime, onnx (and sentence-transformers for --texts) in the Python
environment, and `cargo build --release -p bert --example forward_bench -p bert-cli`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FORWARD_BENCH = os.path.join(ROOT, "target", "release", "examples", "forward_bench")
BERT = os.path.join(ROOT, "target", "release", "bert")


def flops(config, batch, seq):
    """Multiply-adds x 2 of one encoder forward: the projections and FFN (24 h^2 per token and layer)
    and the attention products (4 S h per token and layer)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    per_token = 2 * (4 * h * h + 2 * h * config.intermediate_size) + 4 * seq * h
    return layers * batch * seq * per_token


# Warm-up runs go on until this much time has passed as well: a process whose load is short starts on a
# CPU that has been idle, and a VM may then run it up to twice as slowly for ~0.1 s (measured on a 2-core
# VM with a spin loop before the first run). Every engine warms up by the same rule (forward_bench too).
WARMUP_SECONDS = 0.5


def median_ms(run, iters, warmup):
    started = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - started < WARMUP_SECONDS:
        run()
        done += 1
    times = []
    for _ in range(iters):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def make_model(directory):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads, 3072 FFN
    model = BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(directory)
    return config, model


def ids_for(batch, seq, vocab):
    import torch

    generator = torch.Generator().manual_seed(batch * 1000 + seq)
    return torch.randint(1000, vocab, (batch, seq), generator=generator)


def run_bert(directory, batch, seq, iters, warmup, threads, dtype):
    # The cache (aligned copy, converted layers) goes with the model, into the run's temporary directory.
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), BERT_CACHE=os.path.join(directory, "cache"))
    out = subprocess.run([FORWARD_BENCH, directory, str(batch), str(seq), str(iters), str(warmup), dtype],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"forward_bench failed: {out.stderr}")
    return json.loads(out.stdout)


def run_torch(model, ids, iters, warmup, bf16=False):
    import torch

    mask = torch.ones_like(ids)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return median_ms(lambda: model(input_ids=ids, attention_mask=mask), iters, warmup)


def onnx_session(model, directory, config, threads):
    import torch
    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    class Encoder(torch.nn.Module):
        """The model with positional inputs and one output, as the exporter traces it."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    path = os.path.join(directory, "model.onnx")
    ids = torch.ones((1, 16), dtype=torch.long)
    torch.onnx.export(Encoder(model), (ids, torch.ones_like(ids)), path, input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}})
    optimized = optimizer.optimize_model(path, model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    fused = os.path.join(directory, "model-fused.onnx")
    optimized.save_model_to_file(fused)
    return ort_session(fused, threads)


def ort_session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_int8_session(directory, threads):
    """ONNX Runtime's dynamic quantization (int8 weights, activations quantized per call) of the fused
    model, as its BERT guide does it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = os.path.join(directory, "model-fused-int8.onnx")
    import onnx

    # The fused graph's contrib ops defeat shape inference; their outputs are f32.
    quantize_dynamic(os.path.join(directory, "model-fused.onnx"), quantized, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return ort_session(quantized, threads)


def run_onnx(session, ids, iters, warmup):
    feed = {"input_ids": ids.numpy(), "attention_mask": ids.new_ones(ids.shape).numpy()}
    return median_ms(lambda: session.run(None, feed), iters, warmup)


def run_cli(command, model_dir, texts, threads, dtype, runs=3):
    """The median seconds of `runs` timed runs after one untimed run (sentence-transformers is timed
    after a warm-up encode too; the first `bert` load of a checkpoint also writes its cache)."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    times = []
    for run in range(runs + 1):
        started = time.perf_counter()
        out = subprocess.run([BERT, command, "--model", model_dir, "--batch-size", "32", "--dtype", dtype],
                             input="\n".join(texts) + "\n", capture_output=True, text=True, env=env)
        if run > 0:
            times.append(time.perf_counter() - started)
        if out.returncode != 0:
            sys.exit(out.stderr)
    return statistics.median(times), [json.loads(line) for line in out.stdout.splitlines()]


def write_vocabulary(directory, size):
    """A WordPiece vocabulary of `size` entries in BERT's layout (`[PAD]` 0, `[UNK]` 100, `[CLS]` 101,
    `[SEP]` 102, `[MASK]` 103), whole words `w0`, `w1`, ... after them; the words it holds."""
    specials = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(size - len(specials))]
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(specials + words) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512}, f)
    return words


def cli_end_to_end(directory, config, session, threads, runs=3):
    """`bert embed` f32 over whole processes of 32 and 160 inputs of 128 tokens, alternating, `runs`
    of each: sequences/s from the difference of the medians; ONNX Runtime over the same ids."""
    import random

    import numpy as np

    words = write_vocabulary(directory, config.vocab_size)
    rng = random.Random(0)
    chosen = [[rng.randrange(len(words)) for _ in range(126)] for _ in range(160)]
    texts = [" ".join(words[i] for i in row) for row in chosen]
    ids = np.array([[101] + [104 + i for i in row] + [102] for row in chosen], dtype=np.int64)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), BERT_CACHE=os.path.join(directory, "cache"))

    def embed(count):
        started = time.perf_counter()
        out = subprocess.run([BERT, "embed", "--model", directory, "--batch-size", "32", "--pooling", "mean",
                              "--no-normalize"], input="\n".join(texts[:count]) + "\n", capture_output=True,
                             text=True, env=env)
        if out.returncode != 0:
            sys.exit(out.stderr)
        return time.perf_counter() - started, [json.loads(line)["embedding"] for line in out.stdout.splitlines()]

    embed(32)  # the first load writes the cache
    small, large = [], []
    for _ in range(runs):
        small.append(embed(32)[0])
        seconds, vectors = embed(160)
        large.append(seconds)
    bert_rate = 128 / (statistics.median(large) - statistics.median(small))
    batches = [ids[i:i + 32] for i in range(0, 160, 32)]
    feed = lambda b: {"input_ids": b, "attention_mask": np.ones_like(b)}
    session.run(None, feed(batches[0]))
    times, pooled = [], []
    for batch in batches:
        started = time.perf_counter()
        hidden = session.run(None, feed(batch))[0]
        times.append(time.perf_counter() - started)
        pooled.extend(hidden.mean(axis=1).tolist())
    ort_rate = 32 / statistics.median(times)
    cosines = [cosine(a, b) for a, b in zip(vectors, pooled)]
    print(f"\nbert embed (the command line, end to end) on BERT-base f32, 128 tokens per input, batch 32, "
          f"{threads} threads: whole processes of 32 and 160 inputs, median of {runs} each "
          f"({statistics.median(small):.2f} s and {statistics.median(large):.2f} s)")
    print("| engine | sequences/s | ratio to ONNX Runtime |\n| --- | --- | --- |")
    print(f"| bert embed | {bert_rate:.2f} | {bert_rate / ort_rate:.2f}x |")
    print(f"| ONNX Runtime (fused), median of 5 batches of 32 | {ort_rate:.2f} | 1.00x |")
    print(f"cosine of bert's mean-pooled vectors to ONNX Runtime's: worst {min(cosines):.6f}")


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)


def end_to_end(texts_path, model_dir, threads, dtypes):
    from sentence_transformers import SentenceTransformer

    texts = [t for t in open(texts_path, encoding="utf-8").read().splitlines() if t.strip()][:1000]
    runs = {dtype: run_cli("embed", model_dir, texts, threads, dtype) for dtype in dtypes}
    st = SentenceTransformer(model_dir, device="cpu")
    st.encode(texts[:32])
    started = time.perf_counter()
    st.encode(texts, batch_size=32)
    st_s = time.perf_counter() - started
    print(f"\nEnd to end, all-MiniLM-L6-v2, {len(texts)} texts, batch 32, tokenization included "
          f"(bert: median of 3 runs after one, process start and model load included):")
    print("| engine | texts/s | ratio to bert f32 | cosine to bert f32: mean | worst |\n| --- | --- | --- | --- | --- |")
    base_s, base = runs.get("f32", (None, None))
    for dtype, (seconds, rows) in runs.items():
        cosines = [cosine(r["embedding"], b["embedding"]) for r, b in zip(rows, base)] if base else []
        quality = (f"{statistics.mean(cosines):.5f} | {min(cosines):.5f}" if cosines else "- | -")
        ratio = f"{base_s / seconds:.2f}" if base_s else "-"
        print(f"| bert embed --dtype {dtype} | {len(texts) / seconds:.1f} | {ratio} | {quality} |")
    ratio = f"{base_s / st_s:.2f}" if base_s else "-"
    print(f"| sentence-transformers (f32) | {len(texts) / st_s:.1f} | {ratio} | - | - |")


def agreement(texts_path, classifier, threads, dtypes):
    texts = [t for t in open(texts_path, encoding="utf-8").read().splitlines() if t.strip()][:1000]
    runs = {dtype: run_cli("classify", classifier, texts, threads, dtype) for dtype in dtypes}
    base = [r["label"] for r in runs["f32"][1]]
    print(f"\nClassification, {classifier}, {len(texts)} texts: labels equal to f32's")
    print("| dtype | texts/s | agreement with f32 |\n| --- | --- | --- |")
    for dtype, (seconds, rows) in runs.items():
        same = sum(r["label"] == b for r, b in zip(rows, base))
        print(f"| {dtype} | {len(texts) / seconds:.1f} | {same / len(base):.2%} ({same}/{len(base)}) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", default="1x16,32x128,8x512")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--dtypes", default="f32,bf16,int8", help="number formats to run")
    parser.add_argument("--texts", help="a file of texts, one per line, for the end-to-end embedding run")
    parser.add_argument("--minilm", help="all-MiniLM-L6-v2 for the --texts run; default: "
                        "$BERT_TEST_MODELS/all-MiniLM-L6-v2")
    parser.add_argument("--cli", action="store_true", help="also `bert embed` end to end on BERT-base against "
                        "ONNX Runtime (f32)")
    parser.add_argument("--classifier", help="a fine-tuned classification checkpoint: with --texts, each "
                        "format's label agreement with f32")
    args = parser.parse_args()
    if args.texts and args.minilm is None:
        if not os.environ.get("BERT_TEST_MODELS"):
            parser.error("--texts needs --minilm DIR, or BERT_TEST_MODELS set to a folder holding all-MiniLM-L6-v2/")
        args.minilm = os.path.join(os.environ["BERT_TEST_MODELS"], "all-MiniLM-L6-v2")

    import torch

    torch.set_num_threads(args.threads)
    directory = tempfile.mkdtemp(prefix="bert-inference-")
    config, model = make_model(directory)
    dtypes = args.dtypes.split(",")
    session = None if args.skip_onnx else onnx_session(model, directory, config, args.threads)
    int8_session = None if args.skip_onnx or "int8" not in dtypes else onnx_int8_session(directory, args.threads)
    print(f"BERT-base, random weights, {args.threads} threads; median of {args.iters} runs after "
          f"{args.warmup} warm-up runs (and at least {WARMUP_SECONDS} s of them)\n")
    print("| shape | dtype | engine | ms | seq/s | GFLOP/s | its ms / bert ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    loads, peaks = {}, []
    # The first load of a transformers-written checkpoint writes its aligned copy (f32) or its converted
    # layers (bf16, int8) into the cache (see docs/speed.md); measured apart, as every later load maps them.
    first = {dtype: run_bert(directory, 1, 16, 1, 0, args.threads, dtype) for dtype in dtypes}
    for shape in args.shapes.split(","):
        batch, seq = map(int, shape.split("x"))
        ids = ids_for(batch, seq, config.vocab_size)
        gflop = flops(config, batch, seq) / 1e9
        for dtype in dtypes:
            measured = run_bert(directory, batch, seq, args.iters, args.warmup, args.threads, dtype)
            loads.setdefault(dtype, []).append(measured["load_ms"])
            peaks.append((f"{shape} {dtype}", measured["peak_rss_mb"]))
            results = [("bert", measured["median_ms"])]
            if dtype == "f32":
                results.append(("PyTorch", run_torch(model, ids, args.iters, args.warmup)))
                if session is not None:
                    results.append(("ONNX Runtime (fused)", run_onnx(session, ids, args.iters, args.warmup)))
            elif dtype == "bf16":
                results.append(("PyTorch (bf16 autocast)", run_torch(model, ids, args.iters, args.warmup, bf16=True)))
            elif dtype == "int8" and int8_session is not None:
                results.append(("ONNX Runtime (fused, int8 dynamic)", run_onnx(int8_session, ids, args.iters,
                                                                               args.warmup)))
            ours = results[0][1]
            for engine, ms in results:
                print(f"| {shape} | {dtype} | {engine} | {ms:.1f} | {batch / ms * 1e3:.2f} | {gflop / ms * 1e3:.0f} | "
                      f"{ms / ours:.2f}x |")
    weights_mb = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)
                     if f.endswith(".safetensors")) / 2**20
    print("\nbert: first load, writing the cache (f32: the aligned copy; bf16, int8: the converted layers): "
          + ", ".join(f"{d} {m['load_ms']:.0f} ms (peak RSS {m['peak_rss_mb']:.0f} MiB)" for d, m in first.items()))
    print(f"\nbert: model load (median over its runs) "
          + ", ".join(f"{d} {statistics.median(ms):.0f} ms" for d, ms in loads.items())
          + f"; weights {weights_mb:.0f} MiB; peak RSS "
          + ", ".join(f"{s} {mb:.0f} MiB" for s, mb in peaks))
    if args.cli and session is not None:
        cli_end_to_end(directory, config, session, args.threads)
    if args.texts:
        end_to_end(args.texts, args.minilm, args.threads, dtypes)
        if args.classifier:
            agreement(args.texts, args.classifier, args.threads, dtypes)


if __name__ == "__main__":
    main()
