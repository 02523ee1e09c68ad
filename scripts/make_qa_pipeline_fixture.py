#!/usr/bin/env python3
"""Writes crates/bert/tests/fixtures/tiny-qa/pipeline.json: transformers' question-answering pipeline
outputs for the tiny QA checkpoint under several settings (top_k, max_answer_len, handle_impossible_answer,
windows of a long context), what `bert qa` must give.

The question-answering pipeline left transformers in 5.0, so this needs transformers 4.x (made with
4.57.1, torch 2.15), e.g. installed beside the main virtual environment (with it active):

    pip install --target /tmp/tf4 --no-deps transformers==4.57.1 "huggingface_hub<1.0" \\
        requests urllib3 idna charset_normalizer certifi
    PYTHONPATH=/tmp/tf4 python scripts/make_qa_pipeline_fixture.py

(4.57.1 pins tokenizers<=0.23.0 at import; 0.23.3 works: relax the pin in its dependency_versions_table.py.)
"""
import json
import os

import transformers
from transformers import pipeline

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "crates", "bert", "tests", "fixtures", "tiny-qa")

LONG = ("The people of the north country wrote the story. Paris is the capital of France, and the sea is far "
        "from the farm. Each day the sun is hot and the water is cold. Who wrote this story? They did, in "
        "the school of the city, while the tree grew.")
CASES = [
    {"question": "Who wrote this story?", "context": "The people of the north country wrote it.", "settings": {}},
    {"question": "what is the capital of france", "context": "Paris is the capital of France.",
     "settings": {"top_k": 3}},
    {"question": "is it good", "context": "no, it was terrible. a good movie, a bad day.",
     "settings": {"top_k": 2, "handle_impossible_answer": True}},
    {"question": "where", "context": "Naïve café owners write their résumé while the sun is hot.",
     "settings": {"max_answer_len": 3, "top_k": 4}},
    {"question": "who wrote the story", "context": LONG,
     "settings": {"max_seq_len": 32, "doc_stride": 8, "top_k": 3}},
]


def main():
    qa = pipeline("question-answering", model=MODEL, device="cpu")
    for case in CASES:
        out = qa(question=case["question"], context=case["context"], **case["settings"])
        case["answers"] = out if isinstance(out, list) else [out]
    with open(os.path.join(MODEL, "pipeline.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": CASES}, f, ensure_ascii=False, indent=1)
    print("wrote", os.path.join(MODEL, "pipeline.json"))


if __name__ == "__main__":
    main()
