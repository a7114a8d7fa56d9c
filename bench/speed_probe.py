#!/usr/bin/env python3
"""One speed measurement in a process of its own, printed as one JSON line with the process's peak memory.

    .venv/bin/python bench/speed_probe.py encoder-forward --batch-size 32 --images 512
    .venv/bin/python bench/speed_probe.py extract --batch-size 32 --images 512
    .venv/bin/python bench/speed_probe.py caption --model runs/flickr8k-full/model --features D/test.features \
        --source-root runs/features-efficientnet_lite0 --beam-size 5 --batch-size 32 --images 320
    .venv/bin/python bench/speed_probe.py model-step --updates 40 -- <imcap.train options>

* ``encoder-forward``: the fused CNN's bare forward on images decoded and normalized into device arrays beforehand
  (what extraction could reach: no decoding, no writing); images/s, and with the normalization and the copy of the
  features back to numpy (``ImageEncoder.encode``).
* ``extract``: the extractor's library path (:func:`imcap.extract_features.extract`: decoding threads, forward,
  atomic ``.npy`` writes) into a temporary cache, the first batch left out (graph building); images/s.
* ``caption``: :class:`imcap.inference.Captioner` on cached features loaded beforehand, the first batch left out;
  images/s and the mean caption length (words).
* ``model-step``: forward, backward and optimizer step of the model ``imcap.train``'s options describe, on batches
  of the real training data converted to device arrays beforehand (what training could reach: no batching, no
  copies, no checkpoints); samples/s over ``--updates`` after 5 warm-up updates.

Every figure is wall-clock time of the measured loop only; ``peak_rss_mb`` is the process's peak resident memory
(``ru_maxrss``), start-up and loading included. ``bench/peer_sockeye.py`` and ``bench/scaling.py`` run this script
once per setting, so that every setting's memory is its own.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from imcap.paths import DEFAULT_FLICKR8K  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def image_list(root: str, count: int) -> list:
    """The first ``count`` image names of ``root`` in sorted order (the same images for every setting)."""
    names = sorted(n for n in os.listdir(root) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    if len(names) < count:
        raise SystemExit("speed_probe: %s holds %d images, fewer than --images %d" % (root, len(names), count))
    return names[:count]


def encoder_forward(args) -> dict:
    import mxnet as mx
    from imcap.vision.image_encoder import ImageEncoder
    from imcap.vision.images import load_image
    encoder = ImageEncoder(args.encoder)
    names = image_list(args.image_root, args.images + args.batch_size)
    images = np.stack([load_image(os.path.join(args.image_root, n), encoder.input_size) for n in names])
    batches = [images[i:i + args.batch_size] for i in range(0, len(images) - args.batch_size + 1, args.batch_size)]
    encoder.encode(batches[0])                                   # warm-up: graph building and fusion
    inputs = [encoder.preprocess(b) for b in batches[1:]]
    mx.nd.waitall()
    start = time.time()
    for x in inputs:                                             # the network alone, on normalized device arrays
        encoder.net(x).wait_to_read()
    bare = time.time() - start
    start = time.time()
    for batch in batches[1:]:                                    # with normalization and the copy back to numpy
        encoder.encode(batch)
    full = time.time() - start
    count = len(inputs) * args.batch_size
    return {"images_per_s": count / bare, "images_per_s_with_preprocessing": count / full, "images": count}


def extract(args) -> dict:
    from imcap.extract_features import extract as run_extract
    from imcap.vision.image_encoder import ImageEncoder
    encoder = ImageEncoder(args.encoder)
    names = image_list(args.image_root, args.images + args.batch_size)
    warm, timed = names[:args.batch_size], names[args.batch_size:]
    cache = tempfile.mkdtemp(prefix="imcap-probe-")
    try:
        run_extract(encoder, warm, args.image_root, cache, args.batch_size, progress=False)
        start = time.time()
        run_extract(encoder, timed, args.image_root, cache, args.batch_size, progress=False)
        seconds = time.time() - start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"images_per_s": len(timed) / seconds, "images": len(timed)}


def caption(args) -> dict:
    from imcap.features import FeatureStore
    from imcap.inference import CaptionInput, Captioner
    store = FeatureStore(args.features, args.source_root)
    rows = store.index[:args.images + args.batch_size]
    features = [np.asarray(store.features[r], dtype=np.float32) for r in rows]
    captioner = Captioner(args.model, beam_size=args.beam_size, batch_size=args.batch_size,
                          max_output_length=args.max_output_length)
    captioner.caption([CaptionInput(features=f) for f in features[:args.batch_size]])    # warm-up
    timed = [CaptionInput(features=f) for f in features[args.batch_size:]]
    start = time.time()
    results = captioner.caption(timed)
    seconds = time.time() - start
    return {"images_per_s": len(timed) / seconds, "images": len(timed),
            "mean_length": float(np.mean([len(r.caption.split()) for r in results]))}


def model_step(args) -> dict:
    import mxnet as mx
    from mxnet import autograd
    from imcap.loss import sequence_loss
    from imcap.train import build_trainer, training_arg_parser
    train_args = training_arg_parser().parse_args(args.train_options + ["--quiet"])
    trainer = build_trainer(train_args)
    ctx = trainer.ctx[0]
    indices = trainer.batcher.epoch_batches(0)[:args.updates + 5]
    batches = []
    for rows in indices:
        batch = trainer.train_data.make_batch(rows)
        batches.append((mx.nd.array(batch.features, ctx=ctx), mx.nd.array(batch.target_in, ctx=ctx),
                        mx.nd.array(batch.target_out, ctx=ctx), float(batch.num_tokens), len(batch)))
    mx.nd.waitall()
    samples, start = 0, None
    for number, (features, target_in, target_out, tokens, size) in enumerate(batches):
        if number == 5:
            mx.nd.waitall()
            start, samples = time.time(), 0
        with autograd.record():
            logits, attention = trainer.model(features, target_in)
            loss, _ = sequence_loss(logits, attention, target_out, train_args.label_smoothing,
                                    train_args.doubly_stochastic_attention_weight)
            loss = loss / tokens
        loss.backward()
        trainer.trainer.step(1)
        samples += size
    mx.nd.waitall()
    seconds = time.time() - start
    return {"samples_per_s": samples / seconds, "updates": len(batches) - 5,
            "parameters": trainer.model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["encoder-forward", "extract", "caption", "model-step"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512, help="images measured (after the warm-up batch)")
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--image-root", default=os.path.join(DEFAULT_FLICKR8K, "images"))
    parser.add_argument("--model", help="caption: model dir")
    parser.add_argument("--features", help="caption: feature list (SPLIT.features)")
    parser.add_argument("--source-root", help="caption: root of the feature list's paths")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--max-output-length", type=int, default=40)
    parser.add_argument("--updates", type=int, default=40, help="model-step: timed updates")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser.epilog = "model-step: the imcap.train options follow a '--'."
    args = parser.parse_args(argv[:split])
    args.train_options = argv[split + 1:]
    result = {"encoder-forward": encoder_forward, "extract": extract, "caption": caption,
              "model-step": model_step}[args.kind](args)
    result.update(kind=args.kind, batch_size=args.batch_size, peak_rss_mb=round(peak_rss_mb(), 1))
    if args.kind == "caption":
        result["beam_size"] = args.beam_size
    print(json.dumps(result))


if __name__ == "__main__":
    main()
