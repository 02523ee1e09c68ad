#!/usr/bin/env python3
"""Retrieval quality of `bert search` on real text: SQuAD v1.1 dev articles as the documents, their
questions as the queries, and the passage holding a question's answer as the relevant one.

Each article becomes one Markdown file (its paragraphs separated by blank lines); a query counts as
answered at rank r if the r-th hit is in the article's file and its byte range holds the first
character of the answer. Prints recall@10 and MRR@10 for each model in dense mode, BM25 alone, and
hybrid, as a Markdown table.

    python3 bench/search_quality.py SQUAD_DEV_JSON [--queries 1000] [--models DIR ...]

SQUAD_DEV_JSON: dev-v1.1.json from `scripts/datasets.sh DIR qa`. Models default to the bundled model
and, when BERT_TEST_MODELS is set, $BERT_TEST_MODELS/all-MiniLM-L6-v2. Needs target/release/bert
(cargo build --release).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

BERT = os.path.join(os.path.dirname(__file__), "..", "target", "release", "bert")


def corpus(squad, out):
    """Writes one file per article; returns [(question, file, answer_byte)]."""
    queries = []
    for article in squad["data"]:
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", article["title"]) + ".md"
        path = os.path.realpath(os.path.join(out, name))
        parts, offset = [], 0
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                start = qa["answers"][0]["answer_start"]
                answer_byte = offset + len(context[:start].encode("utf-8"))
                queries.append((qa["question"], path, answer_byte))
            parts.append(context)
            offset += len(context.encode("utf-8")) + 2  # the blank line between paragraphs
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(parts))
    return queries


def run(args, stdin=None):
    done = subprocess.run([BERT, *args], input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bert {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def score(queries, output, k=10):
    hits = {}
    for line in output.splitlines():
        hit = json.loads(line)
        hits.setdefault(hit["query"], []).append(hit)
    recall, reciprocal = 0, 0.0
    for question, path, answer_byte in queries:
        for rank, hit in enumerate(hits.get(question, [])[:k], start=1):
            if hit["file"] == path and hit["start"] <= answer_byte < hit["end"]:
                recall += 1
                reciprocal += 1 / rank
                break
    return recall / len(queries), reciprocal / len(queries)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("squad")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    here = os.path.dirname(os.path.abspath(__file__))
    default_models = [os.path.join(here, "..", "models", "minilm-l3-en-fr")]
    if os.environ.get("BERT_TEST_MODELS"):
        default_models.append(os.path.join(os.environ["BERT_TEST_MODELS"], "all-MiniLM-L6-v2"))
    parser.add_argument("--models", nargs="+", default=default_models,
                        help="directories or Hub ids (default: the bundled model and "
                             "$BERT_TEST_MODELS/all-MiniLM-L6-v2 if set)")
    args = parser.parse_args()

    squad = json.load(open(args.squad, encoding="utf-8"))
    work = tempfile.mkdtemp(prefix="bert-search-quality-")
    docs = os.path.join(work, "docs")
    os.makedirs(docs)
    queries = corpus(squad, docs)
    # One question per distinct text, sampled reproducibly.
    unique = {q[0]: q for q in queries}
    queries = sorted(unique.values())
    random.Random(args.seed).shuffle(queries)
    queries = queries[: args.queries]
    stdin = "".join(q[0].replace("\n", " ") + "\n" for q in queries)
    size = sum(os.path.getsize(os.path.join(docs, f)) for f in os.listdir(docs))
    print(f"{len(os.listdir(docs))} articles ({size / 1e6:.1f} MB), {len(queries)} questions\n")

    rows = []
    for i, model in enumerate(args.models):
        index = os.path.join(work, f"index-{i}")
        started = time.time()
        run(["index", "--model", model, "--out", index, docs])
        seconds = time.time() - started
        passages = json.load(open(os.path.join(index, "index.json")))["rows"]
        name = os.path.basename(os.path.normpath(model))
        modes = ["dense", "hybrid"] + (["bm25"] if i == 0 else [])
        for mode in modes:
            started = time.time()
            out = run(["search", "--index", index, "--top-k", "10", "--mode", mode], stdin)
            per_query = (time.time() - started) / len(queries) * 1e3
            r, mrr = score(queries, out)
            label = "BM25 (tantivy)" if mode == "bm25" else f"{name}, {mode}"
            rows.append((label, r, mrr, passages, seconds, per_query))
    print("| ranking | recall@10 | MRR@10 | passages | index time s | ms/query (incl. start-up) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r, mrr, passages, seconds, per_query in rows:
        print(f"| {label} | {r:.3f} | {mrr:.3f} | {passages} | {seconds:.0f} | {per_query:.1f} |")


if __name__ == "__main__":
    main()
