"""Tests of imcap.visualize on real Flickr8k images: captions grid, training curves, errors."""
import os
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from imcap import visualize
from imcap.utils import ImcapError

SHARED = os.environ.get("IMCAP_SHARED",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared"))
FLICKR8K = os.path.join(SHARED, "data", "flickr8k")
IMAGE_ROOT = os.path.join(FLICKR8K, "images")
NUM_IMAGES = 8

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(FLICKR8K, "test.txt")),
                                reason="shared Flickr8k data not found at %s" % FLICKR8K)


@pytest.fixture(scope="module")
def flickr_test():
    """The first 8 test images and, for each, its 5 lower-cased reference captions."""
    with open(os.path.join(FLICKR8K, "test.txt"), encoding="utf-8") as f:
        images = [line.strip() for line in f if line.strip()][:NUM_IMAGES]
    wanted = set(images)
    captions = defaultdict(list)
    with open(os.path.join(FLICKR8K, "captions.tsv"), encoding="utf-8") as f:
        for line in f:
            name, caption = line.rstrip("\n").split("\t", 1)
            if name in wanted:
                captions[name].append(caption.lower())
    return images, [captions[name] for name in images]


def _check_png(path, expected_size, tolerance=4):
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert abs(width - expected_size[0]) <= tolerance and abs(height - expected_size[1]) <= tolerance
    assert pixels.var() > 0
    # No temporary file of the atomic write is left behind.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]


def test_captions_grid(tmp_path, flickr_test):
    images, references = flickr_test
    hypotheses = [refs[0] for refs in references]
    output = str(tmp_path / "out" / "captions.png")
    size = visualize.plot_captions(images, output, hypotheses=hypotheses, references=references,
                                   image_root=IMAGE_ROOT, columns=4, title="test", dpi=50)
    width = 4 * visualize.PANEL_WIDTH + 2 * visualize.FIGURE_MARGIN
    assert size[0] == pytest.approx(width * 50, abs=1)
    # Two rows, each at least label + image high, plus five references of text.
    assert 2 * (visualize.LABEL_HEIGHT + visualize.IMAGE_HEIGHT + 0.5) * 50 < size[1] < 2 * 8 * 50
    _check_png(output, size)


def test_captions_cli_with_sample(tmp_path, flickr_test):
    images, references = flickr_test
    (tmp_path / "test.images").write_text("\n".join(images) + "\n", encoding="utf-8")
    ref_files = []
    for k in range(2):
        path = tmp_path / ("test.captions.%d" % k)
        path.write_text("\n".join(refs[k] for refs in references) + "\n", encoding="utf-8")
        ref_files.append(str(path))
    output = str(tmp_path / "out" / "grid.png")
    args = visualize.create_parser().parse_args(
        ["captions", "--images", str(tmp_path / "test.images"), "--image-root", IMAGE_ROOT,
         "--hypotheses", ref_files[0], "--references"] + ref_files
        + ["--num-images", "3", "--sample", "--columns", "2", "--output", output, "--dpi", "40"])
    size = visualize.run_visualize(args)
    assert size[0] == pytest.approx((2 * visualize.PANEL_WIDTH + 2 * visualize.FIGURE_MARGIN) * 40, abs=1)
    _check_png(output, size)
    assert visualize.select_lines(8, 3, True, 1) == visualize.select_lines(8, 3, True, 1)
    assert visualize.select_lines(8, 3, False, 1) == [0, 1, 2]


def test_curves(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    lines = []
    for checkpoint in range(1, 7):
        fields = ["%d" % checkpoint, "updates=%d" % (checkpoint * 100), "epoch=%d" % (checkpoint // 2),
                  "perplexity-train=%.2f" % (300 / checkpoint + 10), "perplexity-val=%.2f" % (280 / checkpoint + 14)]
        if checkpoint % 2 == 0:
            fields.append("bleu-val=%.2f" % (3.0 * checkpoint))
        if checkpoint != 3:
            fields.append("time-elapsed=%.1f" % (checkpoint * 70.0))
        lines.append("\t".join(fields))
    (model / "metrics").write_text("\n".join(lines) + "\n", encoding="utf-8")
    entries = visualize.read_metrics(str(model / "metrics"))
    assert len(entries) == 6 and "bleu-val" not in entries[0] and entries[1]["bleu-val"] == 6.0

    output = str(tmp_path / "out" / "curves.png")
    args = visualize.create_parser().parse_args(["curves", "--model", str(model), "--output", output, "--dpi", "50"])
    size = visualize.run_visualize(args)
    # Three panels: perplexity and BLEU against updates, perplexity against time.
    assert size == (int(3 * visualize.CURVE_PANEL_SIZE[0] * 50), int(visualize.CURVE_PANEL_SIZE[1] * 50))
    _check_png(output, size)


def test_bad_metrics_line(tmp_path):
    (tmp_path / "metrics").write_text("1\tupdates=100\n2\tupdates\n", encoding="utf-8")
    with pytest.raises(ImcapError, match="metrics line 2"):
        visualize.read_metrics(str(tmp_path / "metrics"))


def test_missing_image_names_the_file(tmp_path, flickr_test):
    images, _ = flickr_test
    with pytest.raises(ImcapError, match="no_such_image.jpg"):
        visualize.plot_captions([images[0], "no_such_image.jpg"], str(tmp_path / "x.png"), image_root=IMAGE_ROOT)
    assert not os.path.exists(str(tmp_path / "x.png"))


def test_wrap_text_fits():
    text = "a man in a red shirt and blue jeans is riding a very small bicycle down a steep hill"
    lines = visualize.wrap_text(text, 2.0, 9, prefix="GT: ")
    assert len(lines) > 1 and lines[0].startswith("GT: ")
    assert " ".join(" ".join(lines)[4:].split()) == text
    for line in lines:
        assert visualize._text_width(line, 9) <= 2.0
