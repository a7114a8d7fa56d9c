"""Real short trainings on real data learn: the whole pipeline (prepare_data → extract_features with the real
EfficientNet-Lite0 → train → captioner) on 300 Flickr8k training images (1500 captions) and 50 validation images,
once for every decoder: the default RNN (Show, Attend and Tell), the RNN without attention (Show and Tell), the
Transformer and the convolutional decoder.

About a minute of CPU per decoder (320 updates of a 1-2M-parameter model), plus ~10 s for the features of 350
images, computed once. The four trainings run two at a time, one thread each (:data:`PARALLEL`): models this small
gain little from a second thread, so two processes finish sooner than one after the other.
"""
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from imcap.features import CLASSES_SUFFIX
from test.common import FLICKR8K, IMAGES, requires_shared

pytestmark = [pytest.mark.slow, requires_shared]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_TRAIN, NUM_VAL, NUM_REFERENCES = 300, 50, 5
CHECKPOINT_INTERVAL, MAX_UPDATES = 40, 320
# Show and Tell sees the image only once, before the first word: measured, it still writes one caption for every
# image after 320 updates and tells images apart only from ~600 on, so it trains twice as long here.
UPDATES = {"show-and-tell": 2 * MAX_UPDATES}
# Distinct captions of the 50 validation images below which a model counts as ignoring its input.
MIN_DISTINCT = {"show-and-tell": 3}
COMMON = ["--batch-size", "32", "--word-min-count", "3"]
DECODERS = {
    "rnn": ["--rnn-num-hidden", "256", "--rnn-attention-num-hidden", "256", "--image-encoder-num-hidden", "256",
            "--num-embed", "128", "--output-num-hidden", "128"],
    "show-and-tell": ["--rnn-attention-type", "none", "--rnn-num-hidden", "256", "--image-encoder-num-hidden", "256",
                      "--num-embed", "128", "--output-num-hidden", "128"],
    "transformer": ["--decoder", "transformer", "--num-layers", "2", "--transformer-model-size", "128",
                    "--transformer-attention-heads", "4", "--transformer-feed-forward-num-hidden", "256",
                    "--num-embed", "128", "--image-encoder-num-hidden", "128"],
    "cnn": ["--decoder", "cnn", "--num-layers", "2", "--cnn-num-hidden", "256", "--cnn-kernel-width", "3",
            "--num-embed", "128", "--output-num-hidden", "128", "--image-encoder-num-hidden", "256"],
}

PARALLEL = 2   # trainings at once, each on OMP_NUM_THREADS=1


def run(module, *args, timeout=900, threads=None):
    """``python -m imcap.MODULE ARGS`` from the repository root (on ``threads`` OpenMP threads if given); fails the
    test (showing STDERR) on a non-zero exit."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "imcap." + module] + [str(a) for a in args], cwd=REPO, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    assert proc.returncode == 0, "imcap.%s exited with %d; STDERR:\n%s" % (
        module, proc.returncode, proc.stderr.decode("utf-8", "replace")[-5000:])
    proc.seconds = time.time() - start
    return proc


def head(path, n, out):
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line.strip()][:n]
    assert len(lines) == n
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return out


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """Prepare the captions and extract the features of the 350 images once."""
    root = tmp_path_factory.mktemp("learns")
    data, cache = root / "data", root / "cache"
    train_split = head(os.path.join(FLICKR8K, "train.txt"), NUM_TRAIN, root / "train.txt")
    val_split = head(os.path.join(FLICKR8K, "val.txt"), NUM_VAL, root / "val.txt")
    run("prepare_data", "--captions", os.path.join(FLICKR8K, "captions.tsv"), "--splits", "train=%s" % train_split,
        "val=%s" % val_split, "--output", data, "--quiet")
    run("extract_features", "--input", data / "train.images", data / "val.images", "--image-root", IMAGES,
        "--image-encoder", "efficientnet_lite0", "--output-root", cache, "--quiet")
    return {"root": root, "data": data, "cache": cache}


def train_and_caption(subset, name):
    """Train decoder ``name`` on one thread and caption the validation images with it."""
    data, cache = subset["data"], subset["cache"]
    model = subset["root"] / ("model-" + name)
    references = [data / ("val.captions.%d" % k) for k in range(NUM_REFERENCES)]
    seconds = run("train", "--source", cache / "train.features", "--target", data / "train.captions",
                  "--validation-source", cache / "val.features", "--validation-target", *references,
                  "--output", model, *COMMON, *DECODERS[name],
                  "--checkpoint-interval", CHECKPOINT_INTERVAL, "--max-updates", UPDATES.get(name, MAX_UPDATES),
                  "--decode-and-evaluate", NUM_VAL, "--quiet", threads=1).seconds
    captions = subset["root"] / ("val-%s.hyp" % name)
    proc = run("captioner", "--models", model, "--input", cache / "val.features", "--source-root", cache,
               "--output", captions, "--quiet", threads=1)
    print("%s: %.0f s of training" % (name, seconds))
    return {"name": name, "data": data, "cache": cache, "model": model, "captions": captions,
            "captioner_stderr": proc.stderr.decode("utf-8", "replace")}


@pytest.fixture(scope="module")
def trainings(subset):
    """Every decoder trained and its captions written, :data:`PARALLEL` at a time (futures by decoder name)."""
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {name: pool.submit(train_and_caption, subset, name) for name in DECODERS}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.fixture(params=list(DECODERS))
def trained(request, trainings):
    """One decoder's training and captions (its failure fails only its tests)."""
    return trainings[request.param].result()

def test_data_was_prepared(subset):
    data, cache = subset["data"], subset["cache"]
    assert len((data / "train.captions").read_text(encoding="utf-8").splitlines()) == NUM_TRAIN * NUM_REFERENCES
    assert len((cache / "train.features").read_text(encoding="utf-8").splitlines()) == NUM_TRAIN * NUM_REFERENCES
    assert len((cache / "val.features").read_text(encoding="utf-8").splitlines()) == NUM_VAL
    names = os.listdir(cache)
    features = [n for n in names if n.endswith(".npy") and not n.endswith(CLASSES_SUFFIX)]
    assert len(features) == NUM_TRAIN + NUM_VAL  # each image once, its class probabilities beside
    assert len([n for n in names if n.endswith(CLASSES_SUFFIX)]) == NUM_TRAIN + NUM_VAL


def test_training_learns(trained):
    from imcap.metrics_file import read_metrics
    from imcap.vocab import load_vocab
    model = trained["model"]
    metrics = read_metrics(str(model / "metrics"))
    updates = UPDATES.get(trained["name"], MAX_UPDATES)
    assert [m["checkpoint"] for m in metrics] == list(range(1, updates // CHECKPOINT_INTERVAL + 1))
    assert metrics[-1]["updates"] == updates
    first, last = metrics[0], metrics[-1]
    vocab_size = len(load_vocab(str(model / "vocab.trg.json")))
    assert vocab_size > 200  # word-min-count 3 over 1500 captions: several hundred types
    report = "\n".join("%d: ppl train %.1f val %.1f, bleu %.2f" % (m["checkpoint"], m["perplexity-train"],
                                                                   m["perplexity-val"], m["bleu-val"]) for m in metrics)
    # validation perplexity fell a lot, and far below a uniform model's (= the vocabulary size)
    assert last["perplexity-val"] < 0.6 * first["perplexity-val"], report
    assert last["perplexity-val"] < vocab_size / 10, report
    assert last["perplexity-train"] < 0.6 * first["perplexity-train"], report
    assert last["bleu-val"] > 0 and last["bleu-val"] > first["bleu-val"], report
    for name in ("params.best", "config.yaml", "params.%05d" % len(metrics)):
        assert (model / name).is_file()


def test_captions_are_sensible(trained):
    captions = trained["captions"].read_text(encoding="utf-8").splitlines()
    assert len(captions) == NUM_VAL
    assert "(0 failed)" in trained["captioner_stderr"]
    good = [c for c in captions if c.split()[:1] == ["a"] and 4 <= len(c.split()) <= 20]
    assert len(good) >= 0.8 * NUM_VAL, "\n".join(captions)
    # a degenerate model writes one caption for every image
    assert len(set(captions)) >= MIN_DISTINCT.get(trained["name"], 5), "\n".join(captions)
