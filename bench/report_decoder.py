#!/usr/bin/env python3
"""Report one decoder's finished Flickr8k run (bench/decoder_comparison.sh): one figure per line on STDOUT and a
row in the "Decoder comparison" table of docs/benchmarks.md. Captioning speed is measured here, at beam 5 on the
cached features of 1000 test images, batch 32."""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import imcap  # noqa: E402,F401  (sets OMP_NUM_THREADS before mxnet is imported)
from imcap.model import load_model  # noqa: E402
from benchlib import append_row  # noqa: E402
from caption_speed import images_per_second  # noqa: E402
from report_quality import print_figures, summarize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="Row name (rnn, show-and-tell, transformer, cnn).")
    parser.add_argument("--run", required=True, help="The run dir of scripts/flickr8k.sh full.")
    parser.add_argument("--log", required=True)
    parser.add_argument("--features", required=True, help="The feature cache of the run.")
    parser.add_argument("--command", required=True)
    parser.add_argument("--train-args", default="", help="The decoder's imcap.train options (for the table).")
    parser.add_argument("--benchmarks", required=True)
    parser.add_argument("--images", type=int, default=1000, help="Test images of the speed measurement.")
    args = parser.parse_args()
    run = summarize(args.run, args.log)
    model_dir = run.model_dirs[0]
    figures = run.figures
    figures["parameters"] = load_model(model_dir)[0].num_parameters()
    figures["captioning images/s (beam 5, batch 32)"] = images_per_second(
        model_dir, os.path.join(args.run, "data", "test.features"), args.features, 5, 32, args.images)
    print_figures(figures)
    append_row(args.benchmarks, "Decoder comparison (bench/decoder_comparison.sh)",
               ["decoder", "imcap.train options (after the recipe's)", "parameters", "train min", "updates",
                "train samples/s", "decoding (chosen on val)", "val BLEU-4", "test BLEU-4", "test CIDEr-D",
                "images/s at beam 5"], args.command,
               [args.name, "`%s`" % args.train_args if args.train_args else "(none)",
                "%.1fM" % (figures["parameters"] / 1e6), "%.1f" % figures["training minutes"],
                str(figures["updates"]), "%.0f" % figures["training samples/s"], "`%s`" % run.decode,
                "%.2f" % figures["val BLEU-4 (chosen setting)"], "%.2f" % figures["test BLEU-4"],
                "%.3f" % figures["test CIDEr-D"] if "test CIDEr-D" in figures else "n/a",
                "%.1f" % figures["captioning images/s (beam 5, batch 32)"]])


if __name__ == "__main__":
    main()
