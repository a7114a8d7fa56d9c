"""Decoders with attention over image regions, behind one contract and a registry (after Sockeye's
``decoder.py``: ``Decoder.register`` / ``get_decoder``).

The contract every decoder keeps, so that training, beam search and ensembles never ask which one they hold:

* ``init_state(encoded)``: ``(batch, regions, encoder_hidden)`` → ``(static, dynamic)`` lists of arrays whose
  first axis is the batch. ``static`` states (e.g. attention keys) depend on the image only, so beam search
  repeats them once and never reorders them; ``dynamic`` states (recurrent state, caches of the prefix) are
  reordered along with the hypotheses (``take`` along axis 0). A dynamic state may grow along another axis
  from step to step (the Transformer's self-attention cache).
* ``step(embedded, static, dynamic)``: one target position ``(batch, embed)`` → ``(output (batch, out),
  attention (batch, regions), new dynamic)``.
* ``decode_sequence(embedded, static, dynamic)``: a whole target prefix ``(batch, length, embed)`` →
  ``(outputs (batch, length, out), attention (batch, length, regions))``, equal to stepping through it.
* ``hybridize_sequence(active, **kwargs)``: hybridize what ``decode_sequence`` runs (for training).

Registered decoders: ``rnn`` (here), ``transformer`` (:mod:`imcap.transformer`) and ``cnn``
(:mod:`imcap.convolution`). The config of each has ``num_embed`` and ``output_num_hidden`` (the size of the
output, i.e. of the vocabulary projection's input).
"""
import dataclasses
from typing import Dict, List, Tuple, Type

import mxnet as mx
from mxnet.gluon import HybridBlock, nn, rnn

from . import constants as C
from .config import Config
from .utils import check_condition


@dataclasses.dataclass
class RNNDecoderConfig(Config):
    """Show, Attend and Tell decoder (Xu et al. 2015, ICML): an RNN whose input is the previous word and
    the gated attention context over the regions, with a deep output layer.

    :param cell_type: ``lstm`` or ``gru``.
    :param num_layers: stacked RNN layers (attention is queried with the top layer's previous state).
    :param num_hidden: RNN state size.
    :param attention_type: ``mlp`` (Bahdanau et al. 2015) or ``dot`` (scaled, Luong et al. 2015).
    :param attention_num_hidden: hidden size of the MLP attention.
    :param state_init: ``avg`` (state from the mean region, as Xu et al.) or ``zero``.
    :param context_gating: gate the context with ``sigmoid(W h)`` (Xu et al. §4.2.1).
    :param num_embed: target embedding size (the decoder input).
    :param output_num_hidden: size of the deep output layer (the input to the vocabulary projection).
    :param dropout: dropout on the RNN outputs and on the deep output.
    """
    cell_type: str = "lstm"
    num_layers: int = 1
    num_hidden: int = 512
    attention_type: str = C.ATT_MLP
    attention_num_hidden: int = 512
    state_init: str = C.STATE_INIT_AVG
    context_gating: bool = True
    num_embed: int = 256
    output_num_hidden: int = 256
    encoder_num_hidden: int = 512
    dropout: float = 0.3


class Decoder(HybridBlock):
    """Base of all decoders; see the module docstring for the contract."""

    _registry: Dict[Type[Config], Tuple[str, Type["Decoder"]]] = {}

    @classmethod
    def register(cls, config_type: Type[Config], name: str):
        """Class decorator: decoders of ``config_type`` are built by :func:`get_decoder` under ``name``."""
        def wrapper(decoder_cls):
            cls._registry[config_type] = (name, decoder_cls)
            return decoder_cls
        return wrapper

    num_dynamic_states = 0  # type: int
    num_static_states = 0  # type: int

    def init_state(self, encoded) -> Tuple[List, List]:
        raise NotImplementedError()

    def step(self, embedded, static: List, dynamic: List):
        raise NotImplementedError()

    def decode_sequence(self, embedded, static: List, dynamic: List):
        raise NotImplementedError()

    def hybridize_sequence(self, active: bool = True, **kwargs) -> None:
        """Hybridize what :meth:`decode_sequence` runs; by default the whole decoder, whose ``hybrid_forward``
        decodes a sequence."""
        self.hybridize(active, **kwargs)


def get_decoder(config: Config, prefix: str = "decoder_") -> Decoder:
    """Build the decoder registered for ``type(config)``.

    :raises ImcapError: if no decoder is registered for it.
    """
    check_condition(type(config) in Decoder._registry, "no decoder for config %s" % type(config).__name__)
    return Decoder._registry[type(config)][1](config, prefix=prefix)


def decoder_name(config: Config) -> str:
    """Registered name (``--decoder`` choice) of a decoder config."""
    return Decoder._registry[type(config)][0]


def decoder_config_type(name: str) -> Type[Config]:
    """Config type registered under ``name``."""
    for config_type, (registered, _) in Decoder._registry.items():
        if registered == name:
            return config_type
    raise KeyError(name)


def region_mean(F, encoded):
    """Mean over regions ``(batch, regions, dim)`` → ``(batch, dim)``, as a batched GEMM (MXNet's CPU mean and
    its backward are generic reductions, several times slower)."""
    weights = F.BlockGrad(F.ones_like(F.slice_axis(encoded, axis=2, begin=0, end=1)))           # (batch, regions, 1)
    weights = F.broadcast_div(weights, F.sum(weights, axis=1, keepdims=True))
    return F.squeeze(F.batch_dot(weights, encoded, transpose_a=True), axis=1)


class _RNNAttentionStep(HybridBlock):
    """One step of the attention RNN: ``(embedded, h/c states, encoded, keys)`` → next states, context, weights.

    Shapes: embedded ``(batch, embed)``; encoded ``(batch, regions, enc)``; keys ``(batch, regions, att)``
    (MLP) or ``(batch, regions, enc)`` (dot); every state ``(batch, hidden)``.
    Returns ``[top hidden (batch, hidden), context (batch, enc), attention (batch, regions)] + new states``.
    """

    def __init__(self, config: RNNDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        c = config
        self._states_per_layer = 2 if c.cell_type == "lstm" else 1
        with self.name_scope():
            query_size = c.attention_num_hidden if c.attention_type == C.ATT_MLP else c.encoder_num_hidden
            # One projection of the previous top state gives the attention query and the context gate.
            self._query_size = query_size
            self.query = nn.Dense(query_size + (c.encoder_num_hidden if c.context_gating else 0),
                                  in_units=c.num_hidden, flatten=False)
            if c.attention_type == C.ATT_MLP:
                self.score = nn.Dense(1, use_bias=False, in_units=c.attention_num_hidden, flatten=False)
            self.cells = nn.HybridSequential()
            for layer in range(c.num_layers):
                in_size = c.num_embed + c.encoder_num_hidden if layer == 0 else c.num_hidden
                cell_type = rnn.LSTMCell if c.cell_type == "lstm" else rnn.GRUCell
                self.cells.add(cell_type(c.num_hidden, input_size=in_size))

    def hybrid_forward(self, F, embedded, encoded, keys, *states):
        c = self.config
        top_hidden = states[(c.num_layers - 1) * self._states_per_layer]
        projected = self.query(top_hidden)
        query = F.slice_axis(projected, axis=1, begin=0, end=self._query_size)
        if c.attention_type == C.ATT_MLP:
            # keys + query broadcast over the regions, written as a batched GEMM with ones: MXNet's CPU backward
            # of broadcast_add (a generic reduction) is ~10x slower than that of batch_dot.
            ones = F.BlockGrad(F.ones_like(F.slice_axis(keys, axis=2, begin=0, end=1)))     # (batch, regions, 1)
            expanded = F.batch_dot(ones, F.expand_dims(query, axis=1))                        # (batch, regions, att)
            hidden = F.Activation(keys + expanded, act_type="tanh")
            scores = F.squeeze(self.score(hidden), axis=2)                            # (batch, regions)
        else:
            scores = F.squeeze(F.batch_dot(keys, F.expand_dims(query, axis=2)), axis=2)
            scores = scores / (c.encoder_num_hidden ** 0.5)
        attention = F.softmax(scores, axis=1)
        context = F.squeeze(F.batch_dot(F.expand_dims(attention, axis=1), encoded), axis=1)  # (batch, enc)
        if c.context_gating:
            gate = F.Activation(F.slice_axis(projected, axis=1, begin=self._query_size, end=None), act_type="sigmoid")
            gated = context * gate
        else:
            gated = context
        x = F.concat(embedded, gated, dim=1)
        new_states = []
        for layer, cell in enumerate(self.cells):
            layer_states = list(states[layer * self._states_per_layer:(layer + 1) * self._states_per_layer])
            x, layer_states = cell(x, layer_states)
            new_states.extend(layer_states)
            if layer + 1 < c.num_layers and c.dropout > 0:
                x = F.Dropout(x, p=c.dropout)
        return [x, context, attention] + new_states


@Decoder.register(RNNDecoderConfig, C.DECODER_RNN)
class RNNDecoder(Decoder):
    """Attention RNN decoder (Show, Attend and Tell, Xu et al. 2015) with a deep output layer
    ``tanh(W [h_t; context_t; embedded_t])``.

    Static states: ``encoded (batch, regions, enc)``, attention ``keys``. Dynamic states: per layer ``h, c``
    (LSTM) or ``h`` (GRU), each ``(batch, num_hidden)``.
    """

    def __init__(self, config: RNNDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = c = config
        self.num_static_states = 2
        self.num_dynamic_states = c.num_layers * (2 if c.cell_type == "lstm" else 1)
        with self.name_scope():
            self.keys = nn.Dense(c.attention_num_hidden if c.attention_type == C.ATT_MLP else c.encoder_num_hidden,
                                 use_bias=False, flatten=False, in_units=c.encoder_num_hidden)
            self.init = None
            if c.state_init == C.STATE_INIT_AVG:
                self.init = nn.Dense(self.num_dynamic_states * c.num_hidden, activation="tanh",
                                     in_units=c.encoder_num_hidden)
            self.cell = _RNNAttentionStep(c)
            self.output = nn.Dense(c.output_num_hidden, activation="tanh", flatten=False,
                                   in_units=c.num_hidden + c.encoder_num_hidden + c.num_embed)
            self.output_dropout = nn.Dropout(c.dropout) if c.dropout > 0 else None

    def init_state(self, encoded):
        F = mx.sym if isinstance(encoded, mx.sym.Symbol) else mx.nd
        return self._init_state(F, encoded)

    def _init_state(self, F, encoded):
        c = self.config
        keys = self.keys(encoded)
        if self.init is not None:
            mean = region_mean(F, encoded)
            dynamic = list(F.split(self.init(mean), num_outputs=self.num_dynamic_states, axis=1)) \
                if self.num_dynamic_states > 1 else [self.init(mean)]
        else:
            zeros = F.zeros_like(F.slice_axis(F.slice_axis(encoded, axis=1, begin=0, end=1), axis=2, begin=0,
                                              end=1)).reshape((0, 1))  # (batch, 1)
            dynamic = [F.broadcast_to(zeros, shape=(0, c.num_hidden)) for _ in range(self.num_dynamic_states)]
        return [encoded, keys], dynamic

    def _output(self, hidden, context, embedded):
        F = mx.sym if isinstance(hidden, mx.sym.Symbol) else mx.nd
        axis = hidden.ndim - 1 if not isinstance(hidden, mx.sym.Symbol) else -1
        out = self.output(F.concat(hidden, context, embedded, dim=axis))
        return self.output_dropout(out) if self.output_dropout is not None else out

    def hybridize_sequence(self, active: bool = True, **kwargs) -> None:
        """Teacher forcing loops over the positions in Python: hybridize the step cell and the output layer."""
        self.cell.hybridize(active, **kwargs)
        self.output.hybridize(active, **kwargs)

    def step(self, embedded, static, dynamic):
        """One step: ``embedded (batch, embed)`` → ``(output (batch, out), attention (batch, regions), dynamic)``."""
        results = self.cell(embedded, static[0], static[1], *dynamic)
        hidden, context, attention = results[:3]
        return self._output(hidden, context, embedded), attention, list(results[3:])

    def decode_sequence(self, embedded, static, dynamic):
        """Teacher-forced decoding: ``embedded (batch, length, embed)`` →
        ``(outputs (batch, length, out), attention (batch, length, regions))``."""
        length = embedded.shape[1]
        steps = mx.nd.split(embedded, num_outputs=length, axis=1, squeeze_axis=True) if length > 1 \
            else [mx.nd.squeeze(embedded, axis=1)]
        hiddens, contexts, attentions = [], [], []
        for step_embedded in steps:
            results = self.cell(step_embedded, static[0], static[1], *dynamic)
            hiddens.append(results[0])
            contexts.append(results[1])
            attentions.append(results[2])
            dynamic = list(results[3:])
        hidden = mx.nd.stack(*hiddens, axis=1)
        context = mx.nd.stack(*contexts, axis=1)
        return self._output(hidden, context, embedded), mx.nd.stack(*attentions, axis=1)
