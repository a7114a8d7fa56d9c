"""The settings of one search, with their defaults and checks in one place (:class:`SearchOptions`): beam search (the
default), diverse beam search (``diverse_beam_groups``) or sampling (``sample``).

The captioner's and the server's options (:func:`imcap.arguments.add_search_args`), :class:`imcap.inference.Captioner`,
:class:`imcap.beam_search.BeamSearch`, the server's request queue (:mod:`imcap.serving.batching`), its JSON API and its page
all take one ``SearchOptions``; nothing else states a default or a range. Imports no MXNet, so that another runtime's
search can use it.
"""
import dataclasses
import math
import numbers
import re
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
    :param sample: draw each image's ``nbest_size`` captions at random, word by word, from the models' distribution
        (independent samples, best first by normalized score; they may repeat), instead of searching the beam;
        ``beam_size`` is then unused and ``nbest_size`` not bounded by it. Refuses ``diverse_beam_groups`` above 1 (and
        the search refuses required phrases; avoided ones are kept).
    :param sampling_temperature: with ``sample``, the distribution's log-probabilities are divided by it before the
        cut-offs: below 1 sharper, above 1 flatter; a finite number above 0.
    :param sampling_top_k: with ``sample``, draw among each step's ``sampling_top_k`` likeliest words only; 0: off.
    :param sampling_top_p: with ``sample``, draw among the fewest likeliest words whose probability (after the
        temperature and top-k) reaches it (nucleus sampling, Holtzman et al. 2020); above 0 and at most 1 (1: off).
    :param seed: with ``sample``, the seed of the random draws: each image's draws depend on the seed and the image's
        place in the input (its line), never on the batch it is searched in, so the same seed gives the same captions
        at any batch size; at least 0.
    :param diverse_beam_groups: diverse beam search (Vijayakumar et al. 2018): the beam is split into this many groups
        of ``beam_size / diverse_beam_groups`` hypotheses, each searched as a beam, a group penalized for the words the
        groups before it chose at the same step; the n-best takes each group's best first. 1: the plain beam search;
        must divide ``beam_size``.
    :param diverse_beam_strength: the penalty per earlier group's choice of the same word at the same step
        (Hamming diversity; log-probability units, at least 0; 0: independent groups).
    :param guide_soft_weight: with a Captioner guided by the classifier, soft guidance (:mod:`imcap.guide`): each
        word of the class words mapping gains this weight times its classes' summed probability on its
        log-probability, at each step until written; a finite number of at least 0 (0: off).
    :param guide_against: with a Captioner guided by the classifier, guidance against (:mod:`imcap.guide`): an
        animal word is avoided when its classes' summed probability is below this share of the image's top class's
        probability; in [0, 1] (0: off).
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
    sample: bool = False
    sampling_temperature: float = 1.0
    sampling_top_k: int = 0
    sampling_top_p: float = 1.0
    seed: int = 0
    diverse_beam_groups: int = 1
    diverse_beam_strength: float = 0.5
    guide_soft_weight: float = 0.0
    guide_against: float = 0.0

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
        if self.sample:
            _check_range("nbest_size", self.nbest_size, self.nbest_size >= 1, "at least 1")
        else:
            _check_range("nbest_size", self.nbest_size, 1 <= self.nbest_size <= self.beam_size,
                         "between 1 and beam_size (%d)" % self.beam_size)
        _check_range("max_output_length", self.max_output_length, self.max_output_length >= 1, "at least 1")
        for name in ("length_penalty_alpha", "length_penalty_beta"):
            value = getattr(self, name)
            _check_range(name, value, math.isfinite(value) and value >= 0.0, "a finite number of at least 0")
        _check_range("no_repeat_ngram_size", self.no_repeat_ngram_size,
                     self.no_repeat_ngram_size == 0 or self.no_repeat_ngram_size >= 2, "0 (off) or at least 2")
        self._check_sampling_and_groups()

    def _check_sampling_and_groups(self) -> None:
        """The ranges of the sampling and diverse beam search settings, and their one refused combination."""
        temperature, top_p = self.sampling_temperature, self.sampling_top_p
        _check_range("sampling_temperature", temperature, math.isfinite(temperature) and temperature > 0.0,
                     "a finite number above 0")
        _check_range("sampling_top_k", self.sampling_top_k, self.sampling_top_k >= 0, "0 (off) or at least 1")
        _check_range("sampling_top_p", top_p, 0.0 < top_p <= 1.0, "above 0 and at most 1 (1: off)")
        _check_range("seed", self.seed, 0 <= self.seed < 2 ** 64, "between 0 and 2**64 - 1")
        groups, strength = self.diverse_beam_groups, self.diverse_beam_strength
        _check_range("diverse_beam_groups", groups, groups >= 1 and self.beam_size % groups == 0,
                     "at least 1 and divide beam_size (%d)" % self.beam_size)
        _check_range("diverse_beam_groups", groups, groups == 1 or not self.sample,
                     "1 with sample (sampling draws independent captions, it keeps no beam)")
        _check_range("diverse_beam_strength", strength, math.isfinite(strength) and strength >= 0.0,
                     "a finite number of at least 0")
        weight, against = self.guide_soft_weight, self.guide_against
        _check_range("guide_soft_weight", weight, math.isfinite(weight) and weight >= 0.0,
                     "a finite number of at least 0 (0: off)")
        _check_range("guide_against", against, 0.0 <= against <= 1.0, "in [0, 1] (0: off)")

    @property
    def guided_softly(self) -> bool:
        """Whether the options ask for soft guidance or guidance against (which need a guided Captioner)."""
        return self.guide_soft_weight > 0.0 or self.guide_against > 0.0

    @property
    def selection(self) -> str:
        """How the search chooses its hypotheses at each step: ``"beam"`` (the plain beam search, with or without
        lexical constraints), ``"diverse"`` (``diverse_beam_groups`` above 1) or ``"sample"``."""
        if self.sample:
            return "sample"
        return "diverse" if self.diverse_beam_groups > 1 else "beam"

    @property
    def hypotheses_per_image(self) -> int:
        """The rows the search keeps per image: ``nbest_size`` samples with ``sample``, else ``beam_size``."""
        return self.nbest_size if self.sample else self.beam_size

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The option names, in order."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, options: Optional["SearchOptions"] = None, **settings: Any) -> "SearchOptions":
        """``options`` (default: the defaults) with the keyword ``settings`` of the library's older signatures
        (``BeamSearch(..., beam_size=3)``), where ``nbest_size`` above ``beam_size`` is lowered to it, as the
        captioner's ``--nbest-size`` always was (not with ``sample``, where ``nbest_size`` counts the samples).

        :raises TypeError: for an unknown name, or a value of the wrong type.
        :raises ValueError: for a value out of its range.
        """
        options = options or cls()
        beam = settings.get("beam_size", options.beam_size)
        sample = settings.get("sample", options.sample)
        if isinstance(beam, numbers.Integral) and settings.get("nbest_size", options.nbest_size) > beam \
                and sample is not True:
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
    """The options of the captioner's or the server's parsed command line (:func:`imcap.arguments.add_search_args`,
    and the guide's :func:`imcap.arguments.add_guide_args`; an option the parser lacks keeps its default),
    ``--nbest-size`` lowered to ``--beam-size`` as :meth:`SearchOptions.of` does.

    :raises ImcapError: naming the option (``--no-repeat-ngram-size``) whose value is out of range, the other
        options its message names as options too (``--diverse-beam-groups must be at least 1 and divide --beam-size``).
    """
    try:
        return SearchOptions.of(**{name: getattr(args, name) for name in SearchOptions.names() if hasattr(args, name)})
    except (TypeError, ValueError) as e:
        names = "|".join(sorted(SearchOptions.names(), key=len, reverse=True))
        message = re.sub(r"\b(%s)\b" % names, lambda m: "--" + m.group(1).replace("_", "-"), str(e))
        raise ImcapError(message) from e
