#!/usr/bin/env python3
"""Show and Tell with fused RNN layers against the step-by-step cells: training samples/s and the bare
forward+backward of one batch, on the full Flickr8k feature cache.

The model is the Show and Tell row of docs/decoders.md (``imcap.train``'s defaults with ``--rnn-attention-type none
--rnn-decoder-state-init zero``, the recipe's ``--batch-size 128``; ``--train-args`` adds options, e.g.
``--rnn-cell-type gru --num-layers 2``). "fused" is imcap's decoder now: teacher forcing runs the whole caption
through MXNet's fused RNN operator (``gluon.rnn.LSTM``, oneDNN on CPU). The reference, "step", is the decoder of
imcap/rnn.py at commit ``--reference-commit`` (read with ``git show``, imported under another name), which steps a
Gluon cell per position; both start from the same weights (the step model loads the fused model's parameters: the
names are the same), and the bench prints how far apart their logits are.

* training samples/s: ``--updates`` updates of :class:`imcap.training.Trainer` (Adam, norm clipping, the length
  buckets of epoch 0 of seed 13, features read lazily from the cache as ``imcap.train`` does), as its ``metrics``
  file reports them (one checkpoint at the end, validation perplexity on the first ``--validation-images`` val
  images included);
* forward+backward ms: the model's teacher-forced forward, the loss and the backward on one batch of the median
  caption length, the mean of ``--repeats`` after two warm-up runs.

    .venv/bin/python bench/fused_rnn.py            # ~3 minutes; run it alone on the machine

Prints one figure per line and appends a row to docs/benchmarks.md. Model dirs go to a temporary directory.
"""
import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet is imported)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd  # noqa: E402

from imcap.data import BucketBatcher, ParallelData  # noqa: E402
from imcap.features import FeatureStore, read_manifest  # noqa: E402
from imcap.loss import sequence_loss  # noqa: E402
from imcap.model import CaptionModel, load_params, save_params  # noqa: E402
from imcap.train import model_config_from_args, trainer_config_from_args, training_arg_parser  # noqa: E402
from imcap.training import Trainer, build_model  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from imcap.vocab import build_vocab  # noqa: E402
from benchlib import append_row  # noqa: E402

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHOW_AND_TELL = ["--rnn-attention-type", "none", "--rnn-decoder-state-init", "zero", "--batch-size", "128"]


def reference_rnn_module(commit: str) -> types.ModuleType:
    """imcap/rnn.py of ``commit``, imported as ``imcap.rnn_<commit>``: its decoder registers for its own config
    type, so a :class:`ModelConfig` holding that config builds the decoder of then."""
    source = subprocess.run(["git", "show", "%s:imcap/rnn.py" % commit], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType("imcap.rnn_%s" % commit)
    module.__package__ = "imcap"
    sys.modules[module.__name__] = module
    exec(compile(source, "%s:imcap/rnn.py" % commit, "exec"), module.__dict__)
    return module


def subset(path: str, lines: int, directory: str) -> str:
    """The first ``lines`` lines of ``path``, as a file in ``directory``."""
    out = os.path.join(directory, os.path.basename(path))
    with open(out, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in read_lines(path)[:lines])
    return out


def forward_backward_ms(model: CaptionModel, batch, repeats: int) -> float:
    """Mean milliseconds of forward, loss and backward of ``model`` on ``batch`` (after two warm-up runs)."""
    features, target_in = mx.nd.array(batch.features), mx.nd.array(batch.target_in)
    target_out = mx.nd.array(batch.target_out)

    def run():
        with autograd.record():
            logits, attention = model(features, target_in)
            loss, _ = sequence_loss(logits, attention, target_out, 0.1, 0.0)
        loss.backward()
        mx.nd.waitall()
    for _ in range(2):
        run()
    start = time.time()
    for _ in range(repeats):
        run()
    return (time.time() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/flickr8k-full/data", help="Split lists of scripts/flickr8k.sh full.")
    parser.add_argument("--source-root", default="runs/features-efficientnet_lite0", help="The feature cache.")
    parser.add_argument("--train-args", default="", help="More imcap.train options for the model.")
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--validation-images", type=int, default=50)
    parser.add_argument("--reference-commit", default="103615a",
                        help="The commit whose imcap/rnn.py is the step-by-step reference (the last before fusing).")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    reference = reference_rnn_module(args.reference_commit)
    data = args.data
    train_options = training_arg_parser().parse_args(
        ["-s", os.path.join(data, "train.features"), "-t", os.path.join(data, "train.captions"),
         "-vs", os.path.join(data, "val.features"), "-vt", os.path.join(data, "val.captions.0"), "-o", "unused",
         "--max-updates", str(args.updates), "--checkpoint-interval", str(args.updates), "--log-interval", "0"]
        + SHOW_AND_TELL + args.train_args.split())
    train_store = FeatureStore(os.path.join(data, "train.features"), args.source_root)
    vocab = build_vocab((line.split() for line in read_lines(os.path.join(data, "train.captions"))),
                        min_count=train_options.word_min_count)
    train_data = ParallelData(train_store, [os.path.join(data, "train.captions")], vocab, train_options.max_seq_len)
    regions, dim = train_store.shape
    fused_config = model_config_from_args(train_options, len(vocab), regions, dim, read_manifest(args.source_root))
    step_config = dataclasses.replace(fused_config, decoder=reference.RNNDecoderConfig(
        **dataclasses.asdict(fused_config.decoder)))
    trainer_config = trainer_config_from_args(train_options)
    batcher = BucketBatcher(train_data, trainer_config.batch_size, trainer_config.bucket_width, trainer_config.seed)
    batches = batcher.epoch_batches(0)
    lengths = [int(train_data.lengths[b].max()) for b in batches]
    median = batches[int(np.argsort(lengths)[len(lengths) // 2])]
    batch = train_data.make_batch(median, next(k for k in batcher.keys if k >= int(train_data.lengths[median].max())))

    figures, ctx = {}, [mx.cpu()]
    with tempfile.TemporaryDirectory(prefix="imcap-fused-rnn-") as tmp:
        val_dir = os.path.join(tmp, "val")
        os.makedirs(val_dir)
        val_features = subset(os.path.join(data, "val.features"), args.validation_images, val_dir)
        val_captions = [subset(os.path.join(data, "val.captions.%d" % i), args.validation_images, val_dir)
                        for i in range(5)]
        val_data = ParallelData(FeatureStore(val_features, args.source_root), val_captions, vocab,
                                train_options.max_seq_len)
        references = [read_lines(path) for path in val_captions]
        initial = os.path.join(tmp, "initial.params")
        models = {}
        for name, config in (("fused", fused_config), ("step", step_config)):
            model = build_model(config, ctx, trainer_config.seed)
            if name == "fused":
                save_params(model, initial)
            else:
                load_params(model, initial)
            models[name] = model
        logits = [models[name](mx.nd.array(batch.features), mx.nd.array(batch.target_in))[0].asnumpy()
                  for name in ("fused", "step")]
        figures["max |logit difference| fused - step"] = float(np.abs(logits[0] - logits[1]).max())
        for name, model in models.items():
            figures["%s forward+backward ms/batch" % name] = forward_backward_ms(model, batch, args.repeats)
        for name, model in models.items():
            trainer = Trainer(trainer_config, model=model, vocab=vocab, train_data=train_data,
                              validation_data=val_data, validation_references=references,
                              output_dir=os.path.join(tmp, name), contexts=ctx, progress_bar=False)
            trainer.fit()
            figures["%s training samples/s" % name] = trainer.metrics[-1]["samples-per-second"]
    figures["training speed-up (fused / step)"] = (figures["fused training samples/s"]
                                                   / figures["step training samples/s"])
    figures["forward+backward speed-up (step / fused)"] = (figures["step forward+backward ms/batch"]
                                                          / figures["fused forward+backward ms/batch"])
    print("model\t%s, %d parameters" % (" ".join(SHOW_AND_TELL + args.train_args.split()),
                                         models["fused"].num_parameters()))
    print("batch for forward+backward\t%d captions of length %d" % batch.target_in.shape)
    for key, value in figures.items():
        print("%s\t%.6g" % (key, value))
    command = "bench/fused_rnn.py --updates %d --repeats %d%s" % (
        args.updates, args.repeats, " --train-args \"%s\"" % args.train_args if args.train_args else "")
    append_row(args.benchmarks, "Fused Show and Tell (bench/fused_rnn.py)",
               ["model (imcap.train options)", "reference", "training samples/s (fused / step)", "speed-up",
                "forward+backward ms per batch (fused / step)", "speed-up"], command,
               ["`%s`" % " ".join(SHOW_AND_TELL + args.train_args.split()),
                "imcap/rnn.py of %s" % args.reference_commit,
                "%.0f / %.0f" % (figures["fused training samples/s"], figures["step training samples/s"]),
                "%.2f" % figures["training speed-up (fused / step)"],
                "%.1f / %.1f" % (figures["fused forward+backward ms/batch"], figures["step forward+backward ms/batch"]),
                "%.2f" % figures["forward+backward speed-up (step / fused)"]])


if __name__ == "__main__":
    main()
