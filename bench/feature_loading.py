#!/usr/bin/env python3
"""The cost of reading features lazily: training samples/s and peak memory of ``imcap.train`` with its features
read from their files batch by batch (the default) and with ``--load-all-features-to-memory``, on the full
Flickr8k cache (EfficientNet-Lite0, 49 x 1280 float16, 6000 training and 1000 validation images).

    .venv/bin/python bench/feature_loading.py

Each run trains the reference model (LSTM 512, MLP attention 512, embeddings 512, batch 64) for ``--updates`` updates
into a temporary dir; samples/s is that of the log lines after the first ``--warmup`` updates (harmonic mean of the
intervals of ``--log-interval`` updates: total samples over total time when the intervals hold equal samples),
peak RSS the training process's (``wait4``'s ``ru_maxrss``). The modes alternate, ``--repeats`` runs each; the
files are in the OS page cache after the first run (the figure is that of warm reads, not of a cold disk). Prints one
figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import append_row  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r"updates (\d+), epoch \d+: ([0-9.]+) samples/s")
MODES = {"lazy": [], "loaded": ["--load-all-features-to-memory"]}


def train_once(args: argparse.Namespace, extra: List[str]) -> Dict[str, float]:
    """One training run: its samples/s after the warm-up, peak RSS (MB) and seconds from start to the first update
    log line's start (loading)."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        model = os.path.join(tmp, "model")
        command = [sys.executable, "-m", "imcap.train", "--source", os.path.join(args.data, "train.features"),
                   "--target", os.path.join(args.data, "train.captions"),
                   "--validation-source", os.path.join(args.data, "val.features"),
                   "--validation-target", os.path.join(args.data, "val.captions.0"),
                   "--source-root", args.cache, "--output", model, "--rnn-num-hidden", "512",
                   "--rnn-attention-num-hidden", "512", "--num-embed", "512", "--batch-size", "64",
                   "--max-updates", str(args.updates), "--checkpoint-interval", str(args.updates),
                   "--log-interval", str(args.log_interval), "--quiet"] + extra
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        if status != 0:
            sys.exit("imcap.train failed (%d):\n%s" % (status, stderr[-3000:]))
        with open(os.path.join(model, "log"), encoding="utf-8") as f:
            log = f.read()
    rates = [float(rate) for updates, rate in LOG_LINE.findall(log) if int(updates) > args.warmup]
    if not rates:
        sys.exit("no samples/s log lines after update %d in the training log" % args.warmup)
    loading = re.search(r"\(regions, dim\) = .* in ([0-9.]+) s", log)
    return {"samples/s": statistics.harmonic_mean(rates), "peak RSS MB": usage.ru_maxrss / 1024,
            "feature loading s": float(loading.group(1)) if loading else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/flickr8k-full/data", help="The split files (read only).")
    parser.add_argument("--cache", default="runs/features-efficientnet_lite0", help="The feature cache (read only).")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tmp", default="/tmp", help="Where the temporary model dirs go.")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    runs: Dict[str, List[Dict[str, float]]] = {mode: [] for mode in MODES}
    for repeat in range(args.repeats):
        for mode in (["loaded", "lazy"] if repeat % 2 == 0 else ["lazy", "loaded"]):
            runs[mode].append(train_once(args, MODES[mode]))
            print("run %d %s\t%s" % (repeat + 1, mode, "\t".join("%s %.2f" % kv for kv in runs[mode][-1].items())),
                  flush=True)
    figures = {mode: {key: statistics.mean(run[key] for run in mode_runs) for key in mode_runs[0]}
               for mode, mode_runs in runs.items()}
    for mode, values in figures.items():
        for key, value in values.items():
            print("%s %s\t%.2f" % (mode, key, value))
    ratio = figures["lazy"]["samples/s"] / figures["loaded"]["samples/s"]
    print("samples/s ratio (lazy / loaded)\t%.3f" % ratio)
    append_row(args.benchmarks, "Lazily read features (bench/feature_loading.py)",
               ["training", "samples/s (lazy / loaded)", "ratio", "peak RSS MB (lazy / loaded)",
                "feature start-up s (lazy / loaded)"],
               "bench/feature_loading.py --updates %d --warmup %d --repeats %d"
               % (args.updates, args.warmup, args.repeats),
               ["LSTM 512, MLP attention 512, embed 512, batch 64, %d updates; 6000 + 1000 images, 49 x 1280 float16"
                % args.updates,
                "%.1f / %.1f" % (figures["lazy"]["samples/s"], figures["loaded"]["samples/s"]), "%.3f" % ratio,
                "%.0f / %.0f" % (figures["lazy"]["peak RSS MB"], figures["loaded"]["peak RSS MB"]),
                "%.1f / %.1f" % (figures["lazy"]["feature loading s"], figures["loaded"]["feature loading s"])])


if __name__ == "__main__":
    main()
