"""``imcap.extract_features --shard I/N`` on 12 real Flickr8k images: two shards, run into two caches as on two
machines without a shared filesystem and then copied together, give the same cache and feature lists as one
process, byte for byte, although they batch the images differently; a shard writes the lists only once the cache is
complete. The features and class probabilities are the same bytes at batch sizes 1, 3, 4, 8 and 16; with oneDNN held
to other CPU kernels (as on another machine type) they stay within the tolerance docs/scaling.md states."""
import os
import shutil

import numpy as np
import pytest

from imcap.extract_features import extract as extract_images
from imcap.features import CLASSES_SUFFIX
from imcap.vision.image_encoder import ImageEncoder
from test.common import FLICKR8K, IMAGES, MODELS, requires_shared
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


def cache_bytes(cache, names):
    """name → the bytes of that file of ``cache``."""
    out = {}
    for name in names:
        with open(os.path.join(cache, name), "rb") as f:
            out[name] = f.read()
    return out


def test_the_cache_is_the_same_bytes_at_every_batch_size(image_lists, tmp_path):
    """An image's features, its mirrored view's and its class probabilities do not depend on the batch it was in:
    oneDNN's inner product sums in a batch-dependent order on some CPUs, so the classifier runs image by image."""
    _, _, images = image_lists
    names = [image + suffix for image in images for suffix in SUFFIXES]
    caches = {}
    for batch_size in (8, 1, 3, 4, 16):   # 12 images: batches padded at 3 (no), 8 and 16 (yes)
        cache = str(tmp_path / ("batch%d" % batch_size))
        failed = extract_images(ImageEncoder(models_dir=MODELS, classify=True), images, IMAGES, cache, batch_size,
                                progress=False, augmentations=["hflip"])
        assert failed == {}
        caches[batch_size] = cache_bytes(cache, names)
    for batch_size, files in caches.items():
        differ = [name for name in names if files[name] != caches[8][name]]
        assert differ == [], "batch size %d against 8: %d files differ, e.g. %s" % (batch_size, len(differ), differ[:3])


def test_other_cpu_kernels_stay_within_the_stated_tolerance(image_lists, monkeypatch):
    """docs/scaling.md's guarantee across machine types: oneDNN held to AVX kernels (DNNL_MAX_CPU_ISA, as on an older
    CPU; this machine's default is AVX2 or AVX-512) changes some cached float16 values by one step, never by more
    than 0.1 % of the value or 1e-4, and each class probability by at most 1e-5; the five most likely classes of each
    image are the same."""
    root, _, images = image_lists
    single = str(root / "single")
    if not os.path.exists(os.path.join(single, "cache.json")):
        test_two_shards_make_the_cache_of_one_process(image_lists)
    path = str(root / "first.images")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(image + "\n" for image in images))
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX")
    avx = str(root / "avx")
    run_cli("extract_features", "--input", path, "--image-root", IMAGES, "--output-root", avx, "--batch-size", "8",
            "--quiet")
    changed = 0
    for image in images:
        ours, theirs = (np.load(os.path.join(cache, image + ".npy")).astype(np.float32) for cache in (single, avx))
        np.testing.assert_allclose(theirs, ours, rtol=2.0 ** -10, atol=1e-4, err_msg=image)
        changed += int((ours != theirs).sum())
        ours, theirs = (np.load(os.path.join(cache, image + CLASSES_SUFFIX)).astype(np.float32)
                        for cache in (single, avx))
        np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5, err_msg=image)
        assert list(np.argsort(-ours)[:5]) == list(np.argsort(-theirs)[:5]), image
    assert changed > 0, "DNNL_MAX_CPU_ISA=AVX changed no feature: the comparison did not run other kernels"
