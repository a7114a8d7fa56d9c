"""Captioning as a library: ``Captioner(model_dirs).caption([CaptionInput(...), ...]) -> [CaptionResult, ...]``.

A :class:`CaptionInput` is one image, given as a file path (an image, or its cached features), the encoded bytes of
an image file (e.g. an upload), a decoded ``(height, width, 3)`` uint8 array, or cached ``(regions, dim)`` features.
A :class:`Captioner` loads the model dirs once (several: an ensemble), builds the beam search
(:mod:`imcap.beam_search`), creates the CNN (:mod:`imcap.image_encoder`) the first time an input needs pixels, and
captions inputs ``batch_size`` at a time, one :class:`CaptionResult` per input, in order: an input that cannot be
read gets a result with ``error`` set and no tokens, never an exception.

Lexical constraints: an input's ``constraints`` are phrases its caption must contain, its ``avoid`` phrases it must
not contain, besides the Captioner's ``avoid_list`` (every caption); phrases are tokenized as captions are
(:func:`imcap.tokenizer.tokenize`) and searched for by :mod:`imcap.constraints` (dynamic beam allocation, Post &
Vilar 2018; vectorized as Hu et al. 2019). A phrase that cannot be used (no words, a word outside the vocabulary,
more constraint words than ``max_output_length`` leaves room for, not a string, avoided and required at once) costs
the input nothing but that phrase: its result still has the best caption found, a warning in ``warnings`` and
``constraints_met`` False where the phrase is not met (:meth:`Captioner.caption`).

The captioner CLI (:mod:`imcap.captioner`) is a loop over this module; it reads no command line itself
(:meth:`Captioner.from_args` takes the CLI's parsed options) and never imports training code.

    from imcap.inference import CaptionInput, Captioner
    captioner = Captioner(["model"])
    with open("photo.jpg", "rb") as f:
        print(captioner.caption([CaptionInput(data=f.read())])[0].caption)
"""
import collections
import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import mxnet as mx
import numpy as np

from . import constants as C
from .beam_search import BeamSearch, Hypothesis
from .constraints import as_alternatives, conflicting, count_occurrences
from .devices import get_context
from .features import check_features_match, classes_path, load_classes, resolve, view_path
from .guide import ClassifierGuide, GuideWord, expand_vocabulary, read_class_words, stand_ins
from .image_encoder import ImageEncoder, augment, check_image, decode_image, load_image, resize_image
from .model import CaptionModel, load_model
from .tokenizer import tokenize
from .utils import ImcapError, check_condition, read_lines
from .vocab import ids_to_tokens

logger = logging.getLogger(__name__)

_SOURCES = ("path", "data", "image", "features")


@dataclass
class CaptionInput:
    """One image to caption, given in exactly one of four ways.

    :param path: an image file, or a cached feature file (``.npy`` of ``(regions, dim)``, as
        :mod:`imcap.extract_features` writes); relative to the Captioner's ``source_root``. Which of the two is the
        Captioner's ``extract_image_features`` option.
    :param data: the encoded bytes of an image file (JPEG, PNG, ... what PIL reads), e.g. an upload.
    :param image: a decoded image: ``(height, width, 3)`` uint8 RGB, any size (resized to the CNN's input).
    :param features: cached features: ``(regions, dim)`` float, the shape the model was trained on.
    :param constraints: phrases the caption must contain, each as consecutive words (a phrase given twice must occur
        twice); an item may be a list of alternative phrases, of which the caption must contain one (a disjunctive
        constraint: ``[["cat", "kitten"], "red"]``). Never an error: a value that is not a list of phrases, or a
        phrase that cannot be used, gets a warning on the result (see :meth:`Captioner.caption`).
    :param avoid: phrases the caption must not contain (likewise).
    :param class_probabilities: ``(classes,)`` the ImageNet classifier's probabilities for the image, for a
        Captioner that guides by them (``guide_with_classifier``) when the input is a ``features`` array; otherwise
        they come from the cache beside a feature file or from the CNN's forward pass.
    :param source: what names the input in messages and results (JSON output's ``image``); default: ``path``.
    :param line: the input's number in messages and results; default: its 1-based position in the inputs of
        :meth:`Captioner.caption`.
    :raises ImcapError: unless exactly one of ``path``, ``data``, ``image``, ``features`` is given with its type and
        number of dimensions.
    """
    path: Optional[str] = None
    data: Optional[bytes] = None
    image: Optional[np.ndarray] = None
    features: Optional[np.ndarray] = None
    constraints: List[Any] = field(default_factory=list)
    avoid: List[str] = field(default_factory=list)
    class_probabilities: Optional[np.ndarray] = None
    source: Optional[str] = None
    line: Optional[int] = None

    def __post_init__(self) -> None:
        given = [name for name in _SOURCES if getattr(self, name) is not None]
        check_condition(len(given) == 1, "a CaptionInput takes exactly one of %s; got %s"
                        % (", ".join(_SOURCES), ", ".join(given) if given else "none"))
        if self.path is not None:
            check_condition(isinstance(self.path, str) and bool(self.path.strip()),
                            "path must be a non-empty string, got %r" % (self.path,))
        if self.data is not None:
            check_condition(isinstance(self.data, (bytes, bytearray, memoryview)),
                            "data must be the bytes of an image file, got %s" % type(self.data).__name__)
        if self.image is not None:
            check_image(self.image)
        if self.features is not None:
            features = self.features
            check_condition(isinstance(features, np.ndarray) and features.ndim == 2
                            and (np.issubdtype(features.dtype, np.floating)
                                 or np.issubdtype(features.dtype, np.integer)),
                            "features must be a (regions, dim) float array, got %s"
                            % ("%s %s" % (features.shape, features.dtype) if isinstance(features, np.ndarray)
                               else type(features).__name__))
        for key in ("constraints", "avoid"):  # a bad value is kept: the Captioner warns about it, never fails
            phrases = getattr(self, key)
            if phrases is None:
                setattr(self, key, [])
            elif isinstance(phrases, tuple):
                setattr(self, key, list(phrases))
        check_condition(self.source is None or isinstance(self.source, str),
                        "source must be a string, got %s" % type(self.source).__name__)
        if self.source is None and self.path is not None:
            self.source = self.path
        check_condition(self.line is None or (isinstance(self.line, int) and not isinstance(self.line, bool)),
                        "line must be an integer, got %r" % (self.line,))


@dataclass
class PhraseResult:
    """Whether a caption meets one phrase of its input's ``constraints`` or ``avoid`` (or of the avoid list, when the
    phrase conflicts with a constraint of the input).

    :param phrase: the phrase as given (a value that is not a string: its ``repr``).
    :param tokens: its words, tokenized as captions are: what the caption's tokens are matched against.
    :param met: for a required phrase, the caption contains its words consecutively (as often as the phrase is
        given); for an avoided one, it does not. False for a value that is not a string. For a disjunctive
        constraint, the caption contains one of its alternatives.
    :param alternatives: for a disjunctive constraint, its alternative phrases as given (``phrase`` is them joined
        by ``" | "``, ``tokens`` the words of the alternative the caption contains, else of the first usable one);
        empty for a phrase.
    """
    phrase: str
    tokens: List[str]
    met: bool
    alternatives: List[str] = field(default_factory=list)


@dataclass
class _Phrases:
    """An input's phrases ready for the search (word id lists), what its result reports on them and its warnings."""
    required: List[Any] = field(default_factory=list)   # per constraint: word ids, or a list of alternatives' ids
    avoid: List[List[int]] = field(default_factory=list)
    # per phrase: [key, phrase, tokens, checkable, enforced], and for a disjunctive constraint the alternatives as
    # given, its tokens then one list per usable alternative
    checks: List[List[Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    guides: List[GuideWord] = field(default_factory=list)   # the classes guiding the caption (guide_with_classifier)

    def needed_words(self) -> int:
        """The fewest words that meet every constraint of :attr:`required` (a disjunction's shortest alternative)."""
        return sum(min(len(p) for p in as_alternatives(c)) for c in self.required)

    def fits(self, length: int, room: int, phrase: str, max_output_length: int) -> bool:
        """Whether a constraint of ``length`` more words fits in ``room`` beside :attr:`required`; a warning if not."""
        total = self.needed_words() + length
        if total <= room:
            return True
        self.warnings.append("constraint %s does not fit: %d constraint words and </s> exceed max_output_length %d; "
                             "not enforced" % (_short(phrase), total, max_output_length))
        return False

    def results(self, tokens: List[str]) -> Tuple[List[PhraseResult], List[PhraseResult], Optional[bool], List[str]]:
        """``(constraints, avoid, constraints_met, warnings)`` of a caption of ``tokens`` (``constraints_met`` is None
        when the input has no phrases); the warnings add, to those of the phrases, one per enforced constraint the
        caption does not meet (no hypothesis met them all within ``max_output_length``)."""
        required: List[PhraseResult] = []
        avoided: List[PhraseResult] = []
        warnings = list(self.warnings)
        seen: Dict[Tuple[str, ...], int] = collections.Counter()
        for key, phrase, words, checkable, enforced, *given in self.checks:
            if key == "constraints" and given:   # a disjunction: one of its alternatives, as often as it is given
                alternatives = sorted(tuple(w) for w in words)
                seen[tuple(" | ".join(a) for a in alternatives)] += 1
                found = [list(a) for a in alternatives if count_occurrences(tokens, a)]
                met = checkable and sum(count_occurrences(tokens, a) for a in alternatives) >= \
                    seen[tuple(" | ".join(a) for a in alternatives)]
                required.append(PhraseResult(phrase, found[0] if found else (list(words[0]) if words else []), met,
                                             given[0]))
                if enforced and not met:
                    warnings.append("constraint %s is not in the best caption found: no caption met every "
                                    "constraint within max_output_length" % _short(phrase))
            elif key == "constraints":
                seen[tuple(words)] += 1
                met = checkable and bool(words) and count_occurrences(tokens, words) >= seen[tuple(words)]
                required.append(PhraseResult(phrase, words, met))
                if enforced and not met:
                    warnings.append("constraint %s is not in the best caption found: no caption met every "
                                    "constraint within max_output_length" % _short(phrase))
            else:
                avoided.append(PhraseResult(phrase, words, checkable and bool(words)
                                            and not count_occurrences(tokens, words)))
        for guide in self.guides:
            guide.met = any(count_occurrences(tokens, tokenize(word)) for word in guide.words)
        every = [p.met for p in required + avoided]
        return required, avoided, (all(every) if every else None), warnings


class _Pending(NamedTuple):
    """An input loaded for the next batch: its position among the inputs, one array per view, whether these are
    pixels (for the CNN) rather than features, its phrases, and (guided by the classifier, for features) its class
    probabilities ``(classes,)`` if it has them."""
    position: int
    arrays: List[np.ndarray]
    pixels: bool
    phrases: _Phrases
    classes: Optional[np.ndarray] = None


@dataclass(eq=False)
class CaptionResult:
    """What the captioner produced for one input.

    :param line: the input's number (1-based input line of the CLI).
    :param tokens: caption tokens of the best hypothesis (empty on error).
    :param score: its length-normalized log-probability (0 on error).
    :param attention: ``(len(tokens) + 1, regions)`` weights per generated word (``</s>`` last), or None.
    :param nbest: ``(tokens, score)`` of the n best hypotheses, best first (empty unless ``nbest_size > 1``).
    :param error: why the input could not be captioned, or None.
    :param source: what names the input (its path as given), or ``""``.
    :param constraints_met: whether the caption meets every phrase of ``constraints`` and ``avoid`` below (each
        ``met``); None when the input has none (and on error).
    :param constraints: one :class:`PhraseResult` per phrase of the input's ``constraints``, in order.
    :param avoid: one per phrase of the input's ``avoid``, in order, then the avoid list's phrases that the input's
        constraints overrode (they occur inside a required phrase).
    :param warnings: one-line messages about phrases that could not be used as given (the caption is still the best
        found), in input order; the captioner CLI writes each as ``Warning: line N: ...``.
    :param guide: with ``guide_with_classifier``, the classes whose words the caption was asked to contain (one
        :class:`imcap.guide.GuideWord` each, with ``met``); empty when none was probable enough.
    """
    line: int
    tokens: List[str]
    score: float = 0.0
    attention: Optional[np.ndarray] = None
    nbest: List[Tuple[List[str], float]] = field(default_factory=list)
    error: Optional[str] = None
    source: str = ""
    constraints_met: Optional[bool] = None
    constraints: List[PhraseResult] = field(default_factory=list)
    avoid: List[PhraseResult] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    guide: List[GuideWord] = field(default_factory=list)

    @property
    def caption(self) -> str:
        """The tokens joined by spaces (``""`` on error)."""
        return " ".join(self.tokens)


# The keywords of Captioner that configure its beam search (and may differ per request, see with_search_options).
SEARCH_SETTINGS = ("beam_size", "max_output_length", "length_penalty_alpha", "length_penalty_beta", "nbest_size",
                   "keep_attention", "allow_unk", "no_repeat_ngram_size")


def _check_search_settings(settings: Dict[str, Any]) -> None:
    """:raises ImcapError: if a search setting is out of its range."""
    for name in ("beam_size", "max_output_length", "nbest_size"):
        check_condition(settings[name] >= 1, "%s must be >= 1, got %s" % (name, settings[name]))
    check_condition(settings["no_repeat_ngram_size"] == 0 or settings["no_repeat_ngram_size"] >= 2,
                    "no_repeat_ngram_size must be 0 (off) or >= 2, got %s" % settings["no_repeat_ngram_size"])


class Captioner:
    """Loads models once and captions :class:`CaptionInput` s with batched beam search.

    The keywords are the captioner CLI's options (``--beam-size`` is ``beam_size``, ...):

    :param models: model dirs (one, or several for an ensemble: log-probabilities averaged); a string is one dir.
    :param checkpoints: params file name per model (e.g. ``params.00012``, an averaged file); default ``params.best``.
    :param beam_size: hypotheses kept per image.
    :param batch_size: images searched together.
    :param max_output_length: most words per caption (``</s>`` included).
    :param length_penalty_alpha: GNMT length penalty alpha (0: none).
    :param length_penalty_beta: GNMT length penalty beta.
    :param nbest_size: hypotheses per result in ``nbest`` (at most ``beam_size``; 1: ``nbest`` stays empty).
    :param allow_unk: let captions contain ``<unk>``.
    :param no_repeat_ngram_size: no caption repeats an n-gram of this many words (0: off; at least 2 otherwise;
        :func:`imcap.beam_search.block_repeated_ngrams`).
    :param keep_attention: fill each result's ``attention``.
    :param test_time_augmentations: views (``hflip``) that every model also decodes, as members of the ensemble: the
        mirrored image, or for a cached feature file its view's file beside it (:func:`imcap.features.view_path`).
    :param extract_image_features: a ``path`` names an image file for the CNN, not cached features.
    :param image_encoder: the CNN's name (``efficientnet_lite0``, a model-zoo name, ``symbol``) or a ready
        :class:`imcap.image_encoder.ImageEncoder`; default: the one the model's features were made with (its
        ``config.yaml`` ``feature_extraction``). A ready encoder is used as it is (the settings below are then
        ignored), e.g. one shared by several Captioners.
    :param image_encoder_model_path: its weights; default: the model's.
    :param image_encoder_layer: the layer it is cut at; default: the model's.
    :param source_image_size: ``(height, width)`` pixels images are resized to; default: the model's.
    :param image_encoder_no_fusion: do not fuse the CNN's graph with MKLDNN.
    :param source_root: root of relative ``path`` s; default: the current directory.
    :param context: the device; default :func:`imcap.devices.get_context` (the first GPU, else the CPU).
    :param avoid_list: phrases no caption contains (the CLI's ``--avoid-list`` file, one phrase per line), besides
        each input's own ``avoid``; blank ones are skipped, one without words is skipped with a logged warning, one
        with a word outside the vocabulary cannot occur anyway. An input's constraint overrides a phrase of the list
        that occurs inside it (with a warning on the result).
    :param guide_with_classifier: guide each caption by the CNN's ImageNet classifier (:mod:`imcap.guide`, Anderson
        et al. 2017): the words of its top classes become disjunctive constraints. The class probabilities come from
        the CNN's forward pass for pixels, from the cache beside a feature file (``imcap.extract_features`` writes
        them), or from the input's ``class_probabilities``; an input without them is captioned unguided, with a
        warning.
    :param guide_top_k: the most classes per image.
    :param guide_min_probability: the least probability of a class that guides.
    :param guide_class_words: the class -> words mapping file; default :data:`imcap.guide.DEFAULT_CLASS_WORDS`.
    :param guide_expand_vocabulary: add the mapping's words that the model lacks, scored as their stand-ins
        (:func:`imcap.guide.expand_vocabulary`), written only where a guide asks for them.
    :raises ImcapError: if a model dir cannot be loaded, the models disagree on vocabulary or feature shape, an
        option is out of range, or the class words file cannot be read.
    """

    def __init__(self, models: Union[str, Sequence[str]], checkpoints: Union[str, Sequence[str], None] = None, *,
                 beam_size: int = 5, batch_size: int = 32, max_output_length: int = 30,
                 length_penalty_alpha: float = 1.0, length_penalty_beta: float = 0.0, nbest_size: int = 1,
                 allow_unk: bool = False, no_repeat_ngram_size: int = 0, keep_attention: bool = False,
                 test_time_augmentations: Union[str, Sequence[str]] = (),
                 extract_image_features: bool = False, image_encoder: Union[str, ImageEncoder, None] = None,
                 image_encoder_model_path: Optional[str] = None, image_encoder_layer: Optional[str] = None,
                 source_image_size: Optional[Sequence[int]] = None, image_encoder_no_fusion: bool = False,
                 source_root: Optional[str] = None, context: Optional[mx.Context] = None,
                 avoid_list: Sequence[str] = (), guide_with_classifier: bool = False,
                 guide_top_k: int = C.DEFAULT_GUIDE_TOP_K,
                 guide_min_probability: float = C.DEFAULT_GUIDE_MIN_PROBABILITY,
                 guide_class_words: Optional[str] = None, guide_expand_vocabulary: bool = False) -> None:
        model_dirs = [models] if isinstance(models, str) else list(models)
        check_condition(bool(model_dirs), "a Captioner needs at least one model dir")
        names = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints or [])
        names = names or [C.PARAMS_BEST_NAME] * len(model_dirs)
        check_condition(len(names) == len(model_dirs), "checkpoints needs one params file name per model (%d models, "
                                                       "%d names)" % (len(model_dirs), len(names)))
        check_condition(batch_size >= 1, "batch_size must be >= 1, got %s" % batch_size)
        search_settings = dict(beam_size=beam_size, max_output_length=max_output_length,
                               length_penalty_alpha=length_penalty_alpha, length_penalty_beta=length_penalty_beta,
                               nbest_size=nbest_size, keep_attention=keep_attention, allow_unk=allow_unk,
                               no_repeat_ngram_size=no_repeat_ngram_size)
        _check_search_settings(search_settings)
        views = [test_time_augmentations] if isinstance(test_time_augmentations, str) else list(test_time_augmentations)
        unknown = [v for v in views if v not in C.AUGMENTATION_CHOICES]
        check_condition(not unknown, "unknown test-time augmentation %s (choices: %s)"
                        % (", ".join(unknown), ", ".join(C.AUGMENTATION_CHOICES)))
        self.context = context or get_context()
        loaded = [load_model(model_dir, name, self.context) for model_dir, name in zip(model_dirs, names)]
        self.models: List[CaptionModel] = [model for model, _ in loaded]
        self.vocab: Any = loaded[0][1]
        for model_dir, (model, vocab) in zip(model_dirs[1:], loaded[1:]):
            check_condition(vocab.idx_to_token == self.vocab.idx_to_token,
                            "%s has another vocabulary than %s" % (model_dir, model_dirs[0]))
            check_condition(_feature_shape(model) == _feature_shape(self.models[0]),
                            "%s expects other features than %s" % (model_dir, model_dirs[0]))
        self.feature_shape = _feature_shape(self.models[0])
        self.guide: Optional[ClassifierGuide] = None
        self.expanded_ids: List[int] = []   # words added by guide_expand_vocabulary (written only where required)
        if guide_with_classifier:
            class_words = read_class_words(guide_class_words)
            if guide_expand_vocabulary:
                self.models, self.vocab, self.expanded_ids = expand_vocabulary(
                    self.models, self.vocab, stand_ins(class_words, self.vocab.token_to_idx))
                logger.info("guide: %d words added to the vocabulary, scored as their stand-ins",
                            len(self.expanded_ids))
            self.guide = ClassifierGuide(class_words, self.vocab.token_to_idx, guide_top_k, guide_min_probability)
        self.batch_size = batch_size
        self.nbest_size = nbest_size
        self.test_time_augmentations = views
        self.extract_image_features = extract_image_features
        self.source_root = source_root
        self.avoid_list = self._read_avoid_list(avoid_list)
        self._search_settings = search_settings
        self.search = self._build_search(search_settings)
        self._encoder: Optional[ImageEncoder] = None
        self._encoder_checked = False
        if isinstance(image_encoder, ImageEncoder):
            self._encoder = image_encoder
        self._encoder_settings: Dict[str, Any] = dict(name=image_encoder if isinstance(image_encoder, str) else None,
                                                      model_path=image_encoder_model_path,
                                                      layer=image_encoder_layer, input_size=source_image_size,
                                                      fuse=not image_encoder_no_fusion)

    def _build_search(self, settings: Dict[str, Any]) -> BeamSearch:
        """The beam search of ``settings`` (the keywords of :data:`SEARCH_SETTINGS`) over the loaded models, with
        the Captioner's avoid list."""
        return BeamSearch(self.models, self.vocab, ctx=self.context, constraint_only=self.expanded_ids,
                          avoid_list=[ids for _, _, ids in self.avoid_list if ids], **settings)

    def with_search_options(self, batch_size: Optional[int] = None, **settings: Any) -> "Captioner":
        """A Captioner that shares this one's models, vocabulary, avoid list and CNN (if created: with
        ``extract_image_features`` it is created here; a server captioning bytes calls :meth:`get_image_encoder`
        first, else each derived Captioner makes its own), and searches with ``settings`` (any of :data:`SEARCH_SETTINGS`, e.g. ``beam_size=3, nbest_size=3``)
        over those of this one, ``batch_size`` images at a time (default: this one's). A server keeps one per set
        of request options.

        :raises ImcapError: on an unknown setting or one out of range.
        """
        unknown = sorted(set(settings) - set(SEARCH_SETTINGS))
        check_condition(not unknown, "unknown search settings %s (known: %s)" % (", ".join(unknown),
                                                                                 ", ".join(SEARCH_SETTINGS)))
        merged = dict(self._search_settings, **settings)
        _check_search_settings(merged)
        check_condition(batch_size is None or batch_size >= 1, "batch_size must be >= 1, got %s" % batch_size)
        if self.extract_image_features:
            self.get_image_encoder()
        derived = copy.copy(self)
        derived._search_settings = merged
        derived.nbest_size = merged["nbest_size"]
        derived.batch_size = batch_size if batch_size is not None else self.batch_size
        derived.search = derived._build_search(merged)
        return derived

    @classmethod
    def from_args(cls, args: Any) -> "Captioner":
        """The Captioner of the captioner CLI's parsed options (:func:`imcap.captioner.add_captioner_args`): the
        same keywords, ``keep_attention`` for ``--output-type json``, the device of ``--device-ids``/``--use-cpu``,
        the lines of the ``--avoid-list`` file.

        :raises ImcapError: as the constructor, and if the avoid list cannot be read.
        """
        avoid_file = getattr(args, "avoid_list", None)
        return cls(args.models, args.checkpoints, beam_size=args.beam_size, batch_size=args.batch_size,
                   max_output_length=args.max_output_length, length_penalty_alpha=args.length_penalty_alpha,
                   length_penalty_beta=args.length_penalty_beta, nbest_size=args.nbest_size,
                   allow_unk=args.allow_unk, no_repeat_ngram_size=args.no_repeat_ngram_size,
                   keep_attention=args.output_type == C.OUTPUT_TYPE_JSON,
                   test_time_augmentations=args.test_time_augmentations,
                   extract_image_features=args.extract_image_features, image_encoder=args.image_encoder,
                   image_encoder_model_path=args.image_encoder_model_path,
                   image_encoder_layer=args.image_encoder_layer, source_image_size=args.source_image_size,
                   image_encoder_no_fusion=args.image_encoder_no_fusion, source_root=args.source_root,
                   context=get_context(args.device_ids, args.use_cpu),
                   avoid_list=read_lines(avoid_file) if avoid_file else (),
                   guide_with_classifier=getattr(args, "guide_with_classifier", False),
                   guide_top_k=getattr(args, "guide_top_k", C.DEFAULT_GUIDE_TOP_K),
                   guide_min_probability=getattr(args, "guide_min_probability", C.DEFAULT_GUIDE_MIN_PROBABILITY),
                   guide_class_words=getattr(args, "guide_class_words", None),
                   guide_expand_vocabulary=getattr(args, "guide_expand_vocabulary", False))

    def _read_avoid_list(self, phrases: Sequence[str]) -> List[Tuple[str, List[str], List[int]]]:
        """``(phrase, tokens, word ids)`` of each usable avoid list phrase (ids empty when a word is outside the
        vocabulary: the phrase cannot occur).

        :raises ImcapError: if ``phrases`` is not a list of strings.
        """
        check_condition(isinstance(phrases, (list, tuple)) and all(isinstance(p, str) for p in phrases),
                        "avoid_list must be a list of phrases (strings)")
        kept, unknown = [], 0
        for number, phrase in enumerate(phrases, 1):
            if not phrase.strip():
                continue
            tokens = tokenize(phrase)
            if not tokens:
                logger.warning("avoid list phrase %d (%r) has no words: skipped", number, phrase)
                continue
            ids = [self.vocab.token_to_idx.get(t) for t in tokens]
            unknown += None in ids
            kept.append((phrase, tokens, [] if None in ids else cast(List[int], ids)))
        if unknown:
            logger.info("%d phrases of the avoid list have words outside the vocabulary: no caption can contain them",
                        unknown)
        return kept

    def get_image_encoder(self) -> ImageEncoder:
        """The CNN that turns pixels into the models' features, created (and checked) on the first call.

        :raises ImcapError: if it cannot be created (unknown name, missing weights) or its features do not have the
            models' shape ``(regions, dim)``.
        """
        if self._encoder is None:
            self._encoder = ImageEncoder.from_description(self.models[0].config.feature_extraction,
                                                          ctx=self.context, classify=self.guide is not None,
                                                          **self._encoder_settings)
        if not self._encoder_checked:
            encoder = self._encoder
            check_condition(self.guide is None or encoder.has_classifier,
                            "guide_with_classifier needs an image encoder with its ImageNet classifier "
                            "(EfficientNet-Lite); %s has none" % encoder.name)
            probe = encoder.encode(np.zeros((1,) + tuple(encoder.input_size) + (3,), dtype=np.uint8))
            check_features_match({"feature_shape": list(probe.shape[1:])}, self.feature_shape[0],
                                 self.feature_shape[1], "image encoder %s" % encoder.name)
            self._encoder_checked = True
        return self._encoder

    def caption(self, inputs: Sequence[CaptionInput]) -> List[CaptionResult]:
        """Caption ``inputs``, ``batch_size`` readable ones at a time (each input is read just before its batch).

        :return: one result per input, in order; an input that cannot be read (missing or broken file, features of
            another shape or with NaN or infinite values) has ``error`` set and no tokens. An input with
            ``constraints`` or ``avoid`` gets the best caption that meets them (or, if none is found within
            ``max_output_length``, the best caption found), with ``constraints_met``, a :class:`PhraseResult` per
            phrase, and a warning in ``warnings`` for each phrase that could not be used as given: a value that is
            not a list of strings, a phrase without words, a constraint word outside the vocabulary, constraint
            words beyond what ``max_output_length`` leaves room for (the phrases that do not fit, in order), and an
            avoided phrase inside a required one (the required phrase wins). None of these is an error.
        :raises ImcapError: if an item is not a :class:`CaptionInput`, or when an input needs the CNN and it cannot be
            created (see :meth:`get_image_encoder`).
        """
        for position, item in enumerate(inputs):
            check_condition(isinstance(item, CaptionInput), "input %d is a %s, not a CaptionInput"
                            % (position + 1, type(item).__name__))
        results: List[Optional[CaptionResult]] = [None] * len(inputs)
        pending: List[_Pending] = []
        for position, item in enumerate(inputs):
            if self._needs_pixels(item):
                self.get_image_encoder()  # outside the try: a CNN that cannot be made is not this input's fault
            try:
                arrays, pixels = self._load(item)
                phrases = self._phrases(item)
                pending.append(_Pending(position, arrays, pixels, phrases,
                                        None if pixels else self._class_probabilities(item, phrases)))
            except ImcapError as e:
                results[position] = self._result(position, item, error=str(e))
            if len(pending) == self.batch_size:
                self._search_batch(inputs, pending, results)
                pending = []
        if pending:
            self._search_batch(inputs, pending, results)
        return cast(List[CaptionResult], results)  # every position is filled

    def _needs_pixels(self, item: CaptionInput) -> bool:
        return item.data is not None or item.image is not None or (item.path is not None and
                                                                   self.extract_image_features)

    def _load(self, item: CaptionInput) -> Tuple[List[np.ndarray], bool]:
        """One array per view (the original first, then each of ``test_time_augmentations``): ``(H, W, 3)`` uint8
        images for the CNN (then True) or ``(regions, dim)`` float32 features (then False).

        :raises ImcapError: if the input cannot be read.
        """
        views = self.test_time_augmentations
        if self._needs_pixels(item):
            size = self.get_image_encoder().input_size
            if item.path is not None:
                image = load_image(resolve(item.path, self.source_root), size)
            elif item.data is not None:
                image = decode_image(item.data, size)
            else:
                image = resize_image(cast(np.ndarray, item.image), size)
            return [image] + [augment(image, view) for view in views], True
        if item.features is not None:
            check_condition(not views, "test-time augmentation (%s) needs the image or a cached feature file, not a "
                                       "features array" % ", ".join(views))
            return [self._check_features(item.features)], False
        full = resolve(cast(str, item.path), self.source_root)
        return [self._read_features(full)] + [self._read_features(view_path(full, view), view) for view in views], False

    def _read_features(self, path: str, view: Optional[str] = None) -> np.ndarray:
        """The ``(regions, dim)`` float32 features of one ``.npy`` file; ``view`` names an augmented view in the
        errors."""
        where = "'%s' features %s: " % (view, path) if view else ""
        check_condition(os.path.isfile(path), "%sno such file%s" % (
            where, " (imcap.extract_features --augmentations %s makes it)" % view if view else ""))
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ImcapError("%snot a feature file (%s)" % (where, str(e).splitlines()[0] if str(e)
                                                             else type(e).__name__))
        if not isinstance(features, np.ndarray):  # an .npz archive
            features.close()
            raise ImcapError("%snot a feature file (an .npz archive, not one .npy array)" % where)
        return self._check_features(features, where)

    def _check_features(self, features: np.ndarray, where: str = "") -> np.ndarray:
        """``features`` as float32, checked to have the models' shape and finite values."""
        check_condition(tuple(features.shape) == self.feature_shape, "%sfeatures have shape %s, the model expects %s"
                        % (where, tuple(features.shape), self.feature_shape))
        check_condition(np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer),
                        "%sfeatures are not numbers (dtype %s)" % (where, features.dtype))
        features = features.astype(np.float32)
        check_condition(bool(np.isfinite(features).all()), "%sfeatures contain NaN or infinite values" % where)
        return features

    def _phrases(self, item: CaptionInput) -> _Phrases:
        """The input's phrases as word ids for the search, what its result will report on them, and a warning for
        each that cannot be used as given (see :meth:`caption`). Never raises."""
        out = _Phrases()
        if not item.constraints and not item.avoid:
            return out
        room = self.search.max_output_length - 1  # </s> needs the last place
        avoided: List[str] = []  # the phrase of each entry of out.avoid
        for key, name in (("constraints", "constraint"), ("avoid", "avoid phrase")):
            value = getattr(item, key)
            if not isinstance(value, list):
                out.warnings.append("%s is not a list of phrases but a %s (%s): ignored"
                                    % (key, type(value).__name__, _short(value)))
                out.checks.append([key, value if isinstance(value, str) else repr(value),
                                   tokenize(value) if isinstance(value, str) else [], False, False])
                continue
            for phrase in value:
                if key == "constraints" and isinstance(phrase, list):
                    self._disjunction(phrase, out, room)
                    continue
                if not isinstance(phrase, str):
                    out.warnings.append("%s %s is not a string%s: ignored" % (
                        name, _short(phrase), " or a list of alternative phrases" if key == "constraints" else ""))
                    out.checks.append([key, repr(phrase), [], False, False])
                    continue
                tokens = tokenize(phrase)
                out.checks.append([key, phrase, tokens, True, False])
                if not tokens:
                    out.warnings.append("%s %s has no words: ignored" % (name, _short(phrase)))
                    continue
                unknown = [t for t in tokens if t not in self.vocab.token_to_idx]
                if unknown and key == "constraints":
                    out.warnings.append("constraint %s has words outside the vocabulary (%s): it cannot be met"
                                        % (_short(phrase), " ".join(unknown)))
                if unknown:  # an avoided phrase the model cannot write needs no blocking
                    continue
                ids = [self.vocab.token_to_idx[t] for t in tokens]
                if key == "avoid":
                    out.avoid.append(ids)
                    avoided.append(phrase)
                elif out.fits(len(ids), room, phrase, self.search.max_output_length):
                    out.required.append(ids)
                    out.checks[-1][4] = True   # enforced by the search
        required = [p for c in out.required for p in as_alternatives(c)]
        for i in conflicting(out.avoid, required):  # the search drops them too (imcap.constraints)
            out.warnings.append("avoid phrase %s occurs in a constraint: not avoided" % _short(avoided[i]))
        listed = [entry for entry in self.avoid_list if entry[2]]
        for j in conflicting([ids for _, _, ids in listed], required):
            phrase, tokens, _ = listed[j]
            out.warnings.append("avoid list phrase %s occurs in a constraint: not avoided" % _short(phrase))
            out.checks.append(["avoid", phrase, tokens, True, False])
        return out

    def _class_probabilities(self, item: CaptionInput, phrases: _Phrases) -> Optional[np.ndarray]:
        """The class probabilities ``(classes,)`` of a features input when the Captioner guides by them: the input's
        own, else the cache beside its feature file; None (and a warning in ``phrases``) if it has none."""
        if self.guide is None:
            return None
        if item.class_probabilities is not None:
            return np.asarray(item.class_probabilities, dtype=np.float32).reshape(-1)
        if item.path is None:
            phrases.warnings.append("no class probabilities for a features array (CaptionInput.class_probabilities): "
                                    "not guided")
            return None
        path = classes_path(resolve(item.path, self.source_root))
        try:
            return load_classes(path)
        except ImcapError as e:
            phrases.warnings.append("%s (imcap.extract_features writes the class probabilities beside the features): "
                                    "not guided" % e)
            return None

    def _add_guide(self, p: _Pending) -> None:
        """Add the classifier's constraints (:meth:`imcap.guide.ClassifierGuide.choose`) to an input's phrases, those
        that fit beside its own constraints (a warning for each that does not)."""
        if p.classes is None or self.guide is None:
            return
        try:
            guides, constraints = self.guide.choose(p.classes)
        except ImcapError as e:
            p.phrases.warnings.append("%s: not guided" % e)
            return
        room = self.search.max_output_length - 1
        for guide, alternatives in zip(guides, constraints):
            if p.phrases.fits(min(len(a) for a in alternatives), room, "guide " + " | ".join(guide.words),
                              self.search.max_output_length):
                p.phrases.required.append(alternatives)
                p.phrases.guides.append(guide)

    def _disjunction(self, alternatives: List[Any], out: _Phrases, room: int) -> None:
        """Add one disjunctive constraint, a list of alternative phrases of which the caption must contain one, to
        ``out``: the alternatives that are strings with words inside the vocabulary (a warning for each other one);
        a warning if none is left."""
        texts = [a if isinstance(a, str) else repr(a) for a in alternatives]
        shown = " | ".join(texts)
        usable: List[Tuple[List[str], List[int]]] = []
        for alternative in alternatives:
            if not isinstance(alternative, str):
                out.warnings.append("constraint alternative %s is not a string: ignored" % _short(alternative))
                continue
            tokens = tokenize(alternative)
            if not tokens:
                out.warnings.append("constraint alternative %s has no words: ignored" % _short(alternative))
                continue
            unknown = [t for t in tokens if t not in self.vocab.token_to_idx]
            if unknown:
                out.warnings.append("constraint alternative %s has words outside the vocabulary (%s): ignored"
                                    % (_short(alternative), " ".join(unknown)))
                continue
            usable.append((tokens, [self.vocab.token_to_idx[t] for t in tokens]))
        check = ["constraints", shown, [tokens for tokens, _ in usable], bool(usable), False, texts]
        if not usable:
            out.warnings.append("constraint %s has no alternative the model can write: it cannot be met"
                                % _short(shown))
        elif out.fits(min(len(ids) for _, ids in usable), room, shown, self.search.max_output_length):
            out.required.append([ids for _, ids in usable])
            check[4] = True
        out.checks.append(check)

    def _search_batch(self, inputs: Sequence[CaptionInput], pending: List[_Pending],
                      results: List[Optional[CaptionResult]]) -> None:
        """Search one batch of loaded inputs (images go through the CNN first) and fill their results."""
        views = []
        for view in range(1 + len(self.test_time_augmentations)):
            arrays = [p.arrays[view] for p in pending]
            pixels = [i for i, p in enumerate(pending) if p.pixels]
            if pixels:
                batch = np.stack([arrays[i] for i in pixels])
                if self.guide is not None and view == 0:   # the classes from the same forward pass
                    encoded, classes = self.get_image_encoder().encode_with_classes(batch)
                    for i, probabilities in zip(pixels, classes):
                        pending[i] = pending[i]._replace(classes=probabilities)
                else:
                    encoded = self.get_image_encoder().encode(batch)
                for i, features in zip(pixels, encoded):
                    arrays[i] = features
            views.append(np.stack(arrays).astype(np.float32, copy=False))
        if self.guide is not None:
            for p in pending:
                self._add_guide(p)
        if any(p.phrases.required or p.phrases.avoid for p in pending):
            found = self.search.search(views, [p.phrases.required for p in pending], [p.phrases.avoid for p in pending])
        else:
            found = self.search.search(views)  # no constraints: the plain search
        for p, hyps in zip(pending, found):
            results[p.position] = self._result(p.position, inputs[p.position], hyps, phrases=p.phrases)

    def _result(self, position: int, item: CaptionInput, hyps: Optional[List[Hypothesis]] = None,
                error: Optional[str] = None, phrases: Optional[_Phrases] = None) -> CaptionResult:
        line = item.line if item.line is not None else position + 1
        if hyps is None:
            return CaptionResult(line, [], error=error, source=item.source or "")
        best = hyps[0]
        tokens = ids_to_tokens(self.vocab, best.ids)
        nbest = [(ids_to_tokens(self.vocab, h.ids), h.score) for h in hyps] if self.nbest_size > 1 else []
        result = CaptionResult(line, tokens, best.score, best.attention, nbest, source=item.source or "")
        if phrases is not None:
            result.constraints, result.avoid, result.constraints_met, result.warnings = phrases.results(tokens)
            result.guide = phrases.guides
        return result


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a warning stays one short line)."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _feature_shape(model: CaptionModel) -> Tuple[int, int]:
    """``(regions, dim)`` of the features ``model`` was trained on (with a CNN tail: those of the cached layer, which
    the CNN cut there makes from pixels and the model's tail continues)."""
    return model.feature_shape
