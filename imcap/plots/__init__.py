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
display. Nothing here imports MXNet, the training code or a command line.
"""
import matplotlib

matplotlib.use("Agg")  # before any module of the package imports pyplot
