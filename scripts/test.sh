#!/usr/bin/env bash
# The test command: installs what is missing (scripts/setup.sh), then runs every test of the
# workspace with the mpi feature, and checks that a build without it refuses to run as one of
# several ranks. Tests that need a real pretrained model read BERT_TEST_MODELS (a folder holding
# all-MiniLM-L6-v2/); without it they say they were skipped, and under CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo test --release --workspace --features bert-cli/mpi
cargo test --release -p bert-cli --test mpi
