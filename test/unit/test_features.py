"""The feature cache: manifest check, atomic feature files, cache-relative paths, the shards of an extraction."""
import argparse
import json
import os

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.extract_features import shard_of, shard_spec, uncached
from imcap.features import (check_features_match, feature_relpath, read_manifest, resolve,
                            save_feature, write_or_check_manifest)
from imcap.utils import ImcapError

MANIFEST = {"encoder": "efficientnet_lite0", "layer": "head", "input_size": [224, 224], "feature_shape": [49, 1280],
            "dtype": "float16", "model_path": "efficientnet_lite0.npz"}


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def test_manifest_written_then_same_manifest_accepted(tmp_path):
    root = str(tmp_path)
    assert read_manifest(root) is None
    write_or_check_manifest(root, dict(MANIFEST))
    assert files_under(root) == [C.FEATURE_CACHE_MANIFEST]
    assert read_manifest(root) == MANIFEST
    assert json.load(open(os.path.join(root, C.FEATURE_CACHE_MANIFEST))) == MANIFEST
    write_or_check_manifest(root, dict(MANIFEST))  # the same settings again: fine
    assert read_manifest(root) == MANIFEST


@pytest.mark.parametrize("key,value", [("layer", "blocks.5"), ("input_size", [260, 260]), ("dtype", "float32"),
                                       ("encoder", "efficientnet_lite2")])
def test_manifest_of_other_settings_refused(tmp_path, key, value):
    root = str(tmp_path)
    write_or_check_manifest(root, dict(MANIFEST))
    other = dict(MANIFEST, **{key: value})
    with pytest.raises(ImcapError) as error:
        write_or_check_manifest(root, other)
    message = str(error.value)
    assert C.FEATURE_CACHE_MANIFEST in message and key in message
    assert str(value) in message and str(MANIFEST[key]) in message
    assert "feature_shape" not in message or key == "feature_shape"  # only the differing keys are named
    assert "\n" not in message
    assert read_manifest(root) == MANIFEST  # the cache is left as it was


def test_save_feature_is_atomic_and_round_trips(tmp_path):
    path = str(tmp_path / "sub" / "dir" / "img.jpg.npy")
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    save_feature(path, array)
    assert files_under(str(tmp_path)) == [os.path.join("sub", "dir", "img.jpg.npy")]  # no temporary file left
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and (loaded == array).all()
    save_feature(path, array * 2)  # overwriting is fine too
    assert (np.load(path) == array * 2).all()
    assert files_under(str(tmp_path)) == [os.path.join("sub", "dir", "img.jpg.npy")]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def broken_save(f, array):
        f.write(b"\x93NUMPY partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError):
        save_feature(str(tmp_path / "img.jpg.npy"), np.zeros((2, 2)))
    assert files_under(str(tmp_path)) == []


def test_feature_relpath():
    assert feature_relpath("1000268201_693b08cb0e.jpg") == "1000268201_693b08cb0e.jpg.npy"
    assert feature_relpath("train2014/COCO_1.jpg") == "train2014/COCO_1.jpg.npy"
    assert feature_relpath("/abs/x.png") == "abs/x.png.npy"  # always inside the cache


def test_resolve():
    assert resolve("a/b.npy", "/root") == "/root/a/b.npy"
    assert resolve("/abs/b.npy", "/root") == "/abs/b.npy"
    assert resolve("a/b.npy", None) == "a/b.npy"


def test_check_features_match():
    check_features_match(None, 49, 1280, "x")
    check_features_match(MANIFEST, 49, 1280, "x")
    with pytest.raises(ImcapError, match="cache dir"):
        check_features_match(MANIFEST, 64, 1280, "cache dir")


# --- sharded extraction (imcap.extract_features --shard) ----------------------------------------------------------

@pytest.mark.parametrize("value,expected", [("0/1", (0, 1)), ("0/2", (0, 2)), ("1/2", (1, 2)), ("6/7", (6, 7))])
def test_shard_spec_is_zero_based(value, expected):
    assert shard_spec(value) == expected


@pytest.mark.parametrize("value", ["2/2", "-1/2", "1/0", "0/0", "1", "a/2", "1/2/3", ""])
def test_bad_shard_spec_says_what_is_expected(value):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        shard_spec(value)
    message = str(error.value)
    assert "'%s'" % value in message and ("is not I/N" in message or "0 <= I < N (shards are 0-based" in message)


def test_shards_take_every_nth_image_and_cover_the_list_once():
    images = ["%d.jpg" % i for i in range(11)]
    shards = [shard_of(images, i, 3) for i in range(3)]
    assert shards[0] == ["0.jpg", "3.jpg", "6.jpg", "9.jpg"] and shards[2] == ["2.jpg", "5.jpg", "8.jpg"]
    assert sorted(sum(shards, [])) == sorted(images)
    assert shard_of(images, 0, 1) == images
    assert shard_of(images[:2], 2, 3) == []  # more shards than images: some have nothing to do


def test_uncached_lists_missing_originals_and_views(tmp_path):
    root = str(tmp_path)
    save_feature(os.path.join(root, feature_relpath("a.jpg")), np.zeros((2, 2), dtype=np.float16))
    save_feature(os.path.join(root, feature_relpath("b/c.jpg", "hflip")), np.zeros((2, 2), dtype=np.float16))
    assert uncached(["a.jpg", "b/c.jpg"], root) == [("b/c.jpg", None)]
    assert uncached(["a.jpg", "b/c.jpg"], root, ["hflip"]) == [("a.jpg", "hflip"), ("b/c.jpg", None)]


def test_class_probabilities_sit_beside_the_features_and_round_trip(tmp_path):
    from imcap.features import classes_path, load_classes, save_classes
    assert classes_path("cache/a.jpg.npy") == "cache/a.jpg.classes.npy"
    path = str(tmp_path / "a.jpg.classes.npy")
    probabilities = np.full(1000, 1e-3, dtype=np.float32)
    save_classes(path, probabilities)
    loaded = load_classes(path)
    assert loaded.shape == (1000,) and loaded.dtype == np.float32 and abs(loaded.sum() - 1.0) < 1e-2
    with pytest.raises(ImcapError, match="no class probabilities"):
        load_classes(str(tmp_path / "missing.classes.npy"))
    np.save(str(tmp_path / "b.npy"), np.zeros((2, 3)))
    with pytest.raises(ImcapError, match="must be one"):
        load_classes(str(tmp_path / "b.npy"))
