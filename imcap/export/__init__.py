"""Export of trained models to ONNX (:mod:`imcap.export.graphs`; a model dir to a self-contained exported dir:
:mod:`imcap.export.package`, read back without MXNet by :mod:`imcap.export.exported`), for runtimes without MXNet
(:mod:`imcap.onnx_steps`). ``python -m imcap.export`` is its command line (:mod:`imcap.export.__main__`).

The graph functions are imported on first use, so that :mod:`imcap.export.exported` loads without MXNet.
"""
from typing import Any

_GRAPH_FUNCTIONS = ("encode_graph", "export_model", "step_graph")


def __getattr__(name: str) -> Any:
    """``encode_graph``, ``export_model`` and ``step_graph`` of :mod:`imcap.export.graphs`, imported on first use."""
    if name in _GRAPH_FUNCTIONS:
        from . import graphs
        return getattr(graphs, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
