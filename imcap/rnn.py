"""The recurrent decoder: Show, Attend and Tell (Xu et al. 2015, ICML), an LSTM, GRU or vanilla (tanh) RNN whose
input is the previous word and the gated attention context over the image regions, with a deep output layer; or,
with attention type ``none``, Show and Tell (Vinyals et al. 2015, CVPR), whose teacher forcing runs the whole caption
through MXNet's fused RNN operator (:class:`_FusedRNN`). It keeps the contract of :mod:`imcap.decoder` and is
registered as ``rnn``.
"""
import dataclasses
import functools
from typing import Any

import mxnet as mx
from mxnet.gluon import HybridBlock, nn, rnn

from . import constants as C
from .config import Config
from .decoder import Decoder
from .rnn_teacher_forcing import TeacherForcingGraphs
from .utils import check_condition


@dataclasses.dataclass
class RNNDecoderConfig(Config):
    """Show, Attend and Tell decoder (Xu et al. 2015, ICML): an RNN whose input is the previous word and
    the gated attention context over the regions, with a deep output layer; or, with ``attention_type`` ``none``,
    Show and Tell (Vinyals et al. 2015).

    :param cell_type: ``lstm``, ``gru`` or ``rnn`` (Elman's vanilla RNN with ``tanh``).
    :param num_layers: stacked RNN layers (attention is queried with the top layer's previous state).
    :param num_hidden: RNN state size.
    :param attention_type: ``mlp`` (Bahdanau et al. 2015), ``dot`` (scaled, Luong et al. 2015), ``bilinear``
        (Luong et al.'s "general": ``key_r^T W h``), ``coverage`` (MLP attention that also sees how much
        attention each region has had so far; Tu et al. 2016) or ``none`` (Show and Tell: the pooled image is the
        input of a step before ``<s>``, and no attention; the reported attention is uniform).
    :param attention_num_hidden: hidden size of the MLP and coverage attentions.
    :param state_init: ``avg`` (state from the mean region, as Xu et al.), ``last`` (from the last, bottom-right
        region, as Sockeye's ``last``) or ``zero``.
    :param context_gating: gate the context with ``sigmoid(W h)`` (Xu et al. §4.2.1); no effect without attention.
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

    @classmethod
    def from_options(cls, options: Any) -> "RNNDecoderConfig":
        """The config that ``imcap.train``'s options describe (any object with those attribute names)."""
        return cls(cell_type=options.rnn_cell_type, num_layers=options.num_layers, num_hidden=options.rnn_num_hidden,
                   attention_type=options.rnn_attention_type, attention_num_hidden=options.rnn_attention_num_hidden,
                   state_init=options.rnn_decoder_state_init, context_gating=not options.rnn_no_context_gating,
                   num_embed=options.num_embed, output_num_hidden=options.output_num_hidden,
                   encoder_num_hidden=options.image_encoder_num_hidden, dropout=options.rnn_dropout)


# Gluon's cell (stepped with attention) and fused layer (Show and Tell) of each cell type; the vanilla RNN uses tanh.
CELLS = {C.RNN_CELL_LSTM: rnn.LSTMCell, C.RNN_CELL_GRU: rnn.GRUCell,
         C.RNN_CELL_RNN: functools.partial(rnn.RNNCell, activation="tanh")}
FUSED_LAYERS = {C.RNN_CELL_LSTM: rnn.LSTM, C.RNN_CELL_GRU: rnn.GRU,
                C.RNN_CELL_RNN: functools.partial(rnn.RNN, activation="tanh")}


def states_per_layer(cell_type: str) -> int:
    """Recurrent states of one layer: ``h, c`` for the LSTM, ``h`` for the GRU and the vanilla RNN."""
    return 2 if cell_type == C.RNN_CELL_LSTM else 1


def region_mean(F, encoded):
    """Mean over regions ``(batch, regions, dim)`` → ``(batch, dim)``, as a batched GEMM (MXNet's CPU mean and
    its backward are generic reductions, several times slower)."""
    weights = F.BlockGrad(F.ones_like(F.slice_axis(encoded, axis=2, begin=0, end=1)))           # (batch, regions, 1)
    weights = F.broadcast_div(weights, F.sum(weights, axis=1, keepdims=True))
    return F.squeeze(F.batch_dot(weights, encoded, transpose_a=True), axis=1)


def uniform_attention(F, encoded):
    """Uniform weights ``(batch, regions)`` over the regions of ``encoded (batch, regions, dim)`` (what the
    attention-free decoder reports as its attention)."""
    return F.softmax(F.zeros_like(F.slice_axis(encoded, axis=2, begin=0, end=1)).reshape((0, -1)), axis=1)


def key_size(config: RNNDecoderConfig) -> int:
    """Size of the attention keys (the projected regions): the attention hidden size (mlp, coverage), the encoder
    size (dot) or the RNN state size (bilinear: keys are compared with the top state itself)."""
    if config.attention_type in (C.ATT_MLP, C.ATT_COVERAGE):
        return config.attention_num_hidden
    return config.num_hidden if config.attention_type == C.ATT_BILINEAR else config.encoder_num_hidden


class _FusedRNN(HybridBlock):
    """Show and Tell's stacked RNN layers, each one fused MXNet RNN operator over the whole sequence
    (``gluon.rnn.LSTM``/``GRU``/``RNN``, layout NTC: oneDNN on CPU, cuDNN on GPU), as Chainer's ``NStepLSTM``, and
    the same weights as Gluon cells (:attr:`step_cells`) for the steps of search.

    ``(inputs (batch, length, input_size), *states)`` → ``[outputs (batch, length, num_hidden)] + new states``, the
    states in the order of the cells: per layer ``h, c`` (LSTM) or ``h`` (GRU, RNN), each ``(batch, num_hidden)``
    (batch-major for beam search; the operator's ``(1, batch, num_hidden)`` stays inside).

    One operator per layer, with the dropout between layers applied here: MXNet's operator has a dropout between its
    own layers, but its oneDNN kernel on CPU ignores it. Search steps with the cells, not with the operator on one
    position: oneDNN prepares its weights on every call, which made a beam-search step about twice as slow.

    Parameters: MXNet's cells and fused layers share the weight shapes and the gate order (cuDNN's: LSTM ``i, f, g,
    o``; GRU ``r, z, n``), so each step cell holds its fused layer's own ``Parameter`` objects (as Gluon's
    ``_unfuse``), and the layers are saved under the names of a stack of cells (``0.i2h_weight``, ``0.h2h_weight``,
    ``0.i2h_bias``, ``0.h2h_bias``, ``1.i2h_weight``, ...), the names of the cells imcap stepped before the layers
    were fused: files written by either load into the other.
    """

    def __init__(self, config: RNNDecoderConfig, input_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self._num_layers = config.num_layers
        self._states_per_layer = states_per_layer(config.cell_type)
        self._dropout = config.dropout
        with self.name_scope():
            for layer in range(config.num_layers):
                size = input_size if layer == 0 else config.num_hidden
                fused = FUSED_LAYERS[config.cell_type](config.num_hidden, layout="NTC", input_size=size,
                                                       prefix="layer%d_" % layer)
                self.register_child(fused, str(layer))
                # The fused layer's parameters are "l0_i2h_weight", ... of its ParameterDict: a cell of prefix "l0_"
                # in a block that shares that dict finds them (what Gluon's own _unfuse does).
                holder = nn.HybridSequential(params=fused.params)
                with holder.name_scope():
                    cell = CELLS[config.cell_type](config.num_hidden, input_size=size, prefix="l0_")
                self.register_child(cell, "step%d" % layer)

    @property
    def fused_layers(self) -> list:
        """The fused layer of each RNN layer."""
        return [self._children[str(layer)] for layer in range(self._num_layers)]

    @property
    def step_cells(self) -> list:
        """The cell of each RNN layer, with the weights of its fused layer."""
        return [self._children["step%d" % layer] for layer in range(self._num_layers)]

    def _collect_params_with_prefix(self, prefix=""):
        # Gluon names a fused layer's parameters "_unfused.0.i2h_weight", ...: keep the last part, under the layer
        # (the step cells hold the same parameters and are left out)
        prefix = prefix + "." if prefix else ""
        return {"%s%d.%s" % (prefix, layer, name.rsplit(".", 1)[-1]): param
                for layer, block in enumerate(self.fused_layers)
                for name, param in block._collect_params_with_prefix().items()}

    def hybrid_forward(self, F, inputs, *states):
        x, new_states, n = inputs, [], self._states_per_layer
        for layer, block in enumerate(self.fused_layers):
            x, layer_states = block(x, [F.expand_dims(s, axis=0) for s in states[layer * n:(layer + 1) * n]])
            new_states.extend(F.squeeze(s, axis=0) for s in layer_states)
            if layer + 1 < self._num_layers and self._dropout > 0:
                x = F.Dropout(x, p=self._dropout)
        return [x] + new_states


class _RNNAttentionStep(HybridBlock):
    """One step of the attention RNN: ``(embedded, encoded, keys, *states)`` → next states, context, weights.

    Shapes: embedded ``(batch, embed)``; encoded ``(batch, regions, enc)``; keys ``(batch, regions, key size)``
    (see :func:`key_size`); every RNN state ``(batch, hidden)``; with ``coverage`` attention, the last state is
    the coverage ``(batch, regions)``: the sum of the attention weights of the earlier steps.
    Returns ``[top hidden (batch, hidden), context (batch, enc), attention (batch, regions)] + new states``.

    Without attention (``none``) there are no keys and no context: ``(embedded, encoded, *states)`` →
    ``[top hidden, attention] + new states``, where the attention is uniform (``encoded`` only gives its shape);
    ``cells`` is then a :class:`_FusedRNN`, whose fused layers teacher forcing runs on the whole caption, and a step
    runs its cells (the same weights).
    """

    def __init__(self, config: RNNDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        c = config
        self._states_per_layer = states_per_layer(c.cell_type)
        self._num_rnn_states = c.num_layers * self._states_per_layer
        self._attention = c.attention_type != C.ATT_NONE
        self._mlp = c.attention_type in (C.ATT_MLP, C.ATT_COVERAGE)
        self._gating = c.context_gating and self._attention
        with self.name_scope():
            # One projection of the previous top state gives the attention query and the context gate (bilinear
            # attention queries with the state itself, so the projection is the gate only).
            query_size = {C.ATT_MLP: c.attention_num_hidden, C.ATT_COVERAGE: c.attention_num_hidden,
                          C.ATT_DOT: c.encoder_num_hidden}.get(c.attention_type, 0)
            self._query_size = query_size
            projected = query_size + (c.encoder_num_hidden if self._gating else 0)
            self.query = nn.Dense(projected, in_units=c.num_hidden, flatten=False) if projected > 0 else None
            if self._mlp:
                self.score = nn.Dense(1, use_bias=False, in_units=c.attention_num_hidden, flatten=False)
            if c.attention_type == C.ATT_COVERAGE:
                # w_c: the coverage of a region, a scalar, enters the MLP hidden layer as cov_r * w_c
                self.coverage = nn.Dense(c.attention_num_hidden, use_bias=False, in_units=1, flatten=False,
                                         prefix="coverage_")
            if self._attention:
                self.cells = nn.HybridSequential()
                for layer in range(c.num_layers):
                    in_size = c.num_embed + c.encoder_num_hidden if layer == 0 else c.num_hidden
                    self.cells.add(CELLS[c.cell_type](c.num_hidden, input_size=in_size))
            else:
                self.cells = _FusedRNN(c, c.num_embed)

    def hybrid_forward(self, F, embedded, encoded, *args):
        c = self.config
        if not self._attention:
            return self._without_attention(F, embedded, encoded, args)
        keys, states = args[0], args[1:]
        top_hidden = states[(c.num_layers - 1) * self._states_per_layer]
        projected = self.query(top_hidden) if self.query is not None else None
        context, attention, gated = self.attend(F, projected, top_hidden, keys, encoded, states)
        x, new_states = self._run_cells(F, F.concat(embedded, gated, dim=1), states)
        if c.attention_type == C.ATT_COVERAGE:
            new_states.append(states[self._num_rnn_states] + attention)
        return [x, context, attention] + new_states

    def attend(self, F, projected, top_hidden, keys, encoded, states):
        """The attention of one step, from the previous top state ``top_hidden (batch, hidden)`` and its projection
        ``projected = query(top_hidden)`` (``(batch, query + gate)``, or ``None`` without a query projection):
        ``(context (batch, enc), attention (batch, regions), gated context (batch, enc))``. ``states`` are the
        step's input states (the coverage, last, for coverage attention)."""
        c = self.config
        if self._mlp:
            query = F.slice_axis(projected, axis=1, begin=0, end=self._query_size)
            # keys + query broadcast over the regions, written as a batched GEMM with ones: MXNet's CPU backward
            # of broadcast_add (a generic reduction) is ~10x slower than that of batch_dot.
            ones = F.BlockGrad(F.ones_like(F.slice_axis(keys, axis=2, begin=0, end=1)))     # (batch, regions, 1)
            expanded = F.batch_dot(ones, F.expand_dims(query, axis=1))                        # (batch, regions, att)
            if c.attention_type == C.ATT_COVERAGE:
                coverage = states[self._num_rnn_states]                                       # (batch, regions)
                expanded = expanded + self.coverage(F.expand_dims(coverage, axis=2))          # (batch, regions, att)
            hidden = F.Activation(keys + expanded, act_type="tanh")
            scores = F.squeeze(self.score(hidden), axis=2)                            # (batch, regions)
        elif c.attention_type == C.ATT_BILINEAR:
            # e_r^T W h with the keys already projected (W e_r): one batched GEMM, unscaled as Luong et al.
            scores = F.squeeze(F.batch_dot(keys, F.expand_dims(top_hidden, axis=2)), axis=2)
        else:
            query = F.slice_axis(projected, axis=1, begin=0, end=self._query_size)
            scores = F.squeeze(F.batch_dot(keys, F.expand_dims(query, axis=2)), axis=2)
            scores = scores / (c.encoder_num_hidden ** 0.5)
        attention = F.softmax(scores, axis=1)
        context = F.squeeze(F.batch_dot(F.expand_dims(attention, axis=1), encoded), axis=1)  # (batch, enc)
        if self._gating:
            gate = projected if self._query_size == 0 else \
                F.slice_axis(projected, axis=1, begin=self._query_size, end=None)
            gated = context * F.Activation(gate, act_type="sigmoid")
        else:
            gated = context
        return context, attention, gated

    def _without_attention(self, F, embedded, encoded, states):
        x, new_states = self._run_cells(F, embedded, states, self.cells.step_cells)
        return [x, uniform_attention(F, encoded)] + new_states

    def _run_cells(self, F, x, states, cells=None):
        """The stacked cells (default: :attr:`cells`) on input ``x``; ``states`` starts with theirs. → ``(top
        output, new cell states)``."""
        c = self.config
        new_states = []
        for layer, cell in enumerate(self.cells if cells is None else cells):
            layer_states = list(states[layer * self._states_per_layer:(layer + 1) * self._states_per_layer])
            x, layer_states = cell(x, layer_states)
            new_states.extend(layer_states)
            if layer + 1 < c.num_layers and c.dropout > 0:
                x = F.Dropout(x, p=c.dropout)
        return x, new_states


@Decoder.register(RNNDecoderConfig, C.DECODER_RNN)
class RNNDecoder(Decoder):
    """Attention RNN decoder (Show, Attend and Tell, Xu et al. 2015) with a deep output layer
    ``tanh(W [h_t; context_t; embedded_t])``; with ``attention_type`` ``none``, Show and Tell (Vinyals et al. 2015).

    Static states: ``encoded (batch, regions, enc)``, attention ``keys`` (not without attention). Dynamic states:
    per layer ``h, c`` (LSTM) or ``h`` (GRU, RNN), each ``(batch, num_hidden)``; then, with ``coverage`` attention, the
    coverage ``(batch, regions)`` (the sum of the attention weights so far; reordered by beam search like the
    others).

    Show and Tell (``none``): the mean of the encoded regions, projected linearly to the embedding size, is the
    input of one step before ``<s>``, whose new state is the initial state (so ``init_state`` runs the cell once;
    ``state_init`` gives the state that step starts from: ``zero`` is Vinyals et al.'s). The RNN input is the word
    alone and the deep output is ``tanh(W [h_t; embedded_t])``. The attention it reports is uniform over the
    regions (1/regions each), so that attention maps and JSON output keep their shape. Its teacher forcing runs
    the whole caption through one fused RNN operator per layer (:class:`_FusedRNN`), and a search step runs the
    same layers, with the same weights, on one position.

    :raises ImcapError: on an unknown cell type, attention type or state init.
    """

    def __init__(self, config: RNNDecoderConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = c = config
        check_condition(c.cell_type in C.RNN_CELL_CHOICES, "unknown RNN cell type %r (known: %s)"
                        % (c.cell_type, ", ".join(C.RNN_CELL_CHOICES)))
        check_condition(c.attention_type in C.ATT_CHOICES, "unknown RNN attention type %r (known: %s)"
                        % (c.attention_type, ", ".join(C.ATT_CHOICES)))
        check_condition(c.state_init in C.STATE_INIT_CHOICES, "unknown RNN state init %r (known: %s)"
                        % (c.state_init, ", ".join(C.STATE_INIT_CHOICES)))
        self._attention = c.attention_type != C.ATT_NONE
        self._num_rnn_states = c.num_layers * states_per_layer(c.cell_type)
        self.num_static_states = 2 if self._attention else 1
        self.num_dynamic_states = self._num_rnn_states + (1 if c.attention_type == C.ATT_COVERAGE else 0)
        with self.name_scope():
            self.keys = nn.Dense(key_size(c), use_bias=False, flatten=False, in_units=c.encoder_num_hidden) \
                if self._attention else None
            self.init = None
            if c.state_init in (C.STATE_INIT_AVG, C.STATE_INIT_LAST):
                self.init = nn.Dense(self._num_rnn_states * c.num_hidden, activation="tanh",
                                     in_units=c.encoder_num_hidden)
            self.cell = _RNNAttentionStep(c)
            self.output = nn.Dense(c.output_num_hidden, activation="tanh", flatten=False,
                                   in_units=c.num_hidden + (c.encoder_num_hidden if self._attention else 0)
                                   + c.num_embed)
            self.output_dropout = nn.Dropout(c.dropout) if c.dropout > 0 else None
            # Show and Tell: the pooled image vector, projected to the embedding size (x_{-1} = W_e CNN(I))
            self.image = None if self._attention else nn.Dense(c.num_embed, in_units=c.encoder_num_hidden,
                                                               prefix="image_")
        # teacher forcing of the attention LSTM: one graph per caption length (imcap.rnn_teacher_forcing), kept out
        # of the children so that parameter files name each parameter once
        object.__setattr__(self, "_teacher_forcing", TeacherForcingGraphs(self.cell)
                           if self._attention and c.cell_type == "lstm" else None)

    def init_state_graph(self, F, encoded):
        """See :meth:`imcap.decoder.Decoder.init_state_graph`."""
        c = self.config
        static = [encoded, self.keys(encoded)] if self._attention else [encoded]
        mean = region_mean(F, encoded) if c.state_init == C.STATE_INIT_AVG or not self._attention else None
        if self.init is not None:
            if c.state_init == C.STATE_INIT_AVG:
                summary = mean
            else:  # the last region (row-major: the bottom-right one)
                summary = F.slice_axis(encoded, axis=1, begin=-1, end=None).reshape((0, -1))
            init = self.init(summary)
            dynamic = list(F.split(init, num_outputs=self._num_rnn_states, axis=1)) \
                if self._num_rnn_states > 1 else [init]
        else:
            zeros = F.zeros_like(F.slice_axis(F.slice_axis(encoded, axis=1, begin=0, end=1), axis=2, begin=0,
                                              end=1)).reshape((0, 1))  # (batch, 1)
            dynamic = [F.broadcast_to(zeros, shape=(0, c.num_hidden)) for _ in range(self._num_rnn_states)]
        if c.attention_type == C.ATT_COVERAGE:
            dynamic.append(F.zeros_like(F.slice_axis(encoded, axis=2, begin=0, end=1)).reshape((0, -1)))
        if not self._attention:  # Show and Tell: one step on the image vector
            dynamic = list(self.cell(self.image(mean), encoded, *dynamic)[2:])
        return static, dynamic

    def _output(self, hidden, context, embedded):
        F = mx.sym if isinstance(hidden, mx.sym.Symbol) else mx.nd
        axis = hidden.ndim - 1 if not isinstance(hidden, mx.sym.Symbol) else -1
        inputs = (hidden, embedded) if context is None else (hidden, context, embedded)
        out = self.output(F.concat(*inputs, dim=axis))
        return self.output_dropout(out) if self.output_dropout is not None else out

    def _split(self, results):
        """Cell outputs → ``(hidden, context or None, attention, dynamic)``."""
        if self._attention:
            return results[0], results[1], results[2], list(results[3:])
        return results[0], None, results[1], list(results[2:])

    def hybridize_sequence(self, active: bool = True, **kwargs) -> None:
        """Hybridize the step cell, the output layer and what teacher forcing runs: the attention LSTM's graph per
        caption length (:mod:`imcap.rnn_teacher_forcing`); for the other attention cells a Python loop over the step
        cell; without attention, the fused layers over the whole caption."""
        self.cell.hybridize(active, **kwargs)
        self.output.hybridize(active, **kwargs)
        if self._teacher_forcing is not None:
            self._teacher_forcing.hybridize(active)

    def step(self, embedded, static, dynamic):
        """One step: ``embedded (batch, embed)`` → ``(output (batch, out), attention (batch, regions), dynamic)``."""
        hidden, context, attention, dynamic = self._split(self.cell(embedded, *static, *dynamic))
        return self._output(hidden, context, embedded), attention, dynamic

    def decode_sequence(self, embedded, static, dynamic):
        """Teacher-forced decoding: ``embedded (batch, length, embed)`` →
        ``(outputs (batch, length, out), attention (batch, length, regions))``. The attention LSTM runs its graph of
        this length (:class:`imcap.rnn_teacher_forcing.LSTMTeacherForcing`), other attention cells one step per
        position; without attention, the fused layers over the whole caption at once (uniform attention)."""
        length = embedded.shape[1]
        if not self._attention:
            results = self.cell.cells(embedded, *dynamic)
            attention = mx.nd.repeat(mx.nd.expand_dims(uniform_attention(mx.nd, static[0]), axis=1), length, axis=1)
            return self._output(results[0], None, embedded), attention
        if self._teacher_forcing is not None:
            hidden, context, attention = self._teacher_forcing(length)(embedded, *static, *dynamic)
            return self._output(hidden, context, embedded), attention
        steps = mx.nd.split(embedded, num_outputs=length, axis=1, squeeze_axis=True) if length > 1 \
            else [mx.nd.squeeze(embedded, axis=1)]
        hiddens, contexts, attentions = [], [], []
        for step_embedded in steps:
            hidden, context, attention, dynamic = self._split(self.cell(step_embedded, *static, *dynamic))
            hiddens.append(hidden)
            contexts.append(context)
            attentions.append(attention)
        hidden = mx.nd.stack(*hiddens, axis=1)
        context = mx.nd.stack(*contexts, axis=1) if self._attention else None
        return self._output(hidden, context, embedded), mx.nd.stack(*attentions, axis=1)
