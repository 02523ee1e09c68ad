#!/usr/bin/env python3
"""Writes the reference scores of `bert score` (BLEU, chrF, BERTScore) that the Rust tests compare against.

BLEU and chrF come from sacrebleu (default settings: 13a tokenization, exp smoothing; chrF with character
6-grams, beta 2), BERTScore from the bert-score package, so the tests need no Python. Run it from the
repository root, in the environment `scripts/make_fixtures.py` names, plus sacrebleu and bert-score:

    pip install sacrebleu bert-score
    python scripts/make_metric_fixtures.py [--minilm $BERT_TEST_MODELS/all-MiniLM-L6-v2]

It writes crates/bert/tests/fixtures/metrics/: hypotheses.txt, references.txt, baseline.tsv (a made-up
rescaling baseline in bert-score's layout) and reference.json.
"""
import argparse
import json
import os

import bert_score.utils as bert_score_utils
import sacrebleu
from bert_score import score as bert_score

_sent_encode = bert_score_utils.sent_encode


def sent_encode(tokenizer, sent):
    """bert-score's, with an empty sentence as [CLS] [SEP] (what transformers 4 gave; 5 lacks the call)."""
    if sent.strip() == "":
        return [tokenizer.cls_token_id, tokenizer.sep_token_id]
    return _sent_encode(tokenizer, sent)


bert_score_utils.sent_encode = sent_encode

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIXTURES = os.path.join(ROOT, "crates", "bert", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "metrics")

PAIRS = [
    ("The cat sat on the mat.", "The cat sat on the mat."),
    ("the cat is on the mat", "There is a cat on the mat."),
    ("Au commencement, Dieu créa les cieux et la terre.", "Au commencement Dieu créa les cieux et la terre."),
    ("Et Dieu dit: Que la lumière soit!", "Dieu dit: Que la lumière soit! Et la lumière fut."),
    ("It costs $3.50, not 3,000 dollars.", "It costs 3.50 dollars - not 3,000!"),
    ("Hello world", "hello, world"),
    ("a good movie", "a terrible movie"),
    ("", "Nothing was generated for this one."),
    ("paris is the capital of france", "Paris is the capital of France."),
    ("Who wrote this story? The people of the north.", "The people of the north country wrote it."),
    ("l'homme et la femme", "L'homme et la femme."),
    ("In 1999-2000 the sea rose (again) & fell.", "In 1999 - 2000 the sea rose again and fell."),
    ("word word word word word", "word"),
    ("Je suis très content de te voir", "Je suis content de te voir."),
    ("the answer is 42", "The answer is forty-two."),
    ("yes", "no"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minilm", default=os.path.join(os.environ.get("BERT_TEST_MODELS", ""), "all-MiniLM-L6-v2"))
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    hyps = [h for h, _ in PAIRS]
    refs = [r for _, r in PAIRS]
    for name, lines in [("hypotheses.txt", hyps), ("references.txt", refs)]:
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    reference = {
        "bleu": {
            "score": bleu.score, "counts": bleu.counts, "totals": bleu.totals, "precisions": bleu.precisions,
            "bp": bleu.bp, "sys_len": bleu.sys_len, "ref_len": bleu.ref_len,
            "lines": [sacrebleu.sentence_bleu(h, [r]).score for h, r in PAIRS],
        },
        "chrf": {
            "score": chrf.score,
            "lines": [sacrebleu.sentence_chrf(h, [r]).score for h, r in PAIRS],
        },
        "bertscore": [],
    }
    baseline = os.path.join(OUT, "baseline.tsv")
    with open(baseline, "w") as f:
        f.write("LAYER,P,R,F\n0,0.5,0.45,0.48\n1,0.62,0.6,0.61\n2,0.7,0.71,0.705\n")
    runs = [("tiny-base", os.path.join(FIXTURES, "tiny-base"), layers, idf, rescale)
            for layers, idf, rescale in [(2, False, False), (1, True, False), (2, True, True)]]
    if os.path.exists(os.path.join(args.minilm, "config.json")):
        runs.append(("all-MiniLM-L6-v2", args.minilm, 6, True, False))
    for name, path, layers, idf, rescale in runs:
        extra = dict(rescale_with_baseline=True, baseline_path=baseline, lang="en") if rescale else {}
        p, r, f = bert_score(hyps, refs, model_type=path, num_layers=layers, idf=idf, batch_size=64, **extra)
        reference["bertscore"].append({
            "model": name, "num_layers": layers, "idf": idf, "baseline": rescale,
            "precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(),
        })
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
