"""The step contract of :mod:`imcap.search_steps` on MXNet (:class:`MXNetSteps`), over :class:`imcap.model.CaptionModel`
objects: their hybridized ``encode`` and ``step`` graphs, the states kept on the models' device."""
from typing import Any, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np

from .search_steps import EnsembleSteps


class MXNetSteps(EnsembleSteps):
    """The step contract on MXNet: ``models`` (:class:`imcap.model.CaptionModel`, one vocabulary) on ``ctx``; each
    model on each view is a member of the ensemble. The row-best words are found on the device (``topk``), so only
    ``k`` values a row reach the host."""

    def __init__(self, models: Sequence, ctx: Optional[mx.Context] = None) -> None:
        super().__init__(models)
        self.ctx = ctx or mx.cpu()
        self._bias: Optional[mx.nd.NDArray] = None
        self._bias_host: Optional[np.ndarray] = None

    def _array(self, values: np.ndarray, dtype: str) -> mx.nd.NDArray:
        return mx.nd.array(values, ctx=self.ctx, dtype=dtype)

    def _repeat(self, state: mx.nd.NDArray, times: int) -> mx.nd.NDArray:
        return state.repeat(times, axis=0)

    def _take(self, state: mx.nd.NDArray, rows: Any) -> mx.nd.NDArray:
        return mx.nd.take(state, rows)

    def _host(self, values: mx.nd.NDArray) -> np.ndarray:
        return values.asnumpy()

    def row_best(self, summed: mx.nd.NDArray, bias: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best words of each row of ``summed + bias``: ``(values, words)`` numpy, each ``(rows, k)``."""
        if self._bias is None or self._bias_host is not bias:
            self._bias, self._bias_host = mx.nd.array(bias, ctx=self.ctx), bias
        values, words = mx.nd.topk(mx.nd.broadcast_add(summed, self._bias), axis=-1, k=k, ret_typ="both",
                                   dtype="int32")
        return values.asnumpy(), words.asnumpy()
