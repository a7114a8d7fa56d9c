"""The recurrent decoder (:mod:`imcap.rnn`) as ONNX nodes: its initial states (``init_state_graph``) and one search
step (``step``), for every cell (LSTM, GRU, tanh RNN), layer count, attention type (mlp, dot, bilinear, coverage,
none) and state init (zero, avg, last), node for node as the Gluon blocks compute them at inference (dropout is the
identity there).

The weights are read from the decoder's Gluon parameters; the gate orders are MXNet's (LSTM ``i, f, g, o``: input,
forget, candidate, output; GRU ``r, z, n``: reset, update, candidate, with ``h' = (1 - z) n + z h``).
"""
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from .. import constants as C
from ..rnn import RNNDecoder
from .blocks import INT64_MAX, array, dense
from .builder import GraphBuilder


def cell_step(g: GraphBuilder, cell: Any, cell_type: str, x: str, states: Sequence[str], hint: str
              ) -> Tuple[str, List[str]]:
    """One step of a Gluon ``LSTMCell``, ``GRUCell`` or tanh ``RNNCell``: ``(output, new states)``."""
    hidden = cell._hidden_size
    i2h = g.dense(x, array(cell.i2h_weight), array(cell.i2h_bias), hint=hint + "_i2h")
    h2h = g.dense(states[0], array(cell.h2h_weight), array(cell.h2h_bias), hint=hint + "_h2h")
    if cell_type == C.RNN_CELL_LSTM:
        gates = g.slices(g.one("Add", [i2h, h2h], hint + "_gates"), 1, hidden, 4)
        in_gate, forget_gate, out_gate = (g.activation(gates[i], "sigmoid") for i in (0, 1, 3))
        candidate = g.activation(gates[2], "tanh")
        c = g.one("Add", [g.one("Mul", [forget_gate, states[1]]), g.one("Mul", [in_gate, candidate])], hint + "_c")
        h = g.one("Mul", [out_gate, g.activation(c, "tanh")], hint + "_h")
        return h, [h, c]
    if cell_type == C.RNN_CELL_GRU:
        i_r, i_z, i_n = g.slices(i2h, 1, hidden, 3)
        h_r, h_z, h_n = g.slices(h2h, 1, hidden, 3)
        reset = g.activation(g.one("Add", [i_r, h_r]), "sigmoid")
        update = g.activation(g.one("Add", [i_z, h_z]), "sigmoid")
        candidate = g.activation(g.one("Add", [i_n, g.one("Mul", [reset, h_n])]), "tanh")
        keep = g.one("Sub", [g.constant(np.ones(1, np.float32), "one", key="one"), update])
        h = g.one("Add", [g.one("Mul", [keep, candidate]), g.one("Mul", [update, states[0]])], hint + "_h")
        return h, [h]
    h = g.activation(g.one("Add", [i2h, h2h]), "tanh")
    return h, [h]


def _run_cells(g: GraphBuilder, decoder: RNNDecoder, cells: Sequence[Any], x: str, states: Sequence[str]
               ) -> Tuple[str, List[str]]:
    """The stacked cells on ``x`` (``_RNNAttentionStep._run_cells`` at inference): ``(top output, new states)``."""
    c = decoder.config
    per_layer = 2 if c.cell_type == C.RNN_CELL_LSTM else 1
    new_states: List[str] = []
    for layer, cell in enumerate(cells):
        x, layer_states = cell_step(g, cell, c.cell_type, x, states[layer * per_layer:(layer + 1) * per_layer],
                                    "layer%d" % layer)
        new_states.extend(layer_states)
    return x, new_states


def _cells(decoder: RNNDecoder) -> List[Any]:
    """The step cells of each layer (without attention: those holding the fused layers' weights)."""
    cells = decoder.cell.cells
    return list(cells.step_cells) if decoder.config.attention_type == C.ATT_NONE else list(cells)


def init_state(g: GraphBuilder, decoder: RNNDecoder, encoded: str) -> Tuple[List[str], List[str]]:
    """:meth:`imcap.rnn.RNNDecoder.init_state_graph`: ``encoded (batch, regions, enc)`` → ``(static, dynamic)``."""
    c = decoder.config
    attention = c.attention_type != C.ATT_NONE
    static = [encoded] + ([dense(g, encoded, decoder.keys, "keys")] if attention else [])
    mean = g.one("ReduceMean", [encoded], "region_mean", axes=[1], keepdims=0) \
        if c.state_init == C.STATE_INIT_AVG or not attention else None
    num_rnn = decoder._num_rnn_states
    dynamic: List[str]
    if decoder.init is not None:
        summary = mean if c.state_init == C.STATE_INIT_AVG else \
            g.squeeze(g.slice(encoded, 1, -1, INT64_MAX), 1)
        assert summary is not None
        init = dense(g, summary, decoder.init, "init")
        dynamic = g.slices(init, 1, c.num_hidden, num_rnn) if num_rnn > 1 else [init]
    else:
        dynamic = [g.zeros(encoded, 1, [c.num_hidden]) for _ in range(num_rnn)]
    if c.attention_type == C.ATT_COVERAGE:
        dynamic.append(g.zeros(encoded, 2))
    if not attention:   # Show and Tell: one step on the image vector
        assert mean is not None
        _, dynamic = _run_cells(g, decoder, _cells(decoder), dense(g, mean, decoder.image, "image"), dynamic)
    return static, dynamic


def _attend(g: GraphBuilder, decoder: RNNDecoder, top_hidden: str, keys: str, encoded: str,
            coverage: Optional[str]) -> Tuple[str, str, str]:
    """:meth:`imcap.rnn._RNNAttentionStep.attend`: ``(context, attention, gated context)``."""
    c, step = decoder.config, decoder.cell
    projected = dense(g, top_hidden, step.query, "query") if step.query is not None else None
    query = g.slice(projected, 1, 0, step._query_size) if projected is not None and step._query_size else None
    if step._mlp:
        assert query is not None
        expanded = g.unsqueeze(query, 1)                                              # (batch, 1, att)
        if coverage is not None:   # cov_r * w_c: the Dense of one input unit, no bias
            w_c = array(step.coverage.weight).reshape(1, 1, -1)                       # (att, 1) -> (1, 1, att)
            expanded = g.one("Add", [expanded, g.one("Mul", [g.unsqueeze(coverage, 2),
                                                             g.constant(w_c, "coverage_weight")])])
        hidden = g.activation(g.one("Add", [keys, expanded], "attention_hidden"), "tanh")
        scores = g.squeeze(dense(g, hidden, step.score, "score"), 2)
    elif c.attention_type == C.ATT_BILINEAR:
        scores = g.squeeze(g.one("MatMul", [keys, g.unsqueeze(top_hidden, 2)]), 2)
    else:   # dot, scaled
        assert query is not None
        scores = g.squeeze(g.one("MatMul", [keys, g.unsqueeze(query, 2)]), 2)
        scores = g.one("Div", [scores, g.constant(np.array([c.encoder_num_hidden ** 0.5], np.float32), "scale")])
    attention = g.one("Softmax", [scores], "attention", axis=1)
    context = g.squeeze(g.one("MatMul", [g.unsqueeze(attention, 1), encoded]), 1)
    gated = context
    if step._gating:
        assert projected is not None
        gate = g.slice(projected, 1, step._query_size, INT64_MAX) if step._query_size else projected
        gated = g.one("Mul", [context, g.activation(gate, "sigmoid")], "gated")
    return context, attention, gated


def step(g: GraphBuilder, decoder: RNNDecoder, embedded: str, static: Sequence[str], dynamic: Sequence[str]
         ) -> Tuple[str, str, List[str]]:
    """:meth:`imcap.rnn.RNNDecoder.step`: ``embedded (rows, embed)`` → ``(output (rows, out), attention (rows,
    regions), new dynamic states)``."""
    c = decoder.config
    encoded = static[0]
    if c.attention_type == C.ATT_NONE:
        hidden, new_states = _run_cells(g, decoder, _cells(decoder), embedded, dynamic)
        uniform = g.one("Softmax", [g.zeros(encoded, 2)], "attention", axis=1)
        output = dense(g, g.concat([hidden, embedded], 1), decoder.output, "output")
        return output, uniform, new_states
    num_rnn = decoder._num_rnn_states
    per_layer = 2 if c.cell_type == C.RNN_CELL_LSTM else 1
    top_hidden = dynamic[(c.num_layers - 1) * per_layer]
    coverage = dynamic[num_rnn] if c.attention_type == C.ATT_COVERAGE else None
    context, attention, gated = _attend(g, decoder, top_hidden, static[1], encoded, coverage)
    hidden, new_states = _run_cells(g, decoder, _cells(decoder), g.concat([embedded, gated], 1), dynamic)
    if coverage is not None:
        new_states.append(g.one("Add", [coverage, attention], "coverage"))
    output = dense(g, g.concat([hidden, context, embedded], 1), decoder.output, "output")
    return output, attention, new_states
