#!/usr/bin/env python3
"""Captioning speed: images/s of ``imcap.captioner`` on the Flickr8k test images from cached features, at beam 1
and beam 5, batched (``--batch-size 32``) and, as the reference in the same process, one image at a time
(``--batch-size 1``).

    .venv/bin/python bench/caption_speed.py --model runs/flickr8k-full/model \
        --source runs/flickr8k-full/data/test.features --source-root runs/features-efficientnet_lite0

Prints one figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401
from imcap.inference import CaptionInput, Captioner  # noqa: E402
from imcap.utils import read_lines  # noqa: E402
from benchlib import append_row  # noqa: E402


def images_per_second(model: str, source: str, source_root: str, beam: int, batch: int, limit: int) -> float:
    """Images per second of :meth:`imcap.inference.Captioner.caption` on the first ``limit`` lines of ``source``,
    after a warm-up batch that builds the graphs."""
    captioner = Captioner([model], beam_size=beam, batch_size=batch, source_root=source_root)
    inputs = [CaptionInput(path=path.strip(), line=number)
              for number, path in enumerate(read_lines(source)[:limit], 1)]
    captioner.caption(inputs[:batch])   # warm-up: builds the graphs
    start = time.time()
    results = captioner.caption(inputs)
    elapsed = time.time() - start
    failed = [r for r in results if r.error is not None]
    if failed:
        sys.exit("caption_speed: line %d: %s" % (failed[0].line, failed[0].error))
    return len(inputs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--source", required=True, help="Test .features list.")
    parser.add_argument("--source-root", required=True)
    parser.add_argument("--images", type=int, default=1000, help="Lines of --source used (batched runs).")
    parser.add_argument("--images-unbatched", type=int, default=200, help="Lines used by the --batch-size 1 runs.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    figures = {}
    for beam in (1, 5):
        batched = images_per_second(args.model, args.source, args.source_root, beam, args.batch_size, args.images)
        single = images_per_second(args.model, args.source, args.source_root, beam, 1, args.images_unbatched)
        figures[beam] = (batched, single)
        print("beam %d, batch %d: %.1f images/s" % (beam, args.batch_size, batched))
        print("beam %d, batch 1 (reference): %.1f images/s" % (beam, single))
        print("beam %d, batched / one at a time: %.2f" % (beam, batched / single))
    command = "bench/caption_speed.py --model %s --images %d --batch-size %d" % (args.model, args.images,
                                                                                args.batch_size)
    append_row(args.benchmarks, "Captioning speed (bench/caption_speed.py)",
               ["beam 1 images/s (batched / one at a time)", "beam 5 images/s (batched / one at a time)",
                "beam 5 ratio"], command,
               ["%.1f / %.1f" % figures[1], "%.1f / %.1f" % figures[5], "%.2f" % (figures[5][0] / figures[5][1])])


if __name__ == "__main__":
    main()
