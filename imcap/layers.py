"""Small pieces shared by the image encoder and the Transformer and convolutional decoders: sinusoidal tables,
positional embeddings, multi-head attention and state helpers.

Everything here takes ``F`` (``mx.nd`` or ``mx.sym``) so that the same code runs imperatively and inside
hybridized graphs. Following ``docs/performance-notes.md`` it uses ``Activation``, ``FullyConnected`` and
``batch_dot`` rather than ``tanh``/``sigmoid``/``exp`` and reductions, whose CPU kernels are slow.
"""
import math

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

NEG_INF = -1e9  # additive attention bias of masked positions (softmax gives them exactly 0)


def sinusoids(length: int, depth: int) -> np.ndarray:
    """Fixed positional embeddings of Vaswani et al. (2017): ``(length, depth)``, the first half ``sin``, the
    second half ``cos`` of ``position / 10000 ** (2 i / depth)`` (as Sockeye and tensor2tensor)."""
    half = depth // 2
    channels = np.arange(half, dtype=np.float64)
    scaled = np.arange(length, dtype=np.float64)[:, None] / np.power(10000.0, 2.0 * channels / depth)[None, :]
    table = np.zeros((length, depth), dtype=np.float64)
    table[:, :half] = np.sin(scaled)
    table[:, half:2 * half] = np.cos(scaled)
    return table.astype(np.float32)


def sinusoids_2d(num_regions: int, depth: int) -> np.ndarray:
    """Fixed 2-D positional embeddings of a square grid, row-major: ``(num_regions, depth)``, the first half of
    the channels the :func:`sinusoids` of the row, the second half those of the column."""
    side = int(round(math.sqrt(num_regions)))
    assert side * side == num_regions, "not a square grid: %d regions" % num_regions
    half = depth // 2
    rows = sinusoids(side, half)
    columns = sinusoids(side, depth - half)
    index = np.arange(num_regions)
    return np.concatenate([rows[index // side], columns[index % side]], axis=1)


@mx.init.register
class Sinusoidal(mx.init.Initializer):
    """Fills a ``(..., length, depth)`` parameter with :func:`sinusoids` (``grid=True``: :func:`sinusoids_2d`)."""

    def __init__(self, grid: bool = False) -> None:
        super().__init__(grid=grid)
        self.grid = grid

    def _init_weight(self, name, arr) -> None:
        length, depth = arr.shape[-2], arr.shape[-1]
        table = sinusoids_2d(length, depth) if self.grid else sinusoids(length, depth)
        arr[:] = table.reshape(arr.shape)


class PositionalEmbedding(HybridBlock):
    """Target positions ``(batch, length)`` (floats) → ``(batch, length, depth)`` embeddings, ``fixed``
    (sinusoidal, not trained) or ``learned``. Positions beyond the table reuse its last row."""

    def __init__(self, max_length: int, depth: int, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        assert kind in ("fixed", "learned"), kind
        self.max_length, self.depth = max_length, depth
        with self.name_scope():
            if kind == "fixed":
                self.weight = self.params.get("fixed_weight", shape=(max_length, depth), init=Sinusoidal(),
                                              grad_req="null")
            else:
                self.weight = self.params.get("weight", shape=(max_length, depth))

    def hybrid_forward(self, F, positions, weight):
        positions = F.clip(positions, 0, self.max_length - 1)
        return F.Embedding(positions, weight, input_dim=self.max_length, output_dim=self.depth)


def sequence_positions(F, embedded, position):
    """Absolute positions ``(batch, length)`` of a target block ``embedded (batch, length, dim)`` that starts at
    ``position (batch, 1)``, and the position after it ``(batch, 1)``."""
    offsets = F.reshape(F.contrib.arange_like(embedded, axis=1), shape=(1, -1))            # (1, length)
    positions = F.broadcast_add(position, offsets)
    return positions, F.slice_axis(positions, axis=1, begin=-1, end=None) + 1


def batch_zeros(F, like, shape):
    """Zeros ``(batch,) + shape`` with the batch size of ``like`` (any array whose first axis is the batch)."""
    first = F.slice_axis(F.reshape(like, shape=(0, -1)), axis=1, begin=0, end=1)           # (batch, 1)
    zeros = F.BlockGrad(F.zeros_like(first))
    return F.broadcast_to(F.reshape(zeros, shape=(0,) + (1,) * len(shape)), shape=(0,) + tuple(shape))


def causal_bias(F, queries, keys, key_axis: int = 1):
    """Additive self-attention mask ``(1, L, K)`` for ``L`` queries that are the *last* ``L`` of ``K`` keys:
    query ``i`` sees key ``j`` iff ``K - 1 - j >= L - 1 - i`` (counted from the end, so a cached prefix of
    ``K - L`` keys is seen by every query). ``queries`` has ``L`` on axis 1, ``keys`` ``K`` on ``key_axis``."""
    from_end_q = F.reverse(F.contrib.arange_like(queries, axis=1), axis=0)                 # (L,)
    from_end_k = F.reverse(F.contrib.arange_like(keys, axis=key_axis), axis=0)             # (K,)
    masked = F.broadcast_lesser(F.reshape(from_end_k, shape=(1, -1)), F.reshape(from_end_q, shape=(-1, 1)))
    return F.expand_dims(masked * NEG_INF, axis=0)


def split_heads(F, x, heads: int):
    """``(batch, length, heads * d)`` → ``(batch, heads, length, d)``."""
    return F.transpose(F.reshape(x, shape=(0, 0, heads, -1)), axes=(0, 2, 1, 3))


def combine_heads(F, x, heads: int):
    """``(batch * heads, length, d)`` → ``(batch, length, heads * d)``."""
    x = F.reshape(x, shape=(-4, -1, heads, 0, 0))                                          # (batch, heads, length, d)
    return F.reshape(F.transpose(x, axes=(0, 2, 1, 3)), shape=(0, 0, -3))


def mean_over_heads(F, probs, heads: int):
    """Attention ``(batch * heads, L, K)`` → its mean over the heads ``(batch, L, K)`` (a sum of slices: MXNet's
    CPU ``mean`` is a slow generic reduction)."""
    probs = F.reshape(probs, shape=(-4, -1, heads, 0, 0))                                  # (batch, heads, L, K)
    if heads == 1:
        return F.reshape(probs, shape=(0, -3, 0))
    parts = F.split(probs, num_outputs=heads, axis=1, squeeze_axis=True)
    return F.add_n(*[parts[h] for h in range(heads)]) / heads


def dot_attention(F, queries, keys, values, heads: int, scale: float, bias=None, dropout: float = 0.0):
    """Scaled dot-product attention with ``heads`` heads (Vaswani et al. 2017, eq. 1).

    :param queries: ``(batch, L, heads * d)``.
    :param keys: ``(batch, heads, K, d)`` (already split into heads).
    :param values: ``(batch, heads, K, d)``.
    :param scale: factor of the scores (``1 / sqrt(d)``).
    :param bias: ``None`` or ``(1, L, K)`` additive bias (e.g. :func:`causal_bias`).
    :return: context ``(batch, L, heads * d)`` and the attention ``(batch * heads, L, K)``.
    """
    q = F.reshape(split_heads(F, queries * scale, heads), shape=(-3, 0, 0))                # (batch*heads, L, d)
    k = F.reshape(keys, shape=(-3, 0, 0))
    v = F.reshape(values, shape=(-3, 0, 0))
    scores = F.batch_dot(q, k, transpose_b=True)                                           # (batch*heads, L, K)
    if bias is not None:
        scores = scores + F.BlockGrad(F.broadcast_like(bias, scores))
    probs = F.softmax(scores, axis=-1)
    weights = F.Dropout(probs, p=dropout) if dropout > 0 else probs
    return combine_heads(F, F.batch_dot(weights, v), heads), probs


def symbol_or_ndarray(x):
    """``mx.sym`` for a Symbol, else ``mx.nd``."""
    return mx.sym if isinstance(x, mx.sym.Symbol) else mx.nd
