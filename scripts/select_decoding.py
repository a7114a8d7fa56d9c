#!/usr/bin/env python3
"""Choose the params file, beam size and length penalty of a model on the VALIDATION split (never on test).

    python scripts/select_decoding.py --model DIR [DIR ...] --source val.features --references val.captions.{0..4} \
        [--source-root CACHE] [--checkpoints params.best params.avg] [--beam-sizes 1 3 5] [--alphas 0 0.5 1] \
        [--augmentations hflip]

Several model dirs are decoded as one ensemble, each with the same params file name. With --augmentations, every
setting is also tried with test-time augmentation (each model on the original and on these views of the images,
whose features must be cached beside the originals), which becomes one more choice.

Prints one line per setting (val BLEU-4 and CIDEr-D) and, last, the captioner options of the best one by
--metric (``bleu``: BLEU-4, the default; ``cider``: CIDEr-D, for a model trained for it by self-critical training);
with --output it also writes those options to a file, for ``python -m imcap.captioner $(cat FILE)``.
"""
import argparse
import itertools
import os
import sys
import time
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet is imported)
import numpy as np  # noqa: E402

from imcap.beam_search import BeamSearch, best_captions  # noqa: E402
from imcap.inference import models_tokenizer  # noqa: E402
from imcap.tokenizer import SCORING_CHOICES, segment_for_scoring  # noqa: E402
from imcap.scoring import KEY_CIDER_D, bleu_scores, cider_scores  # noqa: E402
from imcap.features import FeatureStore  # noqa: E402
from imcap.model import load_model  # noqa: E402
from imcap.utils import atomic_open, read_lines  # noqa: E402


def decode(models, vocab, features, beam: int, alpha: float, no_repeat: int = 0) -> List[str]:
    search = BeamSearch(models, vocab, beam_size=beam, length_penalty_alpha=alpha, max_output_length=30,
                        no_repeat_ngram_size=no_repeat)
    return best_captions(search, vocab, features)


# --metric: the name printed, and the score of the captions against the references
METRICS = {"bleu": ("BLEU-4", lambda hyps, refs: bleu_scores(hyps, refs)["bleu4"]),
           "cider": ("CIDEr-D", lambda hyps, refs: cider_scores(hyps, refs)[KEY_CIDER_D])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+", help="Model dir(s); several: an ensemble.")
    parser.add_argument("--source", required=True, help="Validation .features list (one line per image).")
    parser.add_argument("--source-root", default=None)
    parser.add_argument("--references", required=True, nargs="+")
    parser.add_argument("--checkpoints", nargs="+", default=["params.best"])
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    parser.add_argument("--no-repeat-ngram-sizes", type=int, nargs="+", default=[0],
                        help="n-gram sizes for --no-repeat-ngram-size to try (0: off).")
    parser.add_argument("--augmentations", nargs="+", default=[],
                        help="Also try test-time augmentation with these views (e.g. hflip).")
    parser.add_argument("--metric", choices=sorted(METRICS), default="bleu",
                        help="What the best setting has the highest of on val: bleu (BLEU-4) or cider (CIDEr-D).")
    parser.add_argument("--tokenize", choices=SCORING_CHOICES, default="none",
                        help="How captions and references are segmented before scoring, as imcap.evaluate's "
                             "--tokenize (e.g. jieba: Chinese models of any tokenizer compared on the same words); "
                             "none: as the reference files hold them.")
    parser.add_argument("--output", default=None, help="File for the chosen captioner options.")
    args = parser.parse_args()
    store = FeatureStore(args.source, args.source_root, augmentations=args.augmentations)
    rows = np.maximum(store.index, 0)
    inputs = {"": store.features[rows]}
    if args.augmentations:
        inputs[" --test-time-augmentations " + " ".join(args.augmentations)] = [view[rows] for view in store.views]
    references = [[segment_for_scoring(line, args.tokenize) for line in read_lines(p)] for p in args.references]
    tokenizer = models_tokenizer(args.model)   # captions are scored as the reference files hold them
    best = None
    for checkpoint in args.checkpoints:
        if not all(os.path.isfile(os.path.join(model_dir, checkpoint)) for model_dir in args.model):
            print("%s: missing, skipped" % checkpoint)
            continue
        loaded = [load_model(model_dir, checkpoint) for model_dir in args.model]
        models, vocab = [model for model, _ in loaded], loaded[0][1]
        if any(v.idx_to_token != vocab.idx_to_token for _, v in loaded):
            sys.exit("select_decoding: the models of the ensemble have different vocabularies")
        for (tta, features), beam, alpha, no_repeat in itertools.product(inputs.items(), args.beam_sizes, args.alphas,
                                                                         args.no_repeat_ngram_sizes):
            if beam == 1 and alpha != args.alphas[0]:
                continue  # the length penalty cannot change a greedy search
            start = time.time()
            hypotheses = [segment_for_scoring(tokenizer.scoring_text(h.split()), args.tokenize)
                          for h in decode(models, vocab, features, beam, alpha, no_repeat)]
            scores = {metric: score(hypotheses, references) for metric, (_, score) in METRICS.items()}
            blocking = " --no-repeat-ngram-size %d" % no_repeat if no_repeat else ""
            print("%s beam %d alpha %.1f%s%s: val BLEU-4 %.2f, CIDEr-D %.3f (%.0f s)" % (
                checkpoint, beam, alpha, blocking, tta, scores["bleu"], scores["cider"], time.time() - start),
                flush=True)
            if best is None or scores[args.metric] > best[0][args.metric]:
                best = (scores, checkpoint, beam, alpha, blocking + tta)
    if best is None:
        sys.exit("select_decoding: none of the checkpoints %s is in every model dir" % " ".join(args.checkpoints))
    options = "--checkpoints %s --beam-size %d --length-penalty-alpha %.1f%s" % (
        " ".join([best[1]] * len(args.model)), best[2], best[3], best[4])
    print("best on validation (by %s): BLEU-4 %.2f, CIDEr-D %.3f with %s" % (
        METRICS[args.metric][0], best[0]["bleu"], best[0]["cider"], options))
    if args.output:
        with atomic_open(args.output) as f:
            f.write(options + "\n")


if __name__ == "__main__":
    main()
