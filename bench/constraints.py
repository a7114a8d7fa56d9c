#!/usr/bin/env python3
"""Lexical constraints: quality and speed of constrained captioning on the Flickr8k test images from cached features,
in Post & Vilar's reference-derived setting (Post & Vilar 2018, NAACL, "Fast Lexically Constrained Decoding with
Dynamic Beam Allocation for Neural Machine Translation", sec. 4): 0, 1 and 2 phrases drawn from each image's first
reference are required, and the captions are scored against the other four references, so that the constraint words
are not simply copied into the score.

    .venv/bin/python bench/constraints.py --model runs/flickr8k-full/model \\
        --source runs/flickr8k-full/data/test.features --source-root runs/features-efficientnet_lite0 \\
        --references runs/flickr8k-full/data/test.captions.{0,1,2,3,4}

At beam 5 and 10: BLEU-4 and CIDEr-D of each setting, the share of captions that met their constraints, and the
images/s of each against the unconstrained search of the same run (dynamic beam allocation, vectorized as Hu et al.
2019, :mod:`imcap.constraints`; the target is at least half the unconstrained speed at beam 5). A constraint is a
span of 1 to 3 consecutive words of the first reference, all in the model's vocabulary; two constraints do not
overlap; the one-constraint setting uses the first of the two (seed ``--seed``). Prints one figure per line and
appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import random
import sys
import time
from typing import List, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.inference import CaptionInput, CaptionResult, Captioner  # noqa: E402
from imcap.scoring import KEY_CIDER_D, bleu_scores, cider_scores  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from benchlib import append_row  # noqa: E402

SETTINGS = (0, 1, 2)   # constraints per image


def draw_phrases(reference: str, known, rng: random.Random, count: int = 2, max_words: int = 3) -> List[str]:
    """Up to ``count`` non-overlapping spans of 1 to ``max_words`` words of ``reference`` whose words are all in
    ``known`` (the model's vocabulary), in the order drawn."""
    words = reference.split()
    taken = [False] * len(words)
    phrases: List[str] = []
    spans = [(i, n) for n in range(1, max_words + 1) for i in range(len(words) - n + 1)]
    rng.shuffle(spans)
    for i, n in spans:
        if len(phrases) == count:
            break
        if any(taken[i:i + n]) or not all(w in known for w in words[i:i + n]):
            continue
        taken[i:i + n] = [True] * n
        phrases.append(" ".join(words[i:i + n]))
    return phrases


def timed_caption(captioner: Captioner, inputs: Sequence[CaptionInput]) -> Tuple[List[CaptionResult], float]:
    """The results of ``inputs`` and the images/s of :meth:`Captioner.caption`."""
    start = time.time()
    results = captioner.caption(inputs)
    elapsed = time.time() - start
    failed = [r for r in results if r.error is not None]
    if failed:
        sys.exit("constraints: line %d: %s" % (failed[0].line, failed[0].error))
    return results, len(inputs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", default="params.best", help="Params file of the model.")
    parser.add_argument("--source", required=True, help="Test .features list.")
    parser.add_argument("--source-root", required=True)
    parser.add_argument("--references", required=True, nargs="+",
                        help="test.captions.0 .. test.captions.4: constraints come from the first, the scores from "
                             "the others.")
    parser.add_argument("--images", type=int, default=1000, help="Lines of --source used.")
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length-penalty-alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    if len(args.references) < 2:
        sys.exit("constraints: --references needs the reference the constraints come from and at least one other")
    paths = [p.strip() for p in read_lines(args.source)[:args.images]]
    references = [read_lines(path)[:len(paths)] for path in args.references]
    scored_against = references[1:]
    figures = {}
    met_shares = {}
    for beam in args.beam_sizes:
        captioner = Captioner([args.model], [args.checkpoint], beam_size=beam, batch_size=args.batch_size,
                              length_penalty_alpha=args.length_penalty_alpha, source_root=args.source_root)
        rng = random.Random(args.seed)
        drawn = [draw_phrases(ref, captioner.vocab.token_to_idx, rng) for ref in references[0]]
        captioner.caption([CaptionInput(path=p, constraints=c[:1]) for p, c in zip(paths[:args.batch_size], drawn)])
        for count in SETTINGS:   # the warm-up above built the graphs
            inputs = [CaptionInput(path=p, constraints=c[:count], line=n)
                      for n, (p, c) in enumerate(zip(paths, drawn), 1)]
            results, speed = timed_caption(captioner, inputs)
            hypotheses = [r.caption for r in results]
            bleu = bleu_scores(hypotheses, scored_against)["bleu4"]
            cider = cider_scores(hypotheses, scored_against)[KEY_CIDER_D]
            figures[beam, count] = (bleu, cider, speed)
            print("beam %d, %d constraints: BLEU-4 %.2f" % (beam, count, bleu))
            print("beam %d, %d constraints: CIDEr-D %.3f" % (beam, count, cider))
            print("beam %d, %d constraints: %.1f images/s" % (beam, count, speed))
            if count:
                asked = [r for r, c in zip(results, drawn) if c[:count]]
                met_shares[beam, count] = sum(1 for r in asked if r.constraints_met) / max(len(asked), 1)
                print("beam %d, %d constraints: %.1f%% of %d captions meet them" % (
                    beam, count, 100 * met_shares[beam, count], len(asked)))
                print("beam %d, %d constraints: %.2f of the unconstrained speed" % (
                    beam, count, speed / figures[beam, 0][2]))
    command = ("bench/constraints.py --model %s --checkpoint %s --images %d --batch-size %d --length-penalty-alpha %g"
               % (args.model, args.checkpoint, len(paths), args.batch_size, args.length_penalty_alpha))
    columns, values = [], []
    for beam in args.beam_sizes:
        columns += ["beam %d BLEU-4 (0 / 1 / 2 constraints)" % beam, "beam %d CIDEr-D (0 / 1 / 2)" % beam,
                    "beam %d images/s (0 / 1 / 2)" % beam, "beam %d constraints met (1 / 2)" % beam]
        values += [" / ".join("%.2f" % figures[beam, c][0] for c in SETTINGS),
                   " / ".join("%.3f" % figures[beam, c][1] for c in SETTINGS),
                   " / ".join("%.1f" % figures[beam, c][2] for c in SETTINGS),
                   " / ".join("%.1f%%" % (100 * met_shares[beam, c]) for c in SETTINGS[1:])]
    first = args.beam_sizes[0]
    columns.append("beam %d speed, 2 constraints / none" % first)
    values.append("%.2f" % (figures[first, 2][2] / figures[first, 0][2]))
    append_row(args.benchmarks, "Lexical constraints (bench/constraints.py)", columns, command, values)


if __name__ == "__main__":
    main()
