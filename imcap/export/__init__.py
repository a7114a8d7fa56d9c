"""Export of trained models to ONNX (:mod:`imcap.export.graphs`), for runtimes without MXNet
(:mod:`imcap.onnx_steps`)."""
from .graphs import encode_graph, export_model, step_graph  # noqa: F401
