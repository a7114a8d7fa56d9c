"""imcap.inference on real data: the tiny model of the pipeline (``model`` in conftest.py, trained on the Flickr8k
subset) captions a test image from its bytes exactly as the captioner CLI does from its file, the four kinds of
input agree, and broken bytes or NaN features cost only their own result (and, in the CLI, their own line)."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from imcap.inference import CaptionInput, Captioner
from test.common import IMAGES, requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared


@pytest.fixture(scope="module")
def test_images(small_data):
    """``(image path, feature path relative to the cache)`` of the first three test images."""
    images = read_lines(os.path.join(small_data.data, "test.images"))[:3]
    features = read_lines(os.path.join(small_data.data, "test.features"))[:3]
    return [(os.path.join(IMAGES, image), feature) for image, feature in zip(images, features)]


@pytest.fixture(scope="module")
def image_captioner(model):
    """Captions image files (and bytes, and arrays) with the model's own CNN."""
    return Captioner([model.dir], extract_image_features=True)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_bytes_are_captioned_exactly_as_the_cli_captions_the_file(model, test_images, image_captioner):
    path = test_images[0][0]
    proc = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--output-type", "json",
                   "--quiet", input=path + "\n")
    expected = json.loads(proc.stdout.decode("utf-8"))
    result = image_captioner.caption([CaptionInput(data=read_bytes(path))])[0]
    assert result.error is None and result.caption
    assert result.caption == expected["caption"]
    assert result.score == expected["score"]  # the same pixels, the same batch: the same float


def test_the_four_kinds_of_input_agree(model, small_data, test_images, image_captioner):
    # cached features: a path to the .npy, or the array itself
    cached = Captioner([model.dir], source_root=small_data.cache)
    arrays = [np.load(os.path.join(small_data.cache, feature)) for _, feature in test_images]
    from_paths = cached.caption([CaptionInput(path=feature) for _, feature in test_images])
    from_arrays = cached.caption([CaptionInput(features=array) for array in arrays])
    assert [r.error for r in from_paths + from_arrays] == [None] * 6
    assert [(r.caption, r.score) for r in from_paths] == [(r.caption, r.score) for r in from_arrays]
    assert [r.source for r in from_paths] == [feature for _, feature in test_images]
    # pixels: an image path, its bytes, or the decoded image
    paths = [path for path, _ in test_images]
    decoded = []
    for path in paths:
        with Image.open(path) as img:
            decoded.append(np.asarray(img.convert("RGB")))
    by_path = image_captioner.caption([CaptionInput(path=path) for path in paths])
    by_bytes = image_captioner.caption([CaptionInput(data=read_bytes(path)) for path in paths])
    by_image = image_captioner.caption([CaptionInput(image=image) for image in decoded])
    assert [r.error for r in by_path + by_bytes + by_image] == [None] * 9
    assert [(r.caption, r.score) for r in by_path] == [(r.caption, r.score) for r in by_bytes] \
        == [(r.caption, r.score) for r in by_image]
    # the CNN's float32 features against the cache's float16 ones: close scores
    assert [r.score for r in by_path] == pytest.approx([r.score for r in from_paths], abs=0.05)
    # all kinds mixed in one batch, through one Captioner (a features array skips the CNN)
    mixed = image_captioner.caption([CaptionInput(path=paths[0]), CaptionInput(data=read_bytes(paths[1])),
                                     CaptionInput(image=decoded[2]), CaptionInput(features=arrays[0])])
    assert [r.caption for r in mixed] == [r.caption for r in by_path] + [from_arrays[0].caption]
    assert [r.score for r in mixed] == pytest.approx([r.score for r in by_path] + [from_arrays[0].score], abs=1e-4)


def test_broken_bytes_get_error_results(test_images, image_captioner):
    data = read_bytes(test_images[0][0])
    results = image_captioner.caption([CaptionInput(data=data[:len(data) // 2], source="truncated"),
                                       CaptionInput(data=b"", source="empty"),
                                       CaptionInput(data=b"GIF89a not really", source="fake"),
                                       CaptionInput(data=data, source="good")])
    assert [r.source for r in results] == ["truncated", "empty", "fake", "good"]
    assert results[0].error.startswith("not a readable image")
    assert results[1].error == "empty data"
    assert results[2].error.startswith("not a readable image")
    assert all(r.tokens == [] for r in results[:3])
    assert results[3].error is None and results[3].caption


def test_cli_nan_features_lose_only_their_line(model, small_data, test_images, tmp_path):
    feature = test_images[0][1]
    array = np.load(os.path.join(small_data.cache, feature))
    array[5, 7] = np.nan
    np.save(str(tmp_path / "nan.npy"), array)
    array[5, 7] = np.inf
    np.save(str(tmp_path / "inf.npy"), array)
    lines = [os.path.join(small_data.cache, feature), str(tmp_path / "nan.npy"), str(tmp_path / "inf.npy"),
             os.path.join(small_data.cache, feature)]
    proc = run_cli("captioner", "--models", model.dir, "--quiet", input="".join(line + "\n" for line in lines))
    out = proc.stdout.decode("utf-8").split("\n")
    assert len(out) == 5 and out[4] == ""
    assert out[0] and out[0] == out[3] and out[1] == "" and out[2] == ""
    warnings = [line for line in proc.stderr.decode("utf-8").splitlines() if line.startswith("Warning:")]
    assert warnings == ["Warning: line 2: features contain NaN or infinite values (%s)" % lines[1],
                        "Warning: line 3: features contain NaN or infinite values (%s)" % lines[2]]
    assert proc.stderr.decode("utf-8").splitlines()[-1].startswith("Captioned 4 lines (2 failed)")


def test_extract_features_on_the_cpu_device(small_data, test_images, tmp_path):
    """``--use-cpu --device-ids 0`` (and the default ``-1``: no GPU here) extract what the cache holds."""
    images = tmp_path / "test.images"
    images.write_text("".join(os.path.relpath(path, IMAGES) + "\n" for path, _ in test_images[:2]))
    cache = str(tmp_path / "cache")
    run_cli("extract_features", "--input", str(images), "--image-root", IMAGES, "--output-root", cache,
            "--use-cpu", "--device-ids", "0", "--quiet")
    for _, feature in test_images[:2]:
        np.testing.assert_allclose(np.load(os.path.join(cache, feature)).astype(np.float32),
                                   np.load(os.path.join(small_data.cache, feature)).astype(np.float32),
                                   rtol=1e-2, atol=1e-2)


def test_cli_shows_a_progress_bar_only_for_long_inputs_written_to_a_file(model, small_data, test_images, tmp_path):
    feature = os.path.join(small_data.cache, test_images[0][1])
    long_input, short_input = tmp_path / "long.txt", tmp_path / "short.txt"
    long_input.write_text((feature + "\n") * 320 + "no_such_file.npy\n", encoding="utf-8")
    short_input.write_text((feature + "\n") * 5, encoding="utf-8")
    proc = run_cli("captioner", "--models", model.dir, "--input", str(long_input), "--output", str(tmp_path / "out"))
    stderr = proc.stderr.decode("utf-8")
    assert re.search(r"captioned: 100%\|.*\| 321/321 \[", stderr), stderr[-2000:]
    assert "Warning: line 321: " in stderr   # warnings still name their line beside the bar
    assert len(read_lines(str(tmp_path / "out"))) == 321
    for args in (["--input", str(long_input)], ["--input", str(short_input), "--output", str(tmp_path / "short")],
                 ["--input", str(long_input), "--output", str(tmp_path / "quiet"), "--quiet"]):
        stderr = run_cli("captioner", "--models", model.dir, *args).stderr.decode("utf-8")
        assert "captioned:" not in stderr and "line/s" not in stderr
