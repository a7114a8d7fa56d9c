"""Batched beam search over one model or an ensemble, built from small tested pieces (after Sockeye's
``beam_search.py``): length penalty, candidate scoring, top-k and finished-hypothesis bookkeeping.

Several images are searched at once: states have ``batch * beam`` rows, row ``i * beam + k`` being hypothesis
``k`` of image ``i``. A hypothesis only ever continues hypotheses of its own image, so the image-dependent
(static) states are repeated once and never reordered; only the recurrent (dynamic) states are.

Scores are sums of log-probabilities (natural log); hypotheses are ranked by ``score / lp(length)`` with the
GNMT length penalty ``lp(n) = ((beta + n) / (beta + 1)) ** alpha`` (Wu et al. 2016), ``n`` counting ``</s>``.

Lexical constraints (:mod:`imcap.constraints`): phrases each image's caption must contain, found by dynamic beam
allocation (Post & Vilar 2018, vectorized as Hu et al. 2019), and phrases it must not contain (its own and a global
avoid list). A batch without any takes the plain path, unchanged.

Several different captions per image, besides the n-best: diverse beam search (Vijayakumar et al. 2018: the beam in
groups, each penalized for the words the groups before it chose at the same step) and sampling (each of an image's
``nbest_size`` hypotheses draws its words at random, with temperature, top-k and nucleus cut-offs; the draws of an image
depend on the seed and the image's key, its place in the input, never on its batch: :func:`sampling_uniforms`).
Neither takes required phrases.

The search is a loop over named steps (:meth:`BeamSearch.search`): **score** (the models' next-word
log-probabilities, restricted by the rules: words never written, repeat blocking, avoided phrases, ``</s>`` before the
constraints are met), **select** (the ``beam`` best continuations of each image, or dynamic beam allocation; or the
alternatives :meth:`BeamSearch.select_diverse` and :meth:`BeamSearch.select_sample`),
**advance** (the beam's bookkeeping: lengths, finished hypotheses, history, the constraints' progress, the exact
early stop), **shrink** (images whose hypotheses have all ended leave the computation) and **collect** (each image's
n best). The models sit behind the step contract of :mod:`imcap.search_steps`, which another runtime can implement.
This module imports no MXNet.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

import numpy as np

from . import constants as C
from .constraints import NEG_INF, AvoidTrie, Constraint, Phrase, SearchConstraints, as_alternatives
from .search_options import SearchOptions
from .vocab import ids_to_tokens, never_generated, never_generated_bias


def length_penalty(lengths: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """GNMT length penalty ``((beta + n) / (beta + 1)) ** alpha``; ``alpha = 0`` gives 1 (no normalization)."""
    if alpha == 0.0:
        return np.ones_like(lengths, dtype=np.float64)
    return ((beta + lengths.astype(np.float64)) / (beta + 1.0)) ** alpha


def mask_finished(log_probs: np.ndarray, finished: np.ndarray, pad_id: int,
                  words: Optional[np.ndarray] = None) -> np.ndarray:
    """Finished hypotheses may only be continued by ``<pad>`` at no cost, which keeps their score.

    :param log_probs: ``(rows, vocab)``, or ``(rows, k)`` scores of the preselected ``words``; changed in place and
        returned.
    :param finished: ``(rows,)`` bool.
    :param words: ``(rows, k)`` int word ids of the columns of ``log_probs`` (None: column = word id); a finished
        row's first column becomes ``<pad>`` (changed in place).
    """
    if finished.any():
        log_probs[finished] = NEG_INF
        if words is None:
            log_probs[finished, pad_id] = 0.0
        else:
            log_probs[finished, 0] = 0.0
            words[finished, 0] = pad_id
    return log_probs


def block_repeated_ngrams(log_probs: np.ndarray, history: np.ndarray, n: int,
                          keep: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """Forbid, in each row, every word that would repeat an n-gram the row's history already holds (the
    ``--no-repeat-ngram-size`` of fairseq, ``-block_ngram_repeat`` of OpenNMT): the words that followed an earlier
    occurrence of the row's last ``n - 1`` words. Vectorized over rows and positions.

    :param log_probs: ``(rows, vocab)`` scores of the next word; changed in place and returned.
    :param history: ``(rows, t)`` word ids generated so far (the start symbol excluded).
    :param n: n-gram size, at least 2; 0 means off (1 would forbid every word used before, and is refused).
    :param keep: ``(rows, words)``, two flat int arrays of pairs never blocked (the words that advance a required
        phrase: lexical constraints win over the rule).
    :raises ValueError: for ``n == 1``.
    """
    if n == 1:
        raise ValueError("n-gram blocking needs n = 0 (off) or n >= 2")
    t = history.shape[1]
    if n <= 0 or t < n:
        return log_probs
    kept = log_probs[keep[0], keep[1]] if keep is not None else None
    windows = np.lib.stride_tricks.sliding_window_view(history, n, axis=1)      # (rows, t - n + 1, n)
    prefix = history[:, t - n + 1:]                                              # (rows, n - 1)
    matches = (windows[:, :, :n - 1] == prefix[:, None, :]).all(axis=2)          # (rows, t - n + 1)
    rows, positions = np.nonzero(matches)
    log_probs[rows, windows[rows, positions, n - 1]] = NEG_INF
    if keep is not None:
        log_probs[keep[0], keep[1]] = kept
    return log_probs


def beaten_hypotheses(scores: np.ndarray, lengths: np.ndarray, finished: np.ndarray, nbest: int, max_length: int,
                      alpha: float, beta: float) -> np.ndarray:
    """The open hypotheses that can no longer enter their image's ``nbest`` best, whatever words follow: the
    search may end them now and return the same captions (an exact stop, unlike Sockeye's ``--beam-search-stop
    first``).

    A hypothesis's score is a sum of log-probabilities (<= 0) and only falls, while the length penalty only grows;
    so no continuation of an open hypothesis with score ``s`` normalizes to more than ``s / lp(max_length)``. An
    image whose ``nbest``-th best finished hypothesis beats that bound for each of its open ones is done.

    :param scores: ``(batch, beam)`` summed log-probabilities; ``lengths`` and ``finished`` likewise.
    :return: ``(batch * beam,)`` bool, the open rows of the images that are done.
    """
    batch, beam = scores.shape
    normalized = np.where(finished, scores / length_penalty(lengths, alpha, beta), -np.inf)
    best_finished = np.sort(normalized, axis=1)[:, beam - nbest]                       # the nbest-th best
    bound = np.where(finished, -np.inf, scores / length_penalty(np.array(max_length), alpha, beta)).max(axis=1)
    return ((best_finished > bound)[:, None] & ~finished).reshape(batch * beam)


def top_k(scores: np.ndarray, k: int):
    """Best ``k`` entries per row of ``scores (batch, n)``, best first: ``(values, indices)`` each ``(batch, k)``."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(part, order, axis=1)


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wrapping arithmetic): a bijection that scatters its input."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def sampling_uniforms(seed: int, keys: np.ndarray, samples: int, step: int) -> np.ndarray:
    """The uniform numbers in ``[0, 1)`` that sampling draws with at ``step``: ``(len(keys), samples)`` float64, entry
    ``(i, j)`` a hash of ``(seed, keys[i], j, step)`` alone (counter-based, SplitMix64 chained), so that sample ``j``
    of the image of key ``keys[i]`` (its place in the input) is drawn the same in any batch, at any batch size.

    :param keys: ``(batch,)`` ints (64 bits; a negative one is taken modulo ``2 ** 64``).
    """
    with np.errstate(over="ignore"):
        h = _mix(np.full(1, seed, dtype=np.uint64))
        h = _mix(h ^ np.asarray(keys, dtype=np.int64).astype(np.uint64))[:, None]
        h = _mix(h ^ np.arange(samples, dtype=np.uint64)[None, :])
        h = _mix(h ^ np.uint64(step))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2 ** 53)


def best_words(logits: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best words of each row of ``logits (rows, vocab)``, best first (equal values: the lower word id
    first): ``(words, values)`` each ``(rows, k)``. Each row's are found from that row alone."""
    vocab = logits.shape[1]
    k = min(k, vocab)
    if k < vocab:
        part = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(vocab), logits.shape)
    values = np.take_along_axis(logits, part, axis=1)
    order = np.lexsort((part, -values), axis=-1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


def nucleus(values: np.ndarray, top_p: float, total: Optional[np.ndarray] = None) -> np.ndarray:
    """``values (rows, c)`` log-weights, best first, with those after each row's nucleus at ``-inf``: the nucleus is
    the fewest first words whose weight reaches ``top_p`` of ``total`` (default: the row's sum of weights)."""
    cumulative = np.cumsum(np.exp(values), axis=1)
    total = cumulative[:, -1] if total is None else total
    size = (cumulative < top_p * total[:, None]).sum(axis=1) + 1
    return np.where(np.arange(values.shape[1]) < size[:, None], values, -np.inf)


def nucleus_words(logits: np.ndarray, top_p: float, first: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's nucleus (:func:`nucleus` over the whole vocabulary) as ``(words, values)`` best first, ``-inf``
    after it, without sorting the whole vocabulary: the ``first`` best words, four times as many for the rows whose
    nucleus is longer, and so on (each row's words found from that row alone)."""
    rows, vocab = logits.shape
    total = np.exp(logits).sum(axis=1)
    words, values = np.zeros((rows, vocab), dtype=np.int64), np.full((rows, vocab), -np.inf)
    todo, k, width = np.arange(rows), min(first, vocab), 1
    while len(todo):
        found, kept = best_words(logits[todo], k)
        kept = nucleus(kept, top_p, total[todo])
        done = np.isneginf(kept[:, -1]) | (k == vocab)
        words[todo[done], :k], values[todo[done], :k] = found[done], kept[done]
        width = max(width, k) if done.any() else width
        todo, k = todo[~done], min(4 * k, vocab)
    return words[:, :width], values[:, :width]


def sample_words(log_probs: np.ndarray, uniforms: np.ndarray, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> np.ndarray:
    """One word per row of ``log_probs (rows, vocab)`` (forbidden words at ``NEG_INF`` are never drawn), drawn by
    inverting the cumulative distribution at ``uniforms (rows,)`` in ``[0, 1)``: the log-probabilities divided by
    ``temperature``, then only the ``top_k`` likeliest words (0: all), then only the nucleus of ``top_p`` of what is
    left (1: all). Without a cut-off the words are taken in id order, with one best first.

    :return: ``(rows,)`` int64 word ids.
    """
    with np.errstate(over="ignore"):   # a temperature near 0: the unlikely words' logits overflow to -inf
        logits = np.where(log_probs <= NEG_INF / 2, -np.inf,
                          (log_probs - log_probs.max(axis=1, keepdims=True)) / temperature)
    words: Optional[np.ndarray] = None
    if 0 < top_k < logits.shape[1]:
        words, logits = best_words(logits, top_k)
        if top_p < 1.0:
            logits = nucleus(logits, top_p)
    elif top_p < 1.0:
        words, logits = nucleus_words(logits, top_p)
    cumulative = np.cumsum(np.exp(logits), axis=1)
    chosen = (cumulative <= (uniforms * cumulative[:, -1])[:, None]).sum(axis=1)
    chosen = np.minimum(chosen, logits.shape[1] - 1)
    return chosen.astype(np.int64) if words is None else words[np.arange(len(chosen)), chosen]


def best_captions(search: "BeamSearch", vocab, features: Union[np.ndarray, Sequence[np.ndarray]],
                  batch_size: int = 32) -> List[str]:
    """The best caption (space-joined tokens) of each image of ``features (images, regions, dim)`` (or a list of
    such arrays, one per view, see :meth:`BeamSearch.search`), searched ``batch_size`` images at a time."""
    views = [features] if isinstance(features, np.ndarray) else list(features)
    captions = []
    for start in range(0, len(views[0]), batch_size):
        for hyps in search.search([v[start:start + batch_size].astype(np.float32) for v in views]):
            captions.append(" ".join(ids_to_tokens(vocab, hyps[0].ids)))
    return captions


class Hypothesis(NamedTuple):
    """A finished caption: word ids (without ``</s>``), its log-probability, its normalized score, the
    attention ``(length, regions)`` of each generated word (``</s>`` included) and, when its image had required
    phrases, whether the search met them all (None otherwise)."""
    ids: List[int]
    log_prob: float
    score: float
    attention: Optional[np.ndarray]
    constraints_met: Optional[bool] = None


@dataclass
class BeamState:
    """The beam of one batch search between steps; rows ``i * beam + j`` are hypothesis ``j`` of image ``i``.

    :param scores: ``(batch, beam)`` float64 summed log-probabilities (``NEG_INF``: no hypothesis).
    :param finished: ``(rows,)`` bool, the hypothesis has written ``</s>`` (or was stopped).
    :param lengths: ``(rows,)`` int64 words written, ``</s>`` included.
    :param history: ``(rows, t)`` int64 words written (``<pad>`` after ``</s>``).
    :param attention: per step, ``(rows, regions)`` float32 attention (empty unless kept).
    :param computed: ``(computed rows,)`` int64, the rows the models step: those of images still searched.
    :param words: ``(rows,)`` int64 the last word of each row (``<s>`` at the start).
    :param keys: ``(batch,)`` int64 each image's place in the input, whose random draws sampling makes
        (:func:`sampling_uniforms`).
    :param bonus: ``(batch, vocab)`` float64 soft guidance's bonus of each image's words, or None.
    """
    scores: np.ndarray
    finished: np.ndarray
    lengths: np.ndarray
    history: np.ndarray
    attention: List[np.ndarray]
    computed: np.ndarray
    words: np.ndarray
    keys: Optional[np.ndarray] = None
    bonus: Optional[np.ndarray] = None

    @classmethod
    def start(cls, batch: int, beam: int, bos: int, groups: int = 1,
              keys: Optional[Sequence[int]] = None) -> "BeamState":
        """The beam before the first word: one live hypothesis per image (the others start at ``NEG_INF``, as all
        would be the same), or per group of ``beam / groups`` hypotheses (diverse beam search's groups; sampling's
        samples, each a group of one). ``keys``: the images' places in the input (default: ``0 .. batch - 1``)."""
        rows = batch * beam
        scores = np.zeros((batch, beam), dtype=np.float64)
        scores[:, 1:] = NEG_INF
        if groups > 1:
            scores[:, ::beam // groups] = 0.0
        places = np.arange(batch, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        return cls(scores, np.zeros(rows, dtype=bool), np.zeros(rows, dtype=np.int64),
                   np.zeros((rows, 0), dtype=np.int64), [], np.arange(rows), np.full(rows, bos, dtype=np.int64), places)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(batch, beam)``."""
        return cast(Tuple[int, int], self.scores.shape)


class Scored(NamedTuple):
    """The **score** step's output: ``log_probs (rows, width)`` float64 next-word log-probabilities (the members'
    mean; forbidden words at ``NEG_INF``), ``words (rows, width)`` int64 the word of each column (None: column =
    word id, ``width`` = vocabulary size) and ``attention (rows, regions)`` (None unless kept)."""
    log_probs: np.ndarray
    words: Optional[np.ndarray]
    attention: Optional[np.ndarray]


class Selected(NamedTuple):
    """The **select** step's output, each ``(rows,)``: the row each new hypothesis extends (``origin``), its word,
    its summed log-probability (``scores``, ``(batch, beam)``), its length, and whether it is a real hypothesis
    (``active``; None without dynamic beam allocation, where all are)."""
    origin: np.ndarray
    words: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    active: Optional[np.ndarray]


class BeamSearch:
    """Beam search over ``models`` (an ensemble averages their log-probabilities), each on one or several views of
    the images (test-time augmentation: every model on every view is a member of the ensemble).

    :param models: :class:`imcap.model.CaptionModel` objects with the same vocabulary (stepped by
        :class:`imcap.mxnet_steps.MXNetSteps`), or a ready runtime of the step contract (:mod:`imcap.search_steps`).
    :param vocab: the target vocabulary.
    :param options: the search settings (:class:`imcap.search_options.SearchOptions`; default: its defaults). Keywords
        named as its fields (``beam_size=3``, ...) override them. ``nbest_size`` above ``beam_size`` is lowered to it.
    :param keep_attention: also return per-word attention over the regions.
    :param ctx: the MXNet device of the models (with models, not with a runtime).
    :param avoid_list: phrases (word id lists) no caption contains, whatever the image (the global avoid list).
    :param constraint_only: word ids the search writes only where they advance a required phrase (words added to the
        vocabulary for guided captioning, :func:`imcap.guide.expand_vocabulary`): elsewhere they are never written.
    :raises TypeError: for an unknown setting or a value of the wrong type (:class:`SearchOptions`).
    :raises ValueError: for a setting out of its range (``no_repeat_ngram_size`` 1 or negative, ...), or an avoid list
        phrase that is not a list of word ids the search can write.
    """

    def __init__(self, models: Any, vocab, options: Optional[SearchOptions] = None, *, keep_attention: bool = False,
                 ctx: Any = None, avoid_list: Sequence[Phrase] = (), constraint_only: Sequence[int] = (),
                 **settings: Any) -> None:
        self.options = SearchOptions.of(options, **settings)
        if hasattr(models, "step") and hasattr(models, "start"):
            self.steps = models
        else:
            from .mxnet_steps import MXNetSteps
            self.steps = MXNetSteps(models, ctx)
        self.models = getattr(self.steps, "models", [])
        self.keep_attention = keep_attention
        self.bos, self.eos, self.pad = vocab[C.BOS_SYMBOL], vocab[C.EOS_SYMBOL], vocab[C.PAD_SYMBOL]
        self.vocab_size = len(vocab)
        self.blocked = never_generated(vocab, self.options.allow_unk)
        self.constraint_only = np.array(sorted({int(w) for w in constraint_only}), dtype=np.int64)
        self._blocked_bias = never_generated_bias(vocab, NEG_INF, self.options.allow_unk)   # (1, vocab)
        self._blocked_bias[0, self.constraint_only] = NEG_INF
        self.avoid_list = frozenset(tuple(self._check_phrase(p, "avoid list")) for p in avoid_list)
        self._avoid_trie = AvoidTrie([sorted(self.avoid_list)]) if self.avoid_list else None

    # the settings, by their old attribute names
    beam_size = property(lambda self: self.options.beam_size)
    max_output_length = property(lambda self: self.options.max_output_length)
    alpha = property(lambda self: self.options.length_penalty_alpha)
    beta = property(lambda self: self.options.length_penalty_beta)
    nbest_size = property(lambda self: self.options.nbest_size)
    no_repeat_ngram_size = property(lambda self: self.options.no_repeat_ngram_size)

    def _check_phrase(self, phrase: Phrase, what: str) -> List[int]:
        """``phrase`` as a list of ints, checked to be non-empty word ids the search may write.

        :raises ValueError: otherwise.
        """
        ids = [int(w) for w in phrase]
        bad = [w for w in ids if w < 0 or w >= self.vocab_size or w in self.blocked or w == self.eos]
        if not ids or bad:
            raise ValueError("%s phrase %r: needs word ids of words a caption may contain" % (what, list(phrase)))
        return ids

    def _constraints(self, batch: int, constraints: Optional[Sequence[Sequence[Union[Phrase, Constraint]]]],
                     avoid: Optional[Sequence[Sequence[Phrase]]]) -> Optional[SearchConstraints]:
        """The constraints of a batch search, or None when there are none (the plain search).

        :raises ValueError: for lists of another length than the batch, or phrases that are not word ids.
        """
        if not any(constraints or ()) and not any(avoid or ()) and self._avoid_trie is None:
            return None
        lists: List[Any] = []
        for name, given in (("constraints", constraints), ("avoid", avoid)):
            given = list(given) if given is not None else [[] for _ in range(batch)]
            if len(given) != batch:
                raise ValueError("%s: %d lists of phrases for %d images" % (name, len(given), batch))
            if name == "constraints":  # each a phrase, or a list of alternative phrases (a disjunctive constraint)
                lists.append([[[self._check_phrase(p, name) for p in as_alternatives(c)] for c in (image or [])]
                              for image in given])
            else:
                lists.append([[self._check_phrase(cast(Phrase, p), name) for p in (phrases or [])]
                              for phrases in given])
        return SearchConstraints(lists[0], lists[1], self.options.hypotheses_per_image, self._avoid_trie,
                                 self.avoid_list)

    def search(self, features: Union[np.ndarray, Sequence[np.ndarray]],
               constraints: Optional[Sequence[Sequence[Union[Phrase, Constraint]]]] = None,
               avoid: Optional[Sequence[Sequence[Phrase]]] = None, *,
               keys: Optional[Sequence[int]] = None, bonus: Optional[np.ndarray] = None) -> List[List[Hypothesis]]:
        """Caption a batch of images.

        :param features: ``(batch, regions, feature_dim)`` float, or a list of such arrays, one per view of the
            same images (e.g. the original and the mirrored image): each model runs on each view and the
            log-probabilities of all these members are averaged.
        :param constraints: per image, the phrases (word id lists) its caption must contain, each as consecutive
            words (an empty list: none); a constraint may instead be a list of alternative phrases, of which the
            caption must contain one (a disjunctive constraint, :func:`imcap.constraints.as_alternatives`). A
            hypothesis may only end once it has met them all; if none has when
            ``max_output_length`` ends the search, the best hypotheses found are returned (``constraints_met``
            False), else only those that met them all (so an image's n-best may be shorter than ``nbest_size``).
        :param avoid: per image, phrases its caption must not contain, besides the avoid list. A phrase that
            occurs inside one of the image's required phrases is not avoided for that image.
        :param keys: per image, its place in the input (an int), on which alone, with the seed, its samples depend
            (``sample``); default: ``0 .. batch - 1``.
        :param bonus: ``(batch, vocab)`` float, added to each word's log-probability (the members' mean) at each
            step until the hypothesis has written the word (soft guidance, :meth:`imcap.guide.ClassifierGuide.guide`);
            hypotheses' scores include it.
        :return: per image, its ``nbest_size`` best hypotheses, best first (diverse beam search: each group's best
            first; sampling: the samples).
        :raises ValueError: if ``constraints`` or ``avoid`` is not one list per image of lists of word ids that a
            caption may contain, if there are required phrases with ``sample`` or ``diverse_beam_groups`` above 1,
            or if ``keys`` are not one int per image, or ``bonus`` is not ``(batch, vocab)``.
        """
        views = [features] if isinstance(features, np.ndarray) else list(features)
        batch = views[0].shape[0]
        guide = self._constraints(batch, constraints, avoid)                  # None: the plain search
        dba = guide if guide is not None and guide.has_required else None      # dynamic beam allocation
        if dba is not None and self.options.selection != "beam":
            raise ValueError("required phrases (constraints) need beam search: not with %s"
                             % ("sample" if self.options.sample else "diverse_beam_groups above 1"))
        if keys is not None and len(keys) != batch:
            raise ValueError("keys: %d for %d images" % (len(keys), batch))
        if bonus is not None and np.shape(bonus) != (batch, self.vocab_size):
            raise ValueError("bonus: shape %s, expected (batch, vocab) = (%d, %d)" % (np.shape(bonus), batch,
                                                                                       self.vocab_size))

        rows = self.options.hypotheses_per_image
        self.steps.start(views, rows)
        beam = BeamState.start(batch, rows, self.bos, self._live_groups(), keys)
        beam.bonus = None if bonus is None else np.asarray(bonus, dtype=np.float64)
        select = self._select_step()
        for t in range(self.max_output_length):
            last = t + 1 == self.max_output_length
            scored = self.score(beam, guide, dba, last)
            selected = select(beam, scored, dba)
            self.advance(beam, selected, scored.attention, guide, dba)
            if beam.finished.all():
                break
            self.shrink(beam, selected.origin)
        return self.collect(beam, dba)

    # -- score -------------------------------------------------------------------------------------------------

    def score(self, beam: BeamState, guide: Optional[SearchConstraints], dba: Optional[SearchConstraints],
              last: bool) -> Scored:
        """**Score**: step the models on each computed row's last word, and restrict the next words by the rules.

        Without any rule to apply (no constraints, no repeat blocking, not the last step) only each row's ``beam``
        best words can be among its image's ``beam`` best continuations (or its group's, in diverse beam search: a
        group's penalty falls on fewer than ``beam`` words), so they are found on the device (:meth:`preselect`);
        otherwise, and to sample, every word of every row is scored on the host (:meth:`restrict`).
        Finished rows may only be continued by ``<pad>`` at no cost (:func:`mask_finished`).
        """
        summed, attention = self.steps.step(beam.words[beam.computed], self.keep_attention)
        rows, k = beam.finished.shape[0], self.beam_size
        if attention is not None:
            attention = self._all_rows(attention, beam.computed, rows)
        if guide is None and not self.no_repeat_ngram_size and not last and k < self.vocab_size \
                and not self.options.sample and beam.bonus is None:
            log_probs, words = self.preselect(summed, beam.computed, rows)     # (rows, k) each
        else:
            log_probs, words = self.restrict(summed, beam, guide, dba, last), None
        return Scored(mask_finished(log_probs, beam.finished, self.pad, words), words, attention)

    def preselect(self, summed: Any, computed: np.ndarray, rows: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``beam`` best words of each computed row, found by the runtime (so only ``(rows, beam)`` values reach
        the host), the words the search never writes excluded.

        :param summed: the runtime's sum of the members' log-probabilities ``(computed rows, vocab)``.
        :return: ``(rows, beam)`` float64 log-probabilities (the members' mean), best first, and their ``(rows,
            beam)`` int64 word ids; zeros for rows not computed.
        """
        values, words = self.steps.row_best(summed, self._blocked_bias, self.beam_size)
        values = self._all_rows(values.astype(np.float64), computed, rows)
        if self.steps.num_members > 1:
            values /= self.steps.num_members
        return values, self._all_rows(words.astype(np.int64), computed, rows)

    def restrict(self, summed: Any, beam: BeamState, guide: Optional[SearchConstraints],
                 dba: Optional[SearchConstraints], last: bool) -> np.ndarray:
        """Every word of every row, ``(rows, vocab)`` float64 (the members' mean), with the words the rules forbid at
        ``NEG_INF``: those never written, constraint-only words that advance no required phrase, repeated n-grams
        (except words that advance a required phrase), avoided phrases, ``</s>`` before every required phrase is met;
        at the ``last`` step every word but ``</s>``."""
        rows = beam.finished.shape[0]
        log_probs = self._all_rows(self.steps.to_host(summed).astype(np.float64), beam.computed, rows)
        if self.steps.num_members > 1:
            log_probs /= self.steps.num_members
        if beam.bonus is not None:
            self._add_bonus(log_probs, beam)
        log_probs[:, self.blocked] = NEG_INF
        if len(self.constraint_only):
            self._block_constraint_only(log_probs, dba)
        if self.no_repeat_ngram_size:
            block_repeated_ngrams(log_probs, beam.history, self.no_repeat_ngram_size,
                                  dba.constraint_words() if dba is not None else None)
        if guide is not None:  # avoided phrases; </s> before every required phrase is met (but at the end)
            guide.block(log_probs, None if last else self.eos)
        if last:  # the last step must end every open hypothesis
            forced = np.full_like(log_probs, NEG_INF)
            forced[:, self.eos] = log_probs[:, self.eos]
            log_probs = forced
        return log_probs

    @staticmethod
    def _add_bonus(log_probs: np.ndarray, beam: BeamState) -> None:
        """Add, in place, each row's image's bonus to ``log_probs (rows, vocab)``, except on the words the row has
        written already."""
        assert beam.bonus is not None
        bonus = np.repeat(beam.bonus, beam.shape[1], axis=0)
        if beam.history.shape[1]:
            np.put_along_axis(bonus, beam.history, 0.0, axis=1)
        log_probs += bonus

    def _block_constraint_only(self, log_probs: np.ndarray, dba: Optional[SearchConstraints]) -> None:
        """Forbid, in place, the :attr:`constraint_only` words of ``log_probs (rows, vocab)`` except in the rows
        where they advance a required phrase."""
        keep_rows, keep_words = dba.constraint_words() if dba is not None else (np.zeros(0, int), np.zeros(0, int))
        kept = np.isin(keep_words, self.constraint_only)
        keep_rows, keep_words = keep_rows[kept], keep_words[kept]
        values = log_probs[keep_rows, keep_words]
        log_probs[:, self.constraint_only] = NEG_INF
        log_probs[keep_rows, keep_words] = values

    @staticmethod
    def _all_rows(values: np.ndarray, computed: np.ndarray, rows: int) -> np.ndarray:
        """Per-row ``values`` of the ``computed`` rows → all ``rows`` (zeros for the others, rows of images whose
        hypotheses have all ended: the search masks them)."""
        if len(computed) == rows:
            return values
        full = np.zeros((rows,) + values.shape[1:], dtype=values.dtype)
        full[computed] = values
        return full

    # -- select ------------------------------------------------------------------------------------------------

    def select(self, beam: BeamState, scored: Scored, dba: Optional[SearchConstraints]) -> Selected:
        """**Select**: the ``beam`` best continuations of each image by length-normalized score (the GNMT penalty
        of the new lengths), or by dynamic beam allocation into banks when the batch has required phrases."""
        (batch, k), log_probs = beam.shape, scored.log_probs
        rows, width = batch * k, log_probs.shape[1]                         # width: vocab, or k preselected words
        new_lengths = beam.lengths + (~beam.finished)
        candidates = beam.scores.reshape(rows, 1) + log_probs
        normalized = candidates / length_penalty(new_lengths, self.alpha, self.beta)[:, None]
        active = None
        if dba is not None:
            best, active = dba.candidates(normalized, candidates, k)        # (batch, k) each
        else:
            _, best = top_k(normalized.reshape(batch, k * width), k)      # (batch, k)
        return self._selected(scored, candidates, best, new_lengths, active)

    @staticmethod
    def _selected(scored: Scored, candidates: np.ndarray, best: np.ndarray, new_lengths: np.ndarray,
                  active: Optional[np.ndarray]) -> Selected:
        """The hypotheses of the ``best (batch, k)`` candidates of each image (indexes into its ``(k, width)``
        continuations; ``candidates (rows, width)`` their summed log-probabilities)."""
        (batch, k), width = best.shape, candidates.shape[1]
        rows = batch * k
        origin = (best // width + (np.arange(batch) * k)[:, None]).reshape(rows)
        words = (best % width if scored.words is None else
                 scored.words.reshape(batch, k * width)[np.arange(batch)[:, None], best]).reshape(rows)
        scores = candidates.reshape(batch, k * width)[np.arange(batch)[:, None], best]
        return Selected(origin, words, scores, new_lengths[origin], active)

    def _select_step(self) -> Any:
        """The **select** step of the options: :meth:`select`, :meth:`select_diverse` or :meth:`select_sample`."""
        return {"beam": self.select, "diverse": self.select_diverse,
                "sample": self.select_sample}[self.options.selection]

    def _live_groups(self) -> int:
        """The groups of hypotheses of an image that start live (:meth:`BeamState.start`)."""
        selection = self.options.selection
        if selection == "sample":
            return self.nbest_size
        return self.options.diverse_beam_groups if selection == "diverse" else 1

    def select_diverse(self, beam: BeamState, scored: Scored, dba: Optional[SearchConstraints]) -> Selected:
        """**Select** of diverse beam search (Vijayakumar et al. 2018): each image's beam is ``diverse_beam_groups``
        groups of ``beam / groups`` rows, and each group keeps its own best continuations (as :meth:`select`, by
        length-normalized score), the groups one after the other, a candidate's summed log-probability lowered by
        ``diverse_beam_strength`` for each group before it that chose the same word at this step (Hamming diversity;
        ``<pad>``, the continuation of finished hypotheses, is never counted). The hypotheses keep their true summed
        log-probabilities: the penalty only chooses."""
        (batch, k), log_probs = beam.shape, scored.log_probs
        groups, strength = self.options.diverse_beam_groups, self.options.diverse_beam_strength
        size, width = k // groups, log_probs.shape[1]
        new_lengths = beam.lengths + (~beam.finished)
        candidates = beam.scores.reshape(batch * k, 1) + log_probs
        penalty = length_penalty(new_lengths, self.alpha, self.beta).reshape(batch, groups, size, 1)
        words = (np.broadcast_to(np.arange(width), log_probs.shape) if scored.words is None
                 else scored.words).reshape(batch, groups, size, width)
        chosen = np.zeros((batch, self.vocab_size), dtype=np.int64)   # per image, the groups that chose each word
        best = np.empty((batch, groups, size), dtype=np.int64)
        images = np.arange(batch)
        for g in range(groups):
            penalized = strength * chosen[images[:, None, None], words[:, g]]             # (batch, size, width)
            diverse = (candidates.reshape(batch, groups, size, width)[:, g] - penalized) / penalty[:, g]
            _, found = top_k(diverse.reshape(batch, size * width), size)                   # (batch, size)
            best[:, g] = found + g * size * width
            picked = words[:, g].reshape(batch, size * width)[images[:, None], found].reshape(-1)
            np.add.at(chosen, (np.repeat(images, size), picked), (picked != self.pad).astype(np.int64))
        return self._selected(scored, candidates, best.reshape(batch, k), new_lengths, None)

    def select_sample(self, beam: BeamState, scored: Scored, dba: Optional[SearchConstraints]) -> Selected:
        """**Select** by sampling: each row (an image's sample) draws its next word from the distribution of the
        score step (every word, :meth:`restrict`) with the options' temperature, top-k and top-p
        (:func:`sample_words`), at the uniform number of its image's key, its sample and the step
        (:func:`sampling_uniforms`); finished rows draw ``<pad>``. A sample only ever extends itself."""
        (batch, n), log_probs = beam.shape, scored.log_probs
        options = self.options
        uniforms = sampling_uniforms(options.seed, cast(np.ndarray, beam.keys), n, beam.history.shape[1])
        words = sample_words(log_probs, uniforms.reshape(batch * n), options.sampling_temperature,
                             options.sampling_top_k, options.sampling_top_p)
        origin = np.arange(batch * n)
        scores = (beam.scores.reshape(batch * n) + log_probs[origin, words]).reshape(batch, n)
        return Selected(origin, words, scores, beam.lengths + (~beam.finished), None)

    # -- advance -----------------------------------------------------------------------------------------------

    def advance(self, beam: BeamState, selected: Selected, attention: Optional[np.ndarray],
                guide: Optional[SearchConstraints], dba: Optional[SearchConstraints]) -> None:
        """**Advance** ``beam`` in place to the selected hypotheses: their scores, lengths, words and history, the
        constraints' progress, and the hypotheses that end: those that wrote ``</s>``, and those that can no longer
        reach their image's n best (:func:`beaten_hypotheses`; with constraints,
        :meth:`imcap.constraints.SearchConstraints.finished_images`, and inactive places)."""
        origin, words = selected.origin, selected.words
        beam.scores, beam.lengths, beam.words = selected.scores, selected.lengths, words
        beam.finished = beam.finished[origin] | (words == self.eos)
        beam.history = np.concatenate([beam.history[origin], words[:, None]], axis=1)
        if guide is not None:
            guide.update(origin, words)
        if dba is not None:
            beam.finished = beam.finished | self._stopped_by_constraints(beam, cast(np.ndarray, selected.active), dba)
        else:
            beam.finished = beam.finished | self._beaten(beam)
        if attention is not None:
            beam.attention = [a[origin] for a in beam.attention] + [attention[origin]]

    def _beaten(self, beam: BeamState) -> np.ndarray:
        """``(rows,)`` bool: the open hypotheses that can no longer reach their image's n best
        (:func:`beaten_hypotheses`); in diverse beam search, their group's share of it (each group's best come
        first); none in sampling, which returns every sample."""
        batch, k = beam.shape
        if self.options.selection == "sample":
            return np.zeros(batch * k, dtype=bool)
        groups = self.options.diverse_beam_groups if self.options.selection == "diverse" else 1
        shape, nbest = (batch * groups, k // groups), -(-self.nbest_size // groups)
        return beaten_hypotheses(beam.scores.reshape(shape), beam.lengths.reshape(shape),
                                 beam.finished.reshape(shape), nbest, self.max_output_length, self.alpha, self.beta)

    def _stopped_by_constraints(self, beam: BeamState, active: np.ndarray, dba: SearchConstraints) -> np.ndarray:
        """``(rows,)`` bool: inactive places, and open rows of constrained images whose search is over; their
        scores become ``NEG_INF`` in ``beam``."""
        batch, k = beam.shape
        beam.scores = np.where(active, beam.scores, NEG_INF)
        flat = beam.scores.reshape(batch * k)
        stop = ~active.reshape(batch * k) | dba.finished_images(
            flat, flat / length_penalty(beam.lengths, self.alpha, self.beta), beam.finished, self.nbest_size)
        beam.scores = np.where(stop.reshape(batch, k), NEG_INF, beam.scores)
        return stop

    # -- shrink ------------------------------------------------------------------------------------------------

    def shrink(self, beam: BeamState, origin: np.ndarray) -> None:
        """**Shrink**: an image whose every hypothesis has ended only extends them with padding at no cost, so its
        rows leave the computation; the runtime reorders the states of the rows still computed (each from the row it
        extends, which was computed, as an open image was open the step before)."""
        batch, k = beam.shape
        open_rows = np.flatnonzero(~beam.finished.reshape(batch, k).all(axis=1).repeat(k))
        position = np.empty(batch * k, dtype=np.int64)
        position[beam.computed] = np.arange(len(beam.computed))
        self.steps.reorder(open_rows, position[origin[open_rows]])
        beam.computed = open_rows

    # -- collect -----------------------------------------------------------------------------------------------

    def collect(self, beam: BeamState, dba: Optional[SearchConstraints]) -> List[List[Hypothesis]]:
        """**Collect** each image's ``nbest_size`` best hypotheses by length-normalized score; with required
        phrases, those that met them all if any did (else the best found), inactive places last."""
        batch, k = beam.shape
        scores = beam.scores.reshape(batch * k)
        final = scores / length_penalty(beam.lengths, self.alpha, self.beta)
        met = dba.all_met() if dba is not None else None
        constrained = dba.constrained_images() if dba is not None else np.zeros(batch, dtype=bool)
        results = []
        for i in range(batch):
            row_ids = range(i * k, (i + 1) * k)
            if met is None:
                ranked = self._ranked(row_ids, final)
            else:
                ranked = sorted(row_ids, key=lambda r: (not met[r], -final[r]))
                ranked = [r for r in ranked if scores[r] > NEG_INF / 2] or ranked
                ranked = [r for r in ranked if met[r] == met[ranked[0]]][:self.nbest_size]
            results.append([self._hypothesis(beam, r, scores, final, met if constrained[i] else None)
                            for r in ranked])
        return results

    def _ranked(self, row_ids: range, final: np.ndarray) -> List[int]:
        """The rows of an image's n-best without required phrases: the best by normalized score; in diverse beam
        search, each group's best first (the best of them first), then each group's second, and so on."""
        if self.options.selection != "diverse":
            return sorted(row_ids, key=lambda r: -final[r])[:self.nbest_size]
        size = len(row_ids) // self.options.diverse_beam_groups
        place: Dict[int, int] = {}
        for start in range(0, len(row_ids), size):
            group = sorted(row_ids[start:start + size], key=lambda r: -final[r])
            place.update((r, rank) for rank, r in enumerate(group))
        return sorted(row_ids, key=lambda r: (place[r], -final[r]))[:self.nbest_size]

    def _hypothesis(self, beam: BeamState, row: int, scores: np.ndarray, final: np.ndarray,
                    met: Optional[np.ndarray]) -> Hypothesis:
        """Row ``row`` of the finished ``beam`` as a :class:`Hypothesis` (``met``: None for an image without required
        phrases)."""
        length = beam.lengths[row]
        ids = [int(w) for w in beam.history[row][:length] if w != self.eos and w != self.pad]
        attention = np.stack([a[row] for a in beam.attention])[:length] if self.keep_attention else None
        return Hypothesis(ids, float(scores[row]), float(final[row]), attention,
                          bool(met[row]) if met is not None else None)
