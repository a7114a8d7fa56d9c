"""Augmented views end to end on real images: ``imcap.extract_features --augmentations hflip`` caches the features
of the mirrored images, and ``imcap.train --source-augmentations hflip`` trains on them."""
import json
import os
import shutil

import numpy as np
import pytest

from test.common import IMAGES, requires_shared
from test.integration.conftest import SUBSET_SIZES, cli_command, read_lines, run_cli, train_args

pytestmark = requires_shared

GRID = 7  # EfficientNet-Lite0 at 224 pixels: 7 x 7 regions


@pytest.fixture(scope="module")
def mirrored(small_data, tmp_path_factory):
    """A copy of the subset's cache to which the extractor added the hflip views of the training images; the
    extractor's log."""
    cache = str(tmp_path_factory.mktemp("mirrored") / "cache")
    shutil.copytree(small_data.cache, cache)
    proc = run_cli("extract_features", "--input", os.path.join(small_data.data, "train.images"),
                   "--image-root", IMAGES, "--output-root", cache, "--output", os.path.join(cache, "train.features"),
                   "--batch-size", "8", "--augmentations", "hflip")
    return cache, proc.stderr.decode("utf-8", "replace")


def test_extraction_adds_only_the_views(small_data, mirrored):
    cache, log = mirrored
    n = SUBSET_SIZES["train"]
    assert "%d images x 2 views, %d already cached, %d to compute" % (n, n, n) in log
    # the list still names the originals
    assert read_lines(os.path.join(cache, "train.features")) == read_lines(os.path.join(small_data.data,
                                                                                         "train.features"))
    images = sorted(set(read_lines(os.path.join(small_data.data, "train.images"))))
    views = sorted(os.path.relpath(os.path.join(d, f), cache)[:-len(".hflip.npy")]
                   for d, _, names in os.walk(cache) for f in names if f.endswith(".hflip.npy"))
    assert views == images


def test_views_are_the_features_of_the_mirrored_images(small_data, mirrored):
    """Mirrored back on the region grid, the view's features are close to the original's, much closer than
    without mirroring: the extractor flipped left and right (not up and down), and per image."""
    cache, _ = mirrored
    aligned, unaligned, upside_down = [], [], []
    for image in sorted(set(read_lines(os.path.join(small_data.data, "train.images")))):
        original = np.load(os.path.join(cache, image + ".npy")).astype(np.float32).reshape(GRID, GRID, -1)
        view = np.load(os.path.join(cache, image + ".hflip.npy")).astype(np.float32).reshape(GRID, GRID, -1)
        assert view.shape == original.shape and not np.array_equal(view, original)
        aligned.append(np.abs(view[:, ::-1] - original).mean())
        unaligned.append(np.abs(view - original).mean())
        upside_down.append(np.abs(view[::-1, ::-1] - original).mean())
    assert np.mean(aligned) < 0.7 * np.mean(unaligned)
    assert np.mean(aligned) < 0.7 * np.mean(upside_down)


@pytest.fixture(scope="module")
def mirrored_model(small_data, mirrored, tmp_path_factory):
    """A tiny model trained 30 updates on the training images and their mirrored views; its training log."""
    cache, _ = mirrored
    model_dir = str(tmp_path_factory.mktemp("mirrored_model") / "model")
    args = train_args(small_data, model_dir, "--max-updates", "30", "--checkpoint-interval", "30",
                      "--batch-size", "20", "--source-augmentations", "hflip")
    args[args.index("--source-root") + 1] = cache
    proc = run_cli("train", *args)
    return model_dir, proc.stderr.decode("utf-8", "replace")


def test_training_on_the_views(mirrored_model):
    model_dir, log = mirrored_model
    assert "20 training images with views original, hflip" in log
    assert len(read_lines(os.path.join(model_dir, "metrics"))) == 1


def test_training_without_the_views_cached_says_how_to_make_them(small_data, tmp_path):
    proc = run_cli("train", *train_args(small_data, str(tmp_path / "model"), "--max-updates", "1",
                                        "--source-augmentations", "hflip", "--quiet"), expect=1)
    error = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(error) == 1
    assert "train.features:1: cannot read the 'hflip' features" in error[0]
    assert "imcap.extract_features --augmentations hflip" in error[0]


# --- test-time augmentation --------------------------------------------------------------------------------------

def caption(model_dir, cache, lines, *extra, expect=0):
    """Captioner JSON output (one dict per line, beam 3) and the process, on cached features under ``cache``."""
    proc = run_cli("captioner", "--models", model_dir, "--source-root", cache, "--output-type", "json",
                   "--beam-size", "3", *extra, input="".join(line + "\n" for line in lines), expect=expect)
    return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()], proc


def test_test_time_augmentation_decodes_the_mirrored_view_too(small_data, mirrored, mirrored_model, tmp_path):
    cache, _ = mirrored
    model_dir, _ = mirrored_model
    lines = sorted(set(read_lines(os.path.join(small_data.data, "train.features"))))[:6]
    plain, _ = caption(model_dir, cache, lines)
    augmented, _ = caption(model_dir, cache, lines, "--test-time-augmentations", "hflip")
    assert len(augmented) == len(lines) and all(obj["caption"] for obj in augmented)
    # the mirrored features change what the ensemble scores ...
    assert [obj["score"] for obj in augmented] != pytest.approx([obj["score"] for obj in plain], abs=1e-4)
    # ... and they are what is read: with a copy of the original as the "mirrored" view, the two-member ensemble
    # of equal log-probabilities gives back the plain captions and scores
    same = str(tmp_path / "same")
    os.makedirs(same)
    for line in lines:
        shutil.copy(os.path.join(cache, line), os.path.join(same, line))
        shutil.copy(os.path.join(cache, line), os.path.join(same, line[:-len(".npy")] + ".hflip.npy"))
    copied, _ = caption(model_dir, same, lines, "--test-time-augmentations", "hflip")
    assert [obj["caption"] for obj in copied] == [obj["caption"] for obj in plain]
    assert [obj["score"] for obj in copied] == pytest.approx([obj["score"] for obj in plain], abs=1e-4)
    # attention is reported over the original's regions
    assert all(np.allclose(np.array(obj["attention"]).sum(axis=1), 1.0, atol=1e-3) for obj in augmented)


def test_test_time_augmentation_with_a_missing_view_loses_only_that_line(small_data, mirrored, mirrored_model):
    cache, _ = mirrored
    model_dir, _ = mirrored_model
    lines = [read_lines(os.path.join(small_data.data, "train.features"))[0],
             read_lines(os.path.join(small_data.data, "test.features"))[0]]  # no mirrored view for test images
    out, proc = caption(model_dir, cache, lines, "--test-time-augmentations", "hflip", "--quiet")
    assert len(out) == 2 and out[0]["caption"] and out[1]["caption"] == ""
    warning = [line for line in proc.stderr.decode("utf-8").splitlines() if line.startswith("Warning: line 2:")]
    assert len(warning) == 1 and "'hflip' features" in warning[0] and "--augmentations hflip" in warning[0]


def test_test_time_augmentation_on_images(small_data, mirrored_model):
    model_dir, _ = mirrored_model
    paths = [os.path.join(IMAGES, image) for image in read_lines(os.path.join(small_data.data, "test.images"))[:4]]
    proc = run_cli("captioner", "--models", model_dir, "--extract-image-features", "--test-time-augmentations",
                   "hflip", "--quiet", input="".join(p + "\n" for p in paths))
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == 4 and all(line.strip() for line in lines)


def test_two_workers_train_on_the_views(small_data, mirrored, tmp_path):
    # imcap.launch with dist_sync: each worker's shard of the batches draws the views of (seed, epoch), as one
    # process does; rank 0 writes the model dir
    cache, _ = mirrored
    model_dir = str(tmp_path / "model")
    args = train_args(small_data, model_dir, "--max-updates", "6", "--checkpoint-interval", "3", "--batch-size", "8",
                      "--source-augmentations", "hflip", "--kvstore", "dist_sync", "--use-cpu")
    args[args.index("--source-root") + 1] = cache
    proc = run_cli("launch", "-n", "2", "-s", "1", "--kill-timeout", "5", "--timeout", "240", "--",
                   *cli_command("train", args), timeout=300)
    log = (proc.stdout + proc.stderr).decode("utf-8", "replace")   # the workers' lines, prefixed by the launcher
    assert "with views original, hflip" in log and "is rank 1" in log
    metrics = read_lines(os.path.join(model_dir, "metrics"))
    assert len(metrics) == 2 and "updates=6" in metrics[-1]
