#!/usr/bin/env bash
# Load benchmark for `bert serve` (loopback only): 1, 8 and 64 concurrent clients sending one-text
# /embed requests, against `bert embed` in one process, then the server's RSS over a long run.
#
#   bench/serve_load.sh MODEL [TEXTS_FILE]
#
# MODEL is a checkpoint directory or a Hub id, e.g. $BERT_TEST_MODELS/all-MiniLM-L6-v2 or
# sentence-transformers/all-MiniLM-L6-v2. TEXTS_FILE has one text per line; by default
# the Rotten Tomatoes test snippets (scripts/datasets.sh DIR sentiment, text column). REQUESTS (2000
# per client count and round), ROUNDS (3 alternating server/CLI rounds for the ratio), FLAT (100000
# requests for the memory run) and SECONDS_PER_PHASE (300) bound it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ -z "$1" ]; then
    echo "usage: bench/serve_load.sh MODEL [TEXTS_FILE]   (MODEL: a checkpoint directory or a Hub id," >&2
    echo "       e.g. \$BERT_TEST_MODELS/all-MiniLM-L6-v2)" >&2
    exit 2
fi
MODEL=$1
TEXTS=${2:-}
if [ -z "$TEXTS" ]; then
    DATA=${DATA:-/tmp/bert-bench-data}
    [ -f "$DATA/sentiment_rt_test.csv" ] || scripts/datasets.sh "$DATA" sentiment
    TEXTS=$DATA/rt_test_texts.txt
    python3 -c 'import csv,sys; [print(r["text"].replace("\n"," ")) for r in csv.DictReader(open(sys.argv[1]))]' \
        "$DATA/sentiment_rt_test.csv" > "$TEXTS"
fi
cargo build --release -p bert-cli
cargo build --release -p bert-server --example load
target/release/examples/load --bert target/release/bert --model "$MODEL" --texts "$TEXTS" \
    --requests "${REQUESTS:-2000}" --rounds "${ROUNDS:-3}" --flat "${FLAT:-100000}" \
    --seconds "${SECONDS_PER_PHASE:-300}"
