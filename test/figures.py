"""Reading back the PNGs of imcap.plots (python -m imcap.visualize draws them), for the tests: where a captions grid
draws each image and the text around it, and which series colours each panel of the training curves shows."""
import os
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image

from imcap.plots.captions import IMAGE_HEIGHT, LABEL_HEIGHT, PANEL_WIDTH, REFERENCE_FONT_SIZE, REFERENCE_STYLE
from imcap.plots.figure import FIGURE_MARGIN, PANEL_MARGIN, TITLE_HEIGHT
from imcap.plots.text import LINE_SPACING

# matplotlib's first two series colours: a panel's first and second curve (and their legend entries)
SERIES_COLORS = {"C0": "#1f77b4", "C1": "#ff7f0e"}


def read_png(path: str) -> np.ndarray:
    """The PNG at ``path`` as a ``(height, width, 3)`` float32 RGB array (it must be a PNG)."""
    with Image.open(path) as image:
        assert image.format == "PNG", "%s is a %s" % (path, image.format)
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def near(pixels: np.ndarray, color: str, tolerance: float) -> np.ndarray:
    """Which pixels are within ``tolerance`` (0-255, each channel) of the matplotlib colour ``color``."""
    rgb = np.array(to_rgb(color), dtype=np.float32) * 255
    return np.abs(pixels - rgb).max(axis=-1) <= tolerance


class GridImage(NamedTuple):
    """Where a captions grid draws one image, in pixels: ``top``, ``left``, ``height``, ``width``; ``error`` is the
    mean absolute difference (0-255) between the pixels there and the image scaled to that size, ``errors`` that of
    each image of the grid (by position) at the same place."""
    top: int
    left: int
    height: int
    width: int
    error: float
    errors: List[float]

    @property
    def bottom(self) -> int:
        return self.top + self.height


def _content_left(column: int) -> float:
    """Inches from the figure's left edge to the content of a captions grid's ``column``."""
    return FIGURE_MARGIN + column * PANEL_WIDTH + PANEL_MARGIN


def _scaled(path: str, width: int, height: int) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32)


def locate_grid_images(pixels: np.ndarray, paths: Sequence[str], columns: int, dpi: int) -> List[GridImage]:
    """Where :func:`imcap.plots.captions.plot_captions` drew each of ``paths`` (image ``i`` in cell ``i``: row
    ``i // columns``, column ``i % columns``): the image is scaled as the grid scales it (to fit the cell's content
    width and :data:`~imcap.plots.captions.IMAGE_HEIGHT`, centered) and searched for down its cell's column; the best
    place is kept, with how well each image of ``paths`` matches there."""
    content_width = PANEL_WIDTH - 2 * PANEL_MARGIN
    margin = 3   # pixels left out at each edge of the image: antialiasing blends them with the background
    found = []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            scale = min(content_width / image.width, IMAGE_HEIGHT / image.height)
            width, height = image.width * scale, image.height * scale
        w, h = int(round(width * dpi)), int(round(height * dpi))
        expected = _scaled(path, w, h)[margin:h - margin, margin:w - margin]
        x = int(round((_content_left(i % columns) + (content_width - width) / 2) * dpi))
        coarse = expected[::3, ::3]
        scores = []   # on every third pixel first, then every pixel near the best places
        for y in range(0, pixels.shape[0] - h + 1):
            for dx in (-1, 0, 1):
                crop = pixels[y + margin:y + h - margin:3, x + dx + margin:x + dx + w - margin:3]
                if crop.shape == coarse.shape:
                    scores.append((float(np.abs(crop - coarse).mean()), y, dx))
        assert scores, "image %d does not fit in the figure" % i
        best = None
        for _, y0, dx in sorted(scores)[:5]:
            for y in range(max(0, y0 - 2), min(pixels.shape[0] - h, y0 + 2) + 1):
                crop = pixels[y + margin:y + h - margin, x + dx + margin:x + dx + w - margin]
                error = float(np.abs(crop - expected).mean())
                if best is None or error < best[0]:
                    best = (error, y, x + dx)
        error, top, left = best
        crop = pixels[top + margin:top + h - margin, left + margin:left + w - margin]
        errors = [float(np.abs(crop - _scaled(other, w, h)[margin:h - margin, margin:w - margin]).mean())
                  for other in paths]
        found.append(GridImage(top, left, h, w, error, errors))
    return found


def assert_images_in_cells(found: List[GridImage], max_error: float = 15.0) -> None:
    """Each image is drawn in its cell (it matches there, ``max_error`` at most) and is told apart from every other
    image of the grid (each of them differs there at least three times as much)."""
    for i, image in enumerate(found):
        assert image.error <= max_error, "image %d: mean difference %.1f where it matches best" % (i, image.error)
        others = [e for j, e in enumerate(image.errors) if j != i]
        assert not others or min(others) >= 3 * max(image.error, 1.0), (i, image.error, image.errors)


class CellText(NamedTuple):
    """What a captions grid draws around one image, in pixels: ``label`` (grey text of the file name just above the
    image), ``hypothesis`` (text darker than the grey edge of its box, between the image and the references' box),
    ``references_height`` (rows of the light-green box of the references) and ``references_text`` (its dark-green
    text)."""
    label: int
    hypothesis: int
    references_height: int
    references_text: int


def read_cell_text(pixels: np.ndarray, image: GridImage, column: int, dpi: int, bottom: int) -> CellText:
    """The text of the cell of ``image`` (in ``column``), looked for between the image and pixel row ``bottom``
    (the next row's file names, or the figure's end)."""
    x0 = int(round(_content_left(column) * dpi))
    x1 = x0 + int((PANEL_WIDTH - 2 * PANEL_MARGIN) * dpi)
    label_top = image.top - int(round(LABEL_HEIGHT * dpi))
    label = pixels[max(0, label_top):image.top - 1, x0:x1]
    below = pixels[image.bottom + 1:bottom, x0:x1]
    green = near(below, REFERENCE_STYLE["face"], 8)
    green_rows = np.where(green.mean(axis=1) > 0.5)[0]
    if len(green_rows):
        first, last = int(green_rows[0]), int(green_rows[-1])
        box = below[first:last + 1]
        # antialiased dark-green text: darker than the face, green above red
        references_text = int(((box.max(axis=-1) < 150) & (box[..., 1] > box[..., 0])).sum())
        references_height = last - first + 1
    else:
        first, references_text, references_height = below.shape[0], 0, 0
    return CellText(label=int((label.max(axis=-1) < 200).sum()),
                    hypothesis=int((below[:first].max(axis=-1) < 128).sum()),
                    references_height=references_height, references_text=references_text)


def reference_lines_height(lines: int, dpi: int) -> float:
    """Pixels of ``lines`` lines of reference text (the box is this plus its padding)."""
    return lines * REFERENCE_FONT_SIZE * LINE_SPACING / 72.0 * dpi


def check_captions_grid(path: str, images: Sequence[str], image_root: Optional[str], columns: int, dpi: int,
                        title: bool, references: int, hypotheses: bool = True) -> List[GridImage]:
    """Check the captions grid at ``path`` draws ``images`` in order, ``columns`` a row, each in its cell with its
    file name above it, its hypothesis (if ``hypotheses``) and a box of at least ``references`` lines of references
    below it, rows one under the other, the first right under the title band (if ``title``) and cells past the last
    image blank; return where the images are."""
    pixels = read_png(path)
    columns = min(columns, len(images))   # as plot_captions does
    paths = [os.path.join(image_root, image) if image_root else image for image in images]
    found = locate_grid_images(pixels, paths, columns, dpi)
    assert_images_in_cells(found)
    rows = [found[r:r + columns] for r in range(0, len(found), columns)]
    first_top = (FIGURE_MARGIN + (TITLE_HEIGHT if title else 0.0) + LABEL_HEIGHT) * dpi
    for image in rows[0]:   # centered in the band of IMAGE_HEIGHT under the file name
        assert abs(image.top - (first_top + (IMAGE_HEIGHT * dpi - image.height) / 2)) <= 1.5, image
    label_height = int(round(LABEL_HEIGHT * dpi))
    for r, row in enumerate(rows):
        assert max(i.top for i in row) - min(i.top for i in row) <= 1, "row %d is not aligned: %s" % (r, row)
        bottom = min(i.top for i in rows[r + 1]) - label_height if r + 1 < len(rows) else pixels.shape[0]
        assert bottom > max(i.bottom for i in row)
        for c, image in enumerate(row):
            text = read_cell_text(pixels, image, c, dpi, bottom)
            assert text.label > 10, (r, c, text)   # the file name
            if hypotheses:
                assert text.hypothesis >= 0.1 * dpi, (r, c, text)   # a one-letter caption ("a"): 25 at dpi 100
            assert text.references_height >= reference_lines_height(references, dpi), (r, c, text)
            assert text.references_text > 30 * references, (r, c, text)
    # cells past the last image draw nothing
    last_row_top = min(i.top for i in rows[-1]) - label_height
    for c in range(len(rows[-1]), columns if len(rows) > 1 else 0):
        x0 = int(round((FIGURE_MARGIN + c * PANEL_WIDTH) * dpi)) + 1
        x1 = int(round((FIGURE_MARGIN + (c + 1) * PANEL_WIDTH) * dpi)) - 1
        assert (pixels[last_row_top:, x0:x1] == 255).all(), "cell %d of the last row is not blank" % c
    if title:   # dark title text in its band
        band = pixels[int(FIGURE_MARGIN * dpi):int((FIGURE_MARGIN + TITLE_HEIGHT) * dpi)]
        assert (band.max(axis=-1) < 90).sum() > 20
    return found


def panel_curves(pixels: np.ndarray, panels: int, tolerance: float = 40) -> List[Dict[str, float]]:
    """For each of ``panels`` side-by-side panels of equal width (the training curves) and each colour of
    :data:`SERIES_COLORS`, the fraction of the panel's pixel columns that have that colour."""
    width = pixels.shape[1]
    return [{name: float(near(pixels[:, k * width // panels:(k + 1) * width // panels], color, tolerance)
                         .any(axis=0).mean()) for name, color in SERIES_COLORS.items()} for k in range(panels)]


def drawn_curves(pixels: np.ndarray, panels: int, min_columns: float = 0.2) -> List[List[str]]:
    """For each panel of the training curves, the colours of :data:`SERIES_COLORS` drawn as a curve across it: in
    at least ``min_columns`` of its columns. (A curve covers 35-80% of them, less where a later curve hides it; its
    legend entry alone about 5%.)"""
    return [sorted(name for name, share in panel.items() if share >= min_columns)
            for panel in panel_curves(pixels, panels)]
