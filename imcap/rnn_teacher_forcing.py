"""Teacher forcing of the attention LSTM (:class:`imcap.rnn.RNNDecoder` with attention and ``cell_type`` ``lstm``) as
one hybridized graph per caption length, arranged for large matrix products.

Stepping the cell of :mod:`imcap.rnn` position by position multiplies matrices of ``batch`` rows: on a 2-core CPU
MXNet's ``FullyConnected`` runs at 59 GFLOP/s with 64 rows but 173 GFLOP/s with 896 (64 captions x 14 words;
``docs/performance-notes.md``). This graph computes the same function with fewer small products:

* the words' half of the first layer's input projection, ``W_ih[:, :embed] x_t + b_ih``, for every position at once
  (one product of ``batch x length`` rows), so a step only projects the attention context;
* with one layer, the attention query (and context gate) and the recurrent projection ``W_hh h_{t-1} + b_hh`` read
  the same ``h_{t-1}``: their weights are stacked into one product per step;
* the LSTM update with oneDNN activations (``Activation``), gate order ``i, f, g, o`` as MXNet's ``LSTMCell``.

The parameters are the cell's own (no new ones, same files); outputs equal :meth:`RNNDecoder.step` through the
positions to float rounding (``test/unit/test_rnn_family.py``).
"""
from typing import Dict

import mxnet as mx
from mxnet.gluon import HybridBlock


def _value(F, param, like):
    """A parameter inside a graph: its variable in a symbol, its array (on ``like``'s device) otherwise."""
    return param.var() if F is mx.sym else param.data(like.context)


class LSTMTeacherForcing(HybridBlock):
    """``(embedded (batch, length, embed), encoded (batch, regions, enc), keys (batch, regions, key), *states)`` →
    ``[hidden (batch, length, hidden), context (batch, length, enc), attention (batch, length, regions)]`` for a
    fixed ``length``.

    :param step: the decoder's :class:`imcap.rnn._RNNAttentionStep` (attention, LSTM cells); its parameters are used.
    :param length: the caption length this graph unrolls (one graph per bucket length).

    ``states`` are the decoder's dynamic states: per layer ``h, c`` ``(batch, hidden)``, then the coverage
    ``(batch, regions)`` with coverage attention.
    """

    def __init__(self, step: HybridBlock, length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.length = length
        self.step = step        # a child, so that the graph's parameters are the step's own

    def hybrid_forward(self, F, embedded, encoded, keys, *states):
        step, c = self.step, self.step.config
        hidden_size, embed = c.num_hidden, c.num_embed
        cell0 = step.cells[0]
        weight = _value(F, cell0.i2h_weight, embedded)                        # (4 hidden, embed + enc)
        words = F.FullyConnected(embedded, F.slice_axis(weight, axis=1, begin=0, end=embed),
                                 _value(F, cell0.i2h_bias, embedded), num_hidden=4 * hidden_size, flatten=False)
        words = F.split(words, num_outputs=self.length, axis=1, squeeze_axis=True) if self.length > 1 \
            else [F.squeeze(words, axis=1)]                                  # per position (batch, 4 hidden)
        context_weight = F.slice_axis(weight, axis=1, begin=embed, end=None)  # (4 hidden, enc)
        recurrent_weight = _value(F, cell0.h2h_weight, embedded)
        recurrent_bias = _value(F, cell0.h2h_bias, embedded)
        query_size = 0 if step.query is None else step.query._units
        stacked = step.query is not None and c.num_layers == 1
        if stacked:   # one product of h_{t-1} for the query (and gate) and the recurrent projection
            recurrent_weight = F.concat(_value(F, step.query.weight, embedded), recurrent_weight, dim=0)
            recurrent_bias = F.concat(_value(F, step.query.bias, embedded), recurrent_bias, dim=0)
        states = list(states)
        per_layer = 2
        rnn_states = c.num_layers * per_layer
        hiddens, contexts, attentions = [], [], []
        for words_t in words:
            top = states[(c.num_layers - 1) * per_layer]
            h0, c0 = states[0], states[1]
            recurrent = F.FullyConnected(h0, recurrent_weight, recurrent_bias,
                                         num_hidden=query_size * stacked + 4 * hidden_size)
            if stacked:
                projected = F.slice_axis(recurrent, axis=1, begin=0, end=query_size)
                recurrent = F.slice_axis(recurrent, axis=1, begin=query_size, end=None)
            else:
                projected = step.query(top) if step.query is not None else None
            context, attention, gated = step.attend(F, projected, top, keys, encoded, states)
            gates = words_t + recurrent + F.FullyConnected(gated, context_weight, no_bias=True,
                                                           num_hidden=4 * hidden_size)
            i, f, g, o = F.split(gates, num_outputs=4, axis=1)
            c0 = F.Activation(f, act_type="sigmoid") * c0 + \
                F.Activation(i, act_type="sigmoid") * F.Activation(g, act_type="tanh")
            h0 = F.Activation(o, act_type="sigmoid") * F.Activation(c0, act_type="tanh")
            x, new_states = h0, [h0, c0]
            for layer in range(1, c.num_layers):       # the upper layers as the step runs them
                x = F.Dropout(x, p=c.dropout) if c.dropout > 0 else x
                x, layer_states = step.cells[layer](x, states[layer * per_layer:(layer + 1) * per_layer])
                new_states.extend(layer_states)
            if rnn_states < len(states):   # coverage: the attention so far
                new_states.append(states[rnn_states] + attention)
            states = new_states
            hiddens.append(x)
            contexts.append(context)
            attentions.append(attention)
        return [F.stack(*hiddens, axis=1), F.stack(*contexts, axis=1), F.stack(*attentions, axis=1)]


class TeacherForcingGraphs:
    """The :class:`LSTMTeacherForcing` graphs of one decoder, one per caption length, made and hybridized on first
    use (kept out of the decoder's children, so that parameter files name each parameter once)."""

    def __init__(self, step: HybridBlock) -> None:
        self.step = step
        self.graphs: Dict[int, LSTMTeacherForcing] = {}
        self.active = False        # as the decoder: hybridized by RNNDecoder.hybridize_sequence

    def hybridize(self, active: bool = True) -> None:
        self.active = active
        for graph in self.graphs.values():
            graph.hybridize(active)

    def __call__(self, length: int) -> LSTMTeacherForcing:
        if length not in self.graphs:
            graph = LSTMTeacherForcing(self.step, length, prefix="")
            graph.hybridize(self.active)
            self.graphs[length] = graph
        return self.graphs[length]
