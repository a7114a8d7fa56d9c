#!/usr/bin/env python3
"""Extraction speed: images/s of imcap's feature extractor on real Flickr8k images, with MXNet's oneDNN graph
fusion (the default) and, as the reference in the same process, with a plain hybridize().

    .venv/bin/python bench/extract_speed.py [--images 1024] [--encoder efficientnet_lite0]

Prints one figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.arguments import DEFAULT_FLICKR8K  # noqa: E402
from imcap.extract_features import extract  # noqa: E402
from imcap.vision.image_encoder import ImageEncoder  # noqa: E402
from benchlib import append_row  # noqa: E402


def images_per_second(encoder_name: str, fuse: bool, images, root: str, batch_size: int) -> float:
    encoder = ImageEncoder(encoder_name, fuse=fuse)
    cache = tempfile.mkdtemp(prefix="imcap-bench-")
    try:
        extract(encoder, images[:batch_size], root, cache, batch_size, progress=False)   # warm-up: graph build
        shutil.rmtree(cache)
        start = time.time()
        extract(encoder, images, root, cache, batch_size, progress=False)
        return len(images) / (time.time() - start)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--encoder", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-root", default=os.path.join(DEFAULT_FLICKR8K, "images"))
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    images = sorted(os.listdir(args.image_root))[:args.images]
    fused = images_per_second(args.encoder, True, images, args.image_root, args.batch_size)
    plain = images_per_second(args.encoder, False, images, args.image_root, args.batch_size)
    print("%s extraction images/s (oneDNN fusion): %.1f" % (args.encoder, fused))
    print("%s extraction images/s (plain hybridize, reference): %.1f" % (args.encoder, plain))
    print("fusion speed-up: %.2f" % (fused / plain))
    command = "bench/extract_speed.py --images %d --encoder %s --batch-size %d" % (args.images, args.encoder,
                                                                                  args.batch_size)
    append_row(args.benchmarks, "Feature extraction speed (bench/extract_speed.py)",
               ["encoder", "images/s (oneDNN fusion)", "images/s (plain hybridize, reference)", "ratio"], command,
               [args.encoder, "%.1f" % fused, "%.1f" % plain, "%.2f" % (fused / plain)])


if __name__ == "__main__":
    main()
