"""The Transformer decoder (:mod:`imcap.transformer`) as ONNX nodes: its initial states (``init_state``) and one
search step (``step``), node for node as :meth:`imcap.transformer.TransformerDecoder.decode_block` computes a block
of length one at inference (dropout is the identity there; no mask: the one query sees the whole prefix).

States as the module :mod:`imcap.transformer` describes them: static ``encoded`` and per layer the cross-attention
keys and values ``(rows, heads, regions, d)``; dynamic per layer the self-attention cache of keys and values
``(rows, heads, 1 + t, d)`` (its first slot of zeros never attended to), which each step grows by one slot, and the
position of the next word ``(rows, 1)``.
"""
import math
from typing import List, Sequence, Tuple

import numpy as np

from ..transformer import TransformerDecoder
from .blocks import INT64_MAX, attend_one, dense, layer_norm, mean, one_position_heads, position_step, split_heads
from .builder import GraphBuilder


def init_state(g: GraphBuilder, decoder: TransformerDecoder, encoded: str) -> Tuple[List[str], List[str]]:
    """:meth:`imcap.transformer.TransformerDecoder.init_state_graph`: ``encoded (batch, regions, enc)`` →
    ``(static, dynamic)``."""
    c = decoder.config
    heads, depth = c.attention_heads, c.model_size // c.attention_heads
    static: List[str] = [encoded]
    dynamic: List[str] = []
    for i, layer in enumerate(decoder.layers):
        kv = dense(g, encoded, layer.cross_kv, "layer%d_cross_kv" % i)                      # (batch, regions, 2d)
        static.extend(split_heads(g, g.slice(kv, 2, begin, end), heads, depth)
                      for begin, end in ((0, c.model_size), (c.model_size, 2 * c.model_size)))
        dynamic.extend(g.zeros(encoded, 1, [heads, 1, depth]) for _ in range(2))
    dynamic.append(g.zeros(encoded, 1, [1]))
    return static, dynamic


def _self_attention(g: GraphBuilder, layer, x: str, cache_keys: str, cache_values: str, heads: int, depth: int,
                    hint: str) -> Tuple[str, str, str]:
    """The self-attention of one position after the cached prefix: ``(context (rows, d), new cache keys, new
    cache values)``."""
    d = heads * depth
    qkv = dense(g, layer_norm(g, x, layer.self_norm), layer.self_qkv, hint + "_self_qkv")   # (rows, 3d)
    q, k, v = g.slices(qkv, 1, d, 3)
    new_keys = g.concat([cache_keys, one_position_heads(g, k, heads, depth)], 2)
    new_values = g.concat([cache_values, one_position_heads(g, v, heads, depth)], 2)
    keys, values = (g.slice(cache, 2, 1, INT64_MAX) for cache in (new_keys, new_values))   # without the first slot
    context, _ = attend_one(g, q, keys, values, heads, layer.scale)
    return context, new_keys, new_values


def _layer_step(g: GraphBuilder, layer, x: str, source_keys: str, source_values: str, cache_keys: str,
                cache_values: str, hint: str) -> Tuple[str, str, str, str]:
    """:meth:`imcap.transformer._TransformerLayer.decode` of one position ``x (rows, d)``: ``(x, cross-attention
    (rows, heads, regions), new cache keys, new cache values)``."""
    heads = layer.heads
    depth = layer.config.model_size // heads
    context, cache_keys, cache_values = _self_attention(g, layer, x, cache_keys, cache_values, heads, depth, hint)
    x = g.one("Add", [x, dense(g, context, layer.self_out, hint + "_self_out")], hint + "_x")
    query = dense(g, layer_norm(g, x, layer.cross_norm), layer.cross_q, hint + "_cross_q")
    context, probs = attend_one(g, query, source_keys, source_values, heads, layer.scale)
    x = g.one("Add", [x, dense(g, context, layer.cross_out, hint + "_cross_out")], hint + "_x")
    hidden = dense(g, layer_norm(g, x, layer.ff_norm), layer.ff_in, hint + "_ff_in")
    x = g.one("Add", [x, dense(g, hidden, layer.ff_out, hint + "_ff_out")], hint + "_x")
    return x, probs, cache_keys, cache_values


def step(g: GraphBuilder, decoder: TransformerDecoder, embedded: str, static: Sequence[str], dynamic: Sequence[str]
         ) -> Tuple[str, str, List[str]]:
    """:meth:`imcap.decoder.BlockDecoder.step`: ``embedded (rows, embed)`` → ``(output (rows, model_size),
    attention (rows, regions): the last layer's cross-attention averaged over the heads, new dynamic states)``."""
    c = decoder.config
    position, next_position = position_step(g, decoder.positions, dynamic[-1])
    scale = g.constant(np.array([math.sqrt(c.model_size)], np.float32), "embed_scale")
    x = g.one("Add", [g.one("Mul", [embedded, scale]), position], "x")
    new_dynamic: List[str] = []
    probs = ""
    for i, layer in enumerate(decoder.layers):
        x, probs, keys, values = _layer_step(g, layer, x, static[1 + 2 * i], static[2 + 2 * i], dynamic[2 * i],
                                             dynamic[2 * i + 1], "layer%d" % i)
        new_dynamic.extend([keys, values])
    new_dynamic.append(next_position)
    attention = mean(g, g.slices(probs, 1, 1, c.attention_heads))                           # (rows, 1, regions)
    return layer_norm(g, x, decoder.final_norm), g.squeeze(attention, 1), new_dynamic
