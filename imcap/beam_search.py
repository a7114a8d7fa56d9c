"""Batched beam search over one model or an ensemble, built from small tested pieces (after Sockeye's
``beam_search.py``): length penalty, candidate scoring, top-k and finished-hypothesis bookkeeping.

Several images are searched at once: states have ``batch * beam`` rows, row ``i * beam + k`` being hypothesis
``k`` of image ``i``. A hypothesis only ever continues hypotheses of its own image, so the image-dependent
(static) states are repeated once and never reordered; only the recurrent (dynamic) states are.

Scores are sums of log-probabilities (natural log); hypotheses are ranked by ``score / lp(length)`` with the
GNMT length penalty ``lp(n) = ((beta + n) / (beta + 1)) ** alpha`` (Wu et al. 2016), ``n`` counting ``</s>``.
"""
from typing import Any, List, NamedTuple, Optional, Sequence, Union

import mxnet as mx
import numpy as np

from . import constants as C
from .vocab import ids_to_tokens, never_generated

NEG_INF = -1e30


def length_penalty(lengths: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """GNMT length penalty ``((beta + n) / (beta + 1)) ** alpha``; ``alpha = 0`` gives 1 (no normalization)."""
    if alpha == 0.0:
        return np.ones_like(lengths, dtype=np.float64)
    return ((beta + lengths.astype(np.float64)) / (beta + 1.0)) ** alpha


def mask_finished(log_probs: np.ndarray, finished: np.ndarray, pad_id: int) -> np.ndarray:
    """Finished hypotheses may only be continued by ``<pad>`` at no cost, which keeps their score.

    :param log_probs: ``(rows, vocab)``; changed in place and returned.
    :param finished: ``(rows,)`` bool.
    """
    if finished.any():
        log_probs[finished] = NEG_INF
        log_probs[finished, pad_id] = 0.0
    return log_probs


def block_repeated_ngrams(log_probs: np.ndarray, history: np.ndarray, n: int) -> np.ndarray:
    """Forbid, in each row, every word that would repeat an n-gram the row's history already holds (the
    ``--no-repeat-ngram-size`` of fairseq, ``-block_ngram_repeat`` of OpenNMT): the words that followed an earlier
    occurrence of the row's last ``n - 1`` words. Vectorized over rows and positions.

    :param log_probs: ``(rows, vocab)`` scores of the next word; changed in place and returned.
    :param history: ``(rows, t)`` word ids generated so far (the start symbol excluded).
    :param n: n-gram size, at least 2; 0 means off (1 would forbid every word used before, and is refused).
    :raises ValueError: for ``n == 1``.
    """
    if n == 1:
        raise ValueError("n-gram blocking needs n = 0 (off) or n >= 2")
    t = history.shape[1]
    if n <= 0 or t < n:
        return log_probs
    windows = np.lib.stride_tricks.sliding_window_view(history, n, axis=1)      # (rows, t - n + 1, n)
    prefix = history[:, t - n + 1:]                                              # (rows, n - 1)
    matches = (windows[:, :, :n - 1] == prefix[:, None, :]).all(axis=2)          # (rows, t - n + 1)
    rows, positions = np.nonzero(matches)
    log_probs[rows, windows[rows, positions, n - 1]] = NEG_INF
    return log_probs


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
    """A finished caption: word ids (without ``</s>``), its log-probability, its normalized score and the
    attention ``(length, regions)`` of each generated word (``</s>`` included)."""
    ids: List[int]
    log_prob: float
    score: float
    attention: Optional[np.ndarray]


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
        :func:`block_repeated_ngrams`). ``</s>`` is never blocked by it (it occurs once).
    :raises ValueError: for ``no_repeat_ngram_size`` 1 or negative.
    """

    def __init__(self, models: Sequence, vocab, beam_size: int = 5, max_output_length: int = 30,
                 length_penalty_alpha: float = 1.0, length_penalty_beta: float = 0.0, nbest_size: int = 1,
                 keep_attention: bool = False, allow_unk: bool = False, ctx: Optional[mx.Context] = None,
                 no_repeat_ngram_size: int = 0) -> None:
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

    def search(self, features: Union[np.ndarray, Sequence[np.ndarray]]) -> List[List[Hypothesis]]:
        """Caption a batch of images.

        :param features: ``(batch, regions, feature_dim)`` float, or a list of such arrays, one per view of the
            same images (e.g. the original and the mirrored image): each model runs on each view and the
            log-probabilities of all these members are averaged.
        :return: per image, its ``nbest_size`` best hypotheses, best first.
        """
        views = [features] if isinstance(features, np.ndarray) else list(features)
        batch, k, vocab = views[0].shape[0], self.beam_size, self.vocab_size
        rows = batch * k
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
        for t in range(self.max_output_length):
            log_probs: Any = None
            attention: Any = None
            for i, model in enumerate(members):
                lp, att, dynamic = model.step(prev, states[i][0], states[i][1])
                states[i] = (states[i][0], dynamic)
                log_probs = lp if log_probs is None else log_probs + lp
                if i < len(self.models):  # the attention reported is over the regions of the first view
                    attention = att if attention is None else attention + att
            log_probs = log_probs.asnumpy().astype(np.float64)
            if len(members) > 1:
                log_probs /= len(members)
                attention = attention / len(self.models)
            log_probs[:, self.blocked] = NEG_INF
            if self.no_repeat_ngram_size:
                block_repeated_ngrams(log_probs, history, self.no_repeat_ngram_size)
            if t + 1 == self.max_output_length:  # the last step must end every open hypothesis
                forced = np.full_like(log_probs, NEG_INF)
                forced[:, self.eos] = log_probs[:, self.eos]
                log_probs = forced
            log_probs = mask_finished(log_probs, finished, self.pad)
            new_lengths = lengths + (~finished)
            candidates = (scores.reshape(rows, 1) + log_probs)
            normalized = candidates / length_penalty(new_lengths, self.alpha, self.beta)[:, None]
            _, best = top_k(normalized.reshape(batch, k * vocab), k)          # (batch, k)
            origin = (best // vocab + offsets).reshape(rows)                   # row each new hypothesis extends
            words = (best % vocab).reshape(rows)
            scores = candidates.reshape(batch, k * vocab)[np.arange(batch)[:, None], best]
            lengths = new_lengths[origin]
            finished = finished[origin] | (words == self.eos)
            history = np.concatenate([history[origin], words[:, None]], axis=1)
            if self.keep_attention:
                attention_history = [a[origin] for a in attention_history] + [attention.asnumpy()[origin]]
            if finished.all():
                break
            origin_nd = mx.nd.array(origin, ctx=self.ctx, dtype="int32")
            states = [(static, [mx.nd.take(d, origin_nd) for d in dynamic]) for static, dynamic in states]
            prev = mx.nd.array(words, ctx=self.ctx, dtype="int32")
        final = scores.reshape(rows) / length_penalty(lengths, self.alpha, self.beta)
        results = []
        for i in range(batch):
            row_ids = range(i * k, (i + 1) * k)
            ranked = sorted(row_ids, key=lambda r: -final[r])[:self.nbest_size]
            hyps = []
            for r in ranked:
                ids = [int(w) for w in history[r][:lengths[r]] if w != self.eos and w != self.pad]
                att = np.stack([a[r] for a in attention_history])[:lengths[r]] if self.keep_attention else None
                hyps.append(Hypothesis(ids, float(scores.reshape(rows)[r]), float(final[r]), att))
            results.append(hyps)
        return results
