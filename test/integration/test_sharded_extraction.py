"""``imcap.extract_features --shard I/N`` on 12 real Flickr8k images: two shards, run into two caches as on two
machines without a shared filesystem and then copied together, give the same cache and feature lists as one
process, byte for byte, although they batch the images differently; a shard writes the lists only once the cache is
complete."""
import os
import shutil

import pytest

from imcap.features import CLASSES_SUFFIX
from test.common import FLICKR8K, IMAGES, requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared

NUM_IMAGES = 12


def files_under(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module")
def image_lists(tmp_path_factory):
    """Two overlapping image lists over 12 training images (one listed twice), and the unique images in order."""
    images = [line.strip() for line in read_lines(os.path.join(FLICKR8K, "train.txt")) if line.strip()][:NUM_IMAGES]
    root = tmp_path_factory.mktemp("shards")
    lists = {"a": images[:8] + [images[0]], "b": images[6:]}
    paths = []
    for name, lines in lists.items():
        path = str(root / (name + ".images"))
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        paths.append(path)
    return root, paths, images


# each image's features, its mirrored view's, and its ImageNet class probabilities (EfficientNet-Lite's head)
SUFFIXES = (".npy", ".hflip.npy", CLASSES_SUFFIX)


def extract(root, paths, cache, *extra):
    """Run the extractor over both lists into ``cache`` (lists written as ``cache/NAME.features``)."""
    return run_cli("extract_features", "--input", *paths, "--image-root", IMAGES, "--output-root", cache,
                   "--augmentations", "hflip", *extra)


def test_two_shards_make_the_cache_of_one_process(image_lists):
    root, paths, images = image_lists
    single, shard0, shard1 = (str(root / name) for name in ("single", "shard0", "shard1"))
    extract(root, paths, single, "--batch-size", "8", "--quiet")
    expected = files_under(single)
    assert expected == sorted(["a.features", "b.features", "cache.json"] + [image + suffix for image in images
                                                                              for suffix in SUFFIXES])

    # each shard on its own "machine", batching 4 images (plus their mirrored views) at a time instead of 8
    proc = extract(root, paths, shard0, "--batch-size", "4", "--shard", "0/2")
    assert files_under(shard0) == sorted(["cache.json"] + [image + suffix for image in images[0::2]
                                                           for suffix in SUFFIXES])
    log = proc.stderr.decode()
    assert "shard 0/2: 6 of the 12 images" in log and "feature lists are written by the run that finds" in log
    extract(root, paths, shard1, "--batch-size", "4", "--shard", "1/2", "--quiet")
    assert not any(name.endswith(".features") for name in files_under(shard1))  # incomplete: no lists

    # copied together, the last shard run again finds nothing to compute and the cache complete: it writes the lists
    for name in files_under(shard1):
        shutil.copy(os.path.join(shard1, name), os.path.join(shard0, name))
    proc = extract(root, paths, shard0, "--batch-size", "4", "--shard", "1/2")
    log = proc.stderr.decode()
    assert "0 to compute" in log and "the cache is complete; writing the feature lists" in log
    assert files_under(shard0) == expected
    for name in expected:  # the same features, byte for byte, and the same lists and manifest
        with open(os.path.join(single, name), "rb") as a, open(os.path.join(shard0, name), "rb") as b:
            assert a.read() == b.read(), name
    assert read_lines(os.path.join(shard0, "a.features")) == [image + ".npy" for image in images[:8] + images[:1]]


def test_a_bad_shard_is_refused_with_the_expected_form(image_lists):
    root, paths, _ = image_lists
    proc = run_cli("extract_features", "--input", *paths, "--output-root", str(root / "bad"), "--shard", "2/2",
                   expect=2)
    assert "--shard: '2/2': shard I of N needs N >= 1 and 0 <= I < N (shards are 0-based" in proc.stderr.decode()
    assert not os.path.exists(str(root / "bad"))
