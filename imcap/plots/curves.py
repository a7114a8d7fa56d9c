"""Training curves: a model dir's ``metrics`` file (:mod:`imcap.metrics_file`) as perplexity, BLEU and CIDEr-D against
updates, and against wall-clock time, one panel each side by side."""
import math
import os
from typing import Dict, List, Optional, Tuple

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .. import constants as C
from ..metrics_file import read_metrics
from ..utils import check_condition
from .figure import DPI, save_png

CURVE_PANEL_SIZE = (5.0, 3.8)  # one panel, in inches
_TITLES = {"perplexity": "Perplexity", "bleu": "BLEU", "cider": "CIDEr-D"}  # the panels against updates


def plot_training_curves(metrics_path: str, output: str, title: Optional[str] = None, dpi: int = DPI) -> Tuple[int,
                                                                                                              int]:
    """Plot a metrics file (see :func:`imcap.metrics_file.read_metrics`) and write the figure to ``output`` (PNG).

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
    families = {"perplexity": [k for k in keys if k.startswith(C.METRIC_PERPLEXITY)],
                "bleu": [k for k in keys if k.startswith(C.METRIC_BLEU)],
                "cider": [k for k in keys if k.startswith(C.METRIC_CIDER)]}
    check_condition(bool(families["perplexity"] or families["bleu"]),
                    "%s: no perplexity or bleu values" % metrics_path)
    x_key = "updates" if all("updates" in entry for entry in entries) else "checkpoint"
    panels = [name for name in ("perplexity", "bleu", "cider") if families[name]]
    if any("time-elapsed" in entry for entry in entries):
        panels.append("time")
    fig_width, fig_height = CURVE_PANEL_SIZE[0] * len(panels), CURVE_PANEL_SIZE[1]
    fig, axes = plt.subplots(1, len(panels), figsize=(fig_width, fig_height), dpi=dpi, squeeze=False,
                             layout="constrained")
    try:
        for ax, panel in zip(axes[0], panels):
            if panel == "time":
                _draw_time_panel(ax, entries, families)
            else:
                _draw_panel(ax, entries, families, panel, x_key)
        if title is None:
            title = os.path.basename(os.path.dirname(os.path.abspath(metrics_path)))
        if title:
            fig.suptitle(title, fontsize=12)
        save_png(fig, output, dpi)
    finally:
        plt.close(fig)
    return int(round(fig_width * dpi)), int(round(fig_height * dpi))


def _draw_panel(ax: "plt.Axes", entries: List[Dict[str, float]], families: Dict[str, List[str]], panel: str,
                x_key: str) -> None:
    """The ``perplexity``, ``bleu`` or ``cider`` family against ``x_key`` (updates or checkpoint)."""
    perplexity = panel == "perplexity"
    _plot_family(ax, entries, families[panel], x_key, 1.0, maximize=not perplexity)
    ax.set_xlabel(x_key)
    ax.set_ylabel("perplexity" if perplexity else _TITLES[panel])
    ax.set_title(_TITLES[panel])
    if perplexity:
        _maybe_log_scale(ax, entries, families[panel])


def _draw_time_panel(ax: "plt.Axes", entries: List[Dict[str, float]], families: Dict[str, List[str]]) -> None:
    """Perplexity (BLEU when there is none) against wall-clock minutes."""
    ppl_keys = families["perplexity"]
    _plot_family(ax, entries, ppl_keys or families["bleu"], "time-elapsed", 1 / 60.0, maximize=not ppl_keys)
    ax.set_xlabel("wall-clock time (minutes)")
    ax.set_ylabel("perplexity" if ppl_keys else "BLEU")
    ax.set_title("%s against time" % ("Perplexity" if ppl_keys else "BLEU"))
    if ppl_keys:
        _maybe_log_scale(ax, entries, ppl_keys)


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


def _maybe_log_scale(ax: "plt.Axes", entries: List[Dict[str, float]], keys: List[str]) -> None:
    """Use a log y axis when the values of ``keys`` are positive and span more than a factor 10."""
    values = [e[k] for e in entries for k in keys if k in e and math.isfinite(e[k])]
    if values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
        # Label 1, 2 and 5 times each power of 10 as plain numbers: 10^2 alone says little.
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: "%g" % value))
        ax.yaxis.set_minor_formatter(NullFormatter())
