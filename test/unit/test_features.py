"""The feature cache: manifest check, atomic feature files, cache-relative paths."""
import json
import os

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
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
