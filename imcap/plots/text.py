"""Text of the figures, measured in the font it is drawn in (matplotlib's default sans-serif): widths in inches, line
heights, wrapping to a width, shortening a label from the left. Sizes are in points (1/72 inch)."""
import textwrap
from typing import List

from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from ..tokenizer import join_cjk

LINE_SPACING = 1.3  # line height / font size
# What an average line of a caption looks like: the first guess of the characters a line holds.
_SAMPLE = "a man in a red shirt is riding a bike down the street"
_TEXT_TO_PATH = TextToPath()


def text_width(text: str, fontsize: float) -> float:
    """Width of ``text`` in the default (sans-serif) font at ``fontsize`` points, in inches."""
    if not text:
        return 0.0
    width, _, _ = _TEXT_TO_PATH.get_text_width_height_descent(text, FontProperties(size=fontsize),
                                                              ismath=False)
    return width / 72.0


def line_height(fontsize: float) -> float:
    """Height of one text line at ``fontsize`` points, in inches."""
    return fontsize * LINE_SPACING / 72.0


def wrap_text(text: str, width: float, fontsize: float, prefix: str = "") -> List[str]:
    """Wrap ``text`` (its words joined as written: Chinese without spaces) with :mod:`textwrap` into lines no wider
    than ``width`` inches at ``fontsize``.

    The first line starts with ``prefix``; the following lines are indented by about its width.
    The character count per line starts from the font's average letter width and shrinks until
    every line, measured in the actual font, fits.

    :return: the lines (at least one).
    """
    text = join_cjk(text.split())   # one space between words, none around Chinese characters
    char_width = text_width(_SAMPLE, fontsize) / len(_SAMPLE)
    indent = " " * max(0, int(round(text_width(prefix, fontsize) / max(text_width(" ", fontsize), 1e-6))))
    chars = max(8, int(width / char_width))
    while True:
        lines = textwrap.wrap(text, width=chars, initial_indent=prefix, subsequent_indent=indent,
                              break_long_words=True, break_on_hyphens=False) or [prefix.rstrip()]
        if chars <= 8 or all(text_width(line, fontsize) <= width for line in lines):
            return lines
        chars -= 1


def shorten_left(text: str, fontsize: float, width: float) -> str:
    """``text`` shortened from the left until it fits ``width`` inches at ``fontsize``: its first 4 characters
    replaced by ``...``, again and again (a file name keeps its end), down to 4 characters at the least."""
    while len(text) > 4 and text_width(text, fontsize) > width:
        text = "..." + text[4:]
    return text
