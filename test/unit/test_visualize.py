"""Tests of the figures (imcap.plots) and their command line (imcap.visualize) on real Flickr8k images: captions grid,
training curves, attention maps, errors."""
import json
import os
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from imcap import visualize
from imcap.features import region_grid
from imcap.metrics_file import read_metrics
from imcap.plots.attention import ATTENTION_PANEL_WIDTH, check_attention_record, grid_shape, plot_attention, \
    render_attention, upsample_attention
from imcap.plots.captions import IMAGE_HEIGHT, LABEL_HEIGHT, PANEL_WIDTH, plot_captions
from imcap.plots.curves import CURVE_PANEL_SIZE
from imcap.plots.figure import FIGURE_MARGIN
from imcap.plots.text import text_width, wrap_text
from imcap.utils import ImcapError
from test.common import IMAGES, requires_shared
from test.figures import check_captions_grid, drawn_curves, read_png

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
    """The PNG at ``path`` has (about) ``expected_size`` and is no blank page: the pixels of the whole figure."""
    pixels = read_png(path)
    height, width = pixels.shape[:2]
    assert abs(width - expected_size[0]) <= tolerance and abs(height - expected_size[1]) <= tolerance
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100   # many colours, not a blank or flat figure
    # No temporary file of the atomic write is left behind.
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]
    return pixels


def test_captions_grid(tmp_path, flickr_test):
    images, references = flickr_test
    hypotheses = [refs[0] for refs in references]
    output = str(tmp_path / "out" / "captions.png")
    size = plot_captions(images, output, hypotheses=hypotheses, references=references,
                                   image_root=IMAGE_ROOT, columns=4, title="test", dpi=50)
    width = 4 * PANEL_WIDTH + 2 * FIGURE_MARGIN
    assert size[0] == pytest.approx(width * 50, abs=1)
    # Two rows, each at least label + image high, plus five references of text.
    assert 2 * (LABEL_HEIGHT + IMAGE_HEIGHT + 0.5) * 50 < size[1] < 2 * 8 * 50
    _check_png(output, size)
    # the images in order, 4 a row, each with its name, caption and five references; the title on top
    check_captions_grid(output, images, IMAGE_ROOT, columns=4, dpi=50, title=True, references=5)


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
    assert size[0] == pytest.approx((2 * PANEL_WIDTH + 2 * FIGURE_MARGIN) * 40, abs=1)
    _check_png(output, size)
    sample = visualize.select_lines(8, 3, True, 1)   # --seed 1, the default
    assert sample == visualize.select_lines(8, 3, True, 1) and sample != [0, 1, 2]   # seeded, not the first lines
    assert len(set(sample)) == 3 and sample == sorted(sample) and all(0 <= i < 8 for i in sample)
    assert visualize.select_lines(8, 3, False, 1) == [0, 1, 2]
    # the grid shows the sampled images in file order, 2 a row (the fourth cell blank), with both references
    check_captions_grid(output, [images[i] for i in sample], IMAGE_ROOT, columns=2, dpi=40, title=False,
                        references=2)


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
    entries = read_metrics(str(model / "metrics"))
    assert len(entries) == 6 and "bleu-val" not in entries[0] and entries[1]["bleu-val"] == 6.0

    output = str(tmp_path / "out" / "curves.png")
    args = visualize.create_parser().parse_args(["curves", "--model", str(model), "--output", output, "--dpi", "50"])
    size = visualize.run_visualize(args)
    # Three panels: perplexity and BLEU against updates, perplexity against time.
    assert size == (int(3 * CURVE_PANEL_SIZE[0] * 50), int(CURVE_PANEL_SIZE[1] * 50))
    pixels = _check_png(output, size)
    # each panel draws its series: two perplexities (train, val), one BLEU (val), two perplexities against time
    assert drawn_curves(pixels, 3) == [["C0", "C1"], ["C0"], ["C0", "C1"]]

    # with CIDEr-D columns (--decode-and-evaluate, self-critical training), a fourth panel
    (model / "metrics").write_text("".join(line + "\tcider-val=%.3f\tcider-train=%.3f\n" % (0.1 * n, 0.2 * n)
                                           for n, line in enumerate(lines)), encoding="utf-8")
    size = visualize.run_visualize(args)
    assert size == (int(4 * CURVE_PANEL_SIZE[0] * 50), int(CURVE_PANEL_SIZE[1] * 50))
    with_cider = _check_png(output, size)
    # the third panel is CIDEr-D with its two series (cider-train, cider-val); the others as before
    assert drawn_curves(with_cider, 4) == [["C0", "C1"], ["C0"], ["C0", "C1"], ["C0", "C1"]]


def test_bad_metrics_line(tmp_path):
    (tmp_path / "metrics").write_text("1\tupdates=100\n2\tupdates\n", encoding="utf-8")
    with pytest.raises(ImcapError, match="metrics line 2"):
        read_metrics(str(tmp_path / "metrics"))


def test_missing_image_names_the_file(tmp_path, flickr_test):
    images, _ = flickr_test
    with pytest.raises(ImcapError, match="no_such_image.jpg"):
        plot_captions([images[0], "no_such_image.jpg"], str(tmp_path / "x.png"), image_root=IMAGE_ROOT)
    assert not os.path.exists(str(tmp_path / "x.png"))


def test_wrap_text_fits():
    text = "a man in a red shirt and blue jeans is riding a very small bicycle down a steep hill"
    lines = wrap_text(text, 2.0, 9, prefix="GT: ")
    assert len(lines) > 1 and lines[0].startswith("GT: ")
    assert " ".join(" ".join(lines)[4:].split()) == text
    for line in lines:
        assert text_width(line, 9) <= 2.0


# Attention maps: a hand-built captioner JSON line for a real Flickr8k image.
ATTENTION_IMAGE = "1000268201_693b08cb0e.jpg"
GRID = 7


def _attention_record(image, peak_row=1, regions=GRID * GRID, **extra):
    """A captioner --output-type json object for 'a dog runs': 4 attention rows (3 words and </s>);
    row ``peak_row`` puts 0.2 on each of the regions 0, 1, 7 and 8 (the top-left 2x2 cells of the
    row-major 7x7 grid), the others are smooth random weights."""
    rng = np.random.RandomState(3)
    attention = rng.dirichlet(np.full(regions, 20.0), size=4)
    attention[peak_row] = 0.2 / (regions - 4)
    attention[peak_row, [0, 1, GRID, GRID + 1]] = 0.2
    record = {"line": 2, "image": image, "caption": "a dog runs", "tokens": ["a", "dog", "runs"],
              "score": -0.75, "attention": np.round(attention, 5).tolist()}
    record.update(extra)
    return record


def _write_json_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _red_minus_blue(pixels, box, rows, cols):
    """Mean red minus blue over the fraction ``rows`` x ``cols`` (slices of [0, 1]) of a panel's image box,
    2 pixels inside its edges."""
    left, top, right, bottom = box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2
    h, w = bottom - top, right - left
    area = pixels[top + int(rows.start * h):top + int(rows.stop * h),
                  left + int(cols.start * w):left + int(cols.stop * w)]
    return float((area[..., 0] - area[..., 2]).mean())


@requires_shared
def test_attention_figure(tmp_path):
    assert os.path.isfile(os.path.join(IMAGES, ATTENTION_IMAGE))
    json_path = _write_json_lines(tmp_path / "captions.json", [
        {"line": 1, "image": "missing.jpg", "caption": "", "tokens": [], "score": 0.0, "error": "no such file"},
        _attention_record(ATTENTION_IMAGE)])
    output = str(tmp_path / "out" / "attention.png")
    args = visualize.create_parser().parse_args(
        ["attention", "--json", json_path, "--image-root", IMAGES, "--line", "2", "--output", output, "--dpi", "50"])
    plot, = visualize.run_visualize(args)
    # The image with the caption, then one panel per word and <end>: 5 panels on one row.
    assert plot.titles == ["a dog runs", "a", "dog", "runs", "<end>"]
    assert len(plot.boxes) == 5 and len({(b[2] - b[0], b[3] - b[1]) for b in plot.boxes}) == 1
    width = 5 * ATTENTION_PANEL_WIDTH + 2 * FIGURE_MARGIN
    assert plot.size[0] == pytest.approx(width * 50, abs=1)
    assert 2.0 * 50 < plot.size[1] < 4.5 * 50  # one row: title, word, image
    _check_png(output, plot.size)
    with Image.open(output) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    # The panel of 'dog' (attention on the top-left 2x2 cells) is red there and blue in the opposite corner.
    # The heat map is blended at alpha 0.5 over the image: subtracting half the red-minus-blue of the bare
    # image (first panel, same size) leaves half that of the heat map alone, whose 'jet' colors run from
    # dark blue (0, 0, 128) at 0 to dark red (128, 0, 0) at the word's largest weight.
    def heat(rows, cols):
        return (_red_minus_blue(pixels, plot.boxes[2], rows, cols)
                - 0.5 * _red_minus_blue(pixels, plot.boxes[0], rows, cols))

    near, far = slice(0.0, 2 / 7), slice(5 / 7, 1.0)  # the 2x2 cells at the top left, at the bottom right
    assert heat(near, near) > 40 and heat(far, far) < -50
    top_left, bottom_right = slice(0.0, 0.5), slice(0.5, 1.0)  # quadrants: mostly blue, but less at the top left
    assert heat(top_left, top_left) > heat(bottom_right, bottom_right) + 25


@requires_shared
def test_render_attention_draws_in_memory_what_plot_attention_writes(tmp_path):
    record = check_attention_record(_attention_record(ATTENTION_IMAGE))
    output = str(tmp_path / "attention.png")
    plot = plot_attention(record, output, image_root=IMAGES, title="", dpi=50)
    with Image.open(os.path.join(IMAGES, ATTENTION_IMAGE)) as image:
        pixels = np.asarray(image.convert("RGB"))
    drawn = render_attention(pixels, record["tokens"], record["attention"], dpi=50)  # nothing written
    assert drawn.dtype == np.uint8 and drawn.shape[2] == 3
    assert abs(drawn.shape[0] - plot.size[1]) <= 1 and abs(drawn.shape[1] - plot.size[0]) <= 1
    with Image.open(output) as image:
        written = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = min(written.shape[0], drawn.shape[0]), min(written.shape[1], drawn.shape[1])
    difference = np.abs(written[:height, :width] - drawn[:height, :width]).mean()
    assert difference < 3.0, difference  # the same figure (the image shrunk by another path)
    assert os.listdir(str(tmp_path)) == ["attention.png"]


@requires_shared
def test_attention_all_lines_absolute_image_and_grid(tmp_path):
    image = os.path.abspath(os.path.join(IMAGES, ATTENTION_IMAGE))
    json_path = _write_json_lines(tmp_path / "captions.json", [
        {"line": 1, "image": "missing.jpg", "caption": "", "tokens": [], "score": 0.0, "error": "no such file"},
        _attention_record(image, regions=48, line=2),
        _attention_record(image, regions=48, line=3)])
    out_dir = tmp_path / "maps"
    args = visualize.create_parser().parse_args(
        ["attention", "--json", json_path, "--all-lines", "--max-images", "1", "--grid", "6x8", "--columns", "2",
         "--output", str(out_dir), "--dpi", "30"])
    plot, = visualize.run_visualize(args)  # the failed line 1 is skipped, --max-images stops after line 2
    assert os.listdir(str(out_dir)) == ["line2_1000268201_693b08cb0e.png"]
    assert plot.size[0] == pytest.approx((2 * ATTENTION_PANEL_WIDTH + 2 * FIGURE_MARGIN) * 30,
                                         abs=1)
    assert visualize.attention_output_path("a/{image}-{line}.png", 7, "x/y.jpg.npy") == "a/y-7.png"


@requires_shared
def test_attention_errors(tmp_path):
    record = _attention_record(ATTENTION_IMAGE)
    no_attention = {k: v for k, v in record.items() if k != "attention"}
    json_path = _write_json_lines(tmp_path / "captions.json", [
        {"line": 1, "image": "missing.jpg", "caption": "", "tokens": [], "score": 0.0, "error": "no such file"},
        no_attention,
        _attention_record(ATTENTION_IMAGE, regions=48)])
    parser = visualize.create_parser()

    def run(*options):
        visualize.run_visualize(parser.parse_args(["attention", "--json", json_path, "--image-root", IMAGES,
                                                   "--output", str(tmp_path / "x.png")] + list(options)))

    with pytest.raises(ImcapError, match=r"captions\.json line 1: the captioner failed on this line: no such file"):
        run("--line", "1")
    with pytest.raises(ImcapError, match=r"captions\.json line 2 has no 'attention'.*--output-type json"):
        run("--line", "2")
    with pytest.raises(ImcapError, match="48 attention regions is not a square grid: give --grid HxW"):
        run("--line", "3")
    with pytest.raises(ImcapError, match=r"--grid 7x7 has 49 regions, the attention has 48"):
        run("--line", "3", "--grid", "7x7")
    with pytest.raises(ImcapError, match=r"has 3 lines, no line 4"):
        run("--line", "4")
    with pytest.raises(ImcapError, match=r"line 2 has no 'attention'"):
        run("--all-lines")  # a line of another output type is an error, not skipped
    assert not os.path.exists(str(tmp_path / "x.png"))
    with pytest.raises(SystemExit):
        parser.parse_args(["attention", "--json", json_path, "--grid", "7by7", "--output", "x.png"])


def test_upsample_attention_and_parse_grid():
    weights = np.zeros((7, 7), dtype=np.float32)
    weights[0, 0] = 1.0
    heat = upsample_attention(weights, (70, 50))
    assert heat.shape == (50, 70)
    # Cell (0, 0) is the top-left 10x7 pixels; bicubic overshoot is clipped to the weights' range.
    assert heat[3, 5] == pytest.approx(1.0, abs=0.05) and heat[-10:, -10:].max() == 0.0
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert visualize.parse_grid("6X8") == (6, 8)


def test_one_region_grid_rule():
    """imcap.features.region_grid is the rule; the figures and the command line word its None as their errors."""
    assert region_grid(49) == (7, 7) and region_grid(196) == (14, 14) and region_grid(1) == (1, 1)
    assert region_grid(48) is None and region_grid(0) is None
    assert region_grid(48, (6, 8)) == (6, 8) and region_grid(49, (6, 8)) is None
    assert grid_shape(49) == (7, 7) and grid_shape(48, (6, 8)) == (6, 8)
    with pytest.raises(ImcapError, match=r"48 attention regions fit no square grid: give the grid \(rows, columns\)"):
        grid_shape(48)
    with pytest.raises(ImcapError, match="48 attention regions fit no 7x7 grid"):
        grid_shape(48, (7, 7))
    record = check_attention_record(_attention_record(ATTENTION_IMAGE, regions=48))
    assert visualize.attention_grid(record, (8, 6)) == (8, 6)
    with pytest.raises(ImcapError, match="48 attention regions is not a square grid: give --grid HxW"):
        visualize.attention_grid(record, None)
    with pytest.raises(ImcapError, match="--grid 7x7 has 49 regions, the attention has 48"):
        visualize.attention_grid(record, (7, 7))


def test_worst_best_from_per_image_scores(tmp_path, flickr_test):
    """visualize worst-best reads evaluate --per-image's JSON lines and draws the lowest-scoring images, lowest first,
    then the highest, highest first (ties in file order), with each record's caption and references."""
    images, references = flickr_test
    (tmp_path / "test.images").write_text("\n".join(images) + "\n", encoding="utf-8")
    cider = [0.5, 0.1, 2.0, 0.1, 1.5, 0.0, 0.9, 3.0]
    lines = [json.dumps({"line": i + 1, "hypothesis": refs[0], "references": refs[1:], "CIDEr-D": score,
                         "sentence-bleu4": 10.0 * i})
             for i, (refs, score) in enumerate(zip(references, cider))]
    per_image = tmp_path / "per-image.jsonl"
    per_image.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    records = visualize.read_per_image_scores(str(per_image), "CIDEr-D")
    chosen = visualize.worst_and_best(records, "CIDEr-D", 3)
    assert [(which, rank, r["line"]) for which, rank, r in chosen] == [
        ("worst", 1, 6), ("worst", 2, 2), ("worst", 3, 4), ("best", 1, 8), ("best", 2, 3), ("best", 3, 5)]
    output = str(tmp_path / "out" / "worst-best.png")
    args = visualize.create_parser().parse_args(
        ["worst-best", "--per-image", str(per_image), "--images", str(tmp_path / "test.images"),
         "--image-root", IMAGE_ROOT, "--num-images", "3", "--output", output, "--dpi", "40"])
    size = visualize.run_visualize(args)
    assert size[0] == pytest.approx((3 * PANEL_WIDTH + 2 * FIGURE_MARGIN) * 40, abs=1)
    _check_png(output, size)
    # a row of the 3 worst, then a row of the 3 best, each with its four references
    check_captions_grid(output, [images[i - 1] for i in (6, 2, 4, 8, 3, 5)], IMAGE_ROOT, columns=3, dpi=40,
                        title=True, references=4)
    by_bleu = visualize.worst_and_best(visualize.read_per_image_scores(str(per_image), "sentence-bleu4"),
                                       "sentence-bleu4", 2)
    assert [r["line"] for _, _, r in by_bleu] == [1, 2, 8, 7]


def test_worst_best_errors(tmp_path):
    per_image = tmp_path / "per-image.jsonl"
    per_image.write_text('{"line": 1, "hypothesis": "a dog", "references": ["a dog"], "ROUGE-L": 50.0}\n'
                         '{"line": 5, "hypothesis": "a cat", "references": ["a cat"], "ROUGE-L": 20.0}\n',
                         encoding="utf-8")
    images = tmp_path / "images"
    images.write_text("a.jpg\nb.jpg\n", encoding="utf-8")
    with pytest.raises(ImcapError, match=r"per-image\.jsonl line 1 has no 'CIDEr-D' score \(it has: ROUGE-L\)"):
        visualize.read_per_image_scores(str(per_image), "CIDEr-D")
    args = visualize.create_parser().parse_args(
        ["worst-best", "--per-image", str(per_image), "--images", str(images), "--by", "ROUGE-L", "--output", "x.png"])
    with pytest.raises(ImcapError, match=r"per-image\.jsonl: a score of line 5, .*images has 2 lines"):
        visualize.run_visualize(args)
    per_image.write_text('{"line": 1}\n', encoding="utf-8")
    with pytest.raises(ImcapError, match=r"line 1: not a per-image record of imcap\.evaluate --per-image"):
        visualize.read_per_image_scores(str(per_image), "CIDEr-D")
    per_image.write_text('a dog\n', encoding="utf-8")
    with pytest.raises(ImcapError, match=r"line 1: not JSON"):
        visualize.read_per_image_scores(str(per_image), "CIDEr-D")
