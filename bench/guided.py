#!/usr/bin/env python3
"""Guided captioning (imcap.guide; Anderson et al. 2017, EMNLP): the CNN's ImageNet classes as disjunctive
constraints, against the unguided search of the same model, on Flickr8k and on the photos of
../shared/data/imagenet-check.

    .venv/bin/python bench/guided.py --model runs/guided/model --checkpoint params.avg \\
        --data runs/guided/data --source-root runs/features-efficientnet_lite0

1. On the validation split, every setting of ``--top-k`` x ``--min-probability`` is decoded (beam ``--beam-size``);
   the one chosen guides the most captions among those whose CIDEr-D is at most ``--tolerance`` below the unguided
   search's (so that guidance does not cost quality where it can be measured).
2. The test split is scored once, guided with that setting and unguided: CIDEr-D, BLEU-4, the share of captions that
   name an object of their image's own top-5 classes (any word of their entries in the mapping), the share of images
   guided, and the speed ratio guided / unguided (images/s of the same run; the goal is at least 0.5 at beam 5).
3. The photos of ``--photos`` (raw images through the CNN, classes from the same forward pass): each caption
   unguided and guided, and the share that name one of their top-5 classes.

Class probabilities of cached features come from IMAGE.classes.npy beside them (imcap.extract_features writes them).
Prints one figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import glob
import os
import sys
from typing import List, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.features import classes_path, load_classes, resolve  # noqa: E402
from imcap.guide import read_class_words  # noqa: E402
from imcap.vision.image_encoder import ImageEncoder  # noqa: E402
from imcap.vision.images import load_image  # noqa: E402
from imcap.constraints import count_occurrences  # noqa: E402
from imcap.inference import CaptionInput, CaptionResult, Captioner  # noqa: E402
from imcap.scoring import KEY_CIDER_D, bleu_scores, cider_scores  # noqa: E402
from imcap.tokenizer import tokenize  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from benchlib import append_row, timed_captions  # noqa: E402


def timed(captioner: Captioner, inputs: Sequence[CaptionInput]) -> Tuple[List[CaptionResult], float]:
    """The results of ``inputs`` and the images/s of :meth:`Captioner.caption`."""
    return timed_captions(captioner, inputs, "guided")


def names_own_class(caption: str, probabilities: np.ndarray, class_words, top: int = 5) -> bool:
    """Whether ``caption`` contains a word of the mapping entries of one of the image's ``top`` classes."""
    tokens = caption.split()
    for index in np.argsort(-probabilities)[:top]:
        if any(count_occurrences(tokens, tokenize(a)) for a in class_words[index].alternatives):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--checkpoint", default="params.best")
    parser.add_argument("--data", required=True, help="Folder of {val,test}.features and .captions.0-4.")
    parser.add_argument("--source-root", required=True)
    parser.add_argument("--photos", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                         "shared", "data", "imagenet-check"))
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--min-probability", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--tolerance", type=float, default=0.005, help="CIDEr-D a setting may lose on val.")
    parser.add_argument("--expand-vocabulary", action="store_true", help="Also --guide-expand-vocabulary.")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    class_words = read_class_words()

    def split(name: str):
        paths = [p.strip() for p in read_lines(os.path.join(args.data, name + ".features"))]
        refs = [read_lines(os.path.join(args.data, "%s.captions.%d" % (name, i))) for i in range(5)]
        probs = [load_classes(classes_path(resolve(p, args.source_root))) for p in paths]
        return [CaptionInput(path=p, line=n) for n, p in enumerate(paths, 1)], refs, probs

    def captioner(guided: bool, top_k: int = 1, min_probability: float = 0.5, **kw) -> Captioner:
        return Captioner([args.model], [args.checkpoint], beam_size=args.beam_size, batch_size=args.batch_size,
                         source_root=args.source_root, guide_with_classifier=guided, guide_top_k=top_k,
                         guide_min_probability=min_probability, guide_expand_vocabulary=args.expand_vocabulary,
                         **kw)

    val, val_refs, _ = split("val")
    plain = captioner(False)
    plain.caption(val[:args.batch_size])   # warm-up: the graphs
    results, _ = timed(plain, val)
    base = cider_scores([r.caption for r in results], val_refs)[KEY_CIDER_D]
    print("val unguided: CIDEr-D %.3f" % base)
    choice, best_guided = None, -1
    for top_k in args.top_k:
        for p in args.min_probability:
            results, _ = timed(captioner(True, top_k, p), val)
            cider = cider_scores([r.caption for r in results], val_refs)[KEY_CIDER_D]
            guided = sum(1 for r in results if r.guide)
            print("val guided K=%d P=%.2f: CIDEr-D %.3f, %d images guided" % (top_k, p, cider, guided))
            if cider >= base - args.tolerance and guided > best_guided:
                choice, best_guided = (top_k, p), guided
    if choice is None:
        sys.exit("guided: no setting is within %.3f CIDEr-D of the unguided search on val" % args.tolerance)
    print("chosen on val: K=%d P=%.2f" % choice)

    test, test_refs, test_probs = split("test")
    figures = {}
    for name, search in (("unguided", plain), ("guided", captioner(True, *choice))):
        search.caption(test[:args.batch_size])
        results, speed = timed(search, test)
        hyps = [r.caption for r in results]
        figures[name] = dict(cider=cider_scores(hyps, test_refs)[KEY_CIDER_D],
                             bleu=bleu_scores(hyps, test_refs)["bleu4"],
                             named=np.mean([names_own_class(h, p, class_words) for h, p in zip(hyps, test_probs)]),
                             guided=np.mean([bool(r.guide) for r in results]), speed=speed)
        for key, unit in (("cider", "CIDEr-D %.3f"), ("bleu", "BLEU-4 %.2f"), ("named", "%.3f name an own class"),
                          ("guided", "%.3f of images guided"), ("speed", "%.1f images/s")):
            print("test %s: %s" % (name, unit % figures[name][key]))
    ratio = figures["guided"]["speed"] / figures["unguided"]["speed"]
    print("test speed guided / unguided at beam %d: %.2f" % (args.beam_size, ratio))
    print("test CIDEr-D guided - unguided: %+.3f" % (figures["guided"]["cider"] - figures["unguided"]["cider"]))

    photos = sorted(glob.glob(os.path.join(args.photos, "*.jpg")))
    encoder = ImageEncoder.from_description(plain.models[0].config.feature_extraction, classify=True)
    photo_probs = [encoder.encode_with_classes(load_image(p, encoder.input_size)[None])[1][0] for p in photos]
    named = {}
    for name, guided in (("unguided", False), ("guided", True)):
        search = captioner(guided, *choice, extract_image_features=True, image_encoder=encoder)
        results = search.caption([CaptionInput(path=p) for p in photos])
        for path, result in zip(photos, results):
            guides = ", ".join("%s (%.2f)" % ("|".join(g.words), g.probability) for g in result.guide)
            print("photo %s %s: %s%s" % (os.path.basename(path), name, result.caption,
                                         "  [guide: %s]" % guides if guides else ""))
        named[name] = float(np.mean([names_own_class(r.caption, q, class_words) for r, q in zip(results, photo_probs)]))
        print("photos %s: %.2f name an own class" % (name, named[name]))

    command = ("bench/guided.py --model %s --checkpoint %s --beam-size %d --top-k %s --min-probability %s%s"
               % (args.model, args.checkpoint, args.beam_size, " ".join(map(str, args.top_k)),
                  " ".join("%g" % p for p in args.min_probability),
                  " --expand-vocabulary" if args.expand_vocabulary else ""))
    u, g = figures["unguided"], figures["guided"]
    append_row(args.benchmarks, "Guided captioning (bench/guided.py)",
               ["chosen on val (K, P)", "test CIDEr-D unguided / guided", "test BLEU-4 unguided / guided",
                "test captions naming an own class unguided / guided", "test images guided",
                "speed guided / unguided (beam %d)" % args.beam_size, "photos naming an own class unguided / guided"],
               command, ["K=%d, P=%.2f" % choice, "%.3f / %.3f" % (u["cider"], g["cider"]),
                         "%.2f / %.2f" % (u["bleu"], g["bleu"]),
                         "%.1f%% / %.1f%%" % (100 * u["named"], 100 * g["named"]),
                         "%.1f%%" % (100 * g["guided"]), "%.2f" % ratio,
                         "%d%% / %d%%" % (100 * named["unguided"], 100 * named["guided"])])


if __name__ == "__main__":
    main()
