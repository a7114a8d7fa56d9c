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
"""
from typing import Any, List, NamedTuple, Optional, Sequence, Union, cast

import mxnet as mx
import numpy as np

from . import constants as C
from .constraints import NEG_INF, AvoidTrie, Constraint, Phrase, SearchConstraints, as_alternatives
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


class BeamSearch:
    """Beam search over ``models`` (an ensemble averages their log-probabilities), each on one or several views of
    the images (test-time augmentation: every model on every view is a member of the ensemble).

    :param models: :class:`imcap.model.CaptionModel` objects with the same vocabulary.
    :param vocab: the target vocabulary.
    :param beam_size: hypotheses kept per image.
    :param max_output_length: most words generated per caption (``</s>`` included).
    :param length_penalty_alpha: GNMT alpha (0 = rank by raw log-probability).
    :param length_penalty_beta: GNMT beta.
    :param nbest_size: hypotheses returned per image (best first), at most ``beam_size``.
    :param keep_attention: also return per-word attention over the regions.
    :param allow_unk: let hypotheses contain ``<unk>`` (``<s>`` and ``<pad>`` are never generated).
    :param no_repeat_ngram_size: no hypothesis repeats an n-gram of this size (0: off; see
        :func:`block_repeated_ngrams`). ``</s>`` is never blocked by it (it occurs once), nor is a word that
        advances a required phrase (so a phrase required twice, or one that repeats an n-gram itself, is still
        written).
    :param avoid_list: phrases (word id lists) no caption contains, whatever the image (the global avoid list).
    :param constraint_only: word ids the search writes only where they advance a required phrase (words added to the
        vocabulary for guided captioning, :func:`imcap.guide.expand_vocabulary`): elsewhere they are never written.
    :raises ValueError: for ``no_repeat_ngram_size`` 1 or negative, or an avoid list phrase that is not a list of
        word ids the search can write.
    """

    def __init__(self, models: Sequence, vocab, beam_size: int = 5, max_output_length: int = 30,
                 length_penalty_alpha: float = 1.0, length_penalty_beta: float = 0.0, nbest_size: int = 1,
                 keep_attention: bool = False, allow_unk: bool = False, ctx: Optional[mx.Context] = None,
                 no_repeat_ngram_size: int = 0, avoid_list: Sequence[Phrase] = (),
                 constraint_only: Sequence[int] = ()) -> None:
        if no_repeat_ngram_size == 1 or no_repeat_ngram_size < 0:
            raise ValueError("no_repeat_ngram_size must be 0 (off) or at least 2, not %d" % no_repeat_ngram_size)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.models = list(models)
        self.beam_size = beam_size
        self.max_output_length = max_output_length
        self.alpha = length_penalty_alpha
        self.beta = length_penalty_beta
        self.nbest_size = min(nbest_size, beam_size)
        self.keep_attention = keep_attention
        self.ctx = ctx or mx.cpu()
        self.bos, self.eos, self.pad = vocab[C.BOS_SYMBOL], vocab[C.EOS_SYMBOL], vocab[C.PAD_SYMBOL]
        self.vocab_size = len(vocab)
        self.blocked = never_generated(vocab, allow_unk)
        self.constraint_only = np.array(sorted({int(w) for w in constraint_only}), dtype=np.int64)
        self._blocked_bias_host = never_generated_bias(vocab, NEG_INF, allow_unk)   # (1, vocab)
        self._blocked_bias_host[0, self.constraint_only] = NEG_INF
        self._blocked_bias: Optional[mx.nd.NDArray] = None                           # its copy on the device
        self.avoid_list = frozenset(tuple(self._check_phrase(p, "avoid list")) for p in avoid_list)
        self._avoid_trie = AvoidTrie([sorted(self.avoid_list)]) if self.avoid_list else None

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

    def _row_best(self, log_probs: mx.nd.NDArray, computed: np.ndarray, rows: int, members: int):
        """The ``beam_size`` best words of each computed row, found on the device (so only ``(rows, beam)`` values
        reach the host, not ``(rows, vocab)``), the words the search never writes excluded.

        :param log_probs: ``(computed rows, vocab)`` float32, the sum over the ``members`` of the ensemble.
        :return: ``(rows, beam)`` float64 log-probabilities (the members' mean), best first, and their ``(rows,
            beam)`` int64 word ids; zeros for rows not computed.
        """
        if self._blocked_bias is None or self._blocked_bias.context != log_probs.context:
            self._blocked_bias = mx.nd.array(self._blocked_bias_host, ctx=log_probs.context)
        values, words = mx.nd.topk(mx.nd.broadcast_add(log_probs, self._blocked_bias), axis=-1, k=self.beam_size,
                                   ret_typ="both", dtype="int32")
        values = self._all_rows(values.asnumpy().astype(np.float64), computed, rows)
        if members > 1:
            values /= members
        return values, self._all_rows(words.asnumpy().astype(np.int64), computed, rows)

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
        batch, k, vocab = views[0].shape[0], self.beam_size, self.vocab_size
        rows = batch * k
        guide = self._constraints(batch, constraints, avoid)                  # None: the plain search
        dba = guide if guide is not None and guide.has_required else None      # dynamic beam allocation
        members, states = [], []
        for view in views:
            x = mx.nd.array(view, ctx=self.ctx, dtype="float32")
            for model in self.models:
                static, dynamic = model.encode(x)
                members.append(model)
                states.append(([s.repeat(k, axis=0) for s in static], [d.repeat(k, axis=0) for d in dynamic]))
        scores = np.zeros((batch, k), dtype=np.float64)
        scores[:, 1:] = NEG_INF  # all hypotheses start identical: expand only the first
        finished = np.zeros(rows, dtype=bool)
        lengths = np.zeros(rows, dtype=np.int64)
        history = np.zeros((rows, 0), dtype=np.int64)
        attention_history: List[np.ndarray] = []  # per step (rows, regions)
        prev = mx.nd.full((rows,), self.bos, ctx=self.ctx, dtype="int32")
        offsets = (np.arange(batch) * k)[:, None]
        full_static = [static for static, _ in states]
        computed = np.arange(rows)   # the rows the models step: those of images with an open hypothesis
        for t in range(self.max_output_length):
            log_probs: Any = None
            attention: Any = None
            for i, model in enumerate(members):
                lp, att, dynamic = model.step(prev, states[i][0], states[i][1])
                states[i] = (states[i][0], dynamic)
                log_probs = lp if log_probs is None else log_probs + lp
                if i < len(self.models):  # the attention reported is over the regions of the first view
                    attention = att if attention is None else attention + att
            if len(members) > 1:
                attention = attention / len(self.models)
            if self.keep_attention:
                attention = self._all_rows(attention.asnumpy(), computed, rows)
            last = t + 1 == self.max_output_length
            if guide is None and not self.no_repeat_ngram_size and not last and k < vocab:
                # the plain step: only each row's k best words can be among its image's k best continuations
                log_probs, row_words = self._row_best(log_probs, computed, rows, len(members))   # (rows, k) each
            else:  # every word of every row: the blocking below looks at all of them
                log_probs, row_words = self._all_rows(log_probs.asnumpy().astype(np.float64), computed, rows), None
                if len(members) > 1:
                    log_probs /= len(members)
                log_probs[:, self.blocked] = NEG_INF
                if len(self.constraint_only):
                    self._block_constraint_only(log_probs, dba)
                if self.no_repeat_ngram_size:
                    block_repeated_ngrams(log_probs, history, self.no_repeat_ngram_size,
                                          dba.constraint_words() if dba is not None else None)
                if guide is not None:  # avoided phrases; </s> before every required phrase is met (but at the end)
                    guide.block(log_probs, None if last else self.eos)
                if last:  # the last step must end every open hypothesis
                    forced = np.full_like(log_probs, NEG_INF)
                    forced[:, self.eos] = log_probs[:, self.eos]
                    log_probs = forced
            log_probs = mask_finished(log_probs, finished, self.pad, row_words)
            width = log_probs.shape[1]                                         # vocab, or k preselected words
            new_lengths = lengths + (~finished)
            candidates = (scores.reshape(rows, 1) + log_probs)
            normalized = candidates / length_penalty(new_lengths, self.alpha, self.beta)[:, None]
            if dba is not None:
                best, active = dba.candidates(normalized, candidates, k)        # (batch, k) each
            else:
                _, best = top_k(normalized.reshape(batch, k * width), k)      # (batch, k)
            origin = (best // width + offsets).reshape(rows)                   # row each new hypothesis extends
            words = (best % width if row_words is None else
                     row_words.reshape(batch, k * width)[np.arange(batch)[:, None], best]).reshape(rows)
            scores = candidates.reshape(batch, k * width)[np.arange(batch)[:, None], best]
            lengths = new_lengths[origin]
            finished = finished[origin] | (words == self.eos)
            history = np.concatenate([history[origin], words[:, None]], axis=1)
            if guide is not None:
                guide.update(origin, words)
            if dba is not None:  # inactive rows, and open rows of images whose search is over, stop
                scores = np.where(active, scores, NEG_INF)
                stop = ~active.reshape(rows) | dba.finished_images(
                    scores.reshape(rows), scores.reshape(rows) / length_penalty(lengths, self.alpha, self.beta),
                    finished, self.nbest_size)
                scores = np.where(stop.reshape(batch, k), NEG_INF, scores)
                finished = finished | stop
            else:
                finished = finished | beaten_hypotheses(scores, lengths.reshape(batch, k), finished.reshape(batch, k),
                                                        self.nbest_size, self.max_output_length, self.alpha,
                                                        self.beta)
            if self.keep_attention:
                attention_history = [a[origin] for a in attention_history] + [attention[origin]]
            if finished.all():
                break
            # An image whose every hypothesis has ended only extends them with padding at no cost: its rows leave
            # the computation (the batch shrinks to the images still open; their states are taken from the rows
            # they extend, which were computed, as an open image was open the step before).
            open_rows = np.flatnonzero(~finished.reshape(batch, k).all(axis=1).repeat(k))
            position = np.empty(rows, dtype=np.int64)
            position[computed] = np.arange(len(computed))
            origin_nd = mx.nd.array(position[origin[open_rows]], ctx=self.ctx, dtype="int32")
            if len(open_rows) < len(computed):
                rows_nd = mx.nd.array(open_rows, ctx=self.ctx, dtype="int32")
                states = [([mx.nd.take(s, rows_nd) for s in static_all], dynamic)
                          for static_all, (_, dynamic) in zip(full_static, states)]
            states = [(static, [mx.nd.take(d, origin_nd) for d in dynamic]) for static, dynamic in states]
            computed = open_rows
            prev = mx.nd.array(words[open_rows], ctx=self.ctx, dtype="int32")
        final = scores.reshape(rows) / length_penalty(lengths, self.alpha, self.beta)
        met = dba.all_met() if dba is not None else None
        constrained = dba.constrained_images() if dba is not None else np.zeros(batch, dtype=bool)
        results = []
        for i in range(batch):
            row_ids = range(i * k, (i + 1) * k)
            if met is None:
                ranked = sorted(row_ids, key=lambda r: -final[r])[:self.nbest_size]
            else:  # those that met every constraint if any did, else the best found; inactive ones (NEG_INF) last
                ranked = sorted(row_ids, key=lambda r: (not met[r], -final[r]))
                ranked = [r for r in ranked if scores.reshape(rows)[r] > NEG_INF / 2] or ranked
                ranked = [r for r in ranked if met[r] == met[ranked[0]]][:self.nbest_size]
            hyps = []
            for r in ranked:
                ids = [int(w) for w in history[r][:lengths[r]] if w != self.eos and w != self.pad]
                att = np.stack([a[r] for a in attention_history])[:lengths[r]] if self.keep_attention else None
                hyps.append(Hypothesis(ids, float(scores.reshape(rows)[r]), float(final[r]), att,
                                       bool(met[r]) if met is not None and constrained[i] else None))
            results.append(hyps)
        return results
