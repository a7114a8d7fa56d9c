"""What every figure of :mod:`imcap.plots` shares: the page layout (pixels per inch, margins, the title band, the gap
below a row of panels), reading an image to draw, writing a figure to a PNG atomically, rendering it to pixels."""
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from ..utils import ImcapError, atomic_path, check_condition

DPI = 100  # pixels per inch of a PNG unless asked otherwise; layouts are in inches (and font sizes in points)
PANEL_MARGIN = 0.1  # left and right of the content of a panel
ROW_GAP = 0.2  # below a row of panels
FIGURE_MARGIN = 0.1  # around the whole figure
TITLE_HEIGHT = 0.45  # the band of the figure's title, when it has one
TITLE_FONT_SIZE = 14.0
EMPTY_CAPTION = "(empty caption)"  # drawn, in grey italics, for a caption without words


def load_image(path: str, max_pixels: int) -> np.ndarray:
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


def save_png(fig: "plt.Figure", output: str, dpi: int) -> None:
    """Write ``fig`` to ``output`` as PNG, atomically (the folder is made if missing), and close it."""
    try:
        with atomic_path(output) as tmp:
            # The temporary name does not end in .png: name the format explicitly.
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)


def render_pixels(fig: "plt.Figure") -> np.ndarray:
    """``fig`` drawn in memory, as ``(height, width, 3)`` uint8 RGB pixels; the figure is closed."""
    try:
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.array(canvas.buffer_rgba())[..., :3]
    finally:
        plt.close(fig)
