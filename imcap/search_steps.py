"""The model side of beam search: the step contract between :class:`imcap.beam_search.BeamSearch` and a runtime, and
what every runtime of an ensemble shares (:class:`EnsembleSteps`: the members, their states, the shrinking rows).

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

:class:`imcap.mxnet_steps.MXNetSteps` implements it over :class:`imcap.model.CaptionModel` objects (their hybridized
``encode`` and ``step`` graphs), :class:`imcap.onnx_steps.OnnxSteps` over exported ONNX graphs on ONNX Runtime; both
are :class:`EnsembleSteps`, which holds the bookkeeping and leaves the arrays to them. This module imports no MXNet.
"""
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


class EnsembleSteps:
    """``start``, ``step`` and ``reorder`` of the step contract for ``models`` of one vocabulary, each model on each
    view a member of the ensemble; a runtime subclasses it and says how its arrays are made and moved (the methods
    that raise ``NotImplementedError``) and how a model encodes and steps (``model.encode(x) -> (static, dynamic)``,
    ``model.step(words, static, dynamic) -> (log_probs, attention, dynamic)`` on its arrays)."""

    def __init__(self, models: Sequence[Any]) -> None:
        self.models = list(models)
        self._members: List[Any] = []
        self._states: List[Tuple[List[Any], List[Any]]] = []
        self._full_static: List[List[Any]] = []
        self._rows = 0

    # what a runtime provides
    def _array(self, values: np.ndarray, dtype: str) -> Any:
        """``values`` as an array of the runtime (``float32`` features, ``int32`` word ids and row indexes)."""
        raise NotImplementedError

    def _repeat(self, state: Any, times: int) -> Any:
        """Each row of ``state`` repeated ``times`` times, in place (row ``i`` becomes rows ``i * times ..``)."""
        raise NotImplementedError

    def _take(self, state: Any, rows: Any) -> Any:
        """The ``rows`` (an array of :meth:`_array`) of ``state``."""
        raise NotImplementedError

    def _host(self, values: Any) -> np.ndarray:
        """An array of the runtime as float32 numpy."""
        raise NotImplementedError

    @property
    def num_members(self) -> int:
        """Models times views of the current search."""
        return len(self._members)

    def start(self, views: Sequence[np.ndarray], beam: int) -> None:
        """Encode ``views`` (each ``(batch, regions, dim)``) with every model; states repeated ``beam`` times."""
        self._members, self._states = [], []
        for view in views:
            x = self._array(view, "float32")
            for model in self.models:
                static, dynamic = model.encode(x)
                self._members.append(model)
                self._states.append(([self._repeat(s, beam) for s in static],
                                     [self._repeat(d, beam) for d in dynamic]))
        self._full_static = [static for static, _ in self._states]
        self._rows = len(views[0]) * beam   # the rows computed

    def step(self, words: np.ndarray, attention: bool = False) -> Tuple[Any, Optional[np.ndarray]]:
        """One step of every member: the summed log-probabilities ``(rows, vocab)`` (an array of the runtime) and, if
        ``attention``, the attention ``(rows, regions)`` float32 over the first view (the mean over the models)."""
        prev = self._array(words, "int32")
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
        return summed, self._host(mean)

    def to_host(self, summed: Any) -> np.ndarray:
        """The summed log-probabilities ``(rows, vocab)`` as float32 numpy."""
        return self._host(summed)

    def reorder(self, keep: np.ndarray, origin: np.ndarray) -> None:
        """Compute the ``keep`` rows from now on, each extending the row at position ``origin`` (module docstring)."""
        origin_rows = self._array(origin, "int32")
        if len(keep) < self._rows:   # images finished: their rows leave the computation
            keep_rows = self._array(keep, "int32")
            self._states = [([self._take(s, keep_rows) for s in static_all], dynamic)
                            for static_all, (_, dynamic) in zip(self._full_static, self._states)]
        self._states = [(static, [self._take(d, origin_rows) for d in dynamic]) for static, dynamic in self._states]
        self._rows = len(keep)
