"""The model side of beam search: the step contract between :class:`imcap.beam_search.BeamSearch` and a runtime, and
its MXNet implementation (:class:`MXNetSteps`).

The contract. A runtime holds the members of an ensemble (every model on every view of the images) and their
decoder states, and offers the search five calls (and ``num_members``, models times views); every array crossing it is numpy on the host, every state stays
on the runtime's device:

- ``start(views, beam)``: ``views`` a list of ``(batch, regions, dim)`` float32 arrays (the original image's
  features, then each test-time view's); encodes them once and repeats every state ``beam`` times, so that state row
  ``i * beam + j`` belongs to hypothesis ``j`` of image ``i``.
- ``step(words, attention)``: ``words (rows,)`` int64, the last word of each computed row (``<s>`` first); runs every
  member one step and returns the sum of the members' log-probabilities, kept on the device, and (if ``attention``,
  else None) the attention ``(rows, regions)`` float32 over the original view's regions (the mean over the models). The members' log-probabilities are
  log-softmax outputs ``(rows, vocab)`` float32.
- ``row_best(summed, bias, k)`` and ``to_host(summed)``: the ``k`` best words of each row of the sum plus ``bias
  (1, vocab)`` as ``(values (rows, k) float32, words (rows, k) int32)`` numpy arrays found on the device (so only ``k``
  values a row cross to the host), or the whole ``(rows, vocab)`` sum as float32 numpy.
- ``reorder(keep, origin)``: the rows computed from now on: ``keep (open rows,)`` int64 indexes of the full
  ``batch * beam`` rows whose image is still searched (their static states, e.g. the encoded regions, are taken
  from the full-size states kept since ``start``), and ``origin (open rows,)`` int64, for each such row the position
  among the rows computed at the last step of the hypothesis it extends (its recurrent states are taken from there).

:class:`MXNetSteps` implements it over :class:`imcap.model.CaptionModel` objects (their hybridized ``encode`` and
``step`` graphs); another runtime (e.g. ONNX Runtime over exported graphs) implements the same four calls.
"""
from typing import Any, List, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np


class MXNetSteps:
    """The step contract (module docstring) on MXNet: ``models`` (:class:`imcap.model.CaptionModel`, one vocabulary)
    on ``ctx``; each model on each view is a member of the ensemble."""

    def __init__(self, models: Sequence, ctx: Optional[mx.Context] = None) -> None:
        self.models = list(models)
        self.ctx = ctx or mx.cpu()
        self._members: List[Any] = []
        self._states: List[Tuple[List[mx.nd.NDArray], List[mx.nd.NDArray]]] = []
        self._full_static: List[List[mx.nd.NDArray]] = []
        self._bias: Optional[mx.nd.NDArray] = None
        self._bias_host: Optional[np.ndarray] = None
        self._rows = 0

    @property
    def num_members(self) -> int:
        """Models times views of the current search."""
        return len(self._members)

    def start(self, views: Sequence[np.ndarray], beam: int) -> None:
        """Encode ``views`` (each ``(batch, regions, dim)``) with every model; states repeated ``beam`` times."""
        self._members, self._states = [], []
        for view in views:
            x = mx.nd.array(view, ctx=self.ctx, dtype="float32")
            for model in self.models:
                static, dynamic = model.encode(x)
                self._members.append(model)
                self._states.append(([s.repeat(beam, axis=0) for s in static], [d.repeat(beam, axis=0)
                                                                                 for d in dynamic]))
        self._full_static = [static for static, _ in self._states]
        self._rows = len(views[0]) * beam   # the rows computed

    def step(self, words: np.ndarray, attention: bool = False) -> Tuple[mx.nd.NDArray, Optional[np.ndarray]]:
        """One step of every member: the summed log-probabilities ``(rows, vocab)`` (on the device) and, if
        ``attention``, the attention ``(rows, regions)`` float32 over the first view (the mean over the models)."""
        prev = mx.nd.array(words, ctx=self.ctx, dtype="int32")
        summed: Any = None
        mean: Any = None
        for i, model in enumerate(self._members):
            log_probs, att, dynamic = model.step(prev, self._states[i][0], self._states[i][1])
            self._states[i] = (self._states[i][0], dynamic)
            summed = log_probs if summed is None else summed + log_probs
            if attention and i < len(self.models):  # the attention reported is over the regions of the first view
                mean = att if mean is None else mean + att
        if not attention:
            return summed, None
        if len(self._members) > 1:
            mean = mean / len(self.models)
        return summed, mean.asnumpy()

    def row_best(self, summed: mx.nd.NDArray, bias: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best words of each row of ``summed + bias``: ``(values, words)`` numpy, each ``(rows, k)``."""
        if self._bias is None or self._bias_host is not bias:
            self._bias, self._bias_host = mx.nd.array(bias, ctx=self.ctx), bias
        values, words = mx.nd.topk(mx.nd.broadcast_add(summed, self._bias), axis=-1, k=k, ret_typ="both",
                                   dtype="int32")
        return values.asnumpy(), words.asnumpy()

    @staticmethod
    def to_host(summed: mx.nd.NDArray) -> np.ndarray:
        """The summed log-probabilities ``(rows, vocab)`` as float32 numpy."""
        return summed.asnumpy()

    def reorder(self, keep: np.ndarray, origin: np.ndarray) -> None:
        """Compute the ``keep`` rows from now on, each extending the row at position ``origin`` (module docstring)."""
        origin_nd = mx.nd.array(origin, ctx=self.ctx, dtype="int32")
        if len(keep) < self._rows:   # images finished: their rows leave the computation
            rows_nd = mx.nd.array(keep, ctx=self.ctx, dtype="int32")
            self._states = [([mx.nd.take(s, rows_nd) for s in static_all], dynamic)
                            for static_all, (_, dynamic) in zip(self._full_static, self._states)]
        self._states = [(static, [mx.nd.take(d, origin_nd) for d in dynamic]) for static, dynamic in self._states]
        self._rows = len(keep)
