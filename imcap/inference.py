"""Captioning as a library: ``Captioner(model_dirs).caption([CaptionInput(...), ...]) -> [CaptionResult, ...]``.

A :class:`CaptionInput` is one image, given as a file path (an image, or its cached features), the encoded bytes of
an image file (e.g. an upload), a decoded ``(height, width, 3)`` uint8 array, or cached ``(regions, dim)`` features.
A :class:`Captioner` loads the model dirs once (several: an ensemble), builds the beam search
(:mod:`imcap.beam_search`), creates the CNN (:mod:`imcap.vision.image_encoder`) the first time an input needs pixels, and
captions inputs ``batch_size`` at a time, one :class:`CaptionResult` per input, in order: an input that cannot be
read gets a result with ``error`` set and no tokens, never an exception.

Lexical constraints: an input's ``constraints`` are phrases its caption must contain, its ``avoid`` phrases it must
not contain, besides the Captioner's ``avoid_list`` (every caption); :mod:`imcap.phrases` tokenizes them as captions
are (:func:`imcap.tokenizer.tokenize`), encodes them and reports on them, and :mod:`imcap.constraints` searches for
them (dynamic beam allocation, Post & Vilar 2018; vectorized as Hu et al. 2019). A value of the wrong type is refused
when the :class:`CaptionInput` is made (``TypeError`` naming the field, e.g. ``constraints[1]``; ``ValueError`` for
an empty list of alternatives). A well-typed phrase that cannot be used (no words, a word outside the vocabulary,
more constraint words than ``max_output_length`` leaves room for, avoided and required at once) costs the input
nothing but that phrase: its result still has the best caption found, a warning in ``warnings`` and
``constraints_met`` False where the phrase is not met (:meth:`Captioner.caption`).

Two backends: ``"mxnet"`` (model dirs, or models in memory) and ``"onnxruntime"``: dirs that ``python -m imcap.export``
wrote, searched on ONNX Runtime (:class:`imcap.onnx_steps.OnnxSteps`) from cached features, without loading MXNet or
GluonNLP (this module imports the model code, the devices and the CNN only where the mxnet backend needs them).

The captioner CLI (:mod:`imcap.captioner`) is a loop over this module; it reads no command line itself
(:meth:`Captioner.from_args` takes the CLI's parsed options) and never imports training code. The CLI reads a JSON
line's phrases with :func:`imcap.phrases.lenient_phrases`: a wrongly typed one becomes a warning of its line.

    from imcap.inference import CaptionInput, Captioner
    captioner = Captioner(["model"])
    with open("photo.jpg", "rb") as f:
        print(captioner.caption([CaptionInput(data=f.read())])[0].caption)
"""
import copy
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import constants as C
from .beam_search import BeamSearch, Hypothesis
from .features import check_features_match, classes_path, load_classes, resolve, view_path
from .guide import ClassifierGuide, GuideWord, HeldBackWord, PushedWord, expand_vocabulary, read_class_words, stand_ins
from .onnx_steps import OnnxSteps
from .vision.images import augment, check_image, decode_image, load_image, resize_image
from .phrases import Constraint, InputPhrases, Phrase, PhraseResult, check_phrases, prepare_phrases, read_avoid_list
from .search_options import SearchOptions, search_options_from_args
from .tokenizer import WORDS, Tokenizer, join_subwords, load_tokenizer, make_tokenizer
from .utils import ImcapError, check_condition, read_lines
from .vocab import ids_to_tokens

if TYPE_CHECKING:   # pragma: no cover  (MXNet is imported where the mxnet backend needs it)
    import mxnet as mx  # noqa: F401
    from .model import CaptionModel
    from .vision.image_encoder import ImageEncoder

logger = logging.getLogger(__name__)

# What the onnxruntime backend says of inputs that need the CNN
NO_IMAGE_ENCODER = ("backend onnxruntime: this export has no image encoder (its model records none, or python -m "
                    "imcap.export ran with --no-image-encoder): give cached features (feature files or arrays, not "
                    "images)")

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
    :param constraints: phrases (strings) the caption must contain, each as consecutive words (a phrase given twice
        must occur twice); an item may be a list of alternative phrases, of which the caption must contain one (a
        disjunctive constraint: ``[["cat", "kitten"], "red"]``); a tuple is taken as a list, None as ``[]``. A
        phrase that cannot be used (no words, a word outside the vocabulary, ...) is no error: it gets a warning on
        the result (see :meth:`Captioner.caption`). An item may also be an :class:`imcap.phrases.IgnoredPhrase`
        (how the captioner CLI keeps a wrongly typed phrase of a JSON line): reported unmet, with its warning.
    :param avoid: phrases the caption must not contain (likewise; no alternatives).
    :param class_probabilities: ``(classes,)`` the ImageNet classifier's probabilities for the image, for a
        Captioner that guides by them (``guide_with_classifier``) when the input is a ``features`` array; otherwise
        they come from the cache beside a feature file or from the CNN's forward pass.
    :param source: what names the input in messages and results (JSON output's ``image``); default: ``path``.
    :param line: the input's number in messages and results; default: its 1-based position in the inputs of
        :meth:`Captioner.caption`.
    :raises ImcapError: unless exactly one of ``path``, ``data``, ``image``, ``features`` is given with its type and
        number of dimensions.
    :raises TypeError: if ``constraints`` or ``avoid`` is not a list of phrases as above, naming the field and item
        (``constraints[1] must be a phrase (a string) or a list of alternative phrases, got 3``).
    :raises ValueError: for an empty list of alternative phrases (``constraints[1] is an empty list of alternative
        phrases ...``).
    """
    path: Optional[str] = None
    data: Optional[bytes] = None
    image: Optional[np.ndarray] = None
    features: Optional[np.ndarray] = None
    constraints: Sequence[Constraint] = field(default_factory=list)   # a list once made
    avoid: Sequence[Phrase] = field(default_factory=list)
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
        self.constraints = check_phrases("constraints", [] if self.constraints is None else self.constraints,
                                         alternatives=True)
        self.avoid = check_phrases("avoid", [] if self.avoid is None else self.avoid)
        check_condition(self.source is None or isinstance(self.source, str),
                        "source must be a string, got %s" % type(self.source).__name__)
        if self.source is None and self.path is not None:
            self.source = self.path
        check_condition(self.line is None or (isinstance(self.line, int) and not isinstance(self.line, bool)),
                        "line must be an integer, got %r" % (self.line,))


class _Pending(NamedTuple):
    """An input loaded for the next batch: its position among the inputs, one array per view, whether these are
    pixels (for the CNN) rather than features, its phrases, and (guided by the classifier, for features) its class
    probabilities ``(classes,)`` if it has them."""
    position: int
    arrays: List[np.ndarray]
    pixels: bool
    phrases: InputPhrases
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
    :param guide_pushed: with ``guide_soft_weight``, the words soft guidance pushed (:class:`imcap.guide.PushedWord`,
        with their bonus and whether the caption has them).
    :param guide_held_back: with ``guide_against``, the words guidance against held back
        (:class:`imcap.guide.HeldBackWord`).
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
    guide_pushed: List[PushedWord] = field(default_factory=list)
    guide_held_back: List[HeldBackWord] = field(default_factory=list)

    detokenize: Optional[Callable[[Sequence[str]], str]] = field(default=None, repr=False, compare=False)

    @property
    def caption(self) -> str:
        """The caption as text (``""`` on error): the tokens written back by the model's tokenizer (words joined by
        spaces, pieces joined, Chinese without spaces)."""
        return self.text(self.tokens)

    def text(self, tokens: Sequence[str]) -> str:
        """Tokens of this result (its own, or of its n-best) as text."""
        return self.detokenize(tokens) if self.detokenize is not None else " ".join(tokens)


# The keywords of Captioner that configure its beam search (and may differ per request, see with_search_options):
# the fields of SearchOptions, and keep_attention.
SEARCH_SETTINGS = SearchOptions.names() + ("keep_attention",)


def load_models(models: Union[str, Sequence[str], Sequence["CaptionModel"]],
                checkpoints: Union[str, Sequence[str], None], vocab: Any, context: "mx.Context"
                ) -> Tuple[List["CaptionModel"], Any]:
    """The models of a :class:`Captioner` and their vocabulary: model dirs loaded (``checkpoints`` per dir, default
    ``params.best``), or models in memory with their ``vocab`` (hybridized here for search).

    :raises ImcapError: if there is no model, a dir cannot be loaded, ``checkpoints`` does not name one file per dir,
        ``vocab`` is missing for models in memory or given for dirs, or the models disagree on vocabulary or features.
    """
    from .model import CaptionModel, load_model
    given = [models] if isinstance(models, (str, CaptionModel)) else list(models)
    check_condition(bool(given), "a Captioner needs at least one model dir")
    if all(isinstance(m, CaptionModel) for m in given):
        check_condition(vocab is not None, "models in memory need their vocab")
        loaded = [(cast(CaptionModel, m), vocab) for m in given]
        names: List[str] = ["model %d in memory" % (i + 1) for i in range(len(given))]
        for model, _ in loaded:
            check_condition(model.config.vocab_size == len(vocab), "a model in memory has %d words, the vocab %d"
                            % (model.config.vocab_size, len(vocab)))
            model.hybridize()
    else:
        check_condition(vocab is None, "vocab is given with models in memory, not with model dirs")
        files = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints or [])
        files = files or [C.PARAMS_BEST_NAME] * len(given)
        check_condition(len(files) == len(given), "checkpoints needs one params file name per model (%d models, "
                                                  "%d names)" % (len(given), len(files)))
        names = [str(m) for m in given]
        loaded = [load_model(str(model_dir), name, context) for model_dir, name in zip(given, files)]
    for name, (model, model_vocab) in zip(names[1:], loaded[1:]):
        check_condition(model_vocab.idx_to_token == loaded[0][1].idx_to_token,
                        "%s has another vocabulary than %s" % (name, names[0]))
        check_condition(_feature_shape(model) == _feature_shape(loaded[0][0]),
                        "%s expects other features than %s" % (name, names[0]))
    return [model for model, _ in loaded], loaded[0][1]


class Captioner:
    """Loads models once and captions :class:`CaptionInput` s with batched beam search.

    The keywords are the captioner CLI's options (``--beam-size`` is ``beam_size``, ...):

    :param models: model dirs (one, or several for an ensemble: log-probabilities averaged); a string is one dir. Or
        models in memory (:class:`imcap.model.CaptionModel`, e.g. ``Trainer.model`` after ``fit``), with ``vocab``.
        With ``backend="onnxruntime"``: exported dirs (``python -m imcap.export`` writes them), and only these.
    :param checkpoints: params file name per model dir (e.g. ``params.00012``, an averaged file); default
        ``params.best``.
    :param vocab: the vocabulary of models in memory (``Trainer.vocab``); not given with model dirs.
    :param search: the search settings (:class:`imcap.search_options.SearchOptions`: beam size, n-best size, length
        penalty, repeat blocking, diverse beam search, sampling, ...; default: its defaults); ``nbest_size > 1`` fills
        each result's ``nbest``: the n best, diverse beam search's groups' best (``diverse_beam_groups``) or
        ``nbest_size`` samples (``sample``). The keywords named as its fields (``beam_size=3``, ``nbest_size``,
        ``max_output_length``, ``length_penalty_alpha``, ``length_penalty_beta``, ``no_repeat_ngram_size``,
        ``allow_unk``, ``sample``, ``sampling_temperature``, ``sampling_top_k``, ``sampling_top_p``, ``seed``,
        ``diverse_beam_groups``, ``diverse_beam_strength``) override it, with ``nbest_size`` lowered to ``beam_size``
        (but with ``sample``). Sampling draws an input's captions from the seed and the input's ``line`` (default:
        its position in :meth:`caption`'s inputs, from 1) alone: the same at any ``batch_size``. Neither sampling nor
        diverse beam search meets required phrases: an input with ``constraints`` gets an error result, and
        ``guide_with_classifier`` is refused.
    :param batch_size: images searched together.
    :param keep_attention: fill each result's ``attention``.
    :param test_time_augmentations: views (``hflip``) that every model also decodes, as members of the ensemble: the
        mirrored image, or for a cached feature file its view's file beside it (:func:`imcap.features.view_path`).
    :param extract_image_features: a ``path`` names an image file for the CNN, not cached features.
    :param image_encoder: the CNN's name (``efficientnet_lite0``, a model-zoo name, ``symbol``) or a ready
        :class:`imcap.vision.image_encoder.ImageEncoder`; default: the one the model's features were made with (its
        ``config.yaml`` ``feature_extraction``). A ready encoder is used as it is (the settings below are then
        ignored), e.g. one shared by several Captioners.
    :param image_encoder_model_path: its weights; default: the model's.
    :param image_encoder_layer: the layer it is cut at; default: the model's.
    :param source_image_size: ``(height, width)`` pixels images are resized to; default: the model's.
    :param image_encoder_no_fusion: do not fuse the CNN's graph with MKLDNN.
    :param source_root: root of relative ``path`` s; default: the current directory.
    :param context: the device; default :func:`imcap.devices.get_context` (the first GPU, else the CPU). Not with
        ``backend="onnxruntime"`` (the CPU).
    :param backend: ``"mxnet"`` (model dirs or models in memory) or ``"onnxruntime"``: exported dirs
        (:mod:`imcap.export.exported`) searched on ONNX Runtime (:class:`imcap.onnx_steps.OnnxSteps`) without
        loading MXNet or GluonNLP, images through the export's image encoder
        (:class:`imcap.onnx_encoder.OnnxImageEncoder`; an export without one takes cached features only: an input
        that needs the CNN fails :meth:`caption` with :data:`NO_IMAGE_ENCODER`, unless a ready ``image_encoder`` is
        given); ``guide_expand_vocabulary`` and the image encoder's settings by name are refused.
    :param avoid_list: phrases no caption contains (the CLI's ``--avoid-list`` file, one phrase per line), besides
        each input's own ``avoid``; blank ones are skipped, one without words is skipped with a logged warning, one
        with a word outside the vocabulary cannot occur anyway. An input's constraint overrides a phrase of the list
        that occurs inside it (with a warning on the result).
    :param join_subwords: join subword-nmt's ``@@`` pieces in the captions written (models whose tokenizer is
        ``none``, trained on pre-segmented captions).
    :param guide_with_classifier: guide each caption by the CNN's ImageNet classifier (:mod:`imcap.guide`, Anderson
        et al. 2017): the words of its top classes become disjunctive constraints. The class probabilities come from
        the CNN's forward pass for pixels, from the cache beside a feature file (``imcap.extract_features`` writes
        them), or from the input's ``class_probabilities``; an input without them is captioned unguided, with a
        warning. Soft guidance and guidance against are search settings (``guide_soft_weight``, ``guide_against``
        of :class:`imcap.search_options.SearchOptions`, e.g. ``Captioner(..., guide_with_classifier=True,
        guide_top_k=0, guide_soft_weight=2.0)``); results report them (``guide_pushed``, ``guide_held_back``).
    :param guide_top_k: the most classes per image made hard constraints; 0: none.
    :param guide_min_probability: the least probability of a class made a hard constraint.
    :param guide_class_words: the class -> words mapping file; default :data:`imcap.guide.DEFAULT_CLASS_WORDS`.
    :param guide_expand_vocabulary: add the mapping's words that the model lacks, scored as their stand-ins
        (:func:`imcap.guide.expand_vocabulary`), written only where a guide asks for them.
    :raises TypeError: for an unknown search setting or one of the wrong type (naming it).
    :raises ValueError: for a search setting out of its range (naming it).
    :raises ImcapError: if a model dir (an exported dir) cannot be loaded, the models disagree on vocabulary or
        feature shape, an option is out of range, the class words file cannot be read, ``guide_with_classifier``
        comes with sampling or diverse beam search, or an option needs MXNet with ``backend="onnxruntime"``.
    """

    def __init__(self, models: Union[str, Sequence[str], Sequence["CaptionModel"]],
                 checkpoints: Union[str, Sequence[str], None] = None, *, vocab: Any = None,
                 search: Optional[SearchOptions] = None, batch_size: int = 32, keep_attention: bool = False,
                 test_time_augmentations: Union[str, Sequence[str]] = (),
                 extract_image_features: bool = False, image_encoder: Union[str, "ImageEncoder", None] = None,
                 image_encoder_model_path: Optional[str] = None, image_encoder_layer: Optional[str] = None,
                 source_image_size: Optional[Sequence[int]] = None, image_encoder_no_fusion: bool = False,
                 source_root: Optional[str] = None, context: Optional["mx.Context"] = None,
                 avoid_list: Sequence[str] = (), guide_with_classifier: bool = False,
                 guide_top_k: int = C.DEFAULT_GUIDE_TOP_K,
                 guide_min_probability: float = C.DEFAULT_GUIDE_MIN_PROBABILITY,
                 guide_class_words: Optional[str] = None, guide_expand_vocabulary: bool = False,
                 backend: str = C.BACKEND_MXNET, join_subwords: bool = False, **search_settings: Any) -> None:
        check_condition(batch_size >= 1, "batch_size must be >= 1, got %s" % batch_size)
        options = SearchOptions.of(search, **search_settings)
        views = [test_time_augmentations] if isinstance(test_time_augmentations, str) else list(test_time_augmentations)
        unknown = [v for v in views if v not in C.AUGMENTATION_CHOICES]
        check_condition(not unknown, "unknown test-time augmentation %s (choices: %s)"
                        % (", ".join(unknown), ", ".join(C.AUGMENTATION_CHOICES)))
        self.backend = backend
        self.models, self.vocab, self.feature_shape, self.context, exported_encoder = _backend_models(
            backend, models, checkpoints, vocab, context)
        check_condition(backend == C.BACKEND_MXNET or not guide_expand_vocabulary,
                        "backend onnxruntime: guide_expand_vocabulary changes the models, which needs MXNet")
        self.tokenizer = models_tokenizer(models)
        first = models if isinstance(models, str) else models[0]
        if isinstance(first, str):
            self.tokenizer.check_vocabulary(self.vocab.idx_to_token, os.path.join(first, C.VOCAB_TRG_NAME))
        self.join_subwords = join_subwords
        check_condition(not guide_with_classifier or self.tokenizer.language == "en",
                        "guide_with_classifier: the class words mapping is English; this model's captions are %r "
                        "(its tokenizer.json)" % self.tokenizer.language)
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
        self.keep_attention = keep_attention
        self.test_time_augmentations = views
        self.extract_image_features = extract_image_features
        self.source_root = source_root
        self.avoid_list = read_avoid_list(avoid_list, self.vocab.token_to_idx, self.tokenizer.tokenize)
        self.search = self._build_search(options)
        self._encoder: Optional["ImageEncoder"] = exported_encoder
        self._encoder_checked = False
        if image_encoder is not None and not isinstance(image_encoder, str):   # a ready ImageEncoder
            self._encoder = image_encoder
        self._encoder_settings: Dict[str, Any] = dict(name=image_encoder if isinstance(image_encoder, str) else None,
                                                      model_path=image_encoder_model_path,
                                                      layer=image_encoder_layer, input_size=source_image_size,
                                                      fuse=not image_encoder_no_fusion)
        self._check_encoder_settings()

    def _check_encoder_settings(self) -> None:
        """With the onnxruntime backend: an export's image encoder (or a ready one) for ``extract_image_features``,
        and no setting that would make another CNN than the exported one.

        :raises ImcapError: otherwise.
        """
        if self.backend == C.BACKEND_MXNET:
            return
        check_condition(not self.extract_image_features or self._encoder is not None, NO_IMAGE_ENCODER)
        settings = self._encoder_settings
        check_condition(not any(settings[key] for key in ("name", "model_path", "layer", "input_size")),
                        "backend onnxruntime runs the image encoder of the export as it was exported: image_encoder "
                        "(by name), image_encoder_model_path, image_encoder_layer and source_image_size need the mxnet "
                        "backend")

    @property
    def options(self) -> SearchOptions:
        """The search settings."""
        return self.search.options

    @property
    def nbest_size(self) -> int:
        """Hypotheses per result in ``nbest`` (1: ``nbest`` stays empty)."""
        return self.search.options.nbest_size

    def _build_search(self, options: SearchOptions) -> BeamSearch:
        """The beam search of ``options`` over the loaded models, with the Captioner's avoid list.

        :raises ImcapError: for a Captioner guided by the classifier and options that cannot meet constraints.
        """
        check_condition(self.guide is None or not self.guide.top_k or options.selection == "beam",
                        "guide_with_classifier with guide_top_k above 0 needs beam search (its classes are "
                        "constraints): not with %s" % ("sample" if options.sample else "diverse_beam_groups above 1"))
        check_condition(self.guide is not None or not options.guided_softly,
                        "guide_soft_weight and guide_against need a Captioner guided by the classifier "
                        "(guide_with_classifier, --guide-with-classifier)")
        runtime = self.models if self.backend == C.BACKEND_MXNET else OnnxSteps(self.models)
        return BeamSearch(runtime, self.vocab, options, keep_attention=self.keep_attention, ctx=self.context,
                          constraint_only=self.expanded_ids, avoid_list=[p.ids for p in self.avoid_list if p.ids])

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Caption tokens as text, by the models' tokenizer (subword-nmt's ``@@`` pieces joined with
        ``join_subwords``)."""
        text = self.tokenizer.detokenize(tokens)
        return join_subwords(text) if self.join_subwords else text

    def with_search_options(self, batch_size: Optional[int] = None, options: Optional[SearchOptions] = None,
                            keep_attention: Optional[bool] = None, **settings: Any) -> "Captioner":
        """A Captioner that shares this one's models, vocabulary, avoid list and CNN (if created: with
        ``extract_image_features`` it is created here; a server captioning bytes calls :meth:`get_image_encoder`
        first, else each derived Captioner makes its own), and searches with ``options`` (default: this one's), changed
        by ``settings`` (fields of :class:`SearchOptions`, e.g. ``beam_size=3, nbest_size=3``), ``batch_size`` images
        at a time (default: this one's), keeping attention as ``keep_attention`` says (default: as this one). A
        server keeps one per set of request options.

        :raises TypeError: on an unknown setting or one of the wrong type.
        :raises ValueError: on a setting out of range.
        """
        merged = (options or self.options).replace(**settings)
        check_condition(batch_size is None or batch_size >= 1, "batch_size must be >= 1, got %s" % batch_size)
        if self.extract_image_features:
            self.get_image_encoder()
        derived = copy.copy(self)
        derived.keep_attention = self.keep_attention if keep_attention is None else keep_attention
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
        backend = getattr(args, "backend", C.BACKEND_MXNET)
        context = None
        if backend == C.BACKEND_MXNET:
            from .devices import get_context
            context = get_context(args.device_ids, args.use_cpu)
        return cls(args.models, args.checkpoints, search=search_options_from_args(args), batch_size=args.batch_size,
                   keep_attention=args.output_type == C.OUTPUT_TYPE_JSON,
                   test_time_augmentations=args.test_time_augmentations,
                   extract_image_features=args.extract_image_features, image_encoder=args.image_encoder,
                   image_encoder_model_path=args.image_encoder_model_path,
                   image_encoder_layer=args.image_encoder_layer, source_image_size=args.source_image_size,
                   image_encoder_no_fusion=args.image_encoder_no_fusion, source_root=args.source_root,
                   context=context, backend=backend,
                   avoid_list=read_lines(avoid_file) if avoid_file else (),
                   guide_with_classifier=getattr(args, "guide_with_classifier", False),
                   guide_top_k=getattr(args, "guide_top_k", C.DEFAULT_GUIDE_TOP_K),
                   guide_min_probability=getattr(args, "guide_min_probability", C.DEFAULT_GUIDE_MIN_PROBABILITY),
                   guide_class_words=getattr(args, "guide_class_words", None),
                   guide_expand_vocabulary=getattr(args, "guide_expand_vocabulary", False),
                   join_subwords=getattr(args, "join_subwords", False))

    def get_image_encoder(self) -> "ImageEncoder":
        """The CNN that turns pixels into the models' features, created (and checked) on the first call.

        :raises ImcapError: if it cannot be created (unknown name, missing weights; with the onnxruntime backend
            unless one was given: :data:`NO_IMAGE_ENCODER`) or its features do not have the models' shape
            ``(regions, dim)``.
        """
        if self._encoder is None:
            check_condition(self.backend == C.BACKEND_MXNET, NO_IMAGE_ENCODER)
            from .vision.image_encoder import ImageEncoder
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
            phrase, and a warning in ``warnings`` for each phrase that could not be used as given: a phrase without
            words, a constraint word outside the vocabulary, constraint words beyond what ``max_output_length``
            leaves room for (the phrases that do not fit, in order), an avoided phrase inside a required one (the
            required phrase wins), an :class:`imcap.phrases.IgnoredPhrase`. None of these is an error.
        :raises ImcapError: if an item is not a :class:`CaptionInput`, or when an input needs the CNN and it cannot be
            created (see :meth:`get_image_encoder`).
        :raises TypeError, ValueError: before any search, if an input's ``constraints`` or ``avoid`` was changed to a
            value :class:`CaptionInput` refuses.
        """
        for position, item in enumerate(inputs):
            check_condition(isinstance(item, CaptionInput), "input %d is a %s, not a CaptionInput"
                            % (position + 1, type(item).__name__))
            check_phrases("constraints", item.constraints, alternatives=True)
            check_phrases("avoid", item.avoid)
        results: List[Optional[CaptionResult]] = [None] * len(inputs)
        pending: List[_Pending] = []
        for position, item in enumerate(inputs):
            if self._needs_pixels(item):
                self.get_image_encoder()  # outside the try: a CNN that cannot be made is not this input's fault
            try:
                arrays, pixels = self._load(item)
                phrases = self._phrases(item)
                check_condition(not phrases.required or self.options.selection == "beam",
                                "constraints need beam search: not with %s" % (
                                    "sample" if self.options.sample else "diverse_beam_groups above 1"))
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

    def _phrases(self, item: CaptionInput) -> InputPhrases:
        """The input's phrases as word ids for the search, what its result will report on them, and a warning for
        each that cannot be used as given (:func:`imcap.phrases.prepare_phrases`; see :meth:`caption`)."""
        return prepare_phrases(item.constraints, item.avoid, self.vocab.token_to_idx, self.options.max_output_length,
                               self.avoid_list, self.tokenizer.tokenize)

    def _class_probabilities(self, item: CaptionInput, phrases: InputPhrases) -> Optional[np.ndarray]:
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
            guidance = self.guide.guide(p.classes, self.options.guide_soft_weight, self.options.guide_against)
        except ImcapError as e:
            p.phrases.warnings.append("%s: not guided" % e)
            return
        p.phrases.add_guidance(guidance)

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
        keys = [_line(p.position, inputs[p.position]) for p in pending]   # sampling's random streams
        bonus = _stacked_bonus([p.phrases for p in pending], len(self.vocab))
        if any(p.phrases.required or p.phrases.avoid for p in pending):
            found = self.search.search(views, [p.phrases.required for p in pending], [p.phrases.avoid for p in pending],
                                       keys=keys, bonus=bonus)
        else:
            found = self.search.search(views, keys=keys, bonus=bonus)  # no constraints: the plain search
        for p, hyps in zip(pending, found):
            results[p.position] = self._result(p.position, inputs[p.position], hyps, phrases=p.phrases)

    def _result(self, position: int, item: CaptionInput, hyps: Optional[List[Hypothesis]] = None,
                error: Optional[str] = None, phrases: Optional[InputPhrases] = None) -> CaptionResult:
        line = _line(position, item)
        if hyps is None:
            return CaptionResult(line, [], error=error, source=item.source or "")
        best = hyps[0]
        tokens = ids_to_tokens(self.vocab, best.ids)
        nbest = [(ids_to_tokens(self.vocab, h.ids), h.score) for h in hyps] if self.nbest_size > 1 else []
        result = CaptionResult(line, tokens, best.score, best.attention, nbest, source=item.source or "",
                               detokenize=self.detokenize)
        if phrases is not None:
            result.constraints, result.avoid, result.constraints_met, result.warnings = phrases.report(tokens)
            result.guide = phrases.guides
            result.guide_pushed, result.guide_held_back = phrases.pushed, phrases.held_back
        return result


def _backend_models(backend: str, models: Any, checkpoints: Union[str, Sequence[str], None], vocab: Any,
                    context: Any) -> Tuple[List[Any], Any, Tuple[int, int], Any, Any]:
    """The models of a :class:`Captioner` on ``backend``, their vocabulary, feature shape ``(regions, dim)``, device
    and ready image encoder: :func:`load_models` (MXNet; the encoder made when first needed: None), or the exported
    dirs (:func:`imcap.export.exported.load_exported_models`: :class:`imcap.onnx_steps.OnnxModel` s, no device, the
    export's image encoder or None).

    :raises ImcapError: for an unknown backend, the models cannot be loaded, or (onnxruntime) anything but exported
        dirs, with ``checkpoints``, ``vocab`` or ``context``.
    """
    check_condition(backend in C.BACKEND_CHOICES, "unknown backend %r (choices: %s)"
                    % (backend, ", ".join(C.BACKEND_CHOICES)))
    if backend == C.BACKEND_MXNET:
        from .devices import get_context
        context = context or get_context()
        on_mxnet, vocab = load_models(models, checkpoints, vocab, context)
        return list(on_mxnet), vocab, _feature_shape(on_mxnet[0]), context, None
    folders = [models] if isinstance(models, str) else list(models)
    check_condition(all(isinstance(f, str) for f in folders), "backend onnxruntime takes exported dirs (python -m "
                                                              "imcap.export writes them), not models in memory")
    check_condition(checkpoints is None, "backend onnxruntime: no checkpoints (an exported dir holds the one "
                                         "python -m imcap.export --checkpoint chose)")
    check_condition(vocab is None and context is None, "backend onnxruntime: no vocab and no context (exported "
                                                       "dirs hold their vocabulary; ONNX Runtime runs on the CPU)")
    from .export.exported import load_exported_models
    loaded, vocab, shape, image_encoder = load_exported_models(folders)
    return loaded, vocab, shape, None, image_encoder


def models_tokenizer(models: Any) -> Tokenizer:
    """The tokenizer recorded in the model dirs (:func:`imcap.tokenizer.load_tokenizer`; ``words`` for models in
    memory and dirs without a record).

    :raises ImcapError: if the dirs record different tokenizers.
    """
    folders = [models] if isinstance(models, str) else [m for m in models if isinstance(m, str)]
    tokenizers = [load_tokenizer(folder) for folder in folders] or [make_tokenizer(WORDS)]
    records = {json.dumps(t.to_dict(), sort_keys=True) for t in tokenizers}
    check_condition(len(records) == 1, "the models have different tokenizers (%s): an ensemble needs one"
                    % "; ".join(sorted(records)))
    return tokenizers[0]


def _stacked_bonus(phrases: Sequence[InputPhrases], vocab_size: int) -> Optional[np.ndarray]:
    """``(batch, vocab)`` the soft guidance bonus of a batch's inputs (zeros for those without), or None if none has
    one."""
    if all(p.bonus is None for p in phrases):
        return None
    bonus = np.zeros((len(phrases), vocab_size), dtype=np.float64)
    for row, p in enumerate(phrases):
        if p.bonus is not None:
            bonus[row, :len(p.bonus)] = p.bonus
    return bonus


def _line(position: int, item: CaptionInput) -> int:
    """The input's number: its ``line``, else its 1-based position among the inputs."""
    return item.line if item.line is not None else position + 1


def _feature_shape(model: "CaptionModel") -> Tuple[int, int]:
    """``(regions, dim)`` of the features ``model`` was trained on (with a CNN tail: those of the cached layer, which
    the CNN cut there makes from pixels and the model's tail continues)."""
    return model.feature_shape
