"""The settings of one beam search, with their defaults and checks in one place (:class:`SearchOptions`).

The captioner's and the server's options (:func:`imcap.arguments.add_search_args`), :class:`imcap.inference.Captioner`,
:class:`imcap.beam_search.BeamSearch`, the server's request queue (:mod:`imcap.serving.batching`), its JSON API and its page
all take one ``SearchOptions``; nothing else states a default or a range. Imports no MXNet, so that another runtime's
search can use it.
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .utils import ImcapError


@dataclass(frozen=True)
class SearchOptions:
    """How a caption is searched (the captioner's options of the same names, ``--beam-size`` is ``beam_size``).

    Requests with equal options share one batched search; the object is frozen and hashable.

    :param beam_size: hypotheses kept per image, at least 1.
    :param nbest_size: hypotheses returned per image, best first, from 1 to ``beam_size``.
    :param max_output_length: most words per caption (``</s>`` included), at least 1.
    :param length_penalty_alpha: GNMT length penalty alpha, ``lp(n) = ((beta + n) / (beta + 1)) ** alpha`` (Wu et al.
        2016), at least 0 (0: rank by the summed log-probability).
    :param length_penalty_beta: GNMT length penalty beta, at least 0.
    :param no_repeat_ngram_size: no caption repeats an n-gram of this many words (fairseq's option): 0 (off) or at
        least 2.
    :param allow_unk: let captions contain ``<unk>``.
    :raises TypeError: naming the field whose value has the wrong type (a bool for a number, a string, ...).
    :raises ValueError: naming the field whose value is out of its range.
    """
    beam_size: int = 5
    nbest_size: int = 1
    max_output_length: int = 30
    length_penalty_alpha: float = 1.0
    length_penalty_beta: float = 0.0
    no_repeat_ngram_size: int = 0
    allow_unk: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in (int, "int"):
                _check_type(field.name, value, (numbers.Integral,), "an integer")
                object.__setattr__(self, field.name, int(value))
            elif field.type in (float, "float"):
                _check_type(field.name, value, (numbers.Real,), "a number")
                object.__setattr__(self, field.name, float(value))
            elif not isinstance(value, bool):
                raise TypeError("%s must be true or false, got %r" % (field.name, value))
        _check_range("beam_size", self.beam_size, self.beam_size >= 1, "at least 1")
        _check_range("nbest_size", self.nbest_size, 1 <= self.nbest_size <= self.beam_size,
                     "between 1 and beam_size (%d)" % self.beam_size)
        _check_range("max_output_length", self.max_output_length, self.max_output_length >= 1, "at least 1")
        for name in ("length_penalty_alpha", "length_penalty_beta"):
            value = getattr(self, name)
            _check_range(name, value, math.isfinite(value) and value >= 0.0, "a finite number of at least 0")
        _check_range("no_repeat_ngram_size", self.no_repeat_ngram_size,
                     self.no_repeat_ngram_size == 0 or self.no_repeat_ngram_size >= 2, "0 (off) or at least 2")

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The option names, in order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, options: Optional["SearchOptions"] = None, **settings: Any) -> "SearchOptions":
        """``options`` (default: the defaults) with the keyword ``settings`` of the library's older signatures
        (``BeamSearch(..., beam_size=3)``), where ``nbest_size`` above ``beam_size`` is lowered to it, as the
        captioner's ``--nbest-size`` always was.

        :raises TypeError: for an unknown name, or a value of the wrong type.
        :raises ValueError: for a value out of its range.
        """
        options = options or cls()
        beam = settings.get("beam_size", options.beam_size)
        if isinstance(beam, numbers.Integral) and settings.get("nbest_size", options.nbest_size) > beam:
            settings["nbest_size"] = beam
        return options.replace(**settings) if settings else options

    def replace(self, **changes: Any) -> "SearchOptions":
        """These options with ``changes``, checked as the constructor checks them.

        :raises TypeError: for an unknown name, or a value of the wrong type.
        :raises ValueError: for a value out of its range.
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError("unknown search options %s (known: %s)" % (", ".join(unknown), ", ".join(self.names())))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """The options by name (JSON-ready)."""
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any, types: Tuple[type, ...], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError("%s must be %s, got %r" % (name, what, value))


def _check_range(name: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError("%s must be %s, got %r" % (name, what, value))


def search_options_from_args(args: Any) -> SearchOptions:
    """The options of the captioner's or the server's parsed command line (:func:`imcap.arguments.add_search_args`),
    ``--nbest-size`` lowered to ``--beam-size`` as :meth:`SearchOptions.of` does.

    :raises ImcapError: naming the option (``--no-repeat-ngram-size``) whose value is out of range.
    """
    try:
        return SearchOptions.of(**{name: getattr(args, name) for name in SearchOptions.names()})
    except (TypeError, ValueError) as e:
        name = str(e).split(" ", 1)[0]
        raise ImcapError("--%s%s" % (name.replace("_", "-"), str(e)[len(name):])) from e
