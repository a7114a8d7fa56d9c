"""Gluon blocks as ONNX nodes, shared by the decoders' exporters (:mod:`imcap.export.rnn`,
:mod:`imcap.export.transformer`, :mod:`imcap.export.convolution`) and the graphs (:mod:`imcap.export.graphs`):
parameters read as numpy, dense layers, layer norms, the position tables of :class:`imcap.layers.PositionalEmbedding`
and multi-head dot-product attention (:func:`imcap.layers.dot_attention`) for one query position.
"""
from typing import Any, List, Tuple

import numpy as np

from .builder import GraphBuilder

INT64_MAX = int(np.iinfo(np.int64).max)   # "to the end" of a Slice


def array(param: Any) -> np.ndarray:
    """A Gluon parameter's value as float32 numpy (from its first device)."""
    return param.list_data()[0].asnumpy().astype(np.float32)


def dense(g: GraphBuilder, x: str, block: Any, hint: str) -> str:
    """Gluon ``nn.Dense`` ``block`` (``flatten=False``, or a 2-D input) applied to ``x``, its activation included."""
    bias = array(block.bias) if block.bias is not None else None
    activation = block.act._act_type if block.act is not None else None
    return g.dense(x, array(block.weight), bias, activation, hint)


def layer_norm(g: GraphBuilder, x: str, block: Any) -> str:
    """Gluon ``nn.LayerNorm`` ``block`` (over the last axis) applied to ``x``."""
    return g.layer_norm(x, array(block.gamma), array(block.beta), block._epsilon)


def position_step(g: GraphBuilder, block: Any, position: str) -> Tuple[str, str]:
    """:class:`imcap.layers.PositionalEmbedding` ``block`` at the position of one step: ``position (rows, 1)``
    float32 → ``(embedding (rows, depth), next position (rows, 1))``, positions past the table reusing its last row
    (:func:`imcap.layers.sequence_positions` for a block of length one)."""
    table = array(block.weight)                                                             # (max_length, depth)
    clipped = g.one("Clip", [position, g.constant(np.array(0, np.float32), "zero"),
                             g.constant(np.array(len(table) - 1, np.float32), "last_position")])
    index = g.squeeze(g.one("Cast", [clipped], "position_index", to=7), 1)                  # int64 (rows,)
    embedding = g.one("Gather", [g.constant(table, "position_table"), index], "position_embedding", axis=0)
    one = g.constant(np.ones(1, np.float32), "one", key="one")
    return embedding, g.one("Add", [position, one], "next_position")


def split_heads(g: GraphBuilder, x: str, heads: int, depth: int) -> str:
    """:func:`imcap.layers.split_heads`: ``(batch, length, heads * depth)`` → ``(batch, heads, length, depth)``."""
    return g.one("Transpose", [g.one("Reshape", [x, g.ints([0, 0, heads, depth])], "heads")], "heads",
                 perm=[0, 2, 1, 3])


def one_position_heads(g: GraphBuilder, x: str, heads: int, depth: int) -> str:
    """One position ``(rows, heads * depth)`` → ``(rows, heads, 1, depth)`` (split_heads of a length-one block)."""
    return g.one("Reshape", [x, g.ints([0, heads, 1, depth])], "heads")


def attend_one(g: GraphBuilder, query: str, keys: str, values: str, heads: int, scale: float) -> Tuple[str, str]:
    """:func:`imcap.layers.dot_attention` for one query position without a bias: ``query (rows, heads * d)``,
    ``keys`` and ``values (rows, heads, K, d)`` → ``(context (rows, heads * d), attention (rows, heads, K))``."""
    scaled = g.one("Mul", [query, g.constant(np.array([scale], np.float32), "scale", key="scale:%r" % scale)])
    q = g.one("Reshape", [scaled, g.ints([0, heads, 1, -1])], "query_heads")                # (rows, heads, 1, d)
    scores = g.one("MatMul", [q, g.one("Transpose", [keys], "keys_t", perm=[0, 1, 3, 2])], "scores")
    probs = g.one("Softmax", [scores], "attention", axis=-1)                                # (rows, heads, 1, K)
    context = g.one("MatMul", [probs, values], "context")                                   # (rows, heads, 1, d)
    return g.one("Reshape", [context, g.ints([0, -1])], "context"), g.squeeze(probs, 2)


def mean(g: GraphBuilder, values: List[str]) -> str:
    """The mean of same-shaped ``values`` (a sum, then a division, as :func:`imcap.layers.mean_over_heads`)."""
    total = values[0]
    for value in values[1:]:
        total = g.one("Add", [total, value])
    if len(values) == 1:
        return total
    return g.one("Div", [total, g.constant(np.array([len(values)], np.float32), "count")], "mean")
