#!/usr/bin/env python3
"""Checkpoint size and time: megabytes and seconds to write and read one ``params`` file of the default model
(``imcap.train``'s defaults: LSTM 512 with MLP attention over 7x7x1280 EfficientNet-Lite0 regions, the vocabulary of
the Flickr8k training captions at ``--word-min-count 5``), as imcap writes it now (each parameter once) and, as the
reference in the same run, as imcap 0.1.0 wrote it (every parameter also under the names of the two search graphs).

    .venv/bin/python bench/checkpoint_io.py

Prints one figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
import mxnet as mx  # noqa: E402

from imcap import arguments  # noqa: E402
from imcap.model import CaptionModel, load_params, save_params  # noqa: E402
from imcap.prepare_data import read_flickr, tokenize  # noqa: E402
from imcap.train import model_config_from_args, training_arg_parser  # noqa: E402
from imcap.vocab import build_vocab  # noqa: E402
from benchlib import append_row  # noqa: E402


def default_model(captions: str) -> CaptionModel:
    """The model of ``imcap.train``'s default options, for Flickr8k's training vocabulary and Lite0's regions."""
    dataset = read_flickr(captions)
    vocab = build_vocab((tokenize(c) for _, captions in dataset["train"] for c in captions), min_count=5)
    args = training_arg_parser().parse_args(["-s", captions, "-t", captions, "-vs", captions, "-vt", captions,
                                             "-o", "unused"])
    model = CaptionModel(model_config_from_args(args, len(vocab), 49, 1280, None), prefix="model_")
    model.initialize(mx.init.Xavier())
    model.hybridize()
    return model


def save_legacy(model: CaptionModel, path: str) -> None:
    """Save as imcap 0.1.0 did: the model's parameters, then again under the names of its search graphs."""
    arrays = {name: p.data() for name, p in model._collect_params_with_prefix().items()}
    for prefix, block in (("_encode.", model._encode), ("_step.", model._step)):
        arrays.update({name: p.data() for name, p in block._collect_params_with_prefix(prefix).items()})
    mx.nd.save(path, arrays)


def timed(function, repeats: int) -> float:
    """Mean seconds of ``function()`` over ``repeats`` calls."""
    start = time.time()
    for _ in range(repeats):
        function()
    return (time.time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", default=os.path.join(arguments.DEFAULT_FLICKR8K, "captions.tsv"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    model = default_model(args.captions)
    parameters = model.num_parameters()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, save in (("now", lambda path: save_params(model, path)), ("0.1.0", lambda path: save_legacy(model, path))):
            path = os.path.join(tmp, "params." + name)
            figures[name + " save s"] = timed(lambda: save(path), args.repeats)
            figures[name + " MB"] = os.path.getsize(path) / 1e6
            figures[name + " load s"] = timed(lambda: load_params(model, path), args.repeats)
            figures[name + " bytes/parameter"] = os.path.getsize(path) / parameters
    print("parameters\t%d" % parameters)
    for key, value in figures.items():
        print("%s\t%.3f" % (key, value))
    print("size ratio (0.1.0 / now)\t%.2f" % (figures["0.1.0 MB"] / figures["now MB"]))
    print("save time ratio (0.1.0 / now)\t%.2f" % (figures["0.1.0 save s"] / figures["now save s"]))
    append_row(args.benchmarks, "Checkpoint size and time (bench/checkpoint_io.py)",
               ["parameters", "MB (now / 0.1.0)", "bytes per parameter (now / 0.1.0)", "save s (now / 0.1.0)",
                "load s (now / 0.1.0)"],
               "bench/checkpoint_io.py --repeats %d" % args.repeats,
               ["%.2fM" % (parameters / 1e6), "%.1f / %.1f" % (figures["now MB"], figures["0.1.0 MB"]),
                "%.2f / %.2f" % (figures["now bytes/parameter"], figures["0.1.0 bytes/parameter"]),
                "%.3f / %.3f" % (figures["now save s"], figures["0.1.0 save s"]),
                "%.3f / %.3f" % (figures["now load s"], figures["0.1.0 load s"])])


if __name__ == "__main__":
    main()
