#!/usr/bin/env python3
"""Checks that an encoder-decoder written by `bert finetune --task seq2seq` loads in transformers'
`EncoderDecoderModel` with no missing or unexpected weights, and that `bert generate` gives the texts
transformers' `generate()` gives, greedy and with beam search.

    python scripts/check_seq2seq_roundtrip.py OUT_DIR SOURCES.txt [--bert target/release/bert] [--lines 20]
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import BertTokenizerFast, EncoderDecoderModel


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("sources")
    parser.add_argument("--bert", default="target/release/bert")
    parser.add_argument("--lines", type=int, default=20)
    args = parser.parse_args()
    model, info = EncoderDecoderModel.from_pretrained(args.model, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"transformers reports {problems}")
    model.eval()
    tok = BertTokenizerFast.from_pretrained(args.model)
    sources = [l.rstrip("\n") for l in open(args.sources, encoding="utf-8")][: args.lines]
    for beams in [1, 4]:
        ours = subprocess.run([args.bert, "generate", "--model", args.model, "--num-beams", str(beams),
                               "--max-new-tokens", "32"], input="\n".join(sources) + "\n",
                              capture_output=True, text=True, check=True)
        ours = [json.loads(l)["generated_text"] for l in ours.stdout.splitlines()]
        with torch.no_grad():
            batch = tok(sources, padding=True, return_tensors="pt")
            ids = model.generate(**batch, num_beams=beams, max_new_tokens=32)
        theirs = tok.batch_decode(ids, skip_special_tokens=True)
        same = sum(a == b for a, b in zip(ours, theirs))
        print(f"num_beams {beams}: {same}/{len(sources)} identical")
        for a, b in zip(ours, theirs):
            if a != b:
                print(f"  bert:         {a}\n  transformers: {b}")
        if same != len(sources):
            sys.exit(1)
    print("ok: loads in transformers with every weight, and generates the same texts")


if __name__ == "__main__":
    main()
