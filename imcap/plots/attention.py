"""The attention of a caption's words over the image's regions: the image with the caption as its title, then one
panel per generated word (``</s>`` as ``<end>``), the image under that word's weights as a semi-transparent heat map.

:func:`plot_attention` draws a checked captioner JSON record (:func:`check_attention_record`: a line of ``python -m
imcap.captioner --output-type json``) to a PNG, :func:`render_attention` a decoded image to pixels in memory (the web
page's figure); both lay the figure out with :func:`draw_attention`. The grid the regions lie on is
:func:`imcap.features.region_grid`'s.
"""
import math
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from ..features import region_grid
from ..tokenizer import join_cjk
from ..utils import ImcapError, check_condition
from .figure import DPI, EMPTY_CAPTION, FIGURE_MARGIN, PANEL_MARGIN, ROW_GAP, TITLE_FONT_SIZE, TITLE_HEIGHT, \
    load_image, render_pixels, save_png
from .text import line_height, shorten_left, wrap_text

# The layout, in inches and points: panels of ATTENTION_PANEL_WIDTH, ATTENTION_COLUMNS a row.
ATTENTION_PANEL_WIDTH = 2.5
ATTENTION_COLUMNS = 6
ATTENTION_MAX_IMAGE_HEIGHT = 2.6  # a portrait image is scaled down to this height
ATTENTION_WORD_FONT_SIZE = 12.0
ATTENTION_CAPTION_FONT_SIZE = 10.0
ATTENTION_TITLE_GAP = 0.06  # between a title's last line and its image
ATTENTION_CMAP = "jet"
ATTENTION_ALPHA = 0.5
END_LABEL = "<end>"  # how the last attention row, that of </s>, is titled
CONTENT_WIDTH = ATTENTION_PANEL_WIDTH - 2 * PANEL_MARGIN  # of a panel's image, at most


class AttentionPlot(NamedTuple):
    """What :func:`plot_attention` drew: the PNG's size and, per panel, its image box and title."""
    size: Tuple[int, int]  # (width, height) in pixels
    boxes: List[Tuple[int, int, int, int]]  # (left, top, right, bottom) pixels of each panel's image
    titles: List[str]  # the caption (first panel), then each word, the last "<end>"


class _Layout(NamedTuple):
    """Where :func:`draw_attention` puts things, in inches: panels a row, each panel's image (width, height), the
    height of each row's titles and of each row, the figure title's band and the figure's (width, height)."""
    columns: int
    image_size: Tuple[float, float]
    title_heights: List[float]
    row_heights: List[float]
    figure_title_height: float
    size: Tuple[float, float]


def check_attention_record(record: Mapping[str, Any], where: str = "the record") -> Dict[str, Any]:
    """A captioner ``--output-type json`` object checked for plotting (``where`` names it in errors, e.g. the file
    and line).

    :return: a copy with ``tokens`` (from ``caption`` if missing) and ``attention`` a ``(rows, regions)`` float64
        array whose ``rows`` is ``len(tokens) + 1`` (``</s>`` last) or ``len(tokens)``.
    :raises ImcapError: if it has no ``attention`` or ``image``, or the attention is not rows of finite weights, one
        per token (and ``</s>``).
    """
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
    return dict(record, tokens=[str(t) for t in tokens], attention=attention)


def grid_shape(regions: int, grid: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """``(rows, columns)`` of the grid of the attention's ``regions``: ``grid``, or a square when None
    (:func:`imcap.features.region_grid`).

    :raises ImcapError: if ``grid`` does not hold ``regions`` regions, or none is given and ``regions`` is not a
        square.
    """
    shape = region_grid(regions, grid)
    if shape is None:
        raise ImcapError("%d attention regions fit no %s grid: give the grid (rows, columns) they lie on"
                         % (regions, "square" if grid is None else "%dx%d" % tuple(grid)))
    return shape


def upsample_attention(weights: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A ``(rows, columns)`` grid of weights resized smoothly (bicubic, PIL) to ``size`` = (width, height).

    Region ``(i, j)`` covers the ``i``-th of ``rows`` horizontal bands and the ``j``-th of ``columns``
    vertical bands of the whole frame (PIL aligns the cell centers); the overshoot of the bicubic
    kernel is clipped to the range of the weights.

    :return: a ``(height, width)`` float32 array.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float32)
    image = Image.fromarray(weights)  # mode "F"
    return np.clip(np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32),
                   min(float(weights.min()), 0.0), float(weights.max()))


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

    :param record: a checked JSON line (:func:`check_attention_record`): ``image``, ``tokens``,
        ``attention``; ``line`` and ``score`` go into the default title.
    :param output: PNG file to write.
    :param image_root: folder ``image`` is relative to (None: as given); see :func:`resolve_image`.
    :param grid: ``(rows, columns)`` of the region grid; None: square (see :func:`grid_shape`).
    :param columns: panels per row.
    :param title: figure title; None: the image path, line and score; "": none.
    :param dpi: pixels per inch of the PNG.
    :return: what was drawn.
    :raises ImcapError: if the image is missing or unreadable or the grid does not fit.
    """
    check_condition(columns >= 1, "columns must be >= 1")
    grid_shape(record["attention"].shape[1], grid)  # a grid that does not fit fails before any reading
    image = load_image(resolve_image(record["image"], image_root), max_pixels=_attention_image_pixels(dpi))
    if title is None:
        title = "%s   (line %s, score %.3f)" % (record["image"], record.get("line", "?"),
                                                  float(record.get("score", 0.0)))
    fig, plot = draw_attention(image, record["tokens"], record["attention"], grid=grid, columns=columns,
                               title=title, dpi=dpi)
    save_png(fig, output, dpi)
    return plot


def render_attention(image: np.ndarray, tokens: Sequence[str], attention: np.ndarray,
                     grid: Optional[Tuple[int, int]] = None, columns: int = ATTENTION_COLUMNS, title: str = "",
                     dpi: int = DPI) -> np.ndarray:
    """The figure of :func:`plot_attention` for a decoded image, rendered in memory (no file is read or written),
    e.g. for a web page.

    :param image: ``(height, width, 3)`` uint8 RGB, any size (shrunk as :func:`plot_attention` shrinks its file).
    :param tokens: the caption's words.
    :param attention: ``(len(tokens) + 1, regions)`` weights (``</s>`` last), or ``(len(tokens), regions)``.
    :param grid: ``(rows, columns)`` of the region grid; None: square.
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
    return render_pixels(fig)


def _attention_image_pixels(dpi: int) -> int:
    """The longest side, in pixels, an image is shrunk to for the panels of an attention figure."""
    return int(2 * CONTENT_WIDTH * dpi)


def draw_attention(image: np.ndarray, tokens: Sequence[str], attention: np.ndarray,
                   grid: Optional[Tuple[int, int]] = None, columns: int = ATTENTION_COLUMNS, title: str = "",
                   dpi: int = DPI) -> Tuple["plt.Figure", AttentionPlot]:
    """Lay out and draw the panels of :func:`plot_attention` for ``image`` (``(height, width, 3)`` uint8, drawn at
    its size), the caption ``tokens`` and their ``attention`` (``(rows, regions)``).

    :return: the open figure (the caller saves and closes it) and what was drawn.
    :raises ImcapError: if the grid does not fit.
    """
    rows_shape = grid_shape(attention.shape[1], grid)
    height_px, width_px = image.shape[:2]
    heat_maps = [upsample_attention(weights.reshape(rows_shape), (width_px, height_px)) for weights in attention]
    caption = join_cjk(tokens)   # as the caption is written (Chinese without spaces)
    caption_lines = wrap_text(caption if caption else EMPTY_CAPTION, CONTENT_WIDTH, ATTENTION_CAPTION_FONT_SIZE)
    words = list(tokens[:attention.shape[0]]) + [END_LABEL] * (attention.shape[0] - len(tokens))
    titles = [caption] + words
    layout = _layout(image.shape, len(caption_lines), len(titles), columns, bool(title))
    fig = plt.figure(figsize=layout.size, dpi=dpi, facecolor="white")
    boxes: List[Tuple[int, int, int, int]] = []
    try:
        if title:
            _draw_figure_title(fig, title, layout)
        for k in range(len(titles)):
            x0, y0, image_top = _panel_image_box(layout, k)
            center = x0 + layout.image_size[0] / 2
            if k == 0:
                _draw_caption_title(fig, center, image_top, caption_lines, empty=not caption)
            else:
                fig.text(center, image_top + ATTENTION_TITLE_GAP, titles[k], transform=fig.dpi_scale_trans,
                         ha="center", va="bottom", fontsize=ATTENTION_WORD_FONT_SIZE,
                         color="#444444" if titles[k] == END_LABEL else "black")
            _draw_panel_image(fig, layout, (x0, y0), image, heat_maps[k - 1] if k > 0 else None)
            fig_height = layout.size[1]
            boxes.append((int(round(x0 * dpi)), int(round((fig_height - image_top) * dpi)),
                          int(round((x0 + layout.image_size[0]) * dpi)), int(round((fig_height - y0) * dpi))))
    except BaseException:
        plt.close(fig)
        raise
    size = (int(round(layout.size[0] * dpi)), int(round(layout.size[1] * dpi)))
    return fig, AttentionPlot(size, boxes, titles)


def _layout(image_shape: Tuple[int, ...], caption_lines: int, panels: int, columns: int, titled: bool) -> _Layout:
    """The layout of ``panels`` panels of an image of ``image_shape`` (pixels, height first), ``columns`` a row (at
    most), the first titled by a caption of ``caption_lines`` lines, under a figure title if ``titled``."""
    columns = min(columns, panels)
    rows = int(math.ceil(panels / columns))
    aspect = image_shape[0] / float(image_shape[1])
    image_height = min(CONTENT_WIDTH * aspect, ATTENTION_MAX_IMAGE_HEIGHT)
    image_width = image_height / aspect
    word_title_height = line_height(ATTENTION_WORD_FONT_SIZE) + ATTENTION_TITLE_GAP
    caption_title_height = caption_lines * line_height(ATTENTION_CAPTION_FONT_SIZE) + ATTENTION_TITLE_GAP
    title_heights = [max(word_title_height, caption_title_height) if r == 0 else word_title_height
                     for r in range(rows)]
    row_heights = [t + image_height + ROW_GAP for t in title_heights]
    figure_title_height = TITLE_HEIGHT if titled else 0.0
    size = (columns * ATTENTION_PANEL_WIDTH + 2 * FIGURE_MARGIN,
            sum(row_heights) + figure_title_height + 2 * FIGURE_MARGIN)
    return _Layout(columns, (image_width, image_height), title_heights, row_heights, figure_title_height, size)


def _panel_image_box(layout: _Layout, k: int) -> Tuple[float, float, float]:
    """Where panel ``k`` draws its image, in inches from the figure's bottom left: left, bottom and top."""
    row, column = divmod(k, layout.columns)
    image_width, image_height = layout.image_size
    top = layout.size[1] - FIGURE_MARGIN - layout.figure_title_height - sum(layout.row_heights[:row])
    image_top = top - layout.title_heights[row]
    x0 = FIGURE_MARGIN + column * ATTENTION_PANEL_WIDTH + PANEL_MARGIN + (CONTENT_WIDTH - image_width) / 2
    return x0, image_top - image_height, image_top


def _draw_figure_title(fig: "plt.Figure", title: str, layout: _Layout) -> None:
    """The figure's title, centered in its band, shortened from the left to the figure's width."""
    fig_width, fig_height = layout.size
    label = shorten_left(title, TITLE_FONT_SIZE * 0.8, fig_width - 2 * FIGURE_MARGIN)
    fig.text(fig_width / 2, fig_height - FIGURE_MARGIN - layout.figure_title_height / 2, label,
             transform=fig.dpi_scale_trans, ha="center", va="center", fontsize=TITLE_FONT_SIZE * 0.8)


def _draw_caption_title(fig: "plt.Figure", center: float, image_top: float, lines: List[str], empty: bool) -> None:
    """The first panel's title: the caption's ``lines`` centered above its image (``empty``: grey italics)."""
    spacing = line_height(ATTENTION_CAPTION_FONT_SIZE)
    for i, text in enumerate(reversed(lines)):
        fig.text(center, image_top + ATTENTION_TITLE_GAP + (i + 0.5) * spacing, text,
                 transform=fig.dpi_scale_trans, ha="center", va="center_baseline",
                 fontsize=ATTENTION_CAPTION_FONT_SIZE,
                 color="#777777" if empty else "black", fontstyle="italic" if empty else "normal")


def _draw_panel_image(fig: "plt.Figure", layout: _Layout, corner: Tuple[float, float], image: np.ndarray,
                      heat: Optional[np.ndarray]) -> None:
    """A panel's image, its bottom-left corner at ``corner`` inches, under the ``heat`` map if given."""
    (fig_width, fig_height), (image_width, image_height) = layout.size, layout.image_size
    height_px, width_px = image.shape[:2]
    extent = (0, width_px, height_px, 0)
    ax = fig.add_axes((corner[0] / fig_width, corner[1] / fig_height, image_width / fig_width,
                       image_height / fig_height))
    ax.imshow(image, extent=extent, aspect="auto", interpolation="antialiased")
    if heat is not None:
        ax.imshow(heat, extent=extent, aspect="auto", cmap=ATTENTION_CMAP, alpha=ATTENTION_ALPHA,
                  vmin=0.0, vmax=max(float(heat.max()), 1e-12), interpolation="antialiased")
    ax.set_xlim(0, width_px)
    ax.set_ylim(height_px, 0)
    ax.set_axis_off()
