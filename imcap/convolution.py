"""Convolutional decoder (ConvS2S: Gehring et al. 2017, "Convolutional Sequence to Sequence Learning", ICML):
causal convolutions with gated linear units, residual connections and an attention over the image regions in
every layer.

It keeps the contract of :mod:`imcap.decoder`. Static states: the encoded regions ``(batch, regions, enc)``, the
attention keys and values ``(batch, regions, num_embed)``. Dynamic states: per layer the last
``kernel_width - 1`` inputs of its convolution ``(batch, kernel_width - 1, num_hidden)`` (zeros at the start: the
left padding of the causal convolution), and the position of the next word ``(batch, 1)``. A convolution is
one ``FullyConnected`` over the ``kernel_width`` inputs of each position laid side by side, and a step is a
block of length 1 (:class:`imcap.decoder.BlockDecoder`).
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

SQRT_HALF = math.sqrt(0.5)


@dataclasses.dataclass
class ConvolutionalDecoderConfig(Config):
    """ConvS2S decoder.

    :param num_layers: convolution layers (each with its own attention).
    :param num_hidden: channels of the convolutions (the GLU halves ``2 * num_hidden``).
    :param kernel_width: width of the causal convolutions (at least 2).
    :param num_embed: target embedding size (also the size of the attention's keys and values).
    :param output_num_hidden: size of the output (the input of the vocabulary projection).
    :param encoder_num_hidden: size of the encoded regions.
    :param dropout: dropout on the embedded target, before every convolution and on the output.
    :param max_seq_len: learned target positions (later positions reuse the last one).
    """
    num_layers: int = 4
    num_hidden: int = 512
    kernel_width: int = 3
    num_embed: int = 256
    output_num_hidden: int = 256
    encoder_num_hidden: int = 512
    dropout: float = 0.2
    max_seq_len: int = 100

    @classmethod
    def from_options(cls, options: Any) -> "ConvolutionalDecoderConfig":
        """The config that ``imcap.train``'s options describe (any object with those attribute names)."""
        return cls(num_layers=options.num_layers, num_hidden=options.cnn_num_hidden,
                   kernel_width=options.cnn_kernel_width, num_embed=options.num_embed,
                   output_num_hidden=options.output_num_hidden, encoder_num_hidden=options.image_encoder_num_hidden,
                   dropout=options.cnn_dropout, max_seq_len=options.max_seq_len)


class _ConvolutionLayer(HybridBlock):
    """Causal convolution + GLU + attention + residual; :meth:`decode` takes ``F`` and runs in any graph."""

    def __init__(self, config: ConvolutionalDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        c = self.config = config
        self.width = c.kernel_width
        self.scale = 1.0 / math.sqrt(c.num_embed)
        with self.name_scope():
            self.conv = nn.Dense(2 * c.num_hidden, flatten=False, in_units=c.kernel_width * c.num_hidden,
                                 prefix="conv_")
            self.attention_in = nn.Dense(c.num_embed, flatten=False, in_units=c.num_hidden, prefix="att_in_")
            self.attention_out = nn.Dense(c.num_hidden, flatten=False, in_units=c.num_embed, prefix="att_out_")

    def decode(self, F, x, window, target, keys, values):
        """Inputs ``x (batch, L, hidden)`` after the ``window (batch, width - 1, hidden)`` of earlier inputs, target
        embeddings ``(batch, L, embed)`` → ``(x, attention (batch, L, regions), new window)``."""
        c = self.config
        residual = x
        if c.dropout > 0:
            x = F.Dropout(x, p=c.dropout)
        padded = F.concat(window, x, dim=1)                                                # (batch, width-1+L, hidden)
        k = self.width
        shifted = [F.slice_axis(padded, axis=1, begin=i, end=i - (k - 1) if i < k - 1 else None) for i in range(k)]
        hidden = self.conv(F.concat(*shifted, dim=2))                                      # (batch, L, 2 hidden)
        linear, gate = F.split(hidden, num_outputs=2, axis=2)
        h = linear * F.Activation(gate, act_type="sigmoid")  # GLU
        # attention: the state as a query, combined with the target embedding (ConvS2S eq. 3)
        query = (self.attention_in(h) + target) * SQRT_HALF
        scores = F.batch_dot(query, keys, transpose_b=True) * self.scale                   # (batch, L, regions)
        probs = F.softmax(scores, axis=-1)
        context = F.batch_dot(probs, values)                                               # (batch, L, embed)
        h = (self.attention_out(context) + h) * SQRT_HALF
        new_window = F.slice_axis(padded, axis=1, begin=-(k - 1), end=None)
        return (h + residual) * SQRT_HALF, probs, new_window


@BlockDecoder.register(ConvolutionalDecoderConfig, C.DECODER_CNN)
class ConvolutionalDecoder(BlockDecoder):
    """ConvS2S decoder with learned target positions; see the module docstring for its states. Its output is
    ``Dense(output_num_hidden)`` of the last layer (dropout after it); its attention is the mean of the layers'
    attentions (as fairseq's ``fconv``).

    :raises ImcapError: if ``kernel_width < 2``.
    """

    def __init__(self, config: ConvolutionalDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = c = config
        check_condition(c.kernel_width >= 2, "--cnn-kernel-width must be at least 2 (is %d)" % c.kernel_width)
        self.num_static_states = 3
        self.num_dynamic_states = c.num_layers + 1
        with self.name_scope():
            self.positions = layers.PositionalEmbedding(c.max_seq_len, c.num_embed, "learned", prefix="pos_")
            self.keys = nn.Dense(c.num_embed, flatten=False, in_units=c.encoder_num_hidden, prefix="keys_")
            self.values = nn.Dense(c.num_embed, flatten=False, in_units=c.encoder_num_hidden, prefix="values_")
            self.input = nn.Dense(c.num_hidden, flatten=False, in_units=c.num_embed, prefix="input_")
            self.layers = nn.HybridSequential(prefix="")
            with self.layers.name_scope():
                for i in range(c.num_layers):
                    self.layers.add(_ConvolutionLayer(c, prefix="layer%d_" % i))
            self.output = nn.Dense(c.output_num_hidden, flatten=False, in_units=c.num_hidden, prefix="output_")

    def init_state_graph(self, F, encoded):
        """See :meth:`imcap.decoder.Decoder.init_state_graph`."""
        c = self.config
        static = [encoded, self.keys(encoded), self.values(encoded)]
        dynamic = [layers.batch_zeros(F, encoded, (c.kernel_width - 1, c.num_hidden)) for _ in range(c.num_layers)]
        dynamic.append(layers.batch_zeros(F, encoded, (1,)))
        return static, dynamic

    def decode_block(self, F, embedded, static, dynamic, causal: bool):
        """``embedded (batch, L, embed)`` → ``(outputs (batch, L, out), attention (batch, L, regions), new
        dynamic)``; the convolutions are causal by construction, so ``causal`` changes nothing (see
        :meth:`imcap.decoder.BlockDecoder.decode_block`)."""
        c = self.config
        positions, next_position = layers.sequence_positions(F, embedded, dynamic[-1])
        target = embedded + self.positions(positions)
        if c.dropout > 0:
            target = F.Dropout(target, p=c.dropout)
        x = self.input(target)
        new_dynamic, attentions = [], []
        for i, layer in enumerate(self.layers):
            x, probs, window = layer.decode(F, x, dynamic[i], target, static[1], static[2])
            new_dynamic.append(window)
            attentions.append(probs)
        new_dynamic.append(next_position)
        attention = attentions[0] if len(attentions) == 1 else F.add_n(*attentions) / len(attentions)
        outputs = self.output(x)
        if c.dropout > 0:
            outputs = F.Dropout(outputs, p=c.dropout)
        return outputs, attention, new_dynamic
