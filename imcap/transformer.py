"""Transformer decoder (Vaswani et al. 2017, "Attention Is All You Need", NeurIPS), pre-norm as Sockeye's
``transformer.py`` (layer norm before every sublayer, one after the last layer), attending to the encoded image
regions with cross-attention.

It keeps the contract of :mod:`imcap.decoder`. Static states: the encoded regions ``(batch, regions, enc)`` and,
per layer, the cross-attention keys and values ``(batch, heads, regions, d)`` (projected once per image).
Dynamic states: per layer the self-attention keys and values of the prefix ``(batch, heads, 1 + t, d)``, and
the position of the next word ``(batch, 1)``. Each cache starts with one slot of zeros that is never attended
to (MXNet's graphs cannot hold zero-size arrays), and each step appends one slot, so that a step costs one
position. A step is a block of length 1 (:class:`imcap.decoder.BlockDecoder`): the two agree by construction.
"""
import dataclasses
import math
from typing import Any

from mxnet.gluon import HybridBlock, nn

from . import constants as C
from . import layers
from .config import Config
from .decoder import BlockDecoder
from .utils import check_condition



@dataclasses.dataclass
class TransformerDecoderConfig(Config):
    """Pre-norm Transformer decoder.

    :param num_layers: decoder layers (self-attention, cross-attention, feed-forward each).
    :param model_size: size of every layer's input and output (``d_model``); must equal ``num_embed``.
    :param attention_heads: heads of both attentions (must divide ``model_size``).
    :param feed_forward_num_hidden: hidden size of the position-wise feed-forward network (ReLU).
    :param dropout_attention: dropout on the attention weights.
    :param dropout_act: dropout on the feed-forward hidden layer.
    :param dropout_prepost: dropout on each sublayer's output before the residual sum, and on the embedded
        target (after adding the positions).
    :param num_embed: target embedding size.
    :param encoder_num_hidden: size of the encoded regions.
    :param max_seq_len: positions of the sinusoidal table (later positions reuse the last one).
    """
    num_layers: int = 6
    model_size: int = 512
    attention_heads: int = 8
    feed_forward_num_hidden: int = 2048
    dropout_attention: float = 0.1
    dropout_act: float = 0.1
    dropout_prepost: float = 0.1
    num_embed: int = 512
    encoder_num_hidden: int = 512
    max_seq_len: int = 100

    @classmethod
    def from_options(cls, options: Any) -> "TransformerDecoderConfig":
        """The config that ``imcap.train``'s options describe (any object with those attribute names).

        :raises ImcapError: if ``--num-embed`` differs from ``--transformer-model-size``.
        """
        check_condition(options.num_embed == options.transformer_model_size, "the transformer decoder needs "
                        "--num-embed == --transformer-model-size (%d != %d)"
                        % (options.num_embed, options.transformer_model_size))
        return cls(num_layers=options.num_layers, model_size=options.transformer_model_size,
                   attention_heads=options.transformer_attention_heads,
                   feed_forward_num_hidden=options.transformer_feed_forward_num_hidden,
                   dropout_attention=options.transformer_dropout_attention,
                   dropout_act=options.transformer_dropout_act, dropout_prepost=options.transformer_dropout_prepost,
                   num_embed=options.num_embed, encoder_num_hidden=options.image_encoder_num_hidden,
                   max_seq_len=options.max_seq_len)

    @property
    def output_num_hidden(self) -> int:
        """Size of the decoder output (the input of the vocabulary projection)."""
        return self.model_size


class _TransformerLayer(HybridBlock):
    """One pre-norm decoder layer; its methods take ``F`` and run in any graph."""

    def __init__(self, config: TransformerDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        c = self.config = config
        d = c.model_size
        self.heads = c.attention_heads
        self.scale = 1.0 / math.sqrt(d // c.attention_heads)
        with self.name_scope():
            self.self_norm = nn.LayerNorm(in_channels=d, prefix="self_norm_")
            self.self_qkv = nn.Dense(3 * d, use_bias=False, flatten=False, in_units=d, prefix="self_qkv_")
            self.self_out = nn.Dense(d, use_bias=False, flatten=False, in_units=d, prefix="self_out_")
            self.cross_norm = nn.LayerNorm(in_channels=d, prefix="cross_norm_")
            self.cross_q = nn.Dense(d, use_bias=False, flatten=False, in_units=d, prefix="cross_q_")
            self.cross_kv = nn.Dense(2 * d, use_bias=False, flatten=False, in_units=c.encoder_num_hidden,
                                     prefix="cross_kv_")
            self.cross_out = nn.Dense(d, use_bias=False, flatten=False, in_units=d, prefix="cross_out_")
            self.ff_norm = nn.LayerNorm(in_channels=d, prefix="ff_norm_")
            self.ff_in = nn.Dense(c.feed_forward_num_hidden, activation="relu", flatten=False, in_units=d,
                                  prefix="ff_in_")
            self.ff_out = nn.Dense(d, flatten=False, in_units=c.feed_forward_num_hidden, prefix="ff_out_")

    def _dropout(self, F, x, p):
        return F.Dropout(x, p=p) if p > 0 else x

    def project_source(self, F, encoded):
        """Encoded regions ``(batch, regions, enc)`` → cross-attention keys and values ``(batch, heads, regions,
        d)``."""
        keys, values = F.split(self.cross_kv(encoded), num_outputs=2, axis=2)
        return layers.split_heads(F, keys, self.heads), layers.split_heads(F, values, self.heads)

    def decode(self, F, x, source_keys, source_values, cache_keys, cache_values, causal: bool):
        """Queries ``x (batch, L, d)`` after the cached prefix → ``(x, cross-attention (batch*heads, L, regions),
        new cache keys, new cache values)``."""
        c = self.config
        # self-attention over the prefix and the block itself
        q, k, v = F.split(self.self_qkv(self.self_norm(x)), num_outputs=3, axis=2)
        cache_keys = F.concat(cache_keys, layers.split_heads(F, k, self.heads), dim=2)     # (batch, heads, 1+K, d)
        cache_values = F.concat(cache_values, layers.split_heads(F, v, self.heads), dim=2)
        keys = F.slice_axis(cache_keys, axis=2, begin=1, end=None)  # without the unused first slot
        values = F.slice_axis(cache_values, axis=2, begin=1, end=None)
        bias = layers.causal_bias(F, x, keys, key_axis=2) if causal else None
        context, _ = layers.dot_attention(F, q, keys, values, self.heads, self.scale, bias, c.dropout_attention)
        x = x + self._dropout(F, self.self_out(context), c.dropout_prepost)
        # cross-attention over the regions
        query = self.cross_q(self.cross_norm(x))
        context, probs = layers.dot_attention(F, query, source_keys, source_values, self.heads, self.scale, None,
                                              c.dropout_attention)
        x = x + self._dropout(F, self.cross_out(context), c.dropout_prepost)
        # feed-forward
        hidden = self._dropout(F, self.ff_in(self.ff_norm(x)), c.dropout_act)
        x = x + self._dropout(F, self.ff_out(hidden), c.dropout_prepost)
        return x, probs, cache_keys, cache_values


@BlockDecoder.register(TransformerDecoderConfig, C.DECODER_TRANSFORMER)
class TransformerDecoder(BlockDecoder):
    """Pre-norm Transformer decoder with fixed sinusoidal target positions; see the module docstring for its
    states. Its output is the final layer norm's ``(batch, [length,] model_size)``; its attention is the last
    layer's cross-attention averaged over the heads.

    :raises ImcapError: if ``num_embed != model_size`` or the heads do not divide ``model_size``.
    """

    def __init__(self, config: TransformerDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = c = config
        check_condition(c.num_embed == c.model_size, "the transformer decoder needs --num-embed == "
                        "--transformer-model-size (%d != %d)" % (c.num_embed, c.model_size))
        check_condition(c.model_size % c.attention_heads == 0, "--transformer-attention-heads (%d) must divide "
                        "--transformer-model-size (%d)" % (c.attention_heads, c.model_size))
        self.num_static_states = 1 + 2 * c.num_layers
        self.num_dynamic_states = 2 * c.num_layers + 1
        self._embed_scale = math.sqrt(c.model_size)
        with self.name_scope():
            self.positions = layers.PositionalEmbedding(c.max_seq_len, c.model_size, "fixed", prefix="pos_")
            self.layers = nn.HybridSequential(prefix="")
            with self.layers.name_scope():
                for i in range(c.num_layers):
                    self.layers.add(_TransformerLayer(c, prefix="layer%d_" % i))
            self.final_norm = nn.LayerNorm(in_channels=c.model_size, prefix="final_norm_")

    def init_state_graph(self, F, encoded):
        """See :meth:`imcap.decoder.Decoder.init_state_graph`."""
        static, dynamic = [encoded], []
        for layer in self.layers:
            keys, values = layer.project_source(F, encoded)
            static.extend([keys, values])
            dynamic.extend([F.zeros_like(F.slice_axis(keys, axis=2, begin=0, end=1)),
                            F.zeros_like(F.slice_axis(values, axis=2, begin=0, end=1))])
        dynamic.append(layers.batch_zeros(F, encoded, (1,)))
        return static, dynamic

    def decode_block(self, F, embedded, static, dynamic, causal: bool):
        """``embedded (batch, L, embed)`` → ``(outputs (batch, L, model_size), attention (batch, L, regions),
        new dynamic)``; see :meth:`imcap.decoder.BlockDecoder.decode_block`."""
        c = self.config
        positions, next_position = layers.sequence_positions(F, embedded, dynamic[-1])
        x = embedded * self._embed_scale + self.positions(positions)
        if c.dropout_prepost > 0:
            x = F.Dropout(x, p=c.dropout_prepost)
        new_dynamic, probs = [], None
        for i, layer in enumerate(self.layers):
            x, probs, keys, values = layer.decode(F, x, static[1 + 2 * i], static[2 + 2 * i], dynamic[2 * i],
                                                  dynamic[2 * i + 1], causal)
            new_dynamic.extend([keys, values])
        new_dynamic.append(next_position)
        return self.final_norm(x), layers.mean_over_heads(F, probs, c.attention_heads), new_dynamic
