"""The figures of imcap, as a library: each function draws one kind of figure and writes a PNG or returns its pixels;
``python -m imcap.visualize`` is the command line over them.

- :mod:`imcap.plots.figure`: what every figure shares: page layout (pixels per inch, margins, title band), reading an
  image, writing a PNG atomically, rendering a figure to pixels in memory.
- :mod:`imcap.plots.text`: text measured in the font it is drawn in: widths, line heights, wrapping to a width,
  shortening a label from the left.
- :mod:`imcap.plots.captions`: :func:`~imcap.plots.captions.plot_captions`, a grid of images with their predicted
  and reference captions.
- :mod:`imcap.plots.curves`: :func:`~imcap.plots.curves.plot_training_curves`, a model dir's ``metrics`` file as
  perplexity, BLEU and CIDEr-D curves.
- :mod:`imcap.plots.attention`: the attention of a caption's words over the image's regions, one panel per word
  (:func:`~imcap.plots.attention.plot_attention` to a file, :func:`~imcap.plots.attention.render_attention` in memory),
  and the checks of a captioner JSON record it plots.

The grid the regions lie on is :func:`imcap.features.region_grid`'s (no matplotlib needed to ask it). Importing any
module of this package selects matplotlib's Agg backend first: figures render to files and arrays, never to a
display. Text falls back, glyph by glyph, on an installed Chinese font (:data:`FALLBACK_FONTS`; Debian's
fonts-wqy-microhei) for captions in Chinese. Nothing here imports MXNet, the training code or a command line.
"""
import matplotlib

matplotlib.use("Agg")  # before any module of the package imports pyplot

#: Fonts matplotlib falls back on, in order, for the glyphs its default font lacks (matplotlib 3.6+).
FALLBACK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback")


def _use_fallback_fonts() -> None:
    """Make the default font family the default sans-serif font followed by the installed :data:`FALLBACK_FONTS`."""
    from matplotlib import font_manager
    installed = {font.name for font in font_manager.fontManager.ttflist}
    fallback = [name for name in FALLBACK_FONTS if name in installed]
    if fallback:
        matplotlib.rcParams["font.family"] = [matplotlib.rcParams["font.sans-serif"][0]] + fallback


_use_fallback_fonts()
