#!/usr/bin/env python3
"""Do the two backends write the same captions? A model of each decoder (RNN, Transformer, convolutional) is trained
briefly on the full Flickr8k cache (``--train-seconds``, the decoder comparison's settings, ``bench/decoder_comparison.sh
NAME --args``; the three at once, one thread each; a model already in ``--work`` is kept), exported (``python -m
imcap.export``), and the Flickr8k test images are captioned from their cached features by MXNet and by ONNX Runtime (the same search,
``Captioner(backend=...)``) at beam 5, without constraints and with one phrase of each image's first reference
(1-3 words the model knows, drawn as ``bench/constraints.py`` draws them); the share of identical captions, and
every difference with both hypotheses' scores (a tie when they are within 1e-4: either caption is the search's
answer up to float rounding).

    .venv/bin/python bench/onnx_equality.py --data runs/q/data --source-root runs/features-efficientnet_lite0

Prints one figure per line and the differences, and appends a row per model to docs/benchmarks.md. Target (the
ONNX issue): at least 99.5% identical for every decoder, with and without constraints.
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

import imcap  # noqa: E402,F401  (OMP_NUM_THREADS)
from imcap.inference import CaptionInput, Captioner  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from benchlib import append_row  # noqa: E402
from constraints import draw_phrases  # noqa: E402

TIE = 1e-4


def inputs(features: Sequence[str], phrases: Optional[Sequence[str]]) -> List[CaptionInput]:
    return [CaptionInput(path=path, line=n, constraints=[phrases[n - 1]] if phrases and phrases[n - 1] else [])
            for n, path in enumerate(features, 1)]


def compare(model: str, exported: str, checkpoint: str, features: Sequence[str], source_root: str,
            phrases: Optional[Sequence[str]], beam: int, batch: int) -> Dict:
    """Caption ``features`` on both backends: the identical share and the differences (line, both captions and
    scores)."""
    results = {}
    for backend, models, params in (("mxnet", model, checkpoint), ("onnxruntime", exported, None)):
        captioner = Captioner(models, params, backend=backend, beam_size=beam, batch_size=batch,
                              source_root=source_root)
        results[backend] = captioner.caption(inputs(features, phrases))
    differences = []
    for a, b in zip(results["mxnet"], results["onnxruntime"]):
        assert a.error is None and b.error is None, (a.error, b.error)
        if a.tokens != b.tokens:
            differences.append({"line": a.line, "mxnet": " ".join(a.tokens), "mxnet_score": a.score,
                                "onnxruntime": " ".join(b.tokens), "onnxruntime_score": b.score,
                                "tie": abs(a.score - b.score) <= TIE})
    return {"identical": 100.0 * (len(features) - len(differences)) / len(features), "differences": differences}


def train_models(args) -> List[str]:
    """The model dir of each of ``args.decoders`` in ``args.work``, trained for ``args.train_seconds`` where it has no
    ``params.best`` yet (all at once, one OpenMP thread each)."""
    data = args.data
    running, models = [], []
    for name in args.decoders:
        model = os.path.join(args.work, name)
        models.append(model)
        if os.path.isfile(os.path.join(model, args.checkpoint)):
            continue
        options = subprocess.run(["bash", os.path.join(BENCH, "decoder_comparison.sh"), name, "--args"], cwd=REPO,
                                 check=True, capture_output=True, text=True).stdout.split()
        command = [sys.executable, "-m", "imcap.train", "--source", os.path.join(data, "train.features"),
                   "--target", os.path.join(data, "train.captions"), "--validation-source",
                   os.path.join(data, "val.features"), "--validation-target"] + \
            [os.path.join(data, "val.captions.%d" % k) for k in range(5)] + \
            ["--source-root", args.source_root, "--output", model, "--max-seconds", str(args.train_seconds),
             "--batch-size", "64", "--checkpoint-interval", "100", "--decode-and-evaluate", "0", "--seed", "13",
             "--quiet"] + options
        print("training %s for %d s: %s" % (name, args.train_seconds, model))
        running.append(subprocess.Popen(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1")))
    for proc in running:
        if proc.wait() != 0:
            sys.exit("onnx_equality: a training failed (exit %d)" % proc.returncode)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoders", nargs="+", default=["rnn", "transformer", "cnn"],
                        help="Names of bench/decoder_comparison.sh.")
    parser.add_argument("--work", default="runs/onnx-equality", help="Where the models are trained (WORK/NAME).")
    parser.add_argument("--train-seconds", type=int, default=900,
                        help="Training time of each model (batches of 64: 900 s gives each of the three models, "
                             "trained at once on 2 cores, 500-800 updates).")
    parser.add_argument("--checkpoint", default="params.best")
    parser.add_argument("--data", required=True, help="prepare_data's output: test.features, test.captions.0.")
    parser.add_argument("--source-root", required=True, help="The feature cache.")
    parser.add_argument("--images", type=int, default=1000, help="Test lines used.")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1, help="Of the drawn phrases.")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    features = read_lines(os.path.join(args.data, "test.features"))[:args.images]
    references = read_lines(os.path.join(args.data, "test.captions.0"))[:args.images]
    models = train_models(args)
    for model in models:
        exported = os.path.join(tempfile.mkdtemp(prefix="onnx_equality."), "exported")
        subprocess.run([sys.executable, "-m", "imcap.export", "--models", model, "--output", exported, "--checkpoint",
                        args.checkpoint, "--no-image-encoder", "--quiet"], cwd=REPO, check=True)
        loaded = Captioner(exported, backend="onnxruntime")
        known = set(loaded.vocab.token_to_idx)
        rng = random.Random(args.seed)
        phrases = [(draw_phrases(r, known, rng, count=1) or [""])[0] for r in references]
        decoder = loaded.models[0].config.get("decoder_name", "?")
        row = []
        for name, drawn in (("no constraints", None), ("one phrase", phrases)):
            found = compare(model, exported, args.checkpoint, features, args.source_root, drawn, args.beam_size,
                            args.batch_size)
            ties = sum(d["tie"] for d in found["differences"])
            print("%s (%s), %s: %.1f%% identical, %d differences (%d ties within %g)" % (
                model, decoder, name, found["identical"], len(found["differences"]), ties, TIE))
            for d in found["differences"]:
                print("  line %d: mxnet %r (%.5f) | onnxruntime %r (%.5f)%s" % (
                    d["line"], d["mxnet"], d["mxnet_score"], d["onnxruntime"], d["onnxruntime_score"],
                    " tie" if d["tie"] else ""))
            row.append("%.1f%% (%d differences, %d ties)" % (found["identical"], len(found["differences"]), ties))
        command = "bench/onnx_equality.py --data %s --source-root %s --images %d --train-seconds %d" % (
            args.data, args.source_root, args.images, args.train_seconds)
        append_row(args.benchmarks, "ONNX Runtime captions against MXNet's (bench/onnx_equality.py)",
                   ["model", "decoder", "beam", "identical: no constraints", "identical: one phrase"], command,
                   [model, decoder, str(args.beam_size)] + row)


if __name__ == "__main__":
    main()
