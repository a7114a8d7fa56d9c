"""Non-finite values on the real Flickr8k subset: a cached feature file with a NaN (or an infinity) is skipped with a
warning naming its lines, read lazily or loaded, and the training learns; a training that diverges stops with one
clear error and a non-zero exit, writes nothing of the bad update or checkpoint (``params.best`` stays finite,
``metrics`` and the training state agree), and the same command resumes from its last good checkpoint."""
import json
import os
import re

import mxnet as mx
import numpy as np
import pytest

from imcap import constants as C
from imcap.metrics_file import read_metrics
from imcap.utils import ImcapError
from test.common import requires_shared
from test.integration.conftest import read_lines, run_cli, train_args
from test.integration.test_training_library import library_trainer

pytestmark = requires_shared

SPOILED_TRAIN_LINE = 5   # 0-based line of train.features whose image gets a NaN (every line of that image does)
SPOILED_VAL_LINE = 3     # 0-based line of val.features whose image gets an infinity
OPTIONS = ["--batch-size", "16", "--checkpoint-interval", "3", "--max-updates", "6", "--decode-and-evaluate", "8",
           "--seed", "3", "--quiet"]
# Plain SGD at learning rate 1000 without gradient clipping diverges within a few updates on the tiny model; with a
# checkpoint after every update, the first ones are still finite.
DIVERGING = ["--optimizer", "sgd", "--gradient-clipping-type", "none", "--initial-learning-rate", "1000",
             "--batch-size", "16", "--checkpoint-interval", "1", "--max-updates", "6", "--seed", "3", "--quiet"]


def spoil_list(small_data, split: str, lines, value: float, directory: str) -> str:
    """A copy of ``SPLIT.features`` in ``directory`` whose lines naming the image of one of ``lines`` (0-based) name
    instead a copy of its features (absolute path) with ``value`` in one region; the other lines name the cache's
    files."""
    names = read_lines(os.path.join(small_data.data, split + ".features"))
    spoiled = {}
    for key in {names[line] for line in lines}:
        features = np.load(os.path.join(small_data.cache, key))
        features[5, 7] = value
        spoiled[key] = os.path.join(directory, "spoiled-" + os.path.basename(key))
        np.save(spoiled[key], features)
    path = os.path.join(directory, split + ".features")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(spoiled.get(name, name) + "\n" for name in names))
    return path


def with_lists(args, train_list: str, val_list: str):
    """``imcap.train`` arguments with other ``--source`` and ``--validation-source`` lists."""
    args = list(args)
    args[args.index("--source") + 1] = train_list
    args[args.index("--validation-source") + 1] = val_list
    return args


def assert_finite_params(path: str) -> None:
    for name, value in mx.nd.load(path).items():
        assert np.isfinite(value.asnumpy()).all(), "%s: %s is not finite" % (path, name)


@pytest.mark.parametrize("load_all", [False, True], ids=["lazy", "loaded"])
def test_a_feature_file_with_nan_is_skipped_and_training_learns(small_data, tmp_path, load_all):
    train_list = spoil_list(small_data, "train", [SPOILED_TRAIN_LINE], np.nan, str(tmp_path))
    val_list = spoil_list(small_data, "val", [SPOILED_VAL_LINE], np.inf, str(tmp_path))
    model_dir = str(tmp_path / "model")
    args = with_lists(train_args(small_data, model_dir, *OPTIONS), train_list, val_list)
    run_cli("train", *args, *(["--load-all-features-to-memory"] if load_all else []))

    log = read_lines(os.path.join(model_dir, "log"))
    train_lines = [n for n, name in enumerate(read_lines(train_list)) if name.startswith(str(tmp_path))]
    assert SPOILED_TRAIN_LINE in train_lines and len(train_lines) == 5   # every reference of the image
    for list_path, line in [(train_list, n) for n in train_lines] + [(val_list, SPOILED_VAL_LINE)]:
        warning = "%s:%d: features '%s' contain NaN or infinite values; skipped" % (
            list_path, line + 1, read_lines(list_path)[line])
        assert sum(warning in entry for entry in log) == 1, (warning, log)
    metrics = read_metrics(os.path.join(model_dir, "metrics"))
    assert [m["updates"] for m in metrics] == [3, 6]
    for entry in metrics:
        for key in ("perplexity-train", "perplexity-val", "bleu-val", "cider-val"):
            assert np.isfinite(entry[key]), (entry["checkpoint"], key, entry[key])
    assert metrics[1]["perplexity-train"] < metrics[0]["perplexity-train"]
    assert metrics[1]["perplexity-val"] < metrics[0]["perplexity-val"]
    assert_finite_params(os.path.join(model_dir, C.PARAMS_BEST_NAME))


def test_batches_left_without_pairs_are_skipped(small_data, tmp_path):
    """Read lazily, a batch whose every pair's features hold NaN is skipped (no update), and training goes on."""
    lines = read_lines(os.path.join(small_data.data, "train.features"))
    kept = {lines[0], lines[-1]}   # the first and last images; every other one gets a NaN
    train_list = spoil_list(small_data, "train", [n for n, name in enumerate(lines) if name not in kept], np.nan,
                            str(tmp_path))
    model_dir = str(tmp_path / "model")
    args = train_args(small_data, model_dir, "--batch-size", "16", "--checkpoint-interval", "3", "--max-updates", "3",
                      "--seed", "3", "--quiet")
    run_cli("train", *with_lists(args, train_list, os.path.join(small_data.data, "val.features")))

    log = read_lines(os.path.join(model_dir, "log"))
    assert any(re.search(r"batch \d+ of epoch \d+ skipped: no pair left", entry) for entry in log), log
    assert 0 < sum("contain NaN or infinite values; skipped" in entry for entry in log) <= len(lines) - 10
    (entry,) = read_metrics(os.path.join(model_dir, C.METRICS_NAME))
    assert entry["updates"] == 3 and np.isfinite(entry["perplexity-train"]) and np.isfinite(entry["perplexity-val"])


def model_dir_files(model_dir: str):
    """The bytes of what a checkpoint writes: metrics, the training state, every params file."""
    names = [C.METRICS_NAME, os.path.join(C.TRAINING_STATE_DIRNAME, C.TRAINING_STATE_NAME)] + sorted(
        name for name in os.listdir(model_dir) if name.startswith("params."))
    contents = {}
    for name in names:
        with open(os.path.join(model_dir, name), "rb") as f:
            contents[name] = f.read()
    return contents


def test_a_diverging_training_stops_at_its_last_good_checkpoint_and_the_same_command_resumes(small_data, tmp_path):
    model_dir = str(tmp_path / "model")
    args = train_args(small_data, model_dir, *DIVERGING)
    proc = run_cli("train", *args, expect=1)

    error = proc.stderr.decode("utf-8", "replace")
    assert len(error.splitlines()) == 1 and error.startswith("Error: ") and "Traceback" not in error, error
    assert "the training diverged and stopped without saving it" in error
    kept = int(re.search(r"%s keeps checkpoint (\d+), from which a run resumes" % re.escape(model_dir),
                         error).group(1))
    assert kept >= 1
    # metrics, training state and params agree on the last good checkpoint; nothing of the next was written
    metrics = read_metrics(os.path.join(model_dir, C.METRICS_NAME))
    with open(os.path.join(model_dir, C.TRAINING_STATE_DIRNAME, C.TRAINING_STATE_NAME), encoding="utf-8") as f:
        state = json.load(f)
    assert [m["checkpoint"] for m in metrics] == list(range(1, kept + 1))
    assert (state["checkpoint"], state["updates"]) == (kept, metrics[-1]["updates"]) == (kept, kept)
    assert all(np.isfinite(m["perplexity-train"]) and np.isfinite(m["perplexity-val"]) for m in metrics)
    for name in [C.PARAMS_BEST_NAME] + [C.PARAMS_NAME % n for n in range(1, kept + 1)]:
        assert_finite_params(os.path.join(model_dir, name))
    assert not os.path.exists(os.path.join(model_dir, C.PARAMS_NAME % (kept + 1)))
    assert [name for name in os.listdir(model_dir) if name.endswith(".tmp")] == []
    before = model_dir_files(model_dir)

    again = run_cli("train", *args, expect=1)   # the same command resumes, and the same updates diverge again

    assert again.stderr == proc.stderr
    assert any("resumed at checkpoint %d" % kept in line for line in read_lines(os.path.join(model_dir, "log")))
    assert model_dir_files(model_dir) == before


def test_trainer_stops_at_a_non_finite_loss_and_resumes_from_its_last_checkpoint(small_data, tmp_path):
    """An update whose loss is NaN (here: the output layer's bias set to NaN after a checkpoint) stops the Trainer
    before the optimizer applies it, with nothing written; a new Trainer on the model dir resumes from the
    checkpoint and trains on."""
    output = str(tmp_path / "model")
    library_trainer(small_data, output, max_updates=3).fit()
    before = model_dir_files(output)
    trainer = library_trainer(small_data, output)   # max_updates 6: resumes after update 3
    assert trainer.resume and trainer.state.updates == 3
    bias = trainer.model.collect_params()["model_output_bias"]
    bias.set_data(mx.nd.full(bias.shape, np.nan))

    with pytest.raises(ImcapError, match=r"^update 4: the training loss is nan \(negative log-likelihood nan\): the "
                                         r"training diverged and stopped without saving it; .* keeps checkpoint 1, "
                                         r"from which a run resumes; a lower learning rate"):
        trainer.fit()

    assert trainer.state.updates == 3 and trainer.state.checkpoint == 1
    assert model_dir_files(output) == before
    resumed = library_trainer(small_data, output)
    assert resumed.resume and resumed.state.updates == 3
    resumed.fit()
    assert [m["updates"] for m in read_metrics(os.path.join(output, C.METRICS_NAME))] == [3, 6]
    assert all(np.isfinite(m["perplexity-val"]) for m in resumed.metrics)
    assert_finite_params(os.path.join(output, C.PARAMS_BEST_NAME))
