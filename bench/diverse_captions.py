#!/usr/bin/env python3
"""Several captions per image from one model: beam search's n-best, diverse beam search (Vijayakumar et al. 2018) and
nucleus sampling (Holtzman et al. 2020), on the same images, in one run.

    .venv/bin/python bench/diverse_captions.py --model runs/q/model.13 --checkpoint params.avg \\
        --data runs/q/data --source-root runs/features-efficientnet_lite0

For each method, ``--captions`` captions per image of the test split: the oracle CIDEr-D (each image's best caption)
and the mean CIDEr-D (every caption), both with the document frequencies of the whole reference set; distinct-2 within
each image's set and self-BLEU-4 across it (imcap.diversity); distinct captions per set; the first caption's CIDEr-D;
images/s of Captioner.caption (features already in memory, graphs built by a first batch before any timing; the
reference is beam search's n-best, the ratio is the method's speed over it). The settings are fixed here, not tuned on the test split. Prints one figure per line and
appends a row per method to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import sys
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.diversity import KEY_SELF_BLEU, KEY_SET_DISTINCT_2, KEY_SET_DISTINCT_CAPTIONS, set_diversity_scores  # noqa
from imcap.features import FeatureStore  # noqa: E402
from imcap.inference import CaptionInput, Captioner  # noqa: E402
from imcap.scoring import KEY_MEAN_CIDER_D, KEY_ORACLE_CIDER_D, set_cider_scores  # noqa: E402
from imcap.search_options import SearchOptions  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from benchlib import append_row, timed_captions  # noqa: E402

SECTION = "Several captions per image (bench/diverse_captions.py)"
COLUMNS = ["model", "method", "captions per image", "oracle CIDEr-D", "mean CIDEr-D", "first caption's CIDEr-D",
           "distinct captions", "distinct-2", "self-BLEU-4", "images/s", "speed vs n-best"]


def methods(captions: int, beam: int, seed: int) -> Dict[str, SearchOptions]:
    """The three searches compared, each giving ``captions`` captions per image."""
    return {"beam n-best": SearchOptions(beam_size=beam, nbest_size=captions),
            "diverse beam search (groups %d, strength 0.5)" % captions:
                SearchOptions(beam_size=beam, nbest_size=captions, diverse_beam_groups=captions,
                              diverse_beam_strength=0.5),
            "nucleus sampling (top-p 0.9, seed %d)" % seed:
                SearchOptions(sample=True, nbest_size=captions, sampling_top_p=0.9, seed=seed)}


def caption_sets(captioner: Captioner, inputs: Sequence[CaptionInput]) -> Tuple[List[List[str]], float]:
    """Each image's captions (its n-best list, best first) and the images/s of the search."""
    results, speed = timed_captions(captioner, inputs, "diverse_captions")
    return [[" ".join(tokens) for tokens, _ in r.nbest] or [r.caption] for r in results], speed

def figures(sets: List[List[str]], references: List[List[str]]) -> Dict[str, float]:
    """The set figures of the module docstring."""
    cider, scores = set_cider_scores(sets, references)
    diversity = set_diversity_scores(sets)
    return {"oracle": cider[KEY_ORACLE_CIDER_D], "mean": cider[KEY_MEAN_CIDER_D],
            "first": sum(s[0] for s in scores) / len(scores), "distinct": diversity[KEY_SET_DISTINCT_CAPTIONS],
            "distinct2": diversity[KEY_SET_DISTINCT_2], "self_bleu": diversity[KEY_SELF_BLEU]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Model dir.")
    parser.add_argument("--checkpoint", default="params.best", help="Params file of the model dir.")
    parser.add_argument("--data", required=True, help="prepare_data's folder (test.features, test.captions.N).")
    parser.add_argument("--source-root", required=True, help="The feature cache.")
    parser.add_argument("--captions", type=int, default=5, help="Captions per image.")
    parser.add_argument("--beam-size", type=int, default=10, help="Beam of the n-best and of diverse beam search.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the sampling.")
    parser.add_argument("--limit", type=int, default=0, help="Only the first N test images (0: all).")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"))
    args = parser.parse_args()
    store = FeatureStore(os.path.join(args.data, "test.features"), args.source_root, load_all_to_memory=True)
    count = args.limit or len(store.features)
    inputs = [CaptionInput(features=store.features[i].astype("float32")) for i in range(count)]
    references = [read_lines(os.path.join(args.data, "test.captions.%d" % k))[:count] for k in range(5)]
    captioner = Captioner(args.model, args.checkpoint)
    caption_sets(captioner, inputs[:captioner.batch_size])   # builds the graphs, so that no method's time holds it
    reference_speed = None
    for name, options in methods(args.captions, args.beam_size, args.seed).items():
        sets, speed = caption_sets(captioner.with_search_options(options=options), inputs)
        reference_speed = reference_speed or speed
        f = figures(sets, references)
        for key, value in f.items():
            print("%s %s: %.4f" % (name, key, value))
        print("%s images/s: %.1f (%.2fx n-best)" % (name, speed, speed / reference_speed))
        append_row(args.output, SECTION, COLUMNS, ".venv/bin/python bench/" + " ".join(
            [os.path.basename(sys.argv[0])] + sys.argv[1:]), [
            os.path.basename(os.path.normpath(args.model)) + "/" + args.checkpoint, name, str(args.captions),
            "%.3f" % f["oracle"], "%.3f" % f["mean"], "%.3f" % f["first"], "%.2f" % f["distinct"],
            "%.3f" % f["distinct2"], "%.1f" % f["self_bleu"], "%.1f" % speed, "%.2f" % (speed / reference_speed)])


if __name__ == "__main__":
    main()
