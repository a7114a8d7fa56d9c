"""What every benchmark script shares: a description of the machine and the row appended to docs/benchmarks.md,
which is refused when a figure beats its own ceiling."""
import datetime
import math
import os
import platform
from typing import Mapping, Optional, Sequence

# How far a figure may exceed its ceiling (the bare forward, the bare model step: the same work without the rest)
# before the row is refused: the two are timed in different runs, a few per cent apart from timing noise alone.
CEILING_TOLERANCE = 1.05


class CeilingExceeded(SystemExit):
    """A figure above its own ceiling by more than :data:`CEILING_TOLERANCE`: the figure (or the ceiling) measures
    something else than it says, and no row is written. A ``SystemExit``, so that the benchmark stops with the
    message (exit status 1) as its other checks do."""


def check_ceilings(ratios: Mapping[str, float], tolerance: float = CEILING_TOLERANCE) -> None:
    """Check figures reported as a ratio to their own ceiling (``{figure name: figure / ceiling}``): each must be at
    most ``tolerance``.

    :raises CeilingExceeded: naming every ratio above ``tolerance`` (or not a number).
    """
    wrong = ["%s = %.2f" % (name, ratio) for name, ratio in ratios.items()
             if not (math.isfinite(ratio) and ratio <= tolerance)]
    if wrong:
        raise CeilingExceeded("a figure exceeds its own ceiling, so it cannot be true (more than %.2f x the ceiling "
                              "is more than timing noise): %s; no row written" % (tolerance, "; ".join(wrong)))


def machine() -> str:
    """CPU model, core count and Python version."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d cores, Python %s" % (cpu, os.cpu_count() or 0, platform.python_version())


def append_row(path: str, section: str, columns: Sequence[str], command: str, values: Sequence[str],
               ceiling_ratios: Optional[Mapping[str, float]] = None) -> None:
    """Append ``| date | command | machine | values... |`` to the table of ``section`` in ``path`` (created with
    its header the first time).

    :param ceiling_ratios: the row's figures that have a ceiling of their own, as ``{name: figure / ceiling}``.
    :raises CeilingExceeded: if one of them is above :data:`CEILING_TOLERANCE` (see :func:`check_ceilings`);
        ``path`` is not touched.
    """
    check_ceilings(ceiling_ratios or {})
    marker = "<!-- %s -->\n" % section
    header = "| date | command | machine | %s |\n|%s\n" % (" | ".join(columns), "---|" * (len(columns) + 3))
    row = "| %s | `%s` | %s | %s |\n" % (datetime.date.today().isoformat(), command, machine(), " | ".join(values))
    text = open(path, encoding="utf-8").read() if os.path.isfile(path) else "# Benchmarks\n"
    if marker not in text:
        text = text.rstrip("\n") + "\n\n## %s\n\n%s%s" % (section, marker, header)
    start = text.index(marker) + len(marker) + len(header)
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end + 1
    text = text[:end] + row + text[end:]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def timed_captions(captioner, inputs, name: str):
    """The results of ``captioner.caption(inputs)`` (an :class:`imcap.inference.Captioner`) and its images/s; a
    failed input stops the benchmark with its line and error (``name`` says which benchmark)."""
    import sys
    import time
    start = time.time()
    results = captioner.caption(inputs)
    speed = len(inputs) / (time.time() - start)
    failed = [r for r in results if r.error is not None]
    if failed:
        sys.exit("%s: line %d: %s" % (name, failed[0].line, failed[0].error))
    return results, speed

