"""Figures for inspecting a captioning model: captioned image grids, training curves, attention maps.

    python -m imcap.visualize captions --images test.images --hypotheses test.pred \\
        --references test.captions.0 test.captions.1 --output captions.png
    python -m imcap.visualize curves --model MODEL_DIR --output curves.png
    python -m imcap.captioner --models MODEL_DIR --extract-image-features --output-type json \\
        < images.txt > captions.json
    python -m imcap.visualize attention --json captions.json --line 1 --output attention.png

``captions`` draws a grid of images, each with its predicted caption (black on a white box) and its
ground-truth references (``GT:``, dark text on a light-green box) below it. ``curves`` plots the
model dir's ``metrics`` file (:mod:`imcap.metrics`): perplexity and validation BLEU against updates, and
against wall-clock time. ``attention`` draws, for one line of the captioner's ``--output-type json``
output, the image with the predicted caption as title, then one panel per generated word (``</s>``
shown as ``<end>``): the image under the word's attention weights over the encoder's regions as a
semi-transparent heat map (see :func:`plot_attention`). Figures are PNG files, written atomically,
rendered with matplotlib's Agg backend (no display needed).
"""
import argparse
import json
import logging
import math
import os
import random
import textwrap
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never to a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.textpath import TextToPath  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from . import arguments  # noqa: E402
from . import constants as C  # noqa: E402
from .metrics import read_metrics  # noqa: E402
from .utils import ImcapError, atomic_path, check_condition, read_lines  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 100
# Captions grid layout, in inches (1 inch = DPI pixels) and points (1/72 inch).
PANEL_WIDTH = 4.0  # one grid cell, margins included
PANEL_MARGIN = 0.1  # left and right of the content of a cell
IMAGE_HEIGHT = 3.0  # the image is scaled to fit (PANEL_WIDTH - 2 * PANEL_MARGIN) x IMAGE_HEIGHT
LABEL_HEIGHT = 0.2  # the image's file name above it
LABEL_FONT_SIZE = 7.5
HYPOTHESIS_FONT_SIZE = 10.0
REFERENCE_FONT_SIZE = 9.0
LINE_SPACING = 1.3  # line height / font size
BOX_PADDING = 0.06  # between a box's edge and its text
BOX_GAP = 0.07  # between image and box, and between boxes
ROW_GAP = 0.2  # below the last box of a row
FIGURE_MARGIN = 0.1
TITLE_HEIGHT = 0.45
TITLE_FONT_SIZE = 14.0
REFERENCE_PREFIX = "GT: "
HYPOTHESIS_STYLE = dict(face="white", edge="#8c8c8c", text="black")
REFERENCE_STYLE = dict(face="#dff2df", edge="#93c593", text="#12351a")
EMPTY_CAPTION = "(empty caption)"
# Training curves: one panel per plot, in inches.
CURVE_PANEL_SIZE = (5.0, 3.8)
# Attention maps, in inches and points: panels of ATTENTION_PANEL_WIDTH, ATTENTION_COLUMNS a row.
ATTENTION_PANEL_WIDTH = 2.5
ATTENTION_COLUMNS = 6
ATTENTION_MAX_IMAGE_HEIGHT = 2.6  # a portrait image is scaled down to this height
ATTENTION_WORD_FONT_SIZE = 12.0
ATTENTION_CAPTION_FONT_SIZE = 10.0
ATTENTION_TITLE_GAP = 0.06  # between a title's last line and its image
ATTENTION_CMAP = "jet"
ATTENTION_ALPHA = 0.5
END_LABEL = "<end>"  # how the last attention row, that of </s>, is titled

_TEXT_TO_PATH = TextToPath()


def _text_width(text: str, fontsize: float) -> float:
    """Width of ``text`` in the default (sans-serif) font at ``fontsize`` points, in inches."""
    if not text:
        return 0.0
    width, _, _ = _TEXT_TO_PATH.get_text_width_height_descent(text, FontProperties(size=fontsize),
                                                              ismath=False)
    return width / 72.0


def wrap_text(text: str, width: float, fontsize: float, prefix: str = "") -> List[str]:
    """Wrap ``text`` with :mod:`textwrap` into lines no wider than ``width`` inches at ``fontsize``.

    The first line starts with ``prefix``; the following lines are indented by about its width.
    The character count per line starts from the font's average letter width and shrinks until
    every line, measured in the actual font, fits.

    :return: the lines (at least one).
    """
    text = " ".join(text.split())
    sample = "a man in a red shirt is riding a bike down the street"
    char_width = _text_width(sample, fontsize) / len(sample)
    indent = " " * max(0, int(round(_text_width(prefix, fontsize) / max(_text_width(" ", fontsize), 1e-6))))
    chars = max(8, int(width / char_width))
    while True:
        lines = textwrap.wrap(text, width=chars, initial_indent=prefix, subsequent_indent=indent,
                              break_long_words=True, break_on_hyphens=False) or [prefix.rstrip()]
        if chars <= 8 or all(_text_width(line, fontsize) <= width for line in lines):
            return lines
        chars -= 1


def _line_height(fontsize: float) -> float:
    """Height of one text line at ``fontsize`` points, in inches."""
    return fontsize * LINE_SPACING / 72.0


def _box_height(num_lines: int, fontsize: float) -> float:
    """Height in inches of a box holding ``num_lines`` lines."""
    return num_lines * _line_height(fontsize) + 2 * BOX_PADDING


def _load_image(path: str, max_pixels: int) -> np.ndarray:
    """An RGB image as a ``(height, width, 3)`` uint8 array, shrunk to at most ``max_pixels`` a side.

    :raises ImcapError: if the file is missing or is not an image PIL can read.
    """
    check_condition(os.path.isfile(path), "%s: no such image file" % path)
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            image.thumbnail((max_pixels, max_pixels))
            return np.asarray(image)
    except (OSError, ValueError) as e:
        raise ImcapError("%s: cannot read image (%s)" % (path, e))


def _save(fig: "plt.Figure", output: str, dpi: int) -> None:
    """Write ``fig`` to ``output`` as PNG, atomically, and close it."""
    try:
        with atomic_path(output) as tmp:
            # The temporary name does not end in .png: name the format explicitly.
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    logger.info("Wrote %s", output)


def plot_captions(images: Sequence[str], output: str,
                  hypotheses: Optional[Sequence[str]] = None,
                  references: Optional[Sequence[Sequence[str]]] = None,
                  image_root: Optional[str] = None, columns: int = 4, title: Optional[str] = None,
                  dpi: int = DPI) -> Tuple[int, int]:
    """Draw a grid of captioned images and write it to ``output`` (PNG).

    Each cell is :data:`PANEL_WIDTH` inches wide: the image's file name, the image (aspect ratio
    kept, at most :data:`IMAGE_HEIGHT` inches high), the predicted caption on a white box, then each
    reference prefixed with ``GT:`` on a light-green box. Text is wrapped to the cell width; a row is
    as high as its tallest cell.

    :param images: image paths, relative to ``image_root`` unless absolute.
    :param output: PNG file to write.
    :param hypotheses: the predicted caption of each image (parallel to ``images``), or None.
    :param references: for each image, the list of its reference captions (``references[i]``
        belongs to ``images[i]``; empty strings are skipped), or None.
    :param image_root: folder the image paths are relative to (None: as given).
    :param columns: cells per row.
    :param title: figure title, or None.
    :param dpi: pixels per inch of the PNG.
    :return: the size of the PNG, (width, height) in pixels.
    :raises ImcapError: if there is no image, the lists are not parallel, or an image is missing or
        unreadable.
    """
    check_condition(len(images) > 0, "no images to plot")
    check_condition(columns >= 1, "columns must be >= 1")
    check_condition(hypotheses is None or len(hypotheses) == len(images),
                    "%d hypotheses for %d images" % (len(hypotheses or []), len(images)))
    check_condition(references is None or len(references) == len(images),
                    "references for %d images, %d images" % (len(references or []), len(images)))
    columns = min(columns, len(images))
    rows = int(math.ceil(len(images) / columns))
    content_width = PANEL_WIDTH - 2 * PANEL_MARGIN
    text_width = content_width - 2 * BOX_PADDING
    paths = [os.path.join(image_root, path) if image_root else path for path in images]
    pixels = [_load_image(path, max_pixels=int(2 * content_width * dpi)) for path in paths]

    # Lay out the text of every cell first: the figure's height depends on it.
    cells: List[Dict] = []
    for i in range(len(images)):
        hyp_lines: Optional[List[str]] = None
        if hypotheses is not None:
            hyp = hypotheses[i].strip()
            hyp_lines = wrap_text(hyp if hyp else EMPTY_CAPTION, text_width, HYPOTHESIS_FONT_SIZE)
        ref_lines: List[str] = []
        for ref in (references[i] if references is not None else []):
            if ref.strip():
                ref_lines.extend(wrap_text(ref, text_width, REFERENCE_FONT_SIZE, prefix=REFERENCE_PREFIX))
        height = 0.0
        if hyp_lines is not None:
            height += BOX_GAP + _box_height(len(hyp_lines), HYPOTHESIS_FONT_SIZE)
        if ref_lines:
            height += BOX_GAP + _box_height(len(ref_lines), REFERENCE_FONT_SIZE)
        cells.append(dict(hyp_lines=hyp_lines, hyp_empty=hypotheses is not None and not hypotheses[i].strip(),
                          ref_lines=ref_lines, text_height=height))
    row_heights = [LABEL_HEIGHT + IMAGE_HEIGHT + ROW_GAP
                   + max(cell["text_height"] for cell in cells[r * columns:(r + 1) * columns])
                   for r in range(rows)]
    title_height = TITLE_HEIGHT if title else 0.0
    fig_width = columns * PANEL_WIDTH + 2 * FIGURE_MARGIN
    fig_height = sum(row_heights) + title_height + 2 * FIGURE_MARGIN
    fig = plt.figure(figsize=(fig_width, fig_height), dpi=dpi, facecolor="white")
    inches = fig.dpi_scale_trans  # (0, 0) is the bottom left corner of the figure
    try:
        if title:
            fig.text(fig_width / 2, fig_height - FIGURE_MARGIN - title_height / 2, title, transform=inches,
                     ha="center", va="center", fontsize=TITLE_FONT_SIZE, fontweight="bold")
        for i, cell in enumerate(cells):
            row, column = divmod(i, columns)
            left = FIGURE_MARGIN + column * PANEL_WIDTH + PANEL_MARGIN
            top = fig_height - FIGURE_MARGIN - title_height - sum(row_heights[:row])
            # File name above the image, shortened from the left if it does not fit.
            label = images[i]
            while len(label) > 4 and _text_width(label, LABEL_FONT_SIZE) > content_width:
                label = "..." + label[4:]
            fig.text(left + content_width / 2, top - LABEL_HEIGHT / 2, label, transform=inches,
                     ha="center", va="center", fontsize=LABEL_FONT_SIZE, color="#666666")
            top -= LABEL_HEIGHT
            # The image, scaled to fit content_width x IMAGE_HEIGHT and centered in that box.
            image = pixels[i]
            scale = min(content_width / image.shape[1], IMAGE_HEIGHT / image.shape[0])
            width, height = image.shape[1] * scale, image.shape[0] * scale
            x0, y0 = left + (content_width - width) / 2, top - IMAGE_HEIGHT + (IMAGE_HEIGHT - height) / 2
            ax = fig.add_axes((x0 / fig_width, y0 / fig_height, width / fig_width, height / fig_height))
            ax.imshow(image, aspect="auto", interpolation="antialiased")
            ax.set_axis_off()
            top -= IMAGE_HEIGHT
            if cell["hyp_lines"] is not None:
                style = dict(HYPOTHESIS_STYLE, text="#777777") if cell["hyp_empty"] else HYPOTHESIS_STYLE
                top = _draw_box(fig, left, top - BOX_GAP, content_width, cell["hyp_lines"],
                                HYPOTHESIS_FONT_SIZE, style, italic=cell["hyp_empty"])
            if cell["ref_lines"]:
                top = _draw_box(fig, left, top - BOX_GAP, content_width, cell["ref_lines"],
                                REFERENCE_FONT_SIZE, REFERENCE_STYLE)
        _save(fig, output, dpi)
    finally:
        plt.close(fig)
    return int(round(fig_width * dpi)), int(round(fig_height * dpi))


def _draw_box(fig: "plt.Figure", left: float, top: float, width: float, lines: List[str], fontsize: float,
              style: Dict[str, str], italic: bool = False) -> float:
    """Draw ``lines`` on a filled box whose top-left corner is at (``left``, ``top``) inches.

    :return: the y coordinate (inches) of the box's bottom.
    """
    height = _box_height(len(lines), fontsize)
    fig.add_artist(Rectangle((left, top - height), width, height, transform=fig.dpi_scale_trans,
                             facecolor=style["face"], edgecolor=style["edge"], linewidth=0.8))
    line_height = _line_height(fontsize)
    for k, line in enumerate(lines):
        # One Text per line at a computed position: the spacing is exact whatever the font.
        y = top - BOX_PADDING - (k + 0.5) * line_height
        fig.text(left + BOX_PADDING, y, line, transform=fig.dpi_scale_trans, ha="left", va="center_baseline",
                 fontsize=fontsize, color=style["text"], fontstyle="italic" if italic else "normal")
    return top - height


def _series(entries: List[Dict[str, float]], x_key: str, y_key: str, x_scale: float = 1.0) -> Tuple[List[float],
                                                                                                      List[float]]:
    """Points (x, y) of the entries that have both keys, x multiplied by ``x_scale``."""
    points = [(e[x_key] * x_scale, e[y_key]) for e in entries
              if x_key in e and y_key in e and math.isfinite(e[y_key])]
    return [p[0] for p in points], [p[1] for p in points]


def _plot_family(ax: "plt.Axes", entries: List[Dict[str, float]], keys: List[str], x_key: str,
                 x_scale: float, maximize: bool) -> None:
    """Plot each of ``keys`` against ``x_key``; star the best point of each validation series."""
    for key in keys:
        xs, ys = _series(entries, x_key, key, x_scale)
        if not xs:
            continue
        line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=key)
        if key.endswith("-val"):
            best = int(np.argmax(ys) if maximize else np.argmin(ys))
            ax.plot([xs[best]], [ys[best]], marker="*", markersize=12, color=line.get_color(), linestyle="none",
                    label="best %s: %.2f" % (key, ys[best]))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_training_curves(metrics_path: str, output: str, title: Optional[str] = None, dpi: int = DPI) -> Tuple[int,
                                                                                                              int]:
    """Plot a metrics file (see :func:`read_metrics`) and write the figure to ``output`` (PNG).

    Panels, side by side: perplexity (every ``perplexity-*`` key, log scale when it spans more than
    a factor 10) against updates; BLEU (every ``bleu-*`` key) and CIDEr-D (every ``cider-*`` key: ``cider-val``
    of ``--decode-and-evaluate``, ``cider-train`` of self-critical training) against updates, if any line has
    one; perplexity against wall-clock minutes (``time-elapsed``, seconds), if any line has it. When a
    line lacks ``updates``, the checkpoint number is the x axis instead. The best validation point
    of each family is starred.

    :param metrics_path: the metrics file (a model dir's ``metrics``).
    :param output: PNG file to write.
    :param title: figure title (None: the metrics file's folder name).
    :param dpi: pixels per inch of the PNG.
    :return: the size of the PNG, (width, height) in pixels.
    :raises ImcapError: if the file is missing, malformed or has no perplexity or BLEU values.
    """
    # the numeric columns only (a metrics line may hold text, which is not plotted)
    entries: List[Dict[str, float]] = [{k: float(v) for k, v in e.items() if isinstance(v, (int, float))}
                                       for e in read_metrics(metrics_path)]
    check_condition(len(entries) > 0, "%s: no checkpoints" % metrics_path)
    keys = sorted({key for entry in entries for key in entry})
    ppl_keys = [k for k in keys if k.startswith(C.METRIC_PERPLEXITY)]
    bleu_keys = [k for k in keys if k.startswith(C.METRIC_BLEU)]
    cider_keys = [k for k in keys if k.startswith(C.METRIC_CIDER)]
    check_condition(bool(ppl_keys or bleu_keys), "%s: no perplexity or bleu values" % metrics_path)
    if all("updates" in entry for entry in entries):
        x_key, x_label = "updates", "updates"
    else:
        x_key, x_label = "checkpoint", "checkpoint"
    has_time = any("time-elapsed" in entry for entry in entries)
    panels: List[str] = []
    if ppl_keys:
        panels.append("perplexity")
    if bleu_keys:
        panels.append("bleu")
    if cider_keys:
        panels.append("cider")
    if has_time:
        panels.append("time")
    fig_width, fig_height = CURVE_PANEL_SIZE[0] * len(panels), CURVE_PANEL_SIZE[1]
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_width, fig_height), dpi=dpi, squeeze=False,
                             layout="constrained")
    try:
        for ax, panel in zip(axes[0], panels):
            if panel == "perplexity":
                _plot_family(ax, entries, ppl_keys, x_key, 1.0, maximize=False)
                ax.set_xlabel(x_label)
                ax.set_ylabel("perplexity")
                ax.set_title("Perplexity")
                _maybe_log_scale(ax, entries, ppl_keys)
            elif panel in ("bleu", "cider"):
                _plot_family(ax, entries, bleu_keys if panel == "bleu" else cider_keys, x_key, 1.0, maximize=True)
                ax.set_xlabel(x_label)
                ax.set_ylabel("BLEU" if panel == "bleu" else "CIDEr-D")
                ax.set_title("BLEU" if panel == "bleu" else "CIDEr-D")
            else:
                family = ppl_keys or bleu_keys
                _plot_family(ax, entries, family, "time-elapsed", 1 / 60.0, maximize=not ppl_keys)
                ax.set_xlabel("wall-clock time (minutes)")
                ax.set_ylabel("perplexity" if ppl_keys else "BLEU")
                ax.set_title("%s against time" % ("Perplexity" if ppl_keys else "BLEU"))
                if ppl_keys:
                    _maybe_log_scale(ax, entries, ppl_keys)
        if title is None:
            title = os.path.basename(os.path.dirname(os.path.abspath(metrics_path)))
        if title:
            fig.suptitle(title, fontsize=12)
        _save(fig, output, dpi)
    finally:
        plt.close(fig)
    return int(round(fig_width * dpi)), int(round(fig_height * dpi))


def _maybe_log_scale(ax: "plt.Axes", entries: List[Dict[str, float]], keys: List[str]) -> None:
    """Use a log y axis when the values of ``keys`` are positive and span more than a factor 10."""
    values = [e[k] for e in entries for k in keys if k in e and math.isfinite(e[k])]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
        # Label 1, 2 and 5 times each power of 10 as plain numbers: 10^2 alone says little.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: "%g" % value))
        ax.yaxis.set_minor_formatter(NullFormatter())


class AttentionPlot(NamedTuple):
    """What :func:`plot_attention` drew: the PNG's size and, per panel, its image box and title."""
    size: Tuple[int, int]  # (width, height) in pixels
    boxes: List[Tuple[int, int, int, int]]  # (left, top, right, bottom) pixels of each panel's image
    titles: List[str]  # the caption (first panel), then each word, the last "<end>"


def parse_grid(value: str) -> Tuple[int, int]:
    """``HxW`` (e.g. ``7x7``) as ``(H, W)``; for ``--grid``."""
    parts = value.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError("expected HEIGHTxWIDTH, e.g. 7x7, got '%s'" % value)
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError("grid sides must be >= 1, got '%s'" % value)
    return height, width


def attention_grid_shape(regions: int, grid: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The ``(rows, columns)`` of the region grid: ``grid`` if given, else the square root of ``regions``.

    :raises ImcapError: if ``grid`` does not hold ``regions`` regions, or none is given and ``regions``
        is not a square.
    """
    if grid is not None:
        check_condition(grid[0] * grid[1] == regions, "--grid %dx%d has %d regions, the attention has %d"
                        % (grid[0], grid[1], grid[0] * grid[1], regions))
        return grid
    side = int(round(math.sqrt(regions)))
    check_condition(side * side == regions, "%d attention regions is not a square grid: give --grid HxW"
                    % regions)
    return side, side


def upsample_attention(weights: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A ``(rows, columns)`` grid of weights resized smoothly (bicubic, PIL) to ``size`` = (width, height).

    Region ``(i, j)`` covers the ``i``-th of ``rows`` horizontal bands and the ``j``-th of ``columns``
    vertical bands of the whole frame (PIL aligns the cell centers); the overshoot of the bicubic
    kernel is clipped to the range of the weights.

    :return: a ``(height, width)`` float32 array.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    image = Image.fromarray(weights)  # mode "F"
    return np.clip(np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32), min(float(weights.min()), 0.0),
                   float(weights.max()))


def read_caption_json(path: str, line: int) -> Dict[str, Any]:
    """Line ``line`` (1-based) of a captioner ``--output-type json`` file, checked for plotting.

    :return: the JSON object, with ``tokens`` (from ``caption`` if missing) and ``attention`` a
        ``(rows, regions)`` float array whose ``rows`` is ``len(tokens) + 1`` (``</s>`` last) or
        ``len(tokens)``.
    :raises ImcapError: naming the file and line, if the line is missing, empty or not JSON, has an
        ``error`` (the captioner could not caption it) or has no ``attention``.
    """
    lines = read_lines(path)
    check_condition(1 <= line <= len(lines), "%s has %d lines, no line %d" % (path, len(lines), line))
    return parse_caption_json(lines[line - 1], path, line)


def parse_caption_json(text: str, path: str, line: int) -> Dict[str, Any]:
    """Parse and check one JSON line (see :func:`read_caption_json`)."""
    where = "%s line %d" % (path, line)
    check_condition(bool(text.strip()), "%s is empty" % where)
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ImcapError("%s: not JSON (%s); expected the captioner's --output-type json" % (where, e))
    check_condition(isinstance(record, dict), "%s: not a JSON object" % where)
    check_condition("error" not in record, "%s: the captioner failed on this line: %s" % (where, record.get("error")))
    check_condition("attention" in record, "%s has no 'attention': write it with the captioner's --output-type json"
                    % where)
    check_condition(bool(record.get("image")), "%s has no 'image'" % where)
    tokens = record.get("tokens")
    if tokens is None:
        tokens = str(record.get("caption", "")).split()
    try:
        attention = np.array(record["attention"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ImcapError("%s: 'attention' is not a list of rows of equal length" % where)
    check_condition(attention.ndim == 2 and attention.shape[1] > 0,
                    "%s: 'attention' is not a list of rows of equal length" % where)
    check_condition(bool(np.all(np.isfinite(attention))), "%s: 'attention' has non-finite values" % where)
    check_condition(attention.shape[0] in (len(tokens), len(tokens) + 1),
                    "%s: %d attention rows for %d tokens (expected one per token and one for </s>)"
                    % (where, attention.shape[0], len(tokens)))
    record = dict(record, tokens=[str(t) for t in tokens], attention=attention)
    return record


def resolve_image(image: str, image_root: Optional[str]) -> str:
    """The image file of a JSON line's ``image``: joined to ``image_root`` unless absolute; a cached
    feature file ``X.npy`` (captions of ``--source-root features``) stands for the image ``X``."""
    if image.endswith(".npy"):
        image = image[:-len(".npy")]
    return image if image_root is None or os.path.isabs(image) else os.path.join(image_root, image)


def plot_attention(record: Dict[str, Any], output: str, image_root: Optional[str] = None,
                   grid: Optional[Tuple[int, int]] = None, columns: int = ATTENTION_COLUMNS,
                   title: Optional[str] = None, dpi: int = DPI) -> AttentionPlot:
    """Draw the attention of one captioned image and write it to ``output`` (PNG).

    Panels of :data:`ATTENTION_PANEL_WIDTH` inches, ``columns`` a row: first the image with the whole
    caption as its title, then per generated word (the last, ``</s>``, titled ``<end>``) the image under
    that word's weights over the regions, upsampled bicubically to the image size and drawn with the
    ``jet`` colormap at 50% opacity, scaled from 0 (blue) to the word's largest weight (red).

    The encoder saw the image resized to its input size (e.g. 224x224) WITHOUT keeping the aspect
    ratio, so the region grid (row-major, as the features are stored) covers the whole frame: each
    region is an equal cell of the image as shown here, in its original aspect ratio. EXIF orientation
    is ignored, by the encoder and here alike.

    :param record: a checked JSON line (:func:`parse_caption_json`): ``image``, ``tokens``,
        ``attention``; ``line`` and ``score`` go into the default title.
    :param output: PNG file to write.
    :param image_root: folder ``image`` is relative to (None: as given); see :func:`resolve_image`.
    :param grid: ``(rows, columns)`` of the region grid; None: square (see :func:`attention_grid_shape`).
    :param columns: panels per row.
    :param title: figure title; None: the image path, line and score; "": none.
    :param dpi: pixels per inch of the PNG.
    :raises ImcapError: if the image is missing or unreadable or the grid does not fit.
    """
    check_condition(columns >= 1, "columns must be >= 1")
    attention_grid_shape(record["attention"].shape[1], grid)  # a grid that does not fit fails before any reading
    image = _load_image(resolve_image(record["image"], image_root), max_pixels=_attention_image_pixels(dpi))
    if title is None:
        title = "%s   (line %s, score %.3f)" % (record["image"], record.get("line", "?"),
                                                  float(record.get("score", 0.0)))
    fig, plot = draw_attention(image, record["tokens"], record["attention"], grid=grid, columns=columns,
                               title=title, dpi=dpi)
    _save(fig, output, dpi)
    return plot


def render_attention(image: np.ndarray, tokens: Sequence[str], attention: np.ndarray,
                     grid: Optional[Tuple[int, int]] = None, columns: int = ATTENTION_COLUMNS, title: str = "",
                     dpi: int = DPI) -> np.ndarray:
    """The figure of :func:`plot_attention` for a decoded image, rendered in memory (no file is read or written),
    e.g. for a web page.

    :param image: ``(height, width, 3)`` uint8 RGB, any size (shrunk as :func:`plot_attention` shrinks its file).
    :param tokens: the caption's words.
    :param attention: ``(len(tokens) + 1, regions)`` weights (``</s>`` last), or ``(len(tokens), regions)``.
    :param title: figure title ("": none).
    :return: the figure as ``(height, width, 3)`` uint8 RGB pixels.
    :raises ImcapError: if the grid does not fit.
    """
    check_condition(columns >= 1, "columns must be >= 1")
    max_side = _attention_image_pixels(dpi)
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    picture.thumbnail((max_side, max_side))
    fig, _ = draw_attention(np.asarray(picture), tokens, np.asarray(attention, dtype=np.float64), grid=grid,
                            columns=columns, title=title, dpi=dpi)
    try:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.array(canvas.buffer_rgba())[..., :3]
    finally:
        plt.close(fig)


def _attention_image_pixels(dpi: int) -> int:
    """The longest side, in pixels, an image is shrunk to for the panels of an attention figure."""
    return int(2 * (ATTENTION_PANEL_WIDTH - 2 * PANEL_MARGIN) * dpi)


def draw_attention(image: np.ndarray, tokens: Sequence[str], attention: np.ndarray,
                   grid: Optional[Tuple[int, int]] = None, columns: int = ATTENTION_COLUMNS, title: str = "",
                   dpi: int = DPI) -> Tuple["plt.Figure", AttentionPlot]:
    """Lay out and draw the panels of :func:`plot_attention` for ``image`` (``(height, width, 3)`` uint8, drawn at
    its size), the caption ``tokens`` and their ``attention`` (``(rows, regions)``).

    :return: the open figure (the caller saves and closes it) and what was drawn.
    :raises ImcapError: if the grid does not fit.
    """
    rows_shape = attention_grid_shape(attention.shape[1], grid)
    words = list(tokens[:attention.shape[0]]) + [END_LABEL] * (attention.shape[0] - len(tokens))
    content_width = ATTENTION_PANEL_WIDTH - 2 * PANEL_MARGIN
    height_px, width_px = image.shape[:2]
    heat_maps = [upsample_attention(weights.reshape(rows_shape), (width_px, height_px)) for weights in attention]

    caption = " ".join(tokens)
    caption_lines = wrap_text(caption if caption else EMPTY_CAPTION, content_width, ATTENTION_CAPTION_FONT_SIZE)
    titles = [caption] + words
    panels = len(titles)
    columns = min(columns, panels)
    rows = int(math.ceil(panels / columns))
    aspect = height_px / float(width_px)
    image_height = min(content_width * aspect, ATTENTION_MAX_IMAGE_HEIGHT)
    image_width = image_height / aspect
    word_title_height = _line_height(ATTENTION_WORD_FONT_SIZE) + ATTENTION_TITLE_GAP
    caption_title_height = len(caption_lines) * _line_height(ATTENTION_CAPTION_FONT_SIZE) + ATTENTION_TITLE_GAP
    title_heights = [max(word_title_height, caption_title_height) if r == 0 else word_title_height
                     for r in range(rows)]
    row_heights = [t + image_height + ROW_GAP for t in title_heights]
    figure_title_height = TITLE_HEIGHT if title else 0.0
    fig_width = columns * ATTENTION_PANEL_WIDTH + 2 * FIGURE_MARGIN
    fig_height = sum(row_heights) + figure_title_height + 2 * FIGURE_MARGIN
    fig = plt.figure(figsize=(fig_width, fig_height), dpi=dpi, facecolor="white")
    inches = fig.dpi_scale_trans
    boxes: List[Tuple[int, int, int, int]] = []
    extent = (0, width_px, height_px, 0)
    try:
        if title:
            label = title
            while len(label) > 4 and _text_width(label, TITLE_FONT_SIZE * 0.8) > fig_width - 2 * FIGURE_MARGIN:
                label = "..." + label[4:]
            fig.text(fig_width / 2, fig_height - FIGURE_MARGIN - figure_title_height / 2, label, transform=inches,
                     ha="center", va="center", fontsize=TITLE_FONT_SIZE * 0.8)
        for k in range(panels):
            row, column = divmod(k, columns)
            top = fig_height - FIGURE_MARGIN - figure_title_height - sum(row_heights[:row])
            image_top = top - title_heights[row]
            x0 = FIGURE_MARGIN + column * ATTENTION_PANEL_WIDTH + PANEL_MARGIN + (content_width - image_width) / 2
            y0 = image_top - image_height
            center = x0 + image_width / 2
            if k == 0:
                line_height = _line_height(ATTENTION_CAPTION_FONT_SIZE)
                for i, text in enumerate(reversed(caption_lines)):
                    fig.text(center, image_top + ATTENTION_TITLE_GAP + (i + 0.5) * line_height, text,
                             transform=inches, ha="center", va="center_baseline",
                             fontsize=ATTENTION_CAPTION_FONT_SIZE,
                             color="#777777" if not caption else "black", fontstyle="normal" if caption else "italic")
            else:
                fig.text(center, image_top + ATTENTION_TITLE_GAP, titles[k], transform=inches, ha="center",
                         va="bottom", fontsize=ATTENTION_WORD_FONT_SIZE,
                         color="#444444" if titles[k] == END_LABEL else "black")
            ax = fig.add_axes((x0 / fig_width, y0 / fig_height, image_width / fig_width, image_height / fig_height))
            ax.imshow(image, extent=extent, aspect="auto", interpolation="antialiased")
            if k > 0:
                heat = heat_maps[k - 1]
                ax.imshow(heat, extent=extent, aspect="auto", cmap=ATTENTION_CMAP, alpha=ATTENTION_ALPHA,
                          vmin=0.0, vmax=max(float(heat.max()), 1e-12), interpolation="antialiased")
            ax.set_xlim(0, width_px)
            ax.set_ylim(height_px, 0)
            ax.set_axis_off()
            boxes.append((int(round(x0 * dpi)), int(round((fig_height - image_top) * dpi)),
                          int(round((x0 + image_width) * dpi)), int(round((fig_height - y0) * dpi))))
    except BaseException:
        plt.close(fig)
        raise
    return fig, AttentionPlot((int(round(fig_width * dpi)), int(round(fig_height * dpi))), boxes, titles)


def attention_output_path(output: str, line: int, image: str) -> str:
    """Where ``--all-lines`` writes the figure of ``line``: ``output`` formatted with ``{line}`` and
    ``{image}`` (the image file name without extension) if it has either, else
    ``output/line<line>_<image>.png``."""
    stem = os.path.splitext(os.path.basename(image[:-4] if image.endswith(".npy") else image))[0] or "image"
    if "{line" in output or "{image" in output:
        try:
            return output.format(line=line, image=stem)
        except (KeyError, IndexError, ValueError) as e:
            raise ImcapError("--output pattern '%s': %s (use {line} and {image})" % (output, e))
    return os.path.join(output, "line%d_%s.png" % (line, stem))


def run_attention(args: argparse.Namespace) -> List[AttentionPlot]:
    """``attention`` subcommand: plot ``--line`` of ``--json``, or with ``--all-lines`` the first
    ``--max-images`` lines that have a caption (failed lines are skipped with a warning)."""
    common = dict(image_root=args.image_root, grid=args.grid, columns=args.columns, title=args.title,
                  dpi=args.dpi)
    if not args.all_lines:
        record = read_caption_json(args.json, args.line)
        return [plot_attention(record, args.output, **common)]
    plots: List[AttentionPlot] = []
    lines = read_lines(args.json)
    for number, text in enumerate(lines, 1):
        if len(plots) >= args.max_images:
            break
        if not text.strip():
            continue
        try:
            record = parse_caption_json(text, args.json, number)
        except ImcapError as e:
            if "the captioner failed" not in str(e):
                raise
            logger.warning("Skipping %s", e)
            continue
        output = attention_output_path(args.output, number, str(record["image"]))
        plots.append(plot_attention(record, output, **common))
    check_condition(len(plots) > 0, "%s: no line to plot" % args.json)
    return plots


def select_lines(num_lines: int, num_images: int, sample: bool, seed: int) -> List[int]:
    """Indices of the lines to plot: the first ``num_images``, or with ``sample`` a seeded random
    choice of that many, in file order."""
    count = min(num_images, num_lines)
    if not sample:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(num_lines), count))


def run_captions(args: argparse.Namespace) -> Tuple[int, int]:
    """``captions`` subcommand: read the parallel files, select lines, call :func:`plot_captions`.

    :raises ImcapError: if a file is not parallel to ``--images`` (the message names it).
    """
    images = read_lines(args.images)
    check_condition(len(images) > 0, "%s is empty" % args.images)
    hypotheses: Optional[List[str]] = None
    if args.hypotheses:
        hypotheses = read_lines(args.hypotheses)
        check_condition(len(hypotheses) == len(images), "%s has %d lines, %s has %d"
                        % (args.hypotheses, len(hypotheses), args.images, len(images)))
    streams: List[List[str]] = []
    for path in args.references or []:
        stream = read_lines(path)
        check_condition(len(stream) == len(images), "%s has %d lines, %s has %d"
                        % (path, len(stream), args.images, len(images)))
        streams.append(stream)
    chosen = select_lines(len(images), args.num_images, args.sample, args.seed)
    return plot_captions([images[i] for i in chosen], args.output,
                         hypotheses=[hypotheses[i] for i in chosen] if hypotheses is not None else None,
                         references=[[s[i] for s in streams] for i in chosen] if streams else None,
                         image_root=args.image_root, columns=args.columns, title=args.title, dpi=args.dpi)


def run_curves(args: argparse.Namespace) -> Tuple[int, int]:
    """``curves`` subcommand: plot ``MODEL/metrics``."""
    check_condition(os.path.isdir(args.model), "%s: no such model directory" % args.model)
    return plot_training_curves(os.path.join(args.model, C.METRICS_NAME), args.output, title=args.title,
                                dpi=args.dpi)


def run_visualize(args: argparse.Namespace):
    """Run the chosen subcommand; returns the PNG's size in pixels (``attention``: an
    :class:`AttentionPlot` per PNG written)."""
    return args.run(args)


def create_parser() -> argparse.ArgumentParser:
    """The ``python -m imcap.visualize`` parser, with subcommands ``captions``, ``curves`` and ``attention``."""
    parser = arguments.new_parser(__doc__.strip().splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)

    captions = subparsers.add_parser("captions", help="Grid of images with predicted and reference captions.",
                                     formatter_class=arguments.HelpFormatter)
    captions.add_argument("--images", required=True, type=arguments.regular_file,
                          help="Image paths, one per line, relative to --image-root.")
    captions.add_argument("--image-root", default=os.path.join(arguments.DEFAULT_FLICKR8K, "images"),
                          help="Folder the image paths are relative to.")
    captions.add_argument("--hypotheses", default=None, type=arguments.regular_file,
                          help="Predicted captions, parallel to --images.")
    captions.add_argument("--references", nargs="+", default=None, type=arguments.regular_file,
                          help="Reference caption files, each parallel to --images.")
    captions.add_argument("--num-images", type=arguments.int_greater_or_equal(1), default=8,
                          help="Number of images to plot (the first lines unless --sample).")
    captions.add_argument("--sample", action="store_true", help="Plot a random (seeded) choice of lines.")
    captions.add_argument("--seed", type=int, default=1, help="Seed of --sample.")
    captions.add_argument("--columns", type=arguments.int_greater_or_equal(1), default=4, help="Images per row.")
    captions.set_defaults(run=run_captions)

    curves = subparsers.add_parser("curves", help="Training curves from a model dir's metrics file.",
                                   formatter_class=arguments.HelpFormatter)
    curves.add_argument("--model", required=True, help="Model directory (its '%s' file is read)." % C.METRICS_NAME)
    curves.set_defaults(run=run_curves)

    attention = subparsers.add_parser(
        "attention", formatter_class=arguments.HelpFormatter,
        help="Attention maps of a caption, one panel per word, from the captioner's --output-type json.",
        description="The image, then per generated word (</s> as <end>) the image under that word's attention "
                    "weights over the regions, upsampled bicubically, as a 'jet' heat map at 50% opacity scaled "
                    "from 0 to the word's largest weight. The encoder saw the image resized to its input size "
                    "(e.g. 224x224) without keeping the aspect ratio, so the region grid covers the whole frame.")
    attention.add_argument("--json", required=True, type=arguments.regular_file,
                           help="Output of python -m imcap.captioner --output-type json (one JSON object a line).")
    attention.add_argument("--image-root", default=None,
                           help="Folder the 'image' paths of the JSON are relative to (absolute paths are used "
                                "as they are; a cached feature file X.npy stands for the image X). Default: the "
                                "current directory.")
    which = attention.add_mutually_exclusive_group()
    which.add_argument("--line", type=arguments.int_greater_or_equal(1), default=1,
                       help="Which line of --json to plot (1-based).")
    which.add_argument("--all-lines", action="store_true",
                       help="Plot every line (up to --max-images; lines the captioner failed on are skipped), "
                            "one PNG each: --output is then a directory or a pattern with {line} and {image}.")
    attention.add_argument("--max-images", type=arguments.int_greater_or_equal(1), default=20,
                           help="With --all-lines: at most this many PNGs.")
    attention.add_argument("--grid", type=parse_grid, default=None, metavar="HxW",
                           help="Rows x columns of the region grid (row-major). Default: square, e.g. 7x7 for 49 "
                                "regions.")
    attention.add_argument("--columns", type=arguments.int_greater_or_equal(1), default=ATTENTION_COLUMNS,
                           help="Panels per row.")
    attention.add_argument("--output", "-o", required=True,
                           help="PNG file to write; with --all-lines a directory (line<N>_<image>.png in it) or a "
                                "pattern such as 'att/{image}-{line}.png'.")
    attention.set_defaults(run=run_attention)

    for sub in (captions, curves):
        sub.add_argument("--output", "-o", required=True, help="PNG file to write.")
    for sub in (captions, curves, attention):
        sub.add_argument("--title", default=None, help="Figure title (curves: default the model dir's name; "
                                                       "attention: the image, line and score).")
        sub.add_argument("--dpi", type=arguments.int_greater_or_equal(10), default=DPI, help="Pixels per inch.")
        arguments.add_logging_args(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m imcap.visualize``."""
    arguments.cli_main(create_parser(), run_visualize, argv)


if __name__ == "__main__":
    main()
