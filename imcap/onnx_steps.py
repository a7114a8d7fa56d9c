"""The step contract of :mod:`imcap.search_steps` on ONNX Runtime, over the ``encode`` and ``step`` graphs that
:mod:`imcap.export` writes; imports no MXNet (nor any module of imcap that does), so that a trained model captions
in an install without it: ``BeamSearch(OnnxSteps([load_onnx_model(folder)]), vocab, options)``.

Every state is a numpy array on the host (the CPU provider): the sum of the members' log-probabilities stays numpy,
and :meth:`OnnxSteps.row_best` finds each row's best words with numpy.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .search_steps import EnsembleSteps

# The file names of the exported graphs in a folder (imcap.export.export_model writes them)
ENCODE_NAME = "encode.onnx"
STEP_NAME = "step.onnx"


class OnnxModel:
    """One exported model: its ``encode`` and ``step`` ONNX Runtime sessions (``onnxruntime.InferenceSession`` or
    any object with ``run(output_names, feeds)`` and ``get_inputs()``/``get_outputs()``). The numbers of static and
    dynamic states are read off the step graph's input names (``static<i>``, ``dynamic<i>``).

    :attr config: the model's configuration as a dict (its ``config.yaml``; empty unless the loader sets it).
    :attr attention_grid: ``(rows, columns)`` of the regions the decoder attends to, or None when unknown (as
        :attr:`imcap.model.CaptionModel.attention_grid`; an export records it).
    :attr checkpoint: the params file the graphs were exported from (None unless the loader sets it).
    """

    def __init__(self, encode: Any, step: Any) -> None:
        self.encode_session, self.step_session = encode, step
        self.config: Dict[str, Any] = {}
        self.attention_grid: Optional[Tuple[int, int]] = None
        self.checkpoint: Optional[str] = None
        inputs = [i.name for i in step.get_inputs()]
        self.num_static = sum(name.startswith("static") for name in inputs)
        self.num_dynamic = sum(name.startswith("dynamic") for name in inputs)
        self._static_names = ["static%d" % i for i in range(self.num_static)]
        self._dynamic_names = ["dynamic%d" % i for i in range(self.num_dynamic)]
        self._encode_outputs = self._static_names + self._dynamic_names
        self._step_outputs = ["log_probs", "attention"] + ["new_dynamic%d" % i for i in range(self.num_dynamic)]

    def encode(self, features: np.ndarray) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """``(batch, regions, dim)`` float32 → ``(static, dynamic)`` states, as ``CaptionModel.encode``."""
        states = self.encode_session.run(self._encode_outputs, {"features": np.ascontiguousarray(features,
                                                                                                  np.float32)})
        return list(states[:self.num_static]), list(states[self.num_static:])

    def step(self, prev_ids: np.ndarray, static: Sequence[np.ndarray], dynamic: Sequence[np.ndarray]
             ) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        """``prev_ids (rows,)`` → ``(log_probs (rows, vocab), attention (rows, regions), new dynamic states)``, as
        ``CaptionModel.step``."""
        feeds = {"prev_ids": np.ascontiguousarray(prev_ids, np.int64)}
        feeds.update(zip(self._static_names, static))
        feeds.update(zip(self._dynamic_names, dynamic))
        results = self.step_session.run(self._step_outputs, feeds)
        return results[0], results[1], list(results[2:])


def onnx_session(path: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None) -> Any:
    """An ONNX Runtime session of the graph file ``path``.

    :param threads: intra-op threads (default: ``$OMP_NUM_THREADS`` if set, else ONNX Runtime's).
    :param providers: ONNX Runtime's execution providers (default: the CPU).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))


def load_onnx_model(folder: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None
                    ) -> OnnxModel:
    """The exported model in ``folder`` (:data:`ENCODE_NAME`, :data:`STEP_NAME`) on ONNX Runtime (``threads``,
    ``providers``: as :func:`onnx_session`)."""
    return OnnxModel(*[onnx_session(os.path.join(folder, name), threads, providers)
                       for name in (ENCODE_NAME, STEP_NAME)])


def row_best(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` best values of each row of ``scores (rows, vocab)``, best first (ties: the lower word first), as
    ``(values (rows, k) float32, words (rows, k) int32)``."""
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    values = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -values), axis=1)   # by value, descending; then by word
    words = np.take_along_axis(candidates, order, axis=1)
    return np.take_along_axis(values, order, axis=1).astype(np.float32), words.astype(np.int32)


class OnnxSteps(EnsembleSteps):
    """The step contract (:mod:`imcap.search_steps`) on ONNX Runtime: ``models`` (:class:`OnnxModel`, one
    vocabulary); each model on each view is a member of the ensemble. Every array is numpy."""

    def _array(self, values: np.ndarray, dtype: str) -> np.ndarray:
        return values.astype(np.float32, copy=False) if dtype == "float32" else values

    def _repeat(self, state: np.ndarray, times: int) -> np.ndarray:
        return np.repeat(state, times, axis=0)

    def _take(self, state: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return state[rows]

    def _host(self, values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32, copy=False)

    @staticmethod
    def row_best(summed: np.ndarray, bias: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` best words of each row of ``summed + bias``: ``(values, words)``, each ``(rows, k)``."""
        return row_best(summed + bias.astype(np.float32, copy=False), k)
