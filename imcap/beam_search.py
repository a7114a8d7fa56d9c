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

The search is a loop over named steps (:meth:`BeamSearch.search`): **score** (the models' next-word
log-probabilities, restricted by the rules: words never written, repeat blocking, avoided phrases, ``</s>`` before the
constraints are met), **select** (the ``beam`` best continuations of each image, or dynamic beam allocation),
**advance** (the beam's bookkeeping: lengths, finished hypotheses, history, the constraints' progress, the exact
early stop), **shrink** (images whose hypotheses have all ended leave the computation) and **collect** (each image's
n best). The models sit behind the step contract of :mod:`imcap.search_steps`, which another runtime can implement.
This module imports no MXNet.
"""
from dataclasses import dataclass
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union, cast

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
    """
    scores: np.ndarray
    finished: np.ndarray
    lengths: np.ndarray
    history: np.ndarray
    attention: List[np.ndarray]
    computed: np.ndarray
    words: np.ndarray

    @classmethod
    def start(cls, batch: int, beam: int, bos: int) -> "BeamState":
        """The beam before the first word: one live hypothesis per image (the others start at ``NEG_INF``, as all
        would be the same)."""
        rows = batch * beam
        scores = np.zeros((batch, beam), dtype=np.float64)
        scores[:, 1:] = NEG_INF
        return cls(scores, np.zeros(rows, dtype=bool), np.zeros(rows, dtype=np.int64),
                   np.zeros((rows, 0), dtype=np.int64), [], np.arange(rows), np.full(rows, bos, dtype=np.int64))

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
    its summed log-probability, its length, and whether it is a real hypothesis (``active``; None without dynamic
    beam allocation, where all are)."""
    origin: np.ndarray
    words: np.ndarray
    scores: np.ndarray
    lengths: np.ndarray
    active: Optional[np.ndarray]


class BeamSearch:
    """Beam search over ``models`` (an ensemble averages their log-probabilities), each on one or several views of
    the images (test-time augmentation: every model on every view is a member of the ensemble).

    :param models: :class:`imcap.model.CaptionModel` objects with the same vocabulary (stepped by
        :class:`imcap.search_steps.MXNetSteps`), or a ready runtime of the step contract (:mod:`imcap.search_steps`).
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
            from .search_steps import MXNetSteps
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
        return SearchConstraints(lists[0], lists[1], self.beam_size, self._avoid_trie, self.avoid_list)

    def search(self, features: Union[np.ndarray, Sequence[np.ndarray]],
               constraints: Optional[Sequence[Sequence[Union[Phrase, Constraint]]]] = None,
               avoid: Optional[Sequence[Sequence[Phrase]]] = None) -> List[List[Hypothesis]]:
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
        :return: per image, its ``nbest_size`` best hypotheses, best first.
        :raises ValueError: if ``constraints`` or ``avoid`` is not one list per image of lists of word ids that a
            caption may contain.
        """
        views = [features] if isinstance(features, np.ndarray) else list(features)
        batch = views[0].shape[0]
        guide = self._constraints(batch, constraints, avoid)                  # None: the plain search
        dba = guide if guide is not None and guide.has_required else None      # dynamic beam allocation
        self.steps.start(views, self.beam_size)
        beam = BeamState.start(batch, self.beam_size, self.bos)
        for t in range(self.max_output_length):
            last = t + 1 == self.max_output_length
            scored = self.score(beam, guide, dba, last)
            selected = self.select(beam, scored, dba)
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
        best words can be among its image's ``beam`` best continuations, so they are found on the device
        (:meth:`preselect`); otherwise every word of every row is scored on the host (:meth:`restrict`).
        Finished rows may only be continued by ``<pad>`` at no cost (:func:`mask_finished`).
        """
        summed, attention = self.steps.step(beam.words[beam.computed], self.keep_attention)
        rows, k = beam.finished.shape[0], self.beam_size
        if attention is not None:
            attention = self._all_rows(attention, beam.computed, rows)
        if guide is None and not self.no_repeat_ngram_size and not last and k < self.vocab_size:
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
        origin = (best // width + (np.arange(batch) * k)[:, None]).reshape(rows)
        words = (best % width if scored.words is None else
                 scored.words.reshape(batch, k * width)[np.arange(batch)[:, None], best]).reshape(rows)
        scores = candidates.reshape(batch, k * width)[np.arange(batch)[:, None], best]
        return Selected(origin, words, scores, new_lengths[origin], active)

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
            batch, k = beam.shape
            beam.finished = beam.finished | beaten_hypotheses(
                beam.scores, beam.lengths.reshape(batch, k), beam.finished.reshape(batch, k), self.nbest_size,
                self.max_output_length, self.alpha, self.beta)
        if attention is not None:
            beam.attention = [a[origin] for a in beam.attention] + [attention[origin]]

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
                ranked = sorted(row_ids, key=lambda r: -final[r])[:self.nbest_size]
            else:
                ranked = sorted(row_ids, key=lambda r: (not met[r], -final[r]))
                ranked = [r for r in ranked if scores[r] > NEG_INF / 2] or ranked
                ranked = [r for r in ranked if met[r] == met[ranked[0]]][:self.nbest_size]
            results.append([self._hypothesis(beam, r, scores, final, met if constrained[i] else None)
                            for r in ranked])
        return results

    def _hypothesis(self, beam: BeamState, row: int, scores: np.ndarray, final: np.ndarray,
                    met: Optional[np.ndarray]) -> Hypothesis:
        """Row ``row`` of the finished ``beam`` as a :class:`Hypothesis` (``met``: None for an image without required
        phrases)."""
        length = beam.lengths[row]
        ids = [int(w) for w in beam.history[row][:length] if w != self.eos and w != self.pad]
        attention = np.stack([a[row] for a in beam.attention])[:length] if self.keep_attention else None
        return Hypothesis(ids, float(scores[row]), float(final[row]), attention,
                          bool(met[row]) if met is not None else None)
