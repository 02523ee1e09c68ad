#!/usr/bin/env bash
# Writes the King James Bible (public domain) as a pretraining corpus: one verse per line, a blank line
# between chapters (each chapter one document). Source: Debian's bible-kjv-text package, read with its
# `bible` program (`apt-get install bible-kjv`).
#   scripts/kjv_corpus.sh OUT.txt
set -euo pipefail
out=${1:?usage: kjv_corpus.sh OUT.txt}
command -v bible >/dev/null || { echo "needs the bible program: apt-get install bible-kjv" >&2; exit 1; }
bible -l 100000 "Gen1:1-Rev22:21" | awk '
  /^[A-Z1-9][A-Za-z ]* [0-9]+$/ { if (started) print ""; started = 1; next }  # a chapter heading
  /^ *[0-9]+ / { sub(/^ *[0-9]+ /, ""); print; next }                          # a verse
' > "$out"
echo "wrote $(grep -c . "$out") verses in $(grep -c '^$' "$out") chapter breaks to $out" >&2
