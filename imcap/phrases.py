"""The phrases of lexical constraints: what an input's ``constraints`` and ``avoid`` may hold, their words and word
ids, the constraints that fit in ``max_output_length``, and the report of which phrases a caption meets.

An input's ``constraints`` is a list whose items are each a phrase (a string) or a list of alternative phrases (a
disjunctive constraint: the caption contains one of them); its ``avoid`` a list of phrases. :func:`check_phrases`
refuses any other value (``TypeError`` naming the field, ``constraints[1]``; ``ValueError`` for an empty list of
alternatives). A well-typed phrase that cannot be used (no words, a word outside the vocabulary, more constraint
words than ``max_output_length`` leaves room for, avoided and required at once) costs its input nothing but that
phrase: :func:`prepare_phrases` gives the input's :class:`InputPhrases`, whose :meth:`InputPhrases.report` says which
phrases a caption meets, with a warning for each such phrase.

A tool that reads phrases from its user (the captioner CLI's JSON lines) reads them with :func:`lenient_phrases`:
what :func:`check_phrases` refuses becomes an :class:`IgnoredPhrase`, reported unmet with the refusal as its
warning. Phrases are split into words by the captions' tokenizer (:func:`imcap.tokenizer.tokenize`) and searched
for by :mod:`imcap.constraints`.
"""
import collections
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .constraints import as_alternatives, conflicting, count_occurrences
from .tokenizer import tokenize

Tokenize = Callable[[str], List[str]]   # a tokenizer's tokenize: text -> tokens
from .utils import check_condition

if TYPE_CHECKING:
    from .guide import GuideWord, Guidance, HeldBackWord, PushedWord

logger = logging.getLogger(__name__)

CONSTRAINT = "constraint"
AVOID = "avoid"
KINDS = (CONSTRAINT, AVOID)


@dataclass(frozen=True)
class IgnoredPhrase:
    """A value given as a phrase that is not one (e.g. a number in a JSON line of the captioner CLI), kept in its
    place: its input's result reports it unmet, with ``warning``, and the search ignores it.

    :param shown: how it is reported (``repr`` of the value; a string as it is).
    :param warning: the result's one-line warning about it.
    :param tokens: the words reported for it.
    """
    shown: str
    warning: str
    tokens: Tuple[str, ...] = ()


Phrase = Union[str, IgnoredPhrase]
Constraint = Union[Phrase, Sequence[Phrase]]   # a phrase, or a list of alternative phrases (a disjunctive constraint)


def check_phrases(name: str, value: Any, alternatives: bool = False) -> List[Any]:
    """``value``, an input's ``constraints`` (``alternatives``: an item may be a list of alternative phrases) or
    ``avoid``, as a list.

    :param name: the field, as the errors name it.
    :raises TypeError: unless ``value`` is a list (or tuple) of phrases (strings or :class:`IgnoredPhrase`), with
        ``alternatives`` also non-empty lists of phrases; naming the field (``constraints[1][0]``).
    :raises ValueError: for an empty list of alternatives.
    """
    if not isinstance(value, (list, tuple)):
        raise TypeError("%s is not a list of phrases but a %s (%s)" % (name, type(value).__name__, _short(value)))
    for index, item in enumerate(value):
        check_phrase("%s[%d]" % (name, index), item, alternatives)
    return value if isinstance(value, list) else list(value)


def check_phrase(name: str, item: Any, alternatives: bool = False) -> None:
    """Check one item of :func:`check_phrases` (``name``: where it is, ``constraints[1]``).

    :raises TypeError: unless ``item`` is a phrase (or with ``alternatives``, a list of phrases).
    :raises ValueError: for an empty list of alternatives.
    """
    if isinstance(item, (str, IgnoredPhrase)):
        return
    if alternatives and isinstance(item, list):
        if not item:
            raise ValueError("%s is an empty list of alternative phrases (a disjunctive constraint needs one at least)"
                             % name)
        for index, alternative in enumerate(item):
            check_phrase("%s[%d]" % (name, index), alternative)
        return
    raise TypeError("%s must be a phrase (a string)%s, got %s"
                    % (name, " or a list of alternative phrases" if alternatives else "", _short(item)))


def lenient_phrases(name: str, value: Any, alternatives: bool = False) -> List[Any]:
    """``value`` as :func:`check_phrases` takes it (None: no phrases), each part it refuses replaced by an
    :class:`IgnoredPhrase` warning with its message (``... got 3: ignored``): how a tool reads its user's phrases
    (the captioner CLI's JSON lines), so that a wrongly typed one costs its line only itself."""
    if value is None:
        return []
    try:
        return check_phrases(name, value, alternatives)
    except (TypeError, ValueError) as e:
        if not isinstance(value, (list, tuple)):
            return [_ignored(value, e, tokenize(value) if isinstance(value, str) else [])]
    return [_lenient_item("%s[%d]" % (name, index), item, alternatives) for index, item in enumerate(value)]


def _lenient_item(name: str, item: Any, alternatives: bool) -> Any:
    try:
        check_phrase(name, item, alternatives)
        return item
    except (TypeError, ValueError) as e:
        if not (alternatives and isinstance(item, list) and item):
            return _ignored(item, e)
    return [_lenient_item("%s[%d]" % (name, index), alternative, False) for index, alternative in enumerate(item)]


def _ignored(value: Any, error: Exception, tokens: Sequence[str] = ()) -> IgnoredPhrase:
    return IgnoredPhrase(value if isinstance(value, str) else repr(value), "%s: ignored" % error, tuple(tokens))


def split_alternatives(phrase: str) -> Union[str, List[str], IgnoredPhrase]:
    """A constraint typed as text (a query parameter of the JSON API, the web page): ``"cat | kitten"`` is a
    disjunctive constraint (its alternatives, empty ones dropped), a phrase without ``|`` stays a phrase, and one of
    ``|`` and spaces only is an :class:`IgnoredPhrase`."""
    if "|" not in phrase:
        return phrase
    alternatives = [a.strip() for a in phrase.split("|") if a.strip()]
    return alternatives or IgnoredPhrase(phrase, "constraint %s has no alternative phrase: ignored" % _short(phrase))


def phrase_text(item: Any) -> str:
    """How an item of ``constraints`` or ``avoid`` is shown: a phrase as it is, a list of alternatives joined by
    ``" | "``, an :class:`IgnoredPhrase` as its ``shown``."""
    if isinstance(item, IgnoredPhrase):
        return item.shown
    if isinstance(item, list):
        return " | ".join(phrase_text(a) for a in item)
    return str(item)


class Encoded(NamedTuple):
    """A phrase's words (tokenized as captions are) and their ids; ``ids`` is empty when a word is outside the
    vocabulary (``unknown``)."""
    tokens: List[str]
    ids: List[int]
    unknown: List[str]


def encode_phrase(phrase: str, token_to_idx: Mapping[str, int], tokenize: Tokenize = tokenize) -> Encoded:
    """``phrase`` tokenized (by the model's tokenizer; default :func:`imcap.tokenizer.tokenize`) and its words looked
    up in ``token_to_idx``."""
    tokens = tokenize(phrase)
    unknown = [t for t in tokens if t not in token_to_idx]
    return Encoded(tokens, [] if unknown else [token_to_idx[t] for t in tokens], unknown)


class ListedPhrase(NamedTuple):
    """A phrase of a Captioner's avoid list: as given, its words, their ids (empty: a word is outside the
    vocabulary, no caption contains it)."""
    phrase: str
    tokens: List[str]
    ids: List[int]


def read_avoid_list(phrases: Sequence[str], token_to_idx: Mapping[str, int],
                    tokenize: Tokenize = tokenize) -> List[ListedPhrase]:
    """The usable phrases of an avoid list (blank ones skipped; one without words skipped with a logged warning).

    :raises ImcapError: if ``phrases`` is not a list of strings.
    """
    check_condition(isinstance(phrases, (list, tuple)) and all(isinstance(p, str) for p in phrases),
                    "avoid_list must be a list of phrases (strings)")
    kept, unknown = [], 0
    for number, phrase in enumerate(phrases, 1):
        if not phrase.strip():
            continue
        encoded = encode_phrase(phrase, token_to_idx, tokenize)
        if not encoded.tokens:
            logger.warning("avoid list phrase %d (%r) has no words: skipped", number, phrase)
            continue
        unknown += bool(encoded.unknown)
        kept.append(ListedPhrase(phrase, encoded.tokens, encoded.ids))
    if unknown:
        logger.info("%d phrases of the avoid list have words outside the vocabulary: no caption can contain them",
                    unknown)
    return kept


@dataclass
class PhraseResult:
    """Whether a caption meets one phrase of its input's ``constraints`` or ``avoid`` (or of the avoid list, when the
    phrase conflicts with a constraint of the input).

    :param phrase: the phrase as given (an :class:`IgnoredPhrase`: its ``shown``).
    :param tokens: its words, tokenized as captions are: what the caption's tokens are matched against.
    :param met: for a required phrase, the caption contains its words consecutively (as often as the phrase is
        given); for an avoided one, it does not. False for an ignored phrase. For a disjunctive constraint, the
        caption contains one of its alternatives (as often as the same alternatives are given).
    :param alternatives: for a disjunctive constraint, its alternative phrases as given (``phrase`` is them joined
        by ``" | "``, ``tokens`` the words of the alternative the caption contains, else of the first usable one);
        empty for a phrase.
    """
    phrase: str
    tokens: List[str]
    met: bool
    alternatives: List[str] = field(default_factory=list)


@dataclass(frozen=True)
class PhraseCheck:
    """What an input's result reports on one of its phrases.

    :param kind: :data:`CONSTRAINT` or :data:`AVOID`.
    :param phrase: the phrase as reported (a disjunctive constraint: its alternatives joined by ``" | "``).
    :param tokens: its words (empty for a disjunctive constraint).
    :param checkable: whether a caption can meet it (False: ignored, or a disjunction without a usable alternative).
    :param enforced: whether the search requires it (a constraint that could be used and fits).
    :param alternatives: a disjunctive constraint's alternatives as given; empty for a phrase.
    :param alternative_tokens: the words of each of its alternatives the model can write.
    """
    kind: str
    phrase: str
    tokens: Tuple[str, ...] = ()
    checkable: bool = True
    enforced: bool = False
    alternatives: Tuple[str, ...] = ()
    alternative_tokens: Tuple[Tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError("kind must be one of %s, got %r" % (", ".join(KINDS), self.kind))

    @property
    def disjunctive(self) -> bool:
        return bool(self.alternatives)

    def key(self) -> Tuple[Tuple[str, ...], ...]:
        """The word sequences that meet it, sorted: constraints of one key are met by as many occurrences of them
        as they are given."""
        return tuple(sorted(self.alternative_tokens)) if self.disjunctive else (self.tokens,)

    def result(self, tokens: Sequence[str], times: int = 1) -> PhraseResult:
        """The :class:`PhraseResult` of a caption of ``tokens``; a constraint is met by ``times`` occurrences."""
        if self.kind == AVOID:
            met = self.checkable and bool(self.tokens) and not count_occurrences(tokens, self.tokens)
            return PhraseResult(self.phrase, list(self.tokens), met)
        met = self.checkable and sum(count_occurrences(tokens, words) for words in self.key()) >= times
        if not self.disjunctive:
            return PhraseResult(self.phrase, list(self.tokens), met)
        found = [list(words) for words in self.key() if count_occurrences(tokens, words)]
        shown = found[0] if found else list(self.alternative_tokens[0]) if self.alternative_tokens else []
        return PhraseResult(self.phrase, shown, met, list(self.alternatives))


class PhraseReport(NamedTuple):
    """What a caption's result says of its input's phrases (:meth:`InputPhrases.report`)."""
    constraints: List[PhraseResult]
    avoid: List[PhraseResult]
    constraints_met: Optional[bool]   # None: the input has no phrases
    warnings: List[str]


@dataclass
class InputPhrases:
    """An input's phrases ready for the search (word id lists), what its result reports on them, and its warnings.

    :param max_output_length: the search's: the constraints' words and ``</s>`` must fit in it.
    """
    max_output_length: int
    required: List[Any] = field(default_factory=list)   # per enforced constraint: word ids, or alternatives' ids
    avoid: List[List[int]] = field(default_factory=list)
    checks: List[PhraseCheck] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    guides: List["GuideWord"] = field(default_factory=list)   # the classes guiding the caption (guide_with_classifier)
    pushed: List["PushedWord"] = field(default_factory=list)        # soft guidance's words (guide_soft_weight)
    held_back: List["HeldBackWord"] = field(default_factory=list)   # guidance against's words (guide_against)
    bonus: Optional[np.ndarray] = None   # (vocab,) soft guidance's bonus per word

    def needed_words(self) -> int:
        """The fewest words that meet every constraint of :attr:`required` (a disjunction's shortest alternative)."""
        return sum(min(len(p) for p in as_alternatives(c)) for c in self.required)

    def fits(self, length: int, phrase: str) -> bool:
        """Whether a constraint of ``length`` more words fits beside :attr:`required` and ``</s>``; a warning if
        not."""
        total = self.needed_words() + length
        if total <= self.max_output_length - 1:   # </s> needs the last place
            return True
        self.warnings.append("constraint %s does not fit: %d constraint words and </s> exceed max_output_length %d; "
                             "not enforced" % (_short(phrase), total, self.max_output_length))
        return False

    def add_guide(self, guides: Sequence["GuideWord"], constraints: Sequence[List[List[int]]]) -> None:
        """Add the classifier's disjunctive constraints (:meth:`imcap.guide.ClassifierGuide.choose`), those that fit
        beside the input's own (a warning for each that does not)."""
        for guide, alternatives in zip(guides, constraints):
            if self.fits(min(len(a) for a in alternatives), "guide " + " | ".join(guide.words)):
                self.required.append(alternatives)
                self.guides.append(guide)

    def add_guidance(self, guidance: "Guidance") -> None:
        """Add the classifier's whole guide (:meth:`imcap.guide.ClassifierGuide.guide`): its hard constraints (as
        :meth:`add_guide`), its soft bonus and pushed words, and its held-back words, avoided by the search but not
        reported among the input's avoided phrases."""
        self.add_guide(guidance.guides, guidance.constraints)
        self.pushed, self.bonus = list(guidance.pushed), guidance.bonus
        self.held_back = list(guidance.held_back)
        self.avoid.extend(guidance.avoid)

    def report(self, tokens: Sequence[str]) -> PhraseReport:
        """What a caption of ``tokens`` meets; the warnings add, to those of the phrases, one per enforced constraint
        the caption does not meet (no hypothesis met them all within ``max_output_length``). Sets each guide's
        ``met``."""
        required: List[PhraseResult] = []
        avoided: List[PhraseResult] = []
        warnings = list(self.warnings)
        seen: Dict[Tuple[Tuple[str, ...], ...], int] = collections.Counter()
        for check in self.checks:
            if check.kind == AVOID:
                avoided.append(check.result(tokens))
                continue
            seen[check.key()] += 1
            required.append(check.result(tokens, seen[check.key()]))
            if check.enforced and not required[-1].met:
                warnings.append("constraint %s is not in the best caption found: no caption met every constraint "
                                "within max_output_length" % _short(check.phrase))
        for guide in self.guides:
            guide.met = any(count_occurrences(tokens, tokenize(word)) for word in guide.words)
        for word in self.pushed:
            word.written = word.word in tokens
        every = [p.met for p in required + avoided]
        return PhraseReport(required, avoided, all(every) if every else None, warnings)


def prepare_phrases(constraints: Sequence[Constraint], avoid: Sequence[Phrase], token_to_idx: Mapping[str, int],
                    max_output_length: int, avoid_list: Sequence[ListedPhrase] = (),
                    tokenize: Tokenize = tokenize) -> InputPhrases:
    """An input's :class:`InputPhrases`: its constraints that can be used and fit in ``max_output_length``, in
    order, and its avoided phrases the model can write, as word ids; a warning for each phrase that cannot be used
    as given; an avoided phrase (of ``avoid`` or of the Captioner's ``avoid_list``) inside a constraint is not avoided,
    with a warning (the search drops it too, :mod:`imcap.constraints`). Phrases are split by ``tokenize`` (the
    model's tokenizer), so a user writes words and never pieces.

    :raises TypeError, ValueError: as :func:`check_phrases`.
    """
    constraints = check_phrases("constraints", constraints, alternatives=True)
    avoid = check_phrases("avoid", avoid)
    out = InputPhrases(max_output_length)
    for item in constraints:
        if isinstance(item, list):
            _add_disjunction(out, item, token_to_idx, tokenize)
        else:
            _add_constraint(out, item, token_to_idx, tokenize)
    avoided: List[Phrase] = []   # the phrase of each entry of out.avoid
    for phrase in avoid:
        if _add_avoided(out, phrase, token_to_idx, tokenize):
            avoided.append(phrase)
    if out.required:
        _drop_conflicts(out, avoided, avoid_list)
    return out


def _ignore(out: InputPhrases, kind: str, phrase: IgnoredPhrase) -> None:
    out.warnings.append(phrase.warning)
    out.checks.append(PhraseCheck(kind, phrase.shown, phrase.tokens, checkable=False))


def _encode_warned(out: InputPhrases, name: str, phrase: str, token_to_idx: Mapping[str, int],
                   unknown: Optional[str], tokenize: Tokenize) -> Encoded:
    """``phrase`` encoded, with a warning if it has no words, and if it has a word outside the vocabulary one that
    ends with ``unknown`` (None: no warning, e.g. an avoided phrase the model cannot write)."""
    encoded = encode_phrase(phrase, token_to_idx, tokenize)
    if not encoded.tokens:
        out.warnings.append("%s %s has no words: ignored" % (name, _short(phrase)))
    elif encoded.unknown and unknown is not None:
        out.warnings.append("%s %s has words outside the vocabulary (%s): %s"
                            % (name, _short(phrase), " ".join(encoded.unknown), unknown))
    return encoded


def _add_constraint(out: InputPhrases, phrase: Phrase, token_to_idx: Mapping[str, int], tokenize: Tokenize) -> None:
    """Add one phrase the caption must contain, if it can be used and fits."""
    if isinstance(phrase, IgnoredPhrase):
        _ignore(out, CONSTRAINT, phrase)
        return
    encoded = _encode_warned(out, "constraint", phrase, token_to_idx, "it cannot be met", tokenize)
    enforced = bool(encoded.ids) and out.fits(len(encoded.ids), phrase)
    if enforced:
        out.required.append(encoded.ids)
    out.checks.append(PhraseCheck(CONSTRAINT, phrase, tuple(encoded.tokens), enforced=enforced))


def _add_disjunction(out: InputPhrases, alternatives: List[Phrase], token_to_idx: Mapping[str, int],
                     tokenize: Tokenize) -> None:
    """Add one disjunctive constraint, a list of alternative phrases of which the caption must contain one: the
    alternatives with words inside the vocabulary (a warning for each other one; a warning if none is left)."""
    texts = tuple(phrase_text(a) for a in alternatives)
    shown = " | ".join(texts)
    usable: List[Encoded] = []
    for alternative in alternatives:
        if isinstance(alternative, IgnoredPhrase):
            out.warnings.append(alternative.warning)
            continue
        encoded = _encode_warned(out, "constraint alternative", alternative, token_to_idx, "ignored", tokenize)
        if encoded.ids:
            usable.append(encoded)
    if not usable:
        out.warnings.append("constraint %s has no alternative the model can write: it cannot be met" % _short(shown))
    enforced = bool(usable) and out.fits(min(len(e.ids) for e in usable), shown)
    if enforced:
        out.required.append([e.ids for e in usable])
    out.checks.append(PhraseCheck(CONSTRAINT, shown, checkable=bool(usable), enforced=enforced, alternatives=texts,
                                  alternative_tokens=tuple(tuple(e.tokens) for e in usable)))


def _add_avoided(out: InputPhrases, phrase: Phrase, token_to_idx: Mapping[str, int], tokenize: Tokenize) -> bool:
    """Add one phrase the caption must not contain; whether the search avoids it (one with a word outside the
    vocabulary needs no avoiding: the model cannot write it)."""
    if isinstance(phrase, IgnoredPhrase):
        _ignore(out, AVOID, phrase)
        return False
    encoded = _encode_warned(out, "avoid phrase", phrase, token_to_idx, None, tokenize)
    out.checks.append(PhraseCheck(AVOID, phrase, tuple(encoded.tokens)))
    if encoded.ids:
        out.avoid.append(encoded.ids)
    return bool(encoded.ids)


def _drop_conflicts(out: InputPhrases, avoided: Sequence[Phrase], avoid_list: Sequence[ListedPhrase]) -> None:
    """A warning for each avoided phrase (``avoided``: those of :attr:`InputPhrases.avoid`, as given) and each of
    the avoid list that occurs inside a constraint (the constraint wins); the avoid list's are reported too."""
    required = [p for c in out.required for p in as_alternatives(c)]
    for i in conflicting(out.avoid, required):
        out.warnings.append("avoid phrase %s occurs in a constraint: not avoided" % _short(avoided[i]))
    listed = [entry for entry in avoid_list if entry.ids]
    for j in conflicting([entry.ids for entry in listed], required):
        out.warnings.append("avoid list phrase %s occurs in a constraint: not avoided" % _short(listed[j].phrase))
        out.checks.append(PhraseCheck(AVOID, listed[j].phrase, tuple(listed[j].tokens)))


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a warning stays one short line)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."
