#!/usr/bin/env python3
"""How imcap's cost grows with the work: captioning images/s against beam size and batch size, training samples/s
against batch size, extraction images/s against batch size, and the peak memory of each, as rows and a plot.

    .venv/bin/python bench/scaling.py [--model runs/flickr8k-full/model] [--data runs/flickr8k-full/data]
        [--source-root runs/features-efficientnet_lite0] [--plot docs/scaling-curves.png]

Every setting runs in a process of its own (``bench/speed_probe.py``, or ``imcap.train`` for training) so that its
peak RSS is its own. Captioning: the test images from cached features, at most 40 words, the first batch left out;
beam sizes 1, 5, 10, 20 at batch 32, and batch sizes 1 to 128 at beam 5. Training: the reference model of
``bench/peer_sockeye.py`` (LSTM 512, MLP attention 512, embeddings 512) for about 9600 captions per batch size (the
median of the four log reports but the first). Extraction: 256 images per batch size, warm. Prints one figure per
line, appends one row per curve to docs/benchmarks.md and draws the plot. About 12 minutes; run it alone.
"""
import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchlib import append_row  # noqa: E402
from peer_sockeye import IMCAP_MODEL, median_report, run  # noqa: E402

SECTION = "Scaling curves (bench/scaling.py)"
COLUMNS = ["curve", "setting: speed (peak RSS MB)"]
BEAMS = [1, 5, 10, 20]
CAPTION_BATCHES = [1, 2, 4, 8, 16, 32, 64, 128]
TRAIN_BATCHES = [32, 64, 128, 256]
EXTRACT_BATCHES = [1, 8, 16, 32, 64, 128]


def probe(env: Dict[str, str], args: argparse.Namespace, *options: str) -> Dict:
    """One ``speed_probe.py`` run; its JSON result."""
    _, _, text = run([sys.executable, os.path.join(HERE, "speed_probe.py")] + [str(o) for o in options],
                     os.path.join(args.work, "probe.log"), env)
    return json.loads(text.strip().splitlines()[-1])


def train_speed(env: Dict[str, str], args: argparse.Namespace, batch: int, val: Sequence[str]) -> Dict:
    """Samples/s and peak RSS of ``imcap.train`` at ``batch`` captions per update."""
    updates = max(8, 4 * round(9600 / batch / 4))
    out = os.path.join(args.work, "train-b%d" % batch)
    shutil.rmtree(out, ignore_errors=True)
    options = [o for o in IMCAP_MODEL]
    options[options.index("--batch-size") + 1] = str(batch)
    options[options.index("--log-interval") + 1] = str(updates // 4)
    command = [sys.executable, "-m", "imcap.train", "--source", os.path.join(args.data, "train.features"),
               "--target", os.path.join(args.data, "train.captions"), "--validation-source", val[0],
               "--validation-target", val[1], "--source-root", args.source_root, "--output", out,
               "--max-updates", str(updates), "--checkpoint-interval", str(updates), "--quiet"] + options
    _, rss, _ = run(command, os.path.join(args.work, "train.log"), env)
    with open(os.path.join(out, "log")) as f:
        samples_per_s = median_report(f.read(), r"updates \d+, epoch \d+: ([\d.]+) samples/s")
    shutil.rmtree(out, ignore_errors=True)
    return {"samples_per_s": samples_per_s, "peak_rss_mb": rss, "updates": updates}


def short_validation(args: argparse.Namespace) -> List[str]:
    """The first 100 validation images and their first references (a cheap checkpoint at the end)."""
    os.makedirs(args.work, exist_ok=True)
    paths = []
    for name in ("val.features", "val.captions.0"):
        with open(os.path.join(args.data, name)) as f:
            lines = f.readlines()[:100]
        path = os.path.join(args.work, name)
        with open(path, "w") as f:
            f.writelines(lines)
        paths.append(path)
    return paths


def plot(curves: Dict[str, List[Dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("caption_beam", "beam_size", "images/s", "Captioning vs beam size (batch 32)"),
              ("caption_batch", "batch_size", "images/s", "Captioning vs batch size (beam 5)"),
              ("train_batch", "batch_size", "samples/s", "Training vs batch size (LSTM 512)"),
              ("extract_batch", "batch_size", "images/s", "Extraction vs batch size (EfficientNet-Lite0)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, x_key, unit, title) in zip(axes.flat, panels):
        points = curves[key]
        xs = [p[x_key] for p in points]
        speed = [p.get("images_per_s", p.get("samples_per_s")) for p in points]
        ax.plot(xs, speed, "o-", color="tab:blue")
        for x, y in zip(xs, speed):
            ax.annotate("%.0f" % y, (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_ylabel(unit, color="tab:blue")
        ax.set_ylim(0, max(speed) * 1.2)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        memory = ax.twinx()
        memory.plot(xs, [p["peak_rss_mb"] for p in points], "s--", color="tab:red", alpha=0.7)
        memory.set_ylabel("peak RSS (MB)", color="tab:red")
        memory.set_ylim(0, max(p["peak_rss_mb"] for p in points) * 1.2)
    fig.suptitle("imcap on a 2-core CPU: speed (blue, left) and peak memory (red, right)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(REPO, "runs", "flickr8k-full", "model"))
    parser.add_argument("--data", default=os.path.join(REPO, "runs", "flickr8k-full", "data"),
                        help="prepared Flickr8k: train/val/test .features and .captions")
    parser.add_argument("--source-root", default=os.path.join(REPO, "runs", "features-efficientnet_lite0"))
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "scaling"))
    parser.add_argument("--plot", default=os.path.join(REPO, "docs", "scaling-curves.png"))
    parser.add_argument("--benchmarks", default=os.path.join(REPO, "docs", "benchmarks.md"))
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    test = ["--model", args.model, "--features", os.path.join(args.data, "test.features"),
            "--source-root", args.source_root]
    curves: Dict[str, List[Dict]] = {"caption_beam": [], "caption_batch": [], "train_batch": [], "extract_batch": []}
    start = time.time()
    for beam in BEAMS:
        result = probe(env, args, "caption", *test, "--beam-size", beam, "--batch-size", 32, "--images", 320)
        curves["caption_beam"].append(result)
        print("captioning beam %d batch 32: %.1f images/s, %.0f MB" % (beam, result["images_per_s"],
                                                                       result["peak_rss_mb"]), flush=True)
    for batch in CAPTION_BATCHES:
        result = probe(env, args, "caption", *test, "--beam-size", 5, "--batch-size", batch, "--images", 256)
        curves["caption_batch"].append(result)
        print("captioning beam 5 batch %d: %.1f images/s, %.0f MB" % (batch, result["images_per_s"],
                                                                      result["peak_rss_mb"]), flush=True)
    val = short_validation(args)
    for batch in TRAIN_BATCHES:
        result = dict(train_speed(env, args, batch, val), batch_size=batch)
        curves["train_batch"].append(result)
        print("training batch %d: %.1f samples/s, %.0f MB" % (batch, result["samples_per_s"], result["peak_rss_mb"]),
              flush=True)
    for batch in EXTRACT_BATCHES:
        result = probe(env, args, "extract", "--batch-size", batch, "--images", 256)
        curves["extract_batch"].append(result)
        print("extraction batch %d: %.1f images/s, %.0f MB" % (batch, result["images_per_s"], result["peak_rss_mb"]),
              flush=True)
    print("scaling curves measured in %.0f s" % (time.time() - start), flush=True)
    plot(curves, args.plot)
    with open(os.path.splitext(args.plot)[0] + ".json", "w") as f:
        json.dump(curves, f, indent=1)
    command = "bench/scaling.py"
    labels = {"caption_beam": ("captioning images/s vs beam (batch 32)", "beam_size", "images_per_s"),
              "caption_batch": ("captioning images/s vs batch (beam 5)", "batch_size", "images_per_s"),
              "train_batch": ("training samples/s vs batch (LSTM 512)", "batch_size", "samples_per_s"),
              "extract_batch": ("extraction images/s vs batch", "batch_size", "images_per_s")}
    for key, (label, x_key, y_key) in labels.items():
        append_row(args.benchmarks, SECTION, COLUMNS, command,
                   [label, "; ".join("%d: %.1f (%.0f)" % (p[x_key], p[y_key], p["peak_rss_mb"]) for p in curves[key])])


if __name__ == "__main__":
    main()
