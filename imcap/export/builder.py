"""A small builder of ONNX graphs over ``onnx.helper``: nodes with fresh names, numpy initializers, and the few
compound pieces the exported graphs are made of (dense layers, slices, layer norm).

It imports neither MXNet nor the rest of imcap: the decoders' exporters (:mod:`imcap.export.rnn`) read their Gluon
parameters as numpy arrays and hand them here. The graphs use the default ONNX domain at :data:`OPSET` only (what
ONNX Runtime runs on every provider), without ``Split`` (whose inputs changed between opsets): slices cut the
gates and the stacked states.
"""
from typing import Dict, List, Optional, Sequence, Set, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17          # LayerNormalization is in the default domain from 17 on; ReduceMean's axes still an attribute
IR_VERSION = 8      # the IR version of opset 17 (onnx 1.12), which every ONNX Runtime since 1.12 reads

ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}

ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
                 np.dtype(np.int32): TensorProto.INT32, np.dtype(np.uint8): TensorProto.UINT8}


def tensor_info(name: str, dtype, shape: Sequence[Union[int, str, None]]) -> onnx.ValueInfoProto:
    """A graph input or output: ``shape`` with ints for fixed axes and names (``"batch"``) for dynamic ones."""
    return helper.make_tensor_value_info(name, ELEMENT_TYPES[np.dtype(dtype)], list(shape))


class GraphBuilder:
    """The nodes and initializers of one graph, named ``<hint>_<n>`` so that every name is unique."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: List[onnx.NodeProto] = []
        self.initializers: List[onnx.TensorProto] = []
        self._counts: Dict[str, int] = {}
        self._used: Set[str] = set()
        self._constants: Dict[str, str] = {}

    def reserve(self, *names: str) -> None:
        """Keep ``names`` (the graph's inputs and outputs) for the caller: :meth:`fresh` never gives them."""
        self._used.update(names)

    def fresh(self, hint: str) -> str:
        """A new name from ``hint``: ``hint``, else ``hint_1``, ``hint_2``, ..."""
        count = self._counts.get(hint, 0)
        name = hint if count == 0 else "%s_%d" % (hint, count)
        while name in self._used:
            count += 1
            name = "%s_%d" % (hint, count)
        self._counts[hint] = count + 1
        self._used.add(name)
        return name

    def constant(self, value: np.ndarray, hint: str = "const", key: Optional[str] = None) -> str:
        """An initializer holding ``value`` (float arrays as float32); the same ``key`` gives the same one."""
        if key is not None and key in self._constants:
            return self._constants[key]
        value = np.asarray(value)
        if value.dtype.kind == "f":
            value = value.astype(np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        if key is not None:
            self._constants[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        """An int64 vector initializer (the shape and index inputs of Slice, Unsqueeze, ...), shared by equal ones."""
        values = [int(v) for v in values]
        return self.constant(np.array(values, dtype=np.int64), "ints", key="ints:%s" % values)

    def op(self, op_type: str, inputs: Sequence[str], hint: Optional[str] = None, outputs: int = 1,
           **attributes) -> Union[str, List[str]]:
        """A node of ``op_type``; its output name (or the list of ``outputs`` names when more than one)."""
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh("node_" + op_type.lower()),
                                           **attributes))
        return names[0] if outputs == 1 else names

    def one(self, op_type: str, inputs: Sequence[str], hint: Optional[str] = None, **attributes) -> str:
        """A node of one output, its name."""
        name = self.op(op_type, inputs, hint, **attributes)
        assert isinstance(name, str)
        return name

    def rename(self, value: str, name: str) -> str:
        """``value`` under the graph output name ``name`` (an Identity node)."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self.fresh("node_identity")))
        return name

    # -- compound pieces -----------------------------------------------------------------------------------------

    def activation(self, x: str, kind: Optional[str]) -> str:
        """``tanh``, ``sigmoid`` or ``relu`` of ``x``; ``x`` itself for None."""
        return x if kind is None else self.one(ACTIVATIONS[kind], [x])

    def dense(self, x: str, weight: np.ndarray, bias: Optional[np.ndarray] = None, activation: Optional[str] = None,
              hint: str = "dense") -> str:
        """Gluon's ``Dense(flatten=False)``: ``activation(x W^T + b)`` over the last axis of ``x``; ``weight``
        ``(units, in_units)`` as Gluon stores it."""
        y = self.one("MatMul", [x, self.constant(weight.T, hint + "_weight")], hint)
        if bias is not None:
            y = self.one("Add", [y, self.constant(bias, hint + "_bias")], hint)
        return self.activation(y, activation)

    def slice(self, x: str, axis: int, begin: int, end: int) -> str:
        """``x[..., begin:end, ...]`` on ``axis`` (``end`` may be a large number: to the end)."""
        return self.one("Slice", [x, self.ints([begin]), self.ints([end]), self.ints([axis])], "slice")

    def slices(self, x: str, axis: int, size: int, count: int) -> List[str]:
        """``count`` consecutive pieces of ``size`` on ``axis`` (what MXNet's ``split``/``SliceChannel`` gives)."""
        return [self.slice(x, axis, i * size, (i + 1) * size) for i in range(count)]

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.one("Unsqueeze", [x, self.ints([axis])], "unsqueeze")

    def squeeze(self, x: str, axis: int) -> str:
        return self.one("Squeeze", [x, self.ints([axis])], "squeeze")

    def concat(self, inputs: Sequence[str], axis: int) -> str:
        return self.one("Concat", list(inputs), "concat", axis=axis)

    def zeros(self, like: str, axes: int, trailing: Sequence[int] = ()) -> str:
        """Zeros of the first ``axes`` dimensions of ``like`` followed by the fixed ``trailing`` ones (float32)."""
        shape = self.slice(self.one("Shape", [like], "shape"), 0, 0, axes)
        if trailing:
            shape = self.concat([shape, self.ints(trailing)], 0)
        return self.one("ConstantOfShape", [shape], "zeros", value=numpy_helper.from_array(np.zeros(1, np.float32)))

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, epsilon: float) -> str:
        """Layer normalization over the last axis (``LayerNormalization``, opset 17)."""
        return self.one("LayerNormalization", [x, self.constant(gamma, "norm_gamma"), self.constant(beta, "norm_beta")],
                        "norm", axis=-1, epsilon=float(epsilon))

    def model(self, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto],
              doc: str = "") -> onnx.ModelProto:
        """The checked model of the graph: ``inputs`` and ``outputs`` name values of the nodes."""
        graph = helper.make_graph(self.nodes, self.name, list(inputs), list(outputs), initializer=self.initializers,
                                  doc_string=doc)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imcap",
                                  ir_version=IR_VERSION)
        onnx.checker.check_model(model)
        return model
