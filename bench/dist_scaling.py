#!/usr/bin/env python3
"""Distributed training on this machine: training samples/s of the reference LSTM (``--rnn-num-hidden 512
--rnn-attention-num-hidden 512 --num-embed 512``, batch 64 per worker) in one process, as 1 worker and as 2 workers
of a ``dist_sync`` job (``imcap.launch -n N -s 1``, one server), the bytes each worker pushes and pulls per update,
the seconds per update spent in the kvstore (``Trainer.allreduce_grads`` with a wait before and after), and the
one-process samples/s of the decoder comparison's Transformer, on the full Flickr8k cache (read-only).

    .venv/bin/python bench/dist_scaling.py [--updates 20]

Samples/s are those between the first and the last checkpoint of each run (start-up, graph building and the first
updates excluded); validation runs on the first ``--val-lines`` validation images only. The loopback figure is the
growth of ``/proc/net/dev``'s ``lo`` byte counter during the 2-worker run divided by its updates (an upper bound:
it counts the job's start-up and any other loopback traffic of the machine). The model on paper built from these
figures is in docs/scaling.md. Prints one figure per line and appends a row to docs/benchmarks.md. Run it alone on
the machine.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imcap.metrics_file import read_metrics  # noqa: E402
from benchlib import append_row  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LSTM = ["--rnn-num-hidden", "512", "--rnn-attention-num-hidden", "512", "--num-embed", "512"]
TRANSFORMER = ["--decoder", "transformer", "--num-layers", "3", "--transformer-model-size", "256", "--num-embed", "256",
               "--transformer-attention-heads", "8", "--transformer-feed-forward-num-hidden", "1024",
               "--image-positional-embedding-type", "fixed"]


def loopback_bytes() -> int:
    """Bytes received on ``lo`` so far (``/proc/net/dev``)."""
    with open("/proc/net/dev", encoding="utf-8") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                return int(line.split(":", 1)[1].split()[0])
    return 0


def val_subset(data: str, lines: int, directory: str) -> list:
    """``--validation-source``/``--validation-target`` options of the first ``lines`` validation lines."""
    names = ["val.features"] + ["val.captions.%d" % k for k in range(5)]
    for name in names:
        with open(os.path.join(data, name), encoding="utf-8") as f, \
                open(os.path.join(directory, name), "w", encoding="utf-8") as out:
            out.writelines(f.readlines()[:lines])
    return (["--validation-source", os.path.join(directory, names[0]), "--validation-target"]
            + [os.path.join(directory, n) for n in names[1:]])


def run(name: str, command: list, output: str, updates: int) -> dict:
    """Run one training; its steady samples/s, kvstore s/update and MB pushed per update."""
    start = time.time()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s\n%s" % (name, proc.stdout[-3000:], proc.stderr[-3000:]))
    metrics = read_metrics(os.path.join(output, "metrics"))
    first, last = metrics[0], metrics[-1]
    samples = [m["samples-per-second"] * m["time-elapsed"] for m in (first, last)]
    figures = {"samples/s": (samples[1] - samples[0]) / (last["time-elapsed"] - first["time-elapsed"]),
               "seconds": time.time() - start, "updates": last["updates"]}
    if "kvstore-seconds-per-update" in last:
        figures["kvstore s/update"] = last["kvstore-seconds-per-update"]
    with open(os.path.join(output, "log"), encoding="utf-8") as f:
        pushed = re.search(r"pushes ([0-9.]+) MB", f.read())
    if pushed:
        figures["MB pushed/update"] = float(pushed.group(1))
    assert last["updates"] == updates
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="runs/features-efficientnet_lite0")
    parser.add_argument("--data", default="runs/flickr8k-full/data")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--val-lines", type=int, default=50)
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        common = (["--source", os.path.join(args.data, "train.features"), "--target",
                   os.path.join(args.data, "train.captions"), "--source-root", args.features]
                  + val_subset(args.data, args.val_lines, tmp)
                  + ["--batch-size", "64", "--max-updates", str(args.updates), "--checkpoint-interval",
                     str(args.updates // 2), "--use-cpu", "--quiet", "--log-interval", "0"])
        train = [python, "-m", "imcap.train"]

        def output(name):
            return os.path.join(tmp, name)
        results = {}
        results["lstm 1 process"] = run("lstm 1 process", train + common + LSTM + ["--output", output("p1")],
                                        output("p1"), args.updates)
        results["lstm 1 worker"] = run("lstm 1 worker", [python, "-m", "imcap.launch", "-n", "1", "--"] + train
                                       + common + LSTM + ["--kvstore", "dist_sync", "--output", output("w1")],
                                       output("w1"), args.updates)
        lo = loopback_bytes()
        results["lstm 2 workers"] = run("lstm 2 workers", [python, "-m", "imcap.launch", "-n", "2", "--"] + train
                                        + common + LSTM + ["--kvstore", "dist_sync", "--output", output("w2")],
                                        output("w2"), args.updates)
        lo_mb = (loopback_bytes() - lo) / 1e6 / args.updates
        results["transformer 1 process"] = run("transformer 1 process", train + common + TRANSFORMER
                                               + ["--output", output("t1")], output("t1"), args.updates)
        results["transformer 2 workers"] = run("transformer 2 workers", [python, "-m", "imcap.launch", "-n", "2",
                                                                         "--"] + train + common + TRANSFORMER
                                               + ["--kvstore", "dist_sync", "--output", output("t2")],
                                               output("t2"), args.updates)
    for name, figures in results.items():
        for key, value in figures.items():
            print("%s %s\t%.3f" % (name, key, value))
    print("loopback MB/update (2 workers, lo counter)\t%.1f" % lo_mb)
    r = results
    append_row(args.benchmarks, "Distributed training (bench/dist_scaling.py)",
               ["model (batch 64 per worker)", "samples/s: 1 process / 1 worker / 2 workers", "MB pushed = pulled "
                "per worker and update", "kvstore s/update: 1 / 2 workers", "loopback MB per update (2 workers)"],
               "bench/dist_scaling.py --updates %d" % args.updates,
               ["LSTM 512 (attention 512, embed 512)", "%.1f / %.1f / %.1f" % (
                   r["lstm 1 process"]["samples/s"], r["lstm 1 worker"]["samples/s"],
                   r["lstm 2 workers"]["samples/s"]), "%.1f" % r["lstm 2 workers"]["MB pushed/update"],
                "%.3f / %.3f" % (r["lstm 1 worker"]["kvstore s/update"], r["lstm 2 workers"]["kvstore s/update"]),
                "%.0f" % lo_mb])
    append_row(args.benchmarks, "Distributed training (bench/dist_scaling.py)",
               ["model (batch 64 per worker)", "samples/s: 1 process / 1 worker / 2 workers", "MB pushed = pulled "
                "per worker and update", "kvstore s/update: 1 / 2 workers", "loopback MB per update (2 workers)"],
               "bench/dist_scaling.py --updates %d" % args.updates,
               ["Transformer 3 x 256 (decoder comparison's)", "%.1f / - / %.1f" % (
                   r["transformer 1 process"]["samples/s"], r["transformer 2 workers"]["samples/s"]),
                "%.1f" % r["transformer 2 workers"]["MB pushed/update"],
                "- / %.3f" % r["transformer 2 workers"]["kvstore s/update"], "-"])


if __name__ == "__main__":
    main()
