"""Augmented views end to end on real images: ``imcap.extract_features --augmentations hflip`` caches the features
of the mirrored images, and ``imcap.train --source-augmentations hflip`` trains on them."""
import os
import shutil

import numpy as np
import pytest

from test.common import IMAGES, requires_shared
from test.integration.conftest import SUBSET_SIZES, read_lines, run_cli, train_args

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


def test_training_on_the_views(small_data, mirrored, tmp_path):
    cache, _ = mirrored
    args = train_args(small_data, str(tmp_path / "model"), "--max-updates", "4", "--checkpoint-interval", "4",
                      "--batch-size", "20", "--source-augmentations", "hflip")
    args[args.index("--source-root") + 1] = cache
    proc = run_cli("train", *args)
    assert "20 training images with views original, hflip" in proc.stderr.decode("utf-8", "replace")
    assert len(read_lines(str(tmp_path / "model" / "metrics"))) == 1


def test_training_without_the_views_cached_says_how_to_make_them(small_data, tmp_path):
    proc = run_cli("train", *train_args(small_data, str(tmp_path / "model"), "--max-updates", "1",
                                        "--source-augmentations", "hflip", "--quiet"), expect=1)
    error = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(error) == 1
    assert "train.features:1: cannot read the 'hflip' features" in error[0]
    assert "imcap.extract_features --augmentations hflip" in error[0]
