#!/usr/bin/env python3
"""imcap and Sockeye 1.18 side by side, in one run on one machine: extraction, training and captioning speed, the
peak memory of every process, and imcap's ceilings (the bare CNN forward, the bare model step).

    bench/peer_sockeye.sh [--updates 300] [--extract-images 1024]    # installs the peer, then runs this script

Both tools get the same Flickr8k images (the Karpathy split of ``../shared``), the same EfficientNet-Lite0 weights
cut at the same layer (7 x 7 x 1280), and the same model: a 1-layer LSTM of 512 with MLP attention of 512,
embeddings of 512, no context gating, zero initial state, dropout 0.2 on the RNN output, batches of 64 captions,
captions bucketed by 5 words, target words seen at least 5 times, Adam at 3e-4, gradients clipped at 1 by value, no
label smoothing (Sockeye's options are those of the peer's ``run.sh train``). Each tool runs from its own
command line, one process at a time:

* extraction: the first ``--extract-images`` images of the peer's image list, batches of 64, into an empty folder;
  images/s of the whole command (start-up included) and in steady state (from the write times of the images'
  feature files, one per image, the first batch left out);
* training: ``--updates`` updates (one checkpoint at the end); samples/s is the median of the tool's own speed
  report every 50 updates, the first left out (both report the samples of the last 50 updates over their seconds);
* captioning: the 1000 test images from cached features at beam 1 and 5, batches of 16 (the peer's setting), at
  most 40 words, with each tool's model of the training step; images/s of the whole command.

Prints one ``name: value`` per line (ratios are imcap over Sockeye, or imcap over its ceiling) and appends a row to
docs/benchmarks.md, unless one of imcap's figures is above its own ceiling (``CEILINGS``; by more than
``benchlib.CEILING_TOLERANCE``, timing noise): then it stops with an error and writes no row. Run it alone on the
machine; it takes about 15 minutes.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, REPO)

from benchlib import append_row  # noqa: E402

from imcap import constants as C  # noqa: E402
from imcap.features import classes_path, view_path  # noqa: E402

SECTION = "Side by side with Sockeye 1.18 (bench/peer_sockeye.sh)"
COLUMNS = ["training samples/s: Sockeye / imcap (ratio; imcap's bare step)",
           "captioning images/s beam 1: Sockeye / imcap (ratio)", "captioning images/s beam 5: Sockeye / imcap (ratio)",
           "extraction images/s steady: Sockeye / imcap (ratio; imcap's bare forward)",
           "peak RSS MB train / caption / extract: Sockeye, imcap"]
# imcap's figures that have a ceiling of their own in the same run, {figure: its ceiling} (prefixes of the reports'
# names): no row is written if a figure is above its ceiling (benchlib.check_ceilings).
CEILINGS = {"imcap extraction images/s (steady": "imcap bare fused CNN forward images/s (ceiling)",
            "imcap training samples/s": "imcap bare forward+backward+update samples/s (ceiling)"}

IMCAP_MODEL = ["--decoder", "rnn", "--rnn-cell-type", "lstm", "--num-layers", "1", "--rnn-num-hidden", "512",
               "--rnn-attention-type", "mlp", "--rnn-attention-num-hidden", "512", "--rnn-decoder-state-init", "zero",
               "--rnn-no-context-gating", "--rnn-dropout", "0.2", "--num-embed", "512", "--embed-dropout", "0",
               "--image-encoder-num-hidden", "512", "--output-num-hidden", "512", "--batch-size", "64",
               "--bucket-width", "5", "--max-seq-len", "40", "--word-min-count", "5", "--optimizer", "adam",
               "--initial-learning-rate", "0.0003", "--gradient-clipping-type", "abs",
               "--gradient-clipping-threshold", "1.0", "--label-smoothing", "0", "--seed", "13",
               "--decode-and-evaluate", "0", "--log-interval", "50"]


def run(command: Sequence[str], log: str, env: Optional[Dict[str, str]] = None,
        stdout: Optional[str] = None) -> Tuple[float, float, str]:
    """Run ``command`` to its end; returns (wall seconds, peak RSS in MB of it and the children it waited for,
    its STDOUT unless written to ``stdout``). STDERR goes to ``log``.

    :raises SystemExit: if the command fails (the log's tail is printed).
    """
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    with open(log, "w") as err, (open(stdout, "w") if stdout else tempfile.TemporaryFile("w+")) as out:
        start = time.time()
        process = subprocess.Popen(list(command), stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.time() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        text = ""
        if not stdout:
            out.seek(0)
            text = out.read()
    if process.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit("peer_sockeye: %s failed (exit %d); end of %s:\n%s" % (command[0], process.returncode, log,
                                                                               tail))
    return seconds, usage.ru_maxrss / 1024.0, text


def is_image_features(name: str) -> bool:
    """Whether the file ``name`` is an image's own features (``a.jpg.npy``) rather than a file the cache keeps
    beside them: the image's class probabilities (``a.jpg.classes.npy``, :func:`imcap.features.classes_path`) or an
    augmented view's features (``a.jpg.hflip.npy``, :func:`imcap.features.view_path`)."""
    if not name.endswith(C.FEATURE_SUFFIX):
        return False
    beside = name[:-len(C.FEATURE_SUFFIX)].rpartition(".")[0] + C.FEATURE_SUFFIX  # the features it would be beside
    return name != classes_path(beside) and all(name != view_path(beside, view) for view in C.AUGMENTATION_CHOICES)


def steady_rate(folder: str, skip: int) -> float:
    """Images/s from the write times of the images' feature files under ``folder`` (one per image; the class
    probabilities and augmented views beside them are not counted), the first ``skip`` images left out: the images
    after the ``skip``-th over the seconds from its write to the last one's.

    :raises SystemExit: if ``folder`` holds ``skip`` images or fewer (or ``skip`` < 1).
    """
    times = sorted(os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(folder)
                   for f in files if is_image_features(f))
    if skip < 1 or len(times) <= skip:
        raise SystemExit("peer_sockeye: %s holds the features of %d images, too few to leave out the first %d"
                         % (folder, len(times), skip))
    return (len(times) - skip) / max(times[-1] - times[skip - 1], 1e-9)


def median_report(text: str, pattern: str) -> float:
    """The median of a speed report in a log, the first report left out (warm-up)."""
    values = [float(v) for v in re.findall(pattern, text)][1:]
    if not values:
        raise SystemExit("peer_sockeye: no speed report (%s) in the log" % pattern)
    return statistics.median(values)


def mean_length(path: str) -> float:
    with open(path, encoding="utf-8") as f:
        lines = [line.split() for line in f]
    return sum(len(words) for words in lines) / max(len(lines), 1)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.peer = os.path.abspath(args.peer)
        self.work = os.path.abspath(args.work)                      # the peer's WORK of run.sh
        self.out = os.path.abspath(args.output)                     # this script's outputs
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.sockeye_python = os.path.abspath(os.path.join(args.sockeye_venv, "bin", "python"))
        self.python = sys.executable
        self.images = os.path.join(os.path.abspath(args.shared), "data", "flickr8k", "images")
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        self.env["PYTHONPATH"] = REPO
        self.peer_env = dict(self.env, IMCAP_SHARED=os.path.abspath(args.shared), WORK=self.work,
                             SOCKEYE_VENV=os.path.abspath(args.sockeye_venv))
        self.imcap_data = os.path.join(self.out, "imcap-data")
        self.features = os.path.abspath(args.imcap_features)
        self.figures: Dict[str, float] = {}

    def imcap(self, module: str, *options: str) -> List[str]:
        return [self.python, "-m", "imcap." + module] + list(options)

    def probe(self, *options: str) -> Dict:
        _, _, text = run([self.python, os.path.join(HERE, "speed_probe.py")] + list(options),
                         os.path.join(self.logs, "probe-%s.log" % options[0]), self.env)
        return json.loads(text.strip().splitlines()[-1])

    def report(self, name: str, value: float, fmt: str = "%.1f") -> None:
        self.figures[name] = value
        print("%s: %s" % (name, fmt % value), flush=True)

    # --- data both tools need, made once and kept between runs -------------------------------------------------

    def prepare(self) -> None:
        """imcap's split files and feature cache (Sockeye's are made by peer_sockeye.sh through the peer's
        run.sh); not timed."""
        if not os.path.isfile(os.path.join(self.imcap_data, "test.captions.4")):
            run(self.imcap("prepare_data", "--captions", os.path.join(self.args.shared, "data", "flickr8k",
                                                                      "captions.tsv"),
                           "--output", self.imcap_data, "--quiet"), os.path.join(self.logs, "prepare.log"), self.env)
        splits = ["train", "val", "test"]
        if not all(os.path.isfile(os.path.join(self.imcap_data, s + ".features")) for s in splits):
            run(self.imcap("extract_features", "--image-root", self.images, "--input",
                           *[os.path.join(self.imcap_data, s + ".images") for s in splits],
                           "--output-root", self.features, "--output",
                           *[os.path.join(self.imcap_data, s + ".features") for s in splits]),
                os.path.join(self.logs, "extract-all.log"), self.env)

    # --- the three jobs -----------------------------------------------------------------------------------------

    def extraction(self) -> None:
        n = self.args.extract_images
        with open(os.path.join(self.work, "data", "all.images")) as f:
            images = [line.strip() for line in f][:n]
        listing = os.path.join(self.out, "extract.images")
        with open(listing, "w") as f:
            f.write("".join(i + "\n" for i in images))
        results = {}
        for tool in ("sockeye", "imcap"):
            folder = os.path.join(self.out, "extract-" + tool)
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            if tool == "sockeye":
                command = [self.sockeye_python, "-m", "sockeye.image_captioning.extract_features", "--use-cpu",
                           "--image-root", self.images, "--input", listing, "--output-root", folder,
                           "--output", os.path.join(folder, "all.features"), "--batch-size", "64",
                           "--source-image-size", "3", "224", "224", "--image-encoder-model-path",
                           os.path.join(self.work, "encoder", "effnet_lite0"), "--image-encoder-model-epoch", "0",
                           "--image-encoder-layer", "featid"]
            else:
                command = self.imcap("extract_features", "--image-root", self.images, "--input", listing,
                                     "--output-root", folder, "--output", os.path.join(folder, "all.features"),
                                     "--batch-size", "64", "--quiet")
            seconds, rss, _ = run(command, os.path.join(self.logs, "extract-%s.log" % tool), self.env)
            results[tool] = (n / seconds, steady_rate(folder, 64), rss)
            shutil.rmtree(folder)
        bare = self.probe("encoder-forward", "--batch-size", "64", "--images", str(n))
        inproc = self.probe("extract", "--batch-size", "64", "--images", str(n))
        for tool, (wall, steady, rss) in results.items():
            self.report("%s extraction images/s (whole command, %d images)" % (tool, n), wall)
            self.report("%s extraction images/s (steady state)" % tool, steady)
            self.report("%s extraction peak RSS MB" % tool, rss, "%.0f")
        self.report("imcap extraction images/s (library, in process, warm)", inproc["images_per_s"])
        self.report("imcap bare fused CNN forward images/s (ceiling)", bare["images_per_s"])
        self.report("imcap CNN forward with normalization and copy-back images/s", bare["images_per_s_with_preprocessing"])
        self.report("extraction ratio imcap/Sockeye (steady state; target 1.2)",
                    results["imcap"][1] / results["sockeye"][1], "%.2f")
        self.report("extraction ratio imcap/Sockeye (whole command)", results["imcap"][0] / results["sockeye"][0], "%.2f")
        self.report("extraction ratio imcap steady / bare forward (target 0.9)", results["imcap"][1] / bare["images_per_s"],
                    "%.2f")

    def training(self) -> None:
        updates = str(self.args.updates)
        env = dict(self.peer_env, CHECKPOINT_INTERVAL=updates)
        seconds, rss, text = run(["bash", os.path.join(self.peer, "run.sh"), "train", updates + "u"],
                                 os.path.join(self.logs, "train-sockeye.log"), env)
        figures = dict(line.split("=", 1) for line in text.split() if "=" in line)
        sockeye = float(figures["train_samples_per_s"])
        self.report("sockeye training samples/s (median of reports per 50 updates)", sockeye)
        self.report("sockeye training peak RSS MB", rss, "%.0f")
        self.report("sockeye training wall s (%s updates, start-up and checkpoint included)" % updates, seconds)
        model = os.path.join(self.out, "imcap-model")
        shutil.rmtree(model, ignore_errors=True)
        d = self.imcap_data
        data = ["--source", os.path.join(d, "train.features"), "--target", os.path.join(d, "train.captions"),
                "--validation-source", os.path.join(d, "val.features"), "--validation-target",
                os.path.join(d, "val.captions.0"), "--source-root", self.features]
        seconds, rss, _ = run(self.imcap("train", *data, *IMCAP_MODEL, "--output", model, "--max-updates", updates,
                                         "--checkpoint-interval", updates, "--quiet"),
                              os.path.join(self.logs, "train-imcap.log"), self.env)
        with open(os.path.join(model, "log")) as f:
            imcap = median_report(f.read(), r"updates \d+, epoch \d+: ([\d.]+) samples/s")
        self.report("imcap training samples/s (median of reports per 50 updates)", imcap)
        self.report("imcap training peak RSS MB", rss, "%.0f")
        self.report("imcap training wall s (%s updates, start-up and checkpoint included)" % updates, seconds)
        step = self.probe("model-step", "--updates", "40", "--", *data, *IMCAP_MODEL,
                          "--output", os.path.join(self.out, "probe-model"), "--overwrite-output")
        self.report("imcap bare forward+backward+update samples/s (ceiling)", step["samples_per_s"])
        self.report("imcap model parameters", step["parameters"], "%d")
        self.report("training ratio imcap/Sockeye (target 2)", imcap / sockeye, "%.2f")
        self.report("training ratio imcap / its bare step", imcap / step["samples_per_s"], "%.2f")

    def captioning(self) -> None:
        features = os.path.join(self.work, "features")
        listing = os.path.join(features, "test.features")
        with open(os.path.join(self.work, "data", "test.images")) as f, open(listing, "w") as out:
            out.write("".join(line.strip().replace("/", "_") + ".npy\n" for line in f))  # run.sh's feature_list
        n = 1000
        for beam in ("1", "5"):
            rates = {}
            for tool in ("sockeye", "imcap"):
                pred = os.path.join(self.out, "test.%s.beam%s" % (tool, beam))
                if tool == "sockeye":
                    command = [self.sockeye_python, os.path.join(self.peer, "captioner_launcher.py"), "--use-cpu",
                               "--models", os.path.join(self.work, "model"), "--input", listing, "--source-root",
                               features, "--beam-size", beam, "--batch-size", "16", "--max-output-length", "40"]
                else:
                    command = self.imcap("captioner", "--models", os.path.join(self.out, "imcap-model"), "--input",
                                         os.path.join(self.imcap_data, "test.features"), "--source-root",
                                         self.features, "--beam-size", beam, "--batch-size", "16",
                                         "--max-output-length", "40", "--quiet")
                seconds, rss, _ = run(command, os.path.join(self.logs, "caption-%s-beam%s.log" % (tool, beam)),
                                      self.env, stdout=pred)
                rates[tool] = n / seconds
                self.report("%s captioning images/s beam %s (whole command, 1000 images)" % (tool, beam), n / seconds)
                self.report("%s captioning peak RSS MB beam %s" % (tool, beam), rss, "%.0f")
                self.report("%s mean caption length beam %s (words)" % (tool, beam), mean_length(pred))
            self.report("captioning ratio imcap/Sockeye beam %s%s" % (beam, " (target 3)" if beam == "5" else ""),
                        rates["imcap"] / rates["sockeye"], "%.2f")

    def row(self) -> None:
        f = self.figures
        n = self.args.extract_images

        def get(prefix: str) -> float:
            return next(v for k, v in f.items() if k.startswith(prefix))
        parts = ["extraction", "training", "captioning"]
        if sorted(self.args.only) == sorted(parts):
            command = "bench/peer_sockeye.sh --updates %d --extract-images %d" % (self.args.updates, n)
        else:  # a part run again: the row's other figures are those of the last run (figures.json)
            command = "bench/peer_sockeye.sh --only %s" % " ".join(self.args.only)
        values = [
            "%.1f / %.1f (%.2f; %.1f)" % (get("sockeye training samples/s"), get("imcap training samples/s"),
                                          get("training ratio imcap/Sockeye"), get("imcap bare forward+backward")),
            "%.1f / %.1f (%.2f)" % (get("sockeye captioning images/s beam 1"), get("imcap captioning images/s beam 1"),
                                    get("captioning ratio imcap/Sockeye beam 1")),
            "%.1f / %.1f (%.2f)" % (get("sockeye captioning images/s beam 5"), get("imcap captioning images/s beam 5"),
                                    get("captioning ratio imcap/Sockeye beam 5")),
            "%.1f / %.1f (%.2f; %.1f)" % (get("sockeye extraction images/s (steady"),
                                          get("imcap extraction images/s (steady"),
                                          get("extraction ratio imcap/Sockeye (steady"),
                                          get("imcap bare fused CNN forward")),
            "%.0f / %.0f / %.0f, %.0f / %.0f / %.0f" % (
                get("sockeye training peak"), get("sockeye captioning peak RSS MB beam 5"),
                get("sockeye extraction peak"), get("imcap training peak"),
                get("imcap captioning peak RSS MB beam 5"), get("imcap extraction peak"))]
        ratios = {figure: get(figure) / get(ceiling) for figure, ceiling in CEILINGS.items()}
        append_row(self.args.benchmarks, SECTION, COLUMNS, command, values, ceiling_ratios=ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300, help="training updates of each tool (default 300)")
    parser.add_argument("--extract-images", type=int, default=1024, help="images of the extraction runs")
    parser.add_argument("--shared", default=os.environ.get("IMCAP_SHARED", os.path.join(REPO, "..", "shared")))
    parser.add_argument("--peer", default=None, help="the peer's recipe (default SHARED/peer/sockeye1)")
    parser.add_argument("--sockeye-venv", default=os.path.join(REPO, ".sockeye-venv"))
    parser.add_argument("--work", default=os.path.join(REPO, "runs", "sockeye-peer"),
                        help="the peer's WORK folder (run.sh's data, encoder, features, model)")
    parser.add_argument("--output", default=os.path.join(REPO, "runs", "peer-bench"),
                        help="imcap's data and models, both tools' outputs and logs")
    parser.add_argument("--imcap-features", default=os.path.join(REPO, "runs", "features-efficientnet_lite0"),
                        help="imcap's feature cache of the Flickr8k images (made if missing)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--benchmarks", default=os.path.join(REPO, "docs", "benchmarks.md"))
    parser.add_argument("--only", nargs="+", choices=["extraction", "training", "captioning"],
                        default=["extraction", "training", "captioning"],
                        help="run only these parts (captioning uses the models of the last training part); the row "
                             "takes the other parts' figures from the last run (runs/peer-bench/figures.json)")
    args = parser.parse_args()
    args.peer = args.peer or os.path.join(args.shared, "peer", "sockeye1")
    bench = Bench(args)
    bench.prepare()
    saved = os.path.join(bench.out, "figures.json")
    if len(args.only) < 3 and os.path.isfile(saved):   # a part run again: the other parts' figures of the last run
        with open(saved) as f:
            bench.figures.update(json.load(f))
    for part in args.only:
        getattr(bench, part)()
    with open(saved, "w") as f:
        json.dump(bench.figures, f, indent=1)
    if len(args.only) == 3 or all(any(k.startswith(p) for k in bench.figures)
                                  for p in ("sockeye training", "imcap captioning", "sockeye extraction")):
        bench.row()


if __name__ == "__main__":
    main()
