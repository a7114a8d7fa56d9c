#!/usr/bin/env python3
"""Guided captioning (imcap.guide): the CNN's ImageNet classes as hard constraints (Anderson et al. 2017), as a soft
guide (Hendricks et al. 2016's late fusion) and against the words they rule out, against the unguided search of the
same model, on 100 COCO photos unlike Flickr8k's (../shared/data/coco-dev100) and on Flickr8k.

    .venv/bin/python bench/guided.py --model runs/guided/model --checkpoint params.avg \\
        --data runs/guided/data --source-root runs/features-efficientnet_lite0

1. Every setting of ``--soft-weight`` x ``--against`` x ``--hard`` (and the unguided search, and today's hard guide
   ``--guide-top-k 2 --guide-min-probability 0.2``) captions the COCO photos (features and classes from one pass of the
   CNN) and Flickr8k val: CIDEr-D, BLEU-4, METEOR, the share of captions naming an object of their image's top-5
   classes, fluency (mean log2-probability per word under a Kneser-Ney trigram model of the training captions, and
   SLOR: imcap.fluency), images/s.
2. The setting chosen is the one with the best COCO CIDEr-D among those whose COCO fluency is at least the unguided
   captions' and whose Flickr8k val CIDEr-D is at most ``--tolerance`` below the unguided search's (if no setting
   keeps the unguided fluency: at least the hard guide's, and the script says so).
3. Flickr8k test is scored once: unguided, today's hard guide, and the chosen setting.
4. The captions of ``--photos`` (by file name) under each of the three.

Class probabilities of cached features come from IMAGE.classes.npy beside them (imcap.extract_features writes them).
Prints one figure per line and appends rows to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import itertools
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.constraints import count_occurrences  # noqa: E402
from imcap.features import classes_path, load_classes, resolve  # noqa: E402
from imcap.fluency import KEY_FLUENCY, KEY_SLOR, CaptionLanguageModel  # noqa: E402
from imcap.guide import read_class_words  # noqa: E402
from imcap.inference import CaptionInput, Captioner  # noqa: E402
from imcap.scoring import KEY_CIDER_D, bleu_scores, cider_scores, meteor_scores  # noqa: E402
from imcap.tokenizer import tokenize  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from imcap.vision.image_encoder import ImageEncoder  # noqa: E402
from imcap.vision.images import load_image  # noqa: E402
from benchlib import append_row, timed_captions  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
UNGUIDED = "unguided"
HARD = "hard K=2 P=0.2"
# issue 34's photos: the model's habitual subject where the classifier sees something else
PHOTOS = ["000000235064.jpg", "000000054718.jpg", "COCO_val2014_000000557731.jpg", "000000354072.jpg"]


class Split:
    """Inputs (features with their class probabilities), reference streams and class probabilities of one split."""

    def __init__(self, inputs: List[CaptionInput], references: List[List[str]], probabilities: List[np.ndarray]):
        self.inputs, self.references, self.probabilities = inputs, references, probabilities


def flickr_split(data: str, source_root: str, name: str) -> Split:
    paths = [p.strip() for p in read_lines(os.path.join(data, name + ".features"))]
    references = [read_lines(os.path.join(data, "%s.captions.%d" % (name, i))) for i in range(5)]
    probabilities = [load_classes(classes_path(resolve(p, source_root))) for p in paths]
    return Split([CaptionInput(path=p, line=n) for n, p in enumerate(paths, 1)], references, probabilities)


def coco_split(folder: str, encoder: ImageEncoder) -> Tuple[Split, List[str]]:
    """The photos of a captions.tsv folder through the CNN once: features and class probabilities in the inputs."""
    captions: Dict[str, List[str]] = OrderedDict()
    for number, line in enumerate(read_lines(os.path.join(folder, "captions.tsv")), 1):
        image, caption = line.split("\t", 1)
        captions.setdefault(image, []).append(" ".join(tokenize(caption)))
    names = sorted(captions)
    inputs, probabilities = [], []
    for n, name in enumerate(names, 1):
        features, classes = encoder.encode_with_classes(load_image(os.path.join(folder, "images", name),
                                                                   encoder.input_size)[None])
        inputs.append(CaptionInput(features=features[0], class_probabilities=classes[0], line=n, source=name))
        probabilities.append(classes[0])
    streams = [[captions[name][i] if i < len(captions[name]) else "" for name in names] for i in range(5)]
    return Split(inputs, streams, probabilities), names


def names_own_class(caption: str, probabilities: np.ndarray, class_words, top: int = 5) -> bool:
    """Whether ``caption`` contains a word of the mapping entries of one of the image's ``top`` classes."""
    tokens = caption.split()
    return any(count_occurrences(tokens, tokenize(a)) for index in np.argsort(-probabilities)[:top]
               for a in class_words[index].alternatives)


def settings(args: argparse.Namespace) -> Dict[str, dict]:
    """Name -> Captioner guide keywords: unguided, today's hard guide, and the grid of the new settings."""
    grid: Dict[str, dict] = OrderedDict([(UNGUIDED, {}), (HARD, dict(guide_top_k=2, guide_min_probability=0.2))])
    for weight, against, hard in itertools.product(args.soft_weight, args.against, args.hard):
        if (weight == 0 and against == 0 and hard in (1, 0.2)) or (against > 0 and hard >= 1):
            continue   # the unguided search, today's hard guide, or guidance against without a hard constraint
        name = "soft %g, against %g, %s" % (weight, against, "hard P>=%g" % hard if hard < 1 else "no hard")
        grid[name] = dict(guide_top_k=2 if hard < 1 else 0, guide_min_probability=min(hard, 1.0),
                          guide_soft_weight=weight, guide_against=against)
    return grid


def figures(captioner: Captioner, split: Split, class_words, language_model: CaptionLanguageModel,
            meteor: bool) -> Tuple[dict, List[str]]:
    """The figures of one setting on one split, and its captions."""
    captioner.caption(split.inputs[:captioner.batch_size])   # warm-up: the graphs of this batch size
    results, speed = timed_captions(captioner, split.inputs, "guided")
    hyps = [r.caption for r in results]
    scores = dict(cider=cider_scores(hyps, split.references)[KEY_CIDER_D],
                  bleu=bleu_scores(hyps, split.references)["bleu4"],
                  named=float(np.mean([names_own_class(h, p, class_words) for h, p in zip(hyps, split.probabilities)])),
                  speed=speed)
    scores.update(language_model.corpus_scores([h.split() for h in hyps]))
    if meteor:
        scores["meteor"] = meteor_scores(hyps, split.references).get("METEOR", float("nan"))
    return scores, hyps


def report(where: str, name: str, scores: dict) -> None:
    for key, unit in (("cider", "CIDEr-D %.3f"), ("bleu", "BLEU-4 %.2f"), ("meteor", "METEOR %.2f"),
                      ("named", "%.3f name an own class"), (KEY_FLUENCY, "fluency %.3f bits/word"),
                      (KEY_SLOR, "SLOR %.3f"), ("speed", "%.1f images/s")):
        if key in scores:
            print("%s %s: %s" % (where, name, unit % scores[key]))


def choose(coco: Dict[str, dict], val: Dict[str, dict], tolerance: float, fluency: str) -> Tuple[str, str]:
    """The new setting with the best COCO CIDEr-D whose COCO ``fluency`` is at least the unguided captions' and whose
    Flickr8k val CIDEr-D is at most ``tolerance`` below the unguided search's; if none keeps that fluency, the one with
    the best COCO CIDEr-D whose fluency is at least today's hard guide's (said in the second value)."""
    new = [name for name in coco if name not in (UNGUIDED, HARD)
           and val[name]["cider"] >= val[UNGUIDED]["cider"] - tolerance]
    for floor, rule in ((UNGUIDED, "fluency at least the unguided captions'"),
                        (HARD, "no setting keeps the unguided fluency: fluency at least the hard guide's")):
        allowed = [name for name in new if coco[name][fluency] >= coco[floor][fluency]]
        if allowed:
            return max(allowed, key=lambda name: coco[name]["cider"]), rule
    sys.exit("guided: no setting keeps Flickr8k val CIDEr-D within %.3f and COCO fluency at least the hard guide's"
             % tolerance)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", default="params.best")
    parser.add_argument("--data", required=True, help="Folder of {train,val,test}.features and .captions(.0-4).")
    parser.add_argument("--source-root", required=True)
    parser.add_argument("--coco", default=os.path.join(SHARED, "data", "coco-dev100"))
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3)
    parser.add_argument("--soft-weight", type=float, nargs="+", default=[0.0, 1.0, 3.0, 6.0])
    parser.add_argument("--against", type=float, nargs="+", default=[0.0, 0.01])
    parser.add_argument("--hard", type=float, nargs="+", default=[1.0, 0.5, 0.2],
                        help="Hard constraints (K=2) for classes of at least this probability; 1: none.")
    parser.add_argument("--tolerance", type=float, default=0.01, help="Flickr8k val CIDEr-D a setting may lose.")
    parser.add_argument("--fluency", choices=[KEY_FLUENCY, KEY_SLOR], default=KEY_FLUENCY,
                        help="The fluency figure the chosen setting must keep at the unguided captions' level.")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    class_words = read_class_words()
    language_model = CaptionLanguageModel.from_file(os.path.join(args.data, "train.captions"))
    grid = settings(args)

    def captioner(name: str) -> Captioner:
        guide = grid[name]
        return Captioner([args.model], [args.checkpoint], beam_size=args.beam_size, batch_size=args.batch_size,
                         no_repeat_ngram_size=args.no_repeat_ngram_size, source_root=args.source_root,
                         guide_with_classifier=bool(guide), **guide)

    plain = captioner(UNGUIDED)
    encoder = ImageEncoder.from_description(plain.models[0].config.feature_extraction, classify=True)
    coco, names = coco_split(args.coco, encoder)
    val = flickr_split(args.data, args.source_root, "val")
    on_coco, on_val, coco_captions = {}, {}, {}
    for name in grid:
        search = plain if name == UNGUIDED else captioner(name)
        on_coco[name], coco_captions[name] = figures(search, coco, class_words, language_model, meteor=True)
        report("coco", name, on_coco[name])
        on_val[name], _ = figures(search, val, class_words, language_model, meteor=False)
        report("val", name, on_val[name])
    chosen, rule = choose(on_coco, on_val, args.tolerance, args.fluency)
    print("chosen on coco-dev100 and Flickr8k val: %s (%s)" % (chosen, rule))
    test = flickr_split(args.data, args.source_root, "test")
    on_test = {}
    for name in (UNGUIDED, HARD, chosen):
        on_test[name], _ = figures(plain if name == UNGUIDED else captioner(name), test, class_words, language_model,
                                   meteor=True)
        report("test", name, on_test[name])
    for photo in PHOTOS:
        index = names.index(photo)
        for name in (UNGUIDED, HARD, chosen):
            print("photo %s %s: %s" % (photo, name, coco_captions[name][index]))
    write_rows(args, grid, chosen, on_coco, on_val, on_test)


def write_rows(args: argparse.Namespace, grid: Dict[str, dict], chosen: str, on_coco: Dict[str, dict],
               on_val: Dict[str, dict], on_test: Dict[str, dict]) -> None:
    command = ("bench/guided.py --model %s --checkpoint %s --data %s --source-root %s --soft-weight %s --against %s "
               "--hard %s --fluency %s" % (args.model, args.checkpoint, args.data, args.source_root,
                              " ".join("%g" % w for w in args.soft_weight), " ".join("%g" % a for a in args.against),
                              " ".join("%g" % h for h in args.hard), args.fluency))
    columns = ["setting", "COCO CIDEr-D", "COCO BLEU-4", "COCO METEOR", "COCO naming an own class",
               "COCO fluency (bits/word)", "COCO SLOR", "val CIDEr-D", "images/s (val)"]
    for name in grid:
        c, v = on_coco[name], on_val[name]
        label = name + (" (chosen)" if name == chosen else "")
        append_row(args.benchmarks, "Guided captioning on COCO photos (bench/guided.py)", columns, command,
                   [label, "%.3f" % c["cider"], "%.2f" % c["bleu"], "%.2f" % c["meteor"], "%.0f%%" % (100 * c["named"]),
                    "%.3f" % c[KEY_FLUENCY], "%.3f" % c[KEY_SLOR], "%.3f" % v["cider"], "%.1f" % v["speed"]])
    for name in (UNGUIDED, HARD, chosen):
        t = on_test[name]
        append_row(args.benchmarks, "Guided captioning on Flickr8k test (bench/guided.py)",
                   ["setting", "CIDEr-D", "BLEU-4", "METEOR", "naming an own class", "fluency (bits/word)", "SLOR",
                    "images/s"], command,
                   [name, "%.3f" % t["cider"], "%.2f" % t["bleu"], "%.2f" % t["meteor"], "%.1f%%" % (100 * t["named"]),
                    "%.3f" % t[KEY_FLUENCY], "%.3f" % t[KEY_SLOR], "%.1f" % t["speed"]])


if __name__ == "__main__":
    main()
