"""The convolutional decoder (:mod:`imcap.convolution`, ConvS2S) as ONNX nodes: its initial states
(``init_state``) and one search step (``step``), node for node as
:meth:`imcap.convolution.ConvolutionalDecoder.decode_block` computes a block of length one at inference (dropout
is the identity there).

States as :mod:`imcap.convolution` describes them: static ``encoded``, the attention keys and values ``(rows,
regions, num_embed)``; dynamic per layer the last ``kernel_width - 1`` inputs of its convolution ``(rows,
kernel_width - 1, num_hidden)`` and the position of the next word ``(rows, 1)``.
"""
from typing import List, Sequence, Tuple

import numpy as np

from ..convolution import SQRT_HALF, ConvolutionalDecoder
from .blocks import INT64_MAX, dense, mean, position_step
from .builder import GraphBuilder


def init_state(g: GraphBuilder, decoder: ConvolutionalDecoder, encoded: str) -> Tuple[List[str], List[str]]:
    """:meth:`imcap.convolution.ConvolutionalDecoder.init_state_graph`: ``encoded (batch, regions, enc)`` →
    ``(static, dynamic)``."""
    c = decoder.config
    static = [encoded, dense(g, encoded, decoder.keys, "keys"), dense(g, encoded, decoder.values, "values")]
    dynamic = [g.zeros(encoded, 1, [c.kernel_width - 1, c.num_hidden]) for _ in range(c.num_layers)]
    return static, dynamic + [g.zeros(encoded, 1, [1])]


def _scaled(g: GraphBuilder, x: str, factor: float) -> str:
    return g.one("Mul", [x, g.constant(np.array([factor], np.float32), "factor", key="factor:%r" % factor)])


def _layer_step(g: GraphBuilder, layer, x: str, window: str, target: str, keys: str, values: str, hint: str
                ) -> Tuple[str, str, str]:
    """:meth:`imcap.convolution._ConvolutionLayer.decode` of one position ``x (rows, hidden)`` after ``window
    (rows, width - 1, hidden)``: ``(x, attention (rows, regions), new window)``."""
    c = layer.config
    padded = g.concat([window, g.unsqueeze(x, 1)], 1)                                       # (rows, width, hidden)
    # the convolution of the last position: its width inputs side by side, as the shifted slices concatenated
    hidden = dense(g, g.one("Reshape", [padded, g.ints([0, -1])], "conv_input"), layer.conv, hint + "_conv")
    linear, gate = g.slices(hidden, 1, c.num_hidden, 2)
    h = g.one("Mul", [linear, g.activation(gate, "sigmoid")], hint + "_glu")
    query = _scaled(g, g.one("Add", [dense(g, h, layer.attention_in, hint + "_att_in"), target]), SQRT_HALF)
    keys_t = g.one("Transpose", [keys], "keys_t", perm=[0, 2, 1])
    scores = _scaled(g, g.squeeze(g.one("MatMul", [g.unsqueeze(query, 1), keys_t]), 1), layer.scale)
    probs = g.one("Softmax", [scores], "attention", axis=-1)                                # (rows, regions)
    context = g.squeeze(g.one("MatMul", [g.unsqueeze(probs, 1), values]), 1)                # (rows, embed)
    h = _scaled(g, g.one("Add", [dense(g, context, layer.attention_out, hint + "_att_out"), h]), SQRT_HALF)
    new_window = g.slice(padded, 1, 1, INT64_MAX)
    return _scaled(g, g.one("Add", [h, x]), SQRT_HALF), probs, new_window


def step(g: GraphBuilder, decoder: ConvolutionalDecoder, embedded: str, static: Sequence[str],
         dynamic: Sequence[str]) -> Tuple[str, str, List[str]]:
    """:meth:`imcap.decoder.BlockDecoder.step`: ``embedded (rows, embed)`` → ``(output (rows, out), attention (rows,
    regions): the mean of the layers' attentions, new dynamic states)``."""
    position, next_position = position_step(g, decoder.positions, dynamic[-1])
    target = g.one("Add", [embedded, position], "target")
    x = dense(g, target, decoder.input, "input")
    new_dynamic, attentions = [], []
    for i, layer in enumerate(decoder.layers):
        x, probs, window = _layer_step(g, layer, x, dynamic[i], target, static[1], static[2], "layer%d" % i)
        new_dynamic.append(window)
        attentions.append(probs)
    return dense(g, x, decoder.output, "output"), mean(g, attentions), new_dynamic + [next_position]
