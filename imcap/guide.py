"""Guided captioning: the image encoder's ImageNet classifier turned into lexical constraints, after Anderson et al.
2017 (EMNLP, "Guided Open Vocabulary Image Captioning with Constrained Beam Search").

EfficientNet-Lite's weight file holds its ImageNet classifier; :mod:`imcap.extract_features` caches its class
probabilities beside each image's features (:func:`imcap.features.classes_path`), and a Captioner that makes
features from pixels gets them from the same forward pass. The top ``top_k`` classes of an image with a probability of
at least ``min_probability`` are mapped to caption words by a reviewed mapping file of all 1000 classes
(:data:`DEFAULT_CLASS_WORDS`, :func:`read_class_words`); each class becomes one *disjunctive* constraint, met by any
one of its words that the model can write (``tabby`` -> ``cat`` or ``kitten``), searched for by dynamic beam
allocation (:mod:`imcap.constraints`). Classes whose words are already required by a higher class are skipped, so
three dog breeds ask for one ``dog``.

Anderson et al. also expand the vocabulary with the fixed GloVe embeddings of the new words, which works because their
captioner's input embeddings are GloVe's, frozen, and its output layer is tied to them. imcap's decoders learn both
their embeddings and their output layer, so a GloVe vector would mean nothing to them (and none can be downloaded
here). :func:`expand_vocabulary` gives a word the model lacks the rows of its *stand-ins* instead: the words of the
same mapping entries after it that the model knows (its more general words there, e.g. ``bird`` for ``goose``):
the model scores the new word as it would score them. Expanded words are *constraint-only*: the search writes them
only where a constraint asks for them (:class:`imcap.beam_search.BeamSearch` ``constraint_only``), so unguided
captions do not change.

Two gentler guides sit beside the hard constraints (:meth:`ClassifierGuide.guide`):

- **Soft guidance** (``guide_soft_weight``, after the late fusion of Hendricks et al. 2016, CVPR, "Deep Compositional
  Captioning", which adds an image tagger's word scores to the language model's): each word of the mapping gains
  ``weight x mass`` on its log-probability at every step until the caption has written it, where ``mass`` is the
  summed probability of the classes whose one-word alternatives include the word (at most 1). The search stays free
  to write something else; a confident class can still be a hard constraint (``top_k``, ``min_probability``).
- **Guidance against** (``guide_against``): the classifier also says what is *not* in the image. ImageNet-1k's
  animal classes (:data:`ANIMAL_CLASSES`) are many and fine-grained (120 dog breeds), so when an image's animal words
  get almost no mass the animal is not there: a one-word alternative that only animal classes list is *held back*
  (avoided, as an avoid list would, with its plural forms) when its mass is below ``guide_against`` times the image's
  most probable class's probability (a bear at 0.97 and every dog class together under 0.0097 holds back ``dog``,
  ``dogs``, ``puppy`` and ``puppies`` at 0.01), and only where a hard constraint names what the image shows instead:
  a caption whose habitual subject is held back with nothing to write in its place loses its way ("a brown and white
  and white ... is sitting on a bed").
  Objects and scenery are never held back (a photo classified as a couch can still show a table), nor people words
  (:data:`PEOPLE_WORDS`: ImageNet has no person class, so its silence says nothing of people), nor animal words with
  a common other sense (:data:`OTHER_SENSES`: cricket the sport).
"""
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .tokenizer import tokenize
from .utils import ImcapError, check_condition

logger = logging.getLogger(__name__)

#: The mapping shipped with imcap: ImageNet-1k class -> caption words, reviewed class by class.
DEFAULT_CLASS_WORDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources",
                                   "imagenet-caption-words.tsv")
#: A mapping entry that names no caption word (the class is context rather than subject, or no word is reliable).
NO_WORDS = "-"
#: ImageNet-1k's animal classes: indices 0-397 are WordNet's animal subtree (fish, birds, amphibians, reptiles,
#: invertebrates, dogs and the other mammals), 398-999 objects, food, plants and scenery.
ANIMAL_CLASSES = range(0, 398)
#: Words guidance against never holds back, whatever the mapping says: ImageNet has no person class.
PEOPLE_WORDS = frozenset("man men woman women person people boy boys girl girls child children kid kids baby babies "
                         "player players lady ladies guy guys crowd family couple".split())
#: Animal words of the mapping with a common sense outside the animal (cricket the sport, to fly), never held back.
OTHER_SENSES = frozenset({"cricket", "fly"})
#: A pushed word is reported when its bonus is at least this (log-probability units).
REPORTED_BONUS = 0.01


@dataclass
class ClassWords:
    """One entry of the mapping: an ImageNet class and the alternative phrases a caption of it may contain.

    :param index: the class's output index (0-based).
    :param name: its ImageNet name, as in the mapping file.
    :param alternatives: its caption phrases, most specific first; empty for a marked class (``-``).
    """
    index: int
    name: str
    alternatives: List[str]


def read_class_words(path: Optional[str] = None, num_classes: int = 1000) -> List[ClassWords]:
    """Read a class -> words mapping: ``#`` comment lines, then one line per class in index order,
    ``INDEX<TAB>CLASS NAME<TAB>ALTERNATIVES``, the alternatives separated by ``|`` or ``-`` for none.

    :param path: the file; default :data:`DEFAULT_CLASS_WORDS`.
    :param num_classes: the classifier's classes: every one must have its line.
    :return: ``num_classes`` entries, by index.
    :raises ImcapError: naming the file (and line) if it is missing, a line is not three fields, an index is out of
        order, an entry is empty (write ``-`` for a class without words) or an alternative has no words, or classes
        are missing.
    """
    path = path or DEFAULT_CLASS_WORDS
    check_condition(os.path.isfile(path), "%s: no such class words file (the mapping of ImageNet classes to caption "
                                          "words; imcap ships %s)" % (path, DEFAULT_CLASS_WORDS))
    entries: List[ClassWords] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            where = "%s line %d" % (path, number)
            check_condition(len(fields) == 3, "%s: needs 3 tab-separated fields (index, class name, words), got %d"
                            % (where, len(fields)))
            index, name, words = fields[0].strip(), fields[1].strip(), fields[2].strip()
            check_condition(index == str(len(entries)), "%s: class index %r, expected %d (one line per class, in "
                                                        "order)" % (where, index, len(entries)))
            check_condition(bool(words), "%s: class %d (%s) has no words; write %s for a class without caption words"
                            % (where, len(entries), name, NO_WORDS))
            alternatives = [] if words == NO_WORDS else [a.strip() for a in words.split("|")]
            empty = [a for a in alternatives if not tokenize(a)]
            check_condition(not empty, "%s: class %d (%s) has an alternative without words (%r)"
                            % (where, len(entries), name, words))
            entries.append(ClassWords(len(entries), name, alternatives))
    check_condition(len(entries) == num_classes, "%s: %d classes, the classifier has %d"
                    % (path, len(entries), num_classes))
    return entries


@dataclass
class GuideWord:
    """One class an image's caption was guided by (a field of :class:`imcap.inference.CaptionResult`).

    :param class_index: the ImageNet class.
    :param class_name: its name.
    :param probability: the classifier's probability of it for the image.
    :param words: the alternatives asked for (those the model can write), any one of which meets it.
    :param met: whether the caption contains one of them.
    """
    class_index: int
    class_name: str
    probability: float
    words: List[str]
    met: bool = False


@dataclass
class PushedWord:
    """A word soft guidance pushed for an image (:attr:`imcap.inference.CaptionResult.guide_pushed`).

    :param word: the word.
    :param probability: the summed probability of the classes that list it (at most 1).
    :param bonus: what it gained on its log-probability at each step before it was written (weight x probability).
    :param written: whether the caption has it.
    """
    word: str
    probability: float
    bonus: float
    written: bool = False


@dataclass
class HeldBackWord:
    """A word guidance against held back for an image: its classes' summed probability (an animal word the
    classifier rules out, :attr:`imcap.inference.CaptionResult.guide_held_back`)."""
    word: str
    probability: float


@dataclass
class Guidance:
    """Everything the classifier's guide does for one image (:meth:`ClassifierGuide.guide`).

    :param guides: the classes of the hard constraints, and ``constraints`` their disjunctive constraints (per class,
        the word ids of each usable alternative), as :meth:`ClassifierGuide.choose` returns them.
    :param pushed: the words soft guidance pushes by at least :data:`REPORTED_BONUS`, the largest bonus first.
    :param bonus: ``(vocab,)`` float32 what soft guidance adds to each word's log-probability, or None (weight 0).
    :param held_back: the words guidance against holds back, and ``avoid`` their word ids (one phrase each).
    """
    guides: List[GuideWord]
    constraints: List[List[List[int]]]
    pushed: List[PushedWord]
    bonus: Optional[np.ndarray]
    held_back: List[HeldBackWord]
    avoid: List[List[int]]


def plurals(word: str) -> List[str]:
    """The English plural forms a caption may use for ``word`` (regular ones: "dogs", "foxes", "puppies")."""
    forms = [word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    return forms


def check_guide_settings(soft_weight: float, against: float) -> None:
    """:raises ImcapError: if ``soft_weight`` is negative or not finite, or ``against`` is outside [0, 1]."""
    check_condition(np.isfinite(soft_weight) and soft_weight >= 0.0,
                    "guide_soft_weight must be a finite number of at least 0, got %s" % soft_weight)
    check_condition(0.0 <= against <= 1.0, "guide_against must be in [0, 1] (a share of the top class's "
                                           "probability; 0: off), got %s" % against)


class ClassifierGuide:
    """Guides captions of images by their class probabilities: hard constraints (:meth:`choose`), and soft guidance
    and guidance against (:meth:`guide`).

    :param class_words: the mapping (:func:`read_class_words`).
    :param token_to_idx: the model's vocabulary (word -> id): alternatives with a word outside it are not used.
    :param top_k: the most classes made hard constraints per image (the most probable first); 0: none.
    :param min_probability: the least probability of a class made a hard constraint.
    :raises ImcapError: if ``top_k`` < 0 or ``min_probability`` is not in [0, 1].
    """

    def __init__(self, class_words: Sequence[ClassWords], token_to_idx: Dict[str, int], top_k: int = 2,
                 min_probability: float = 0.2) -> None:
        check_condition(top_k >= 0, "guide_top_k must be >= 0, got %s" % top_k)
        check_condition(0.0 <= min_probability <= 1.0, "guide_min_probability must be in [0, 1], got %s"
                        % min_probability)
        self.class_words = list(class_words)
        self.top_k, self.min_probability = top_k, min_probability
        # per class: its usable alternatives as (text, word ids)
        self.usable: List[List[Tuple[str, List[int]]]] = []
        unknown = 0
        for entry in self.class_words:
            usable = []
            for alternative in entry.alternatives:
                tokens = tokenize(alternative)
                if all(t in token_to_idx for t in tokens):
                    usable.append((" ".join(tokens), [token_to_idx[t] for t in tokens]))
            unknown += bool(entry.alternatives) and not usable
            self.usable.append(usable)
        if unknown:
            missing = [e.name for e, u in zip(self.class_words, self.usable) if e.alternatives and not u]
            logger.warning("%d classes of the class words file have no word in the model's vocabulary (e.g. %s): "
                           "they do not guide", unknown, ", ".join(missing[:3]))
        self.vocab_size = max(token_to_idx.values()) + 1 if token_to_idx else 0
        self._index_words(token_to_idx)

    def _index_words(self, token_to_idx: Dict[str, int]) -> None:
        """The one-word alternatives the model can write: :attr:`words`, their ids, which classes list each
        (``membership (classes, words)`` 0/1) and which guidance against may hold back (``against_words``)."""
        listed: Dict[str, List[int]] = {}
        for entry in self.class_words:
            for alternative in entry.alternatives:
                tokens = tokenize(alternative)
                if len(tokens) == 1 and tokens[0] in token_to_idx:
                    listed.setdefault(tokens[0], []).append(entry.index)
        self.words = sorted(listed)
        self.word_ids = np.array([token_to_idx[w] for w in self.words], dtype=np.int64)
        self.membership = np.zeros((self.num_classes, len(self.words)), dtype=np.float64)
        for column, word in enumerate(self.words):
            self.membership[sorted(set(listed[word])), column] = 1.0
        self.forms = [[(w, token_to_idx[w])] + [(p, token_to_idx[p]) for p in plurals(w) if p in token_to_idx]
                      for w in self.words]
        never = PEOPLE_WORDS | OTHER_SENSES
        self.against_words = np.array([w not in never and all(c in ANIMAL_CLASSES for c in listed[w])
                                       for w in self.words], dtype=bool)

    @property
    def num_classes(self) -> int:
        return len(self.class_words)

    def choose(self, probabilities: np.ndarray) -> Tuple[List[GuideWord], List[List[List[int]]]]:
        """The guide of one image: the classes used and their disjunctive constraints (per class, the word ids of
        each usable alternative).

        The ``top_k`` most probable classes with at least ``min_probability`` are taken in order; a class is
        skipped if it has no usable word or shares a word with a class taken before (one constraint per object).

        :param probabilities: ``(classes,)`` the classifier's probabilities for the image.
        :raises ImcapError: if ``probabilities`` has another number of classes than the mapping.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        check_condition(len(probabilities) == self.num_classes, "class probabilities for %d classes, the class words "
                                                                "file has %d" % (len(probabilities), self.num_classes))
        order = np.argsort(-probabilities, kind="stable")[:self.top_k]
        guides: List[GuideWord] = []
        constraints: List[List[List[int]]] = []
        taken: set = set()
        for index in order:
            if probabilities[index] < self.min_probability:
                break
            usable = self.usable[index]
            texts = {text for text, _ in usable}
            if not usable or texts & taken:
                continue
            taken |= texts
            entry = self.class_words[index]
            guides.append(GuideWord(int(index), entry.name, float(probabilities[index]), [t for t, _ in usable]))
            constraints.append([ids for _, ids in usable])
        return guides, constraints

    def word_mass(self, probabilities: np.ndarray) -> np.ndarray:
        """``(words,)`` float64: per word of :attr:`words`, the summed probability of the classes that list it as a
        one-word alternative, at most 1."""
        probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        return np.minimum(probabilities @ self.membership, 1.0)

    def guide(self, probabilities: np.ndarray, soft_weight: float = 0.0, against: float = 0.0) -> Guidance:
        """The whole guide of one image: the hard constraints of :meth:`choose`, the soft guidance of
        ``soft_weight`` (each word of :attr:`words` gains ``soft_weight x`` :meth:`word_mass` on its log-probability)
        and the words held back by ``against`` (where a hard constraint names what the image shows: the animal words
        whose mass is below ``against`` times the top class's probability, and their plurals, except the hard
        constraints' words); see the module docstring.

        :param probabilities: ``(classes,)`` the classifier's probabilities for the image.
        :raises ImcapError: for probabilities of another number of classes, or settings out of range
            (:func:`check_guide_settings`).
        """
        check_guide_settings(soft_weight, against)
        guides, constraints = self.choose(probabilities) if self.top_k else ([], [])
        mass = self.word_mass(probabilities)
        pushed: List[PushedWord] = []
        bonus = None
        if soft_weight > 0.0:
            bonus = np.zeros(self.vocab_size, dtype=np.float32)
            bonus[self.word_ids] = soft_weight * mass
            order = np.argsort(-mass, kind="stable")
            pushed = [PushedWord(self.words[i], float(mass[i]), float(soft_weight * mass[i])) for i in order
                      if soft_weight * mass[i] >= REPORTED_BONUS]
        held_back, avoid = self._held_back(probabilities, mass, guides, against) if against > 0.0 else ([], [])
        return Guidance(guides, constraints, pushed, bonus, held_back, avoid)

    def _held_back(self, probabilities: np.ndarray, mass: np.ndarray, guides: Sequence[GuideWord],
                   against: float) -> Tuple[List[HeldBackWord], List[List[int]]]:
        """Guidance against: nothing unless a hard constraint names what the image shows instead (without one, a
        caption whose subject is held back has nothing to write in its place); else the animal words whose ``mass``
        is below ``against`` times the top class's probability, except the hard constraints' own, each with its
        plural forms the model knows ("dog", "dogs")."""
        if not guides:
            return [], []
        required = {w for g in guides for w in g.words}
        ruled_out = self.against_words & (mass < against * float(np.max(probabilities)))
        held_back: List[HeldBackWord] = []
        avoid: List[List[int]] = []
        for i in np.flatnonzero(ruled_out):
            for form, word_id in self.forms[i]:
                if form not in required:
                    held_back.append(HeldBackWord(form, float(mass[i])))
                    avoid.append([word_id])
        return held_back, avoid


def stand_ins(class_words: Sequence[ClassWords], token_to_idx: Dict[str, int]) -> Dict[str, List[str]]:
    """The one-word alternatives of the mapping that the model lacks, each with its stand-ins: the one-word
    alternatives after it in the same entries (its synonyms and hypernyms: entries go from the most specific word to
    the most general) that the model knows; :func:`expand_vocabulary` gives the new word their rows. Words without
    any stand-in are left out."""
    found: Dict[str, List[str]] = {}
    for entry in class_words:
        words = [tokenize(a) for a in entry.alternatives]
        for i, w in enumerate(words):
            known = [v[0] for v in words[i + 1:] if len(v) == 1 and v[0] in token_to_idx]
            if len(w) == 1 and w[0] not in token_to_idx and known:
                found.setdefault(w[0], [])
                found[w[0]] += [k for k in known if k not in found[w[0]]]
    return found


def expand_vocabulary(models: Sequence[Any], vocab: Any, new_words: Dict[str, List[str]]) -> Tuple[List[Any], Any,
                                                                                                        List[int]]:
    """Models and a vocabulary that also hold ``new_words``, each scored as the mean of its stand-ins.

    Each model is rebuilt with ``len(new_words)`` more target words: every parameter is copied, and the new rows of
    the target embedding, the output layer's weight and its bias are the means of the stand-ins' rows (with tied
    weights, the one shared matrix).

    :param models: :class:`imcap.model.CaptionModel` s over ``vocab``.
    :param vocab: their vocabulary (GluonNLP ``Vocab``).
    :param new_words: word -> stand-in words of ``vocab`` (:func:`stand_ins`); words already in ``vocab`` are skipped.
    :return: ``(models, vocab, new_ids)``: the new ids are those of the added words, which the search should write
        only where a constraint asks for them.
    :raises ImcapError: if a stand-in is not in ``vocab``.
    """
    import gluonnlp as nlp
    import mxnet as mx

    from .model import CaptionModel

    added = [w for w in sorted(new_words) if w not in vocab.token_to_idx]
    if not added:
        return list(models), vocab, []
    for word in added:
        bad = [s for s in new_words[word] if s not in vocab.token_to_idx]
        check_condition(bool(new_words[word]) and not bad, "stand-ins of %r must be words of the vocabulary: %s"
                        % (word, bad or "none given"))
    spec = json.loads(vocab.to_json())
    start = len(spec["idx_to_token"])
    spec["idx_to_token"] += added
    spec["token_to_idx"].update({w: start + i for i, w in enumerate(added)})
    new_vocab = nlp.Vocab.from_json(json.dumps(spec))
    rows = [[vocab.token_to_idx[s] for s in new_words[w]] for w in added]
    expanded = []
    for model in models:
        config = dataclasses.replace(model.config, vocab_size=len(new_vocab))
        bigger = CaptionModel(config, prefix="model_")
        old = model.collect_params()
        ctx = next(iter(old.values())).list_ctx()
        bigger.initialize(mx.init.Zero(), ctx=ctx)
        targets = bigger.collect_params()
        check_condition(sorted(targets.keys()) == sorted(old.keys()), "cannot expand the vocabulary of this model: "
                                                                      "its parameters differ from a rebuilt one's")
        for name, param in old.items():
            target = targets[name]
            value = param.data().asnumpy()
            if tuple(target.shape) != value.shape:   # the vocabulary axis (the first) grew
                extra = np.stack([value[r].mean(axis=0) for r in rows])
                value = np.concatenate([value, extra.astype(value.dtype)], axis=0)
            check_condition(tuple(target.shape) == value.shape, "cannot expand parameter %s: shape %s, expected %s"
                            % (name, value.shape, tuple(target.shape)))
            target.set_data(mx.nd.array(value, ctx=ctx[0], dtype=value.dtype))
        bigger.hybridize()
        expanded.append(bigger)
    return expanded, new_vocab, [start + i for i in range(len(added))]


__all__ = ["ANIMAL_CLASSES", "ClassWords", "ClassifierGuide", "DEFAULT_CLASS_WORDS", "GuideWord", "Guidance",
           "HeldBackWord", "ImcapError", "NO_WORDS", "OTHER_SENSES", "PEOPLE_WORDS", "PushedWord", "REPORTED_BONUS",
           "check_guide_settings", "expand_vocabulary", "plurals", "read_class_words", "stand_ins"]
