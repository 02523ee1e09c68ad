#!/usr/bin/env python3
"""Checks that a checkpoint directory written by `bert pretrain` loads in transformers with the same
outputs: no missing or unexpected weights, and `bert fill-mask` scores equal to transformers' within 1e-4.

    python scripts/check_roundtrip.py OUT_DIR [--bert target/release/bert]
"""
import argparse
import json
import subprocess
import sys

import torch
from transformers import BertForPreTraining, BertTokenizerFast

TEXTS = ["in the beginning god created the [MASK] and the earth.", "and the lord [MASK] unto moses, saying,",
         "[MASK] is my shepherd; i shall not want."]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--bert", default="target/release/bert")
    args = parser.parse_args()
    model, info = BertForPreTraining.from_pretrained(args.model, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"transformers reports {problems}")
    model.eval()
    tok = BertTokenizerFast.from_pretrained(args.model)
    ours = subprocess.run([args.bert, "fill-mask", "--model", args.model, "--top-k", "5", *TEXTS],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    worst = 0.0
    for text, line in zip(TEXTS, ours):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).prediction_logits[0]
        position = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0]
        probs = logits[position].softmax(-1)
        for prediction in json.loads(line)["predictions"]:
            worst = max(worst, abs(probs[prediction["token_id"]].item() - prediction["score"]))
        top = probs.topk(5).indices.tolist()
        mine = [p["token_id"] for p in json.loads(line)["predictions"]]
        if top != mine:
            sys.exit(f"{text!r}: transformers ranks {top}, bert ranks {mine}")
    print(f"ok: transformers loads {args.model} with no missing or unexpected weights; "
          f"fill-mask scores agree within {worst:.2e}")
    if worst > 1e-4:
        sys.exit("scores differ by more than 1e-4")


if __name__ == "__main__":
    main()
