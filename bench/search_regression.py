"""Captions before and after a change of the search code: the 1000 Flickr8k test images captioned by an RNN, a
Transformer and a convolutional decoder, plain, with constraints (one phrase and a disjunctive one), with avoid lists,
with repeat blocking, guided by the CNN's classes and as an ensemble; written once by the code before the change
(``--write``), compared byte for byte by the code after it (``--compare``).

    .venv/bin/python bench/search_regression.py --work runs/search-regression --write before   # on the old code
    .venv/bin/python bench/search_regression.py --work runs/search-regression --compare before # on the new code

The first run prepares the data (1000 training images, the whole test split), extracts EfficientNet-Lite0 features
with class probabilities and trains the three decoders for ``--train-seconds`` each, into ``--work``; later runs
reuse them. Prints one figure per line: per decoder and setting, the share of identical caption lines.
"""
import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("IMCAP_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
DECODERS = {"rnn": [], "transformer": ["--decoder", "transformer"], "cnn": ["--decoder", "cnn"]}
GLOBAL_AVOID = ["a man", "water"]


def run(module: str, *args: str, stdin: str = "") -> str:
    """``python -m imcap.MODULE ARGS`` with ``stdin``; its STDOUT (exits on failure with its STDERR)."""
    proc = subprocess.run([sys.executable, "-m", "imcap." + module, *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    if proc.returncode:
        sys.exit("imcap.%s failed:\n%s" % (module, proc.stderr[-3000:]))
    return proc.stdout


def prepare(work: str, seconds: int) -> None:
    """Data, features and the three models under ``work`` (each step skipped when its output exists)."""
    data, cache = os.path.join(work, "data"), os.path.join(work, "features")
    if not os.path.isfile(os.path.join(data, "test.features")):
        run("prepare_data", "--captions", os.path.join(SHARED, "data/flickr8k/captions.tsv"), "--output", data,
            "--max-images-per-split", "1000", "--quiet")
        for name in ["val.images"] + ["val.captions.%d" % i for i in range(5)]:   # validate on 100 images
            path = os.path.join(data, name)
            lines = open(path, encoding="utf-8").readlines()[:100]
            open(path, "w", encoding="utf-8").writelines(lines)
        run("extract_features", "--image-root", os.path.join(SHARED, "data/flickr8k/images"), "--output-root", cache,
            "--input", *[os.path.join(data, s + ".images") for s in ("train", "val", "test")],
            "--output", *[os.path.join(data, s + ".features") for s in ("train", "val", "test")], "--quiet")
    for name, options in DECODERS.items():
        model = os.path.join(work, "model-" + name)
        if not os.path.isfile(os.path.join(model, "params.best")):
            run("train", "-s", os.path.join(data, "train.features"), "-t", os.path.join(data, "train.captions"),
                "-vs", os.path.join(data, "val.features"), "-vt", *[os.path.join(data, "val.captions.%d" % i)
                                                                    for i in range(5)],
                "--source-root", cache, "-o", model, "--max-seconds", str(seconds), "--checkpoint-interval", "100",
                "--batch-size", "64", "--seed", "13", "--quiet", *options)


def constraint_lines(work: str, images: Sequence[str]) -> List[str]:
    """JSON input lines: each image must contain the longest word of its first reference and either 'dog' or
    'people', and must avoid 'shirt'."""
    references = open(os.path.join(work, "data", "test.captions.0"), encoding="utf-8").read().split("\n")
    lines = []
    for image, reference in zip(images, references):
        word = max(reference.split(), key=len)
        lines.append(json.dumps({"image": image, "constraints": [word, ["dog", "people"]], "avoid": ["shirt"]}))
    return lines


def caption_all(work: str) -> Dict[str, str]:
    """Setting name → the captioner's output for the test images."""
    data, cache = os.path.join(work, "data"), os.path.join(work, "features")
    images = open(os.path.join(data, "test.features"), encoding="utf-8").read().split("\n")[:-1]
    plain, constrained = "\n".join(images) + "\n", "\n".join(constraint_lines(work, images)) + "\n"
    avoid = os.path.join(work, "avoid.txt")
    with open(avoid, "w", encoding="utf-8") as f:
        f.write("\n".join(GLOBAL_AVOID) + "\n")
    settings = {"plain": ([], plain), "constraints": (["--json-input"], constrained),
                "avoid-list": (["--avoid-list", avoid], plain), "no-repeat-2": (["--no-repeat-ngram-size", "2"], plain),
                "guided": (["--guide-with-classifier"], plain), "nbest-json": (["--output-type", "json",
                                                                                 "--nbest-size", "3"], plain)}
    outputs = {}
    models = [os.path.join(work, "model-" + name) for name in DECODERS]
    for name, model in zip(DECODERS, models):
        for setting, (options, stdin) in settings.items():
            outputs["%s.%s" % (name, setting)] = run("captioner", "--models", model, "--source-root", cache,
                                                     "--beam-size", "5", "--quiet", *options, stdin=stdin)
    for setting in ("plain", "constraints"):
        options, stdin = settings[setting]
        outputs["ensemble." + setting] = run("captioner", "--models", *models, "--source-root", cache, "--quiet",
                                             *options, stdin=stdin)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "search-regression"),
                        help="Folder of the data, features and models (made by the first run).")
    parser.add_argument("--train-seconds", type=int, default=100, help="Training time of each decoder.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="NAME", help="Write the captions into WORK/NAME.")
    mode.add_argument("--compare", metavar="NAME", help="Compare the captions with those of WORK/NAME.")
    args = parser.parse_args()
    prepare(args.work, args.train_seconds)
    outputs = caption_all(args.work)
    folder = os.path.join(args.work, args.write or args.compare)
    if args.write:
        os.makedirs(folder, exist_ok=True)
        for name, text in outputs.items():
            with open(os.path.join(folder, name + ".txt"), "w", encoding="utf-8") as f:
                f.write(text)
        print("written: %d files of %d lines into %s" % (len(outputs), text.count("\n"), folder))
        return
    differ = 0
    for name, text in outputs.items():
        expected = open(os.path.join(folder, name + ".txt"), encoding="utf-8").read().splitlines()
        lines = text.splitlines()
        same = sum(a == b for a, b in zip(lines, expected)) if len(lines) == len(expected) else 0
        differ += len(expected) - same
        print("%s identical lines: %d of %d" % (name, same, len(expected)))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
