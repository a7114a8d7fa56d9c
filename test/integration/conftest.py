"""Shared pieces of the integration tests: running the CLIs as subprocesses, and a small real Flickr8k subset
(prepared with ``imcap.prepare_data`` and with features cached by ``imcap.extract_features``), built once per
session."""
import logging
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Union

import pytest

from test.common import FLICKR8K, IMAGES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Images taken from the head of each official split file; every image has 5 captions.
SUBSET_SIZES = {"train": 20, "val": 8, "test": 8}
NUM_REFERENCES = 5

# A model small enough to train a few updates in seconds.
TINY_MODEL = ["--rnn-num-hidden", "64", "--rnn-attention-num-hidden", "64", "--image-encoder-num-hidden", "64",
              "--num-embed", "32", "--output-num-hidden", "32", "--word-min-count", "1"]


def cli_env() -> Dict[str, str]:
    """The environment of a CLI subprocess: this one, with the checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def cli_command(module: str, args: Sequence, python: str = sys.executable) -> List[str]:
    """``python -m imcap.MODULE ARGS...`` with the interpreter ``python`` (default: this one)."""
    return [python, "-m", "imcap." + module] + [str(a) for a in args]


def run_cli(module: str, *args, input: Optional[Union[str, bytes]] = None, expect: Optional[int] = 0,
            timeout: float = 300, python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run ``python -m imcap.MODULE ARGS...`` from the repository root with ``input`` on STDIN.

    :param expect: the exit code required (an AssertionError shows STDERR otherwise); None: any.
    :param python: the interpreter (default: this one; e.g. the runtime venv's).
    :return: the finished process; ``stdout``/``stderr`` are bytes, ``seconds`` is the wall-clock time.
    """
    if isinstance(input, str):
        input = input.encode("utf-8")
    start = time.time()
    proc = subprocess.run(cli_command(module, args, python), cwd=REPO, env=cli_env(), input=input,
                          stdin=None if input is not None else subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
    proc.seconds = time.time() - start  # type: ignore[attr-defined]
    if expect is not None:
        assert proc.returncode == expect, "imcap.%s exited with %d, not %d; STDERR:\n%s" % (
            module, proc.returncode, expect, proc.stderr.decode("utf-8", "replace")[-5000:])
    return proc


def read_lines(path: str) -> List[str]:
    """Lines of a UTF-8 file without their line ends."""
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def write_flickr_subset(directory: str) -> SimpleNamespace:
    """Write the first images of each official Flickr8k split (:data:`SUBSET_SIZES`) as split files, and their
    captions (in ``captions.tsv`` order) as ``captions.tsv``, into ``directory``."""
    os.makedirs(directory, exist_ok=True)
    splits = {}
    for split, size in SUBSET_SIZES.items():
        images = [line.strip() for line in read_lines(os.path.join(FLICKR8K, split + ".txt")) if line.strip()][:size]
        assert len(images) == size
        path = os.path.join(directory, split + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(image + "\n" for image in images))
        splits[split] = (path, images)
    wanted = {image for _, images in splits.values() for image in images}
    with open(os.path.join(FLICKR8K, "captions.tsv"), encoding="utf-8") as f:
        lines = [line for line in f if line.split("\t", 1)[0] in wanted]
    assert len(lines) == NUM_REFERENCES * len(wanted)
    captions = os.path.join(directory, "captions.tsv")
    with open(captions, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return SimpleNamespace(captions=captions, split_files={s: p for s, (p, _) in splits.items()},
                           images={s: images for s, (_, images) in splits.items()})


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> SimpleNamespace:
    """The Flickr8k subset, prepared into ``data`` and with EfficientNet-Lite0 features cached in ``cache``.

    Attributes: ``root``, ``raw`` (see :func:`write_flickr_subset`), ``data`` (prepare_data output, with the
    ``SPLIT.features`` lists beside the ``SPLIT.images``), ``cache`` (the feature cache), ``extract_args``
    (the arguments of the extraction, without ``--quiet``) and ``extract_seconds``.
    """
    if not os.path.isdir(FLICKR8K):
        pytest.skip("../shared is not beside the checkout")
    root = str(tmp_path_factory.mktemp("flickr8k_small"))
    raw = write_flickr_subset(os.path.join(root, "raw"))
    data = os.path.join(root, "data")
    cache = os.path.join(root, "cache")
    run_cli("prepare_data", "--captions", raw.captions, "--splits",
            *["%s=%s" % (split, path) for split, path in raw.split_files.items()], "--output", data, "--quiet")
    splits = list(SUBSET_SIZES)
    extract_args = (["--input"] + [os.path.join(data, s + ".images") for s in splits]
                    + ["--image-root", IMAGES, "--output-root", cache, "--output"]
                    + [os.path.join(data, s + ".features") for s in splits] + ["--batch-size", "8"])
    proc = run_cli("extract_features", *extract_args, "--quiet")
    return SimpleNamespace(root=root, raw=raw, data=data, cache=cache, extract_args=extract_args,
                           extract_seconds=proc.seconds)


def train_args(small_data: SimpleNamespace, output: str, *extra) -> List[str]:
    """Arguments of ``imcap.train`` on the subset (validation: the val split with all its references), the
    tiny model, then ``extra``."""
    data = small_data.data
    return (["--source", os.path.join(data, "train.features"), "--target", os.path.join(data, "train.captions"),
             "--validation-source", os.path.join(data, "val.features"), "--validation-target"]
            + [os.path.join(data, "val.captions.%d" % k) for k in range(NUM_REFERENCES)]
            + ["--source-root", small_data.cache, "--output", output] + TINY_MODEL + [str(a) for a in extra])


# The training options of the ``model`` fixture: 150 updates (about 13 s) at a learning rate of 0.003, enough for
# captions of words ("a brown dog in a ...") rather than "a the the", so that tests comparing two decoding paths
# compare something; 3 checkpoints.
PIPELINE_TRAIN_OPTIONS = ["--batch-size", "16", "--checkpoint-interval", "50", "--max-updates", "150",
                          "--initial-learning-rate", "0.003", "--decode-and-evaluate", "8", "--quiet"]


@pytest.fixture(scope="session")
def model(small_data, tmp_path_factory) -> SimpleNamespace:
    """A tiny model trained on the subset for 150 updates, checkpoints every 50 (test_pipeline.py checks the model dir;
    other modules caption with it and must not write to it).

    Attributes: ``dir`` (the model dir), ``args`` (its training options), ``proc`` (the finished training).
    """
    model_dir = str(tmp_path_factory.mktemp("pipeline") / "model")
    args = train_args(small_data, model_dir, *PIPELINE_TRAIN_OPTIONS)
    proc = run_cli("train", *args)
    return SimpleNamespace(dir=model_dir, args=args, proc=proc)


def parse_training_args(argv: Sequence[str]):
    """``imcap.train``'s options parsed from ``argv``, for :func:`imcap.train.build_trainer` in the test process."""
    import imcap.train
    return imcap.train.training_arg_parser().parse_args(argv)


@pytest.fixture
def restore_logging():
    """The Trainer sets up the root logger (to its log file); give pytest's logging back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
