"""A grid of captioned images: each image under its file name, with its predicted caption (black on a white box) and
its ground-truth references (``GT:``, dark text on a light-green box) below it."""
import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from ..utils import check_condition
from .figure import DPI, EMPTY_CAPTION, FIGURE_MARGIN, PANEL_MARGIN, ROW_GAP, TITLE_FONT_SIZE, TITLE_HEIGHT, \
    load_image, save_png
from .text import line_height, shorten_left, wrap_text

# The layout, in inches (1 inch = dpi pixels) and points (1/72 inch).
PANEL_WIDTH = 4.0  # one grid cell, margins included
IMAGE_HEIGHT = 3.0  # the image is scaled to fit (PANEL_WIDTH - 2 * PANEL_MARGIN) x IMAGE_HEIGHT
LABEL_HEIGHT = 0.2  # the image's file name above it
LABEL_FONT_SIZE = 7.5
HYPOTHESIS_FONT_SIZE = 10.0
REFERENCE_FONT_SIZE = 9.0
BOX_PADDING = 0.06  # between a box's edge and its text
BOX_GAP = 0.07  # between image and box, and between boxes
REFERENCE_PREFIX = "GT: "
HYPOTHESIS_STYLE = dict(face="white", edge="#8c8c8c", text="black")
REFERENCE_STYLE = dict(face="#dff2df", edge="#93c593", text="#12351a")
CONTENT_WIDTH = PANEL_WIDTH - 2 * PANEL_MARGIN  # of the image and the boxes of a cell


class _Cell(NamedTuple):
    """The text of one cell, wrapped: the predicted caption's lines (None: no hypotheses), whether it is empty, the
    references' lines, and the height of the boxes (inches, the gaps above them included)."""
    hyp_lines: Optional[List[str]]
    hyp_empty: bool
    ref_lines: List[str]
    text_height: float


def box_height(num_lines: int, fontsize: float) -> float:
    """Height in inches of a box holding ``num_lines`` lines."""
    return num_lines * line_height(fontsize) + 2 * BOX_PADDING


def _layout_cell(hypothesis: Optional[str], references: Sequence[str]) -> _Cell:
    """Wrap a cell's caption (None: none) and references (empty strings skipped) to the width of its boxes."""
    text_width = CONTENT_WIDTH - 2 * BOX_PADDING
    hyp_lines: Optional[List[str]] = None
    if hypothesis is not None:
        hyp = hypothesis.strip()
        hyp_lines = wrap_text(hyp if hyp else EMPTY_CAPTION, text_width, HYPOTHESIS_FONT_SIZE)
    ref_lines: List[str] = []
    for ref in references:
        if ref.strip():
            ref_lines.extend(wrap_text(ref, text_width, REFERENCE_FONT_SIZE, prefix=REFERENCE_PREFIX))
    height = 0.0
    if hyp_lines is not None:
        height += BOX_GAP + box_height(len(hyp_lines), HYPOTHESIS_FONT_SIZE)
    if ref_lines:
        height += BOX_GAP + box_height(len(ref_lines), REFERENCE_FONT_SIZE)
    return _Cell(hyp_lines, hypothesis is not None and not hypothesis.strip(), ref_lines, height)


def plot_captions(images: Sequence[str], output: str,
                  hypotheses: Optional[Sequence[str]] = None,
                  references: Optional[Sequence[Sequence[str]]] = None,
                  image_root: Optional[str] = None, columns: int = 4, title: Optional[str] = None,
                  dpi: int = DPI, labels: Optional[Sequence[str]] = None) -> Tuple[int, int]:
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
    :param labels: the text above each image (parallel to ``images``), or None: the image paths as given.
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
    check_condition(labels is None or len(labels) == len(images),
                    "%d labels for %d images" % (len(labels or []), len(images)))
    columns = min(columns, len(images))
    rows = int(math.ceil(len(images) / columns))
    paths = [os.path.join(image_root, path) if image_root else path for path in images]
    pixels = [load_image(path, max_pixels=int(2 * CONTENT_WIDTH * dpi)) for path in paths]
    # Lay out the text of every cell first: the figure's height depends on it.
    cells = [_layout_cell(hypotheses[i] if hypotheses is not None else None,
                          references[i] if references is not None else []) for i in range(len(images))]
    row_heights = [LABEL_HEIGHT + IMAGE_HEIGHT + ROW_GAP
                   + max(cell.text_height for cell in cells[r * columns:(r + 1) * columns])
                   for r in range(rows)]
    title_height = TITLE_HEIGHT if title else 0.0
    size = (columns * PANEL_WIDTH + 2 * FIGURE_MARGIN, sum(row_heights) + title_height + 2 * FIGURE_MARGIN)
    fig = plt.figure(figsize=size, dpi=dpi, facecolor="white")
    try:
        if title:
            fig.text(size[0] / 2, size[1] - FIGURE_MARGIN - title_height / 2, title, transform=fig.dpi_scale_trans,
                     ha="center", va="center", fontsize=TITLE_FONT_SIZE, fontweight="bold")
        for i, cell in enumerate(cells):
            row, column = divmod(i, columns)
            left = FIGURE_MARGIN + column * PANEL_WIDTH + PANEL_MARGIN
            top = size[1] - FIGURE_MARGIN - title_height - sum(row_heights[:row])
            _draw_cell(fig, size, left, top, labels[i] if labels is not None else images[i], pixels[i], cell)
        save_png(fig, output, dpi)
    finally:
        plt.close(fig)
    return int(round(size[0] * dpi)), int(round(size[1] * dpi))


def _draw_cell(fig: "plt.Figure", size: Tuple[float, float], left: float, top: float, label: str,
               image: np.ndarray, cell: _Cell) -> None:
    """Draw one cell whose content's top-left corner is at (``left``, ``top``) inches of a figure of ``size``
    inches: the file name ``label`` (shortened from the left if it does not fit), the image, the caption's and the
    references' boxes."""
    inches = fig.dpi_scale_trans  # (0, 0) is the bottom left corner of the figure
    fig.text(left + CONTENT_WIDTH / 2, top - LABEL_HEIGHT / 2, shorten_left(label, LABEL_FONT_SIZE, CONTENT_WIDTH),
             transform=inches, ha="center", va="center", fontsize=LABEL_FONT_SIZE, color="#666666")
    top -= LABEL_HEIGHT
    # The image, scaled to fit CONTENT_WIDTH x IMAGE_HEIGHT and centered in that box.
    scale = min(CONTENT_WIDTH / image.shape[1], IMAGE_HEIGHT / image.shape[0])
    width, height = image.shape[1] * scale, image.shape[0] * scale
    x0, y0 = left + (CONTENT_WIDTH - width) / 2, top - IMAGE_HEIGHT + (IMAGE_HEIGHT - height) / 2
    ax = fig.add_axes((x0 / size[0], y0 / size[1], width / size[0], height / size[1]))
    ax.imshow(image, aspect="auto", interpolation="antialiased")
    ax.set_axis_off()
    top -= IMAGE_HEIGHT
    if cell.hyp_lines is not None:
        style = dict(HYPOTHESIS_STYLE, text="#777777") if cell.hyp_empty else HYPOTHESIS_STYLE
        top = _draw_box(fig, left, top - BOX_GAP, CONTENT_WIDTH, cell.hyp_lines, HYPOTHESIS_FONT_SIZE, style,
                        italic=cell.hyp_empty)
    if cell.ref_lines:
        _draw_box(fig, left, top - BOX_GAP, CONTENT_WIDTH, cell.ref_lines, REFERENCE_FONT_SIZE, REFERENCE_STYLE)


def _draw_box(fig: "plt.Figure", left: float, top: float, width: float, lines: List[str], fontsize: float,
              style: Dict[str, str], italic: bool = False) -> float:
    """Draw ``lines`` on a filled box whose top-left corner is at (``left``, ``top``) inches.

    :return: the y coordinate (inches) of the box's bottom.
    """
    height = box_height(len(lines), fontsize)
    fig.add_artist(Rectangle((left, top - height), width, height, transform=fig.dpi_scale_trans,
                             facecolor=style["face"], edgecolor=style["edge"], linewidth=0.8))
    spacing = line_height(fontsize)
    for k, line in enumerate(lines):
        # One Text per line at a computed position: the spacing is exact whatever the font.
        y = top - BOX_PADDING - (k + 0.5) * spacing
        fig.text(left + BOX_PADDING, y, line, transform=fig.dpi_scale_trans, ha="left", va="center_baseline",
                 fontsize=fontsize, color=style["text"], fontstyle="italic" if italic else "normal")
    return top - height
