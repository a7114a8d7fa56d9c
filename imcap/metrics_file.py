"""The ``metrics`` file of a model dir: one line per checkpoint, ``CHECKPOINT<TAB>key=value<TAB>key=value...``
(after Sockeye's ``metrics`` file). The trainer writes it; :mod:`imcap.average`, :mod:`imcap.plots.curves` and the
benchmarks read it. Keys are e.g. ``updates``, ``epoch``, ``perplexity-train``, ``perplexity-val``, ``bleu-val``
(0-100), ``cider-val`` (0-10), ``time-elapsed`` (seconds), ``samples-per-second``; any key may be missing on a line.
"""
from typing import Dict, List, Union

from .utils import ImcapError, atomic_open, check_condition, read_lines

Value = Union[int, float, str]


def write_metrics(path: str, entries: List[Dict[str, Value]]) -> None:
    """Write ``entries`` (each with a ``checkpoint`` key) as a metrics file, atomically; floats get 6 decimals."""
    with atomic_open(path) as f:
        for entry in entries:
            f.write("%d\t%s\n" % (int(entry["checkpoint"]), "\t".join(
                "%s=%s" % (k, ("%.6f" % v if isinstance(v, float) else v))
                for k, v in entry.items() if k != "checkpoint")))


def _parse_value(text: str) -> Value:
    """``int`` for integers, ``float`` for other numbers, the text itself otherwise."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def read_metrics(path: str) -> List[Dict[str, Value]]:
    """Read a metrics file written by :func:`write_metrics` (blank lines are skipped).

    :return: one dict per checkpoint line, with the key ``checkpoint`` (int) and every ``key=value`` of the line
        (int, float, or the text when it is not a number).
    :raises ImcapError: if the file is missing or not UTF-8, or a line is malformed (the message names the file
        and the line).
    """
    entries: List[Dict[str, Value]] = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            entry: Dict[str, Value] = {"checkpoint": int(fields[0])}
        except ValueError:
            raise ImcapError("%s line %d: expected a checkpoint number first, got '%s'" % (path, number, fields[0]))
        for field in fields[1:]:
            check_condition("=" in field, "%s line %d: expected key=value, got '%s'" % (path, number, field))
            key, value = field.split("=", 1)
            entry[key.strip()] = _parse_value(value)
        entries.append(entry)
    return entries
