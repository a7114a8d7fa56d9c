"""The RNN decoder family: every attention type (mlp, dot, bilinear, coverage, none = Show and Tell) x state init
(zero, avg, last) x cell (lstm, gru, rnn): stepwise decoding equals teacher forcing, the coverage state, Show and
Tell's uniform attention and pooled image, its fused layers (step = sequence, the names and results of the cells of
before, dropout between layers), the vanilla tanh RNN, the last-region state, beam search and the CLI."""
import itertools

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from test.unit import decoding_checks
from test.unit.decoding_checks import (check_beam_search, check_every_parameter_is_trained, check_stepwise_equals_full,
                                      make_model, parse_training_args)
from imcap import constants as C
from imcap.rnn import CELLS, RNNDecoder, RNNDecoderConfig
from imcap.encoder import EncoderConfig
from imcap.model import ModelConfig
from imcap.train import model_config_from_args
from imcap.utils import ImcapError
from imcap.vocab import build_vocab

VOCAB, REGIONS, FEATURE_DIM = 20, 6, 12
BATCH, LENGTH = 3, 5
ENC, HIDDEN, ATT, EMBED, OUT = 10, 12, 8, 9, 11


def make_config(attention="mlp", state_init="avg", cell="lstm", layers=1, context_gating=True):
    encoder = EncoderConfig(num_regions=REGIONS, feature_dim=FEATURE_DIM, num_hidden=ENC, dropout=0.0)
    decoder = RNNDecoderConfig(cell_type=cell, num_layers=layers, num_hidden=HIDDEN, attention_type=attention,
                               attention_num_hidden=ATT, state_init=state_init, context_gating=context_gating,
                               num_embed=EMBED, output_num_hidden=OUT, encoder_num_hidden=ENC, dropout=0.0)
    return ModelConfig(vocab_size=VOCAB, encoder=encoder, decoder=decoder, num_embed=EMBED, embed_dropout=0.0)


def make_inputs(seed=2, batch=BATCH):
    return decoding_checks.make_inputs(batch, LENGTH, REGIONS, FEATURE_DIM, VOCAB, seed)


GRID = list(itertools.product(C.ATT_CHOICES, C.STATE_INIT_CHOICES, C.RNN_CELL_CHOICES))


def test_choices():
    assert C.ATT_CHOICES == ["mlp", "dot", "bilinear", "coverage", "none"]
    assert C.STATE_INIT_CHOICES == ["zero", "avg", "last"]


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybrid"])
@pytest.mark.parametrize("attention,state_init,cell", GRID, ids=["-".join(g) for g in GRID])
def test_stepwise_decoding_equals_teacher_forcing(attention, state_init, cell, hybridize):
    # two layers for one cell type, so that stacking is covered too
    model = make_model(make_config(attention, state_init, cell, layers=2 if cell == "gru" else 1))
    if hybridize:
        model.hybridize()
    features, target_in = make_inputs()
    _, attention_full, _ = check_stepwise_equals_full(model, features, target_in)
    if attention == C.ATT_NONE:
        np.testing.assert_allclose(attention_full, 1.0 / REGIONS, atol=1e-7)
    else:
        assert not np.allclose(attention_full, 1.0 / REGIONS, atol=1e-4)


@pytest.mark.parametrize("attention", C.ATT_CHOICES)
def test_states_and_parameters(attention):
    """Sizes of the states, and no parameter a type does not use (Show and Tell has no attention, no context)."""
    model = make_model(make_config(attention, "zero", "lstm"))
    features, _ = make_inputs()
    static, dynamic = model.encode(features)
    coverage = attention == C.ATT_COVERAGE
    assert [d.shape for d in dynamic] == [(BATCH, HIDDEN)] * 2 + [(BATCH, REGIONS)] * coverage
    params = {name: p.shape for name, p in model.decoder._collect_params_with_prefix().items()}
    if attention == C.ATT_NONE:
        assert [s.shape for s in static] == [(BATCH, REGIONS, ENC)]
        assert not any(n.startswith(("keys", "cell.query", "cell.score")) for n in params)
        assert params["image.weight"] == (EMBED, ENC)
        assert params["cell.cells.0.i2h_weight"] == (4 * HIDDEN, EMBED)
        assert params["output.weight"] == (OUT, HIDDEN + EMBED)
        # the image step already ran: the state is not zero although the init is
        assert not np.allclose(dynamic[0].asnumpy(), 0)
    else:
        key_size = {"mlp": ATT, "coverage": ATT, "dot": ENC, "bilinear": HIDDEN}[attention]
        assert [s.shape for s in static] == [(BATCH, REGIONS, ENC), (BATCH, REGIONS, key_size)]
        assert params["keys.weight"] == (key_size, ENC)
        query = {"mlp": ATT, "coverage": ATT, "dot": ENC, "bilinear": 0}[attention] + ENC  # + the gate
        assert params["cell.query.weight"] == (query, HIDDEN)
        assert ("cell.score.weight" in params) == (attention in ("mlp", "coverage"))
        assert ("cell.coverage.weight" in params) == coverage
        assert params["cell.cells.0.i2h_weight"] == (4 * HIDDEN, EMBED + ENC)
        assert params["output.weight"] == (OUT, HIDDEN + ENC + EMBED)
        assert all((d.asnumpy() == 0).all() for d in dynamic)
    if attention == C.ATT_BILINEAR:  # without gating there is no projection of the state at all
        ungated = make_model(make_config(attention, "zero", "lstm", context_gating=False))
        assert ungated.decoder.cell.query is None


@pytest.mark.parametrize("attention", C.ATT_CHOICES)
def test_every_parameter_is_trained(attention):
    model = make_model(make_config(attention, "avg", "lstm"))
    model.hybridize()
    check_every_parameter_is_trained(model, *make_inputs())


@pytest.mark.parametrize("cell", C.RNN_CELL_CHOICES)
def test_coverage_is_the_sum_of_past_attention(cell):
    model = make_model(make_config(C.ATT_COVERAGE, "avg", cell))
    model.hybridize()
    features, target_in = make_inputs()
    static, dynamic = model.encode(features)
    np.testing.assert_array_equal(dynamic[-1].asnumpy(), np.zeros((BATCH, REGIONS)))
    rows = []
    for t in range(LENGTH):
        _, att, dynamic = model.step(target_in[:, t], static, dynamic)
        rows.append(att.asnumpy())
        np.testing.assert_allclose(dynamic[-1].asnumpy(), np.sum(rows, axis=0), atol=1e-6)
    np.testing.assert_allclose(dynamic[-1].asnumpy().sum(axis=1), LENGTH, atol=1e-5)
    # the coverage takes part in the scores: with another coverage, the same state attends differently
    state = dynamic[:-1] + [dynamic[-1] * 0]
    _, other, _ = model.step(target_in[:, 0], static, state)
    _, same, _ = model.step(target_in[:, 0], static, dynamic)
    assert not np.allclose(other.asnumpy(), same.asnumpy(), atol=1e-5)


@pytest.mark.parametrize("state_init", [C.STATE_INIT_ZERO, C.STATE_INIT_AVG])
@pytest.mark.parametrize("cell", C.RNN_CELL_CHOICES)
def test_show_and_tell_sees_the_pooled_image_only(state_init, cell):
    """Without attention, regions matter only through their mean: permuting them changes nothing (exactly up to
    float rounding), changing one does change the words' probabilities."""
    model = make_model(make_config(C.ATT_NONE, state_init, cell))
    model.hybridize()
    features, target_in = make_inputs()
    log_probs = mx.nd.log_softmax(model(features, target_in)[0], axis=-1).asnumpy()
    permuted = mx.nd.array(features.asnumpy()[:, np.random.RandomState(0).permutation(REGIONS)])
    np.testing.assert_allclose(mx.nd.log_softmax(model(permuted, target_in)[0], axis=-1).asnumpy(), log_probs,
                               atol=1e-5, rtol=0)
    changed = features.asnumpy()
    # new values (a constant added to a region would be normalized away by the encoder's layer norm)
    changed[:, 2] = np.random.RandomState(1).uniform(0, 6, size=(BATCH, FEATURE_DIM))
    assert not np.allclose(mx.nd.log_softmax(model(mx.nd.array(changed), target_in)[0], axis=-1).asnumpy(),
                           log_probs, atol=1e-4)


def test_last_state_init_depends_on_the_last_region_only():
    model = make_model(make_config(C.ATT_MLP, C.STATE_INIT_LAST, "lstm"))
    features, _ = make_inputs()
    initial = [d.asnumpy() for d in model.encode(features)[1]]
    changed = features.asnumpy()
    changed[:, :-1] *= np.linspace(0.5, 2, FEATURE_DIM)  # every region but the last
    np.testing.assert_allclose([d.asnumpy() for d in model.encode(mx.nd.array(changed))[1]], initial, atol=1e-6)
    changed[:, -1] *= np.linspace(0.5, 2, FEATURE_DIM)
    assert not np.allclose(model.encode(mx.nd.array(changed))[1][0].asnumpy(), initial[0], atol=1e-4)
    # and it is the avg init's layer applied to the last region
    encoded = model.encoder(features)
    expected = model.decoder.init(encoded[:, -1]).asnumpy()
    np.testing.assert_allclose(np.concatenate(initial, axis=1), expected, atol=1e-6)


@pytest.mark.parametrize("attention", C.ATT_CHOICES)
def test_beam_search(attention):
    model = make_model(make_config(attention, "avg", "lstm"))
    model.hybridize()
    vocab = build_vocab([["w%d" % i for i in range(VOCAB - 4)]])
    features, _ = make_inputs(batch=2)
    results = check_beam_search(model, vocab, features)
    for hyps in results:
        for h in hyps:
            np.testing.assert_allclose(h.attention.sum(axis=1), 1.0, atol=1e-5)
    # the best hypothesis' log-probability is what teacher forcing gives its words (the reordered states, the
    # coverage among them, are the right ones)
    for i in range(2):
        best = results[i][0]
        logits, _ = model(features[i:i + 1], mx.nd.array([[2] + best.ids], dtype="int32"))
        log_probs = mx.nd.log_softmax(logits, axis=-1).asnumpy()[0]
        rescored = sum(log_probs[t, w] for t, w in enumerate(best.ids + [vocab[C.EOS_SYMBOL]]))
        assert rescored == pytest.approx(best.log_prob, abs=1e-3)


def test_unknown_choices_are_errors():
    with pytest.raises(ImcapError, match="attention type"):
        RNNDecoder(RNNDecoderConfig(attention_type="additive"))
    with pytest.raises(ImcapError, match="state init"):
        RNNDecoder(RNNDecoderConfig(state_init="first"))


def test_cli(tmp_path):
    args = parse_training_args(tmp_path, "--rnn-attention-type", "coverage", "--rnn-decoder-state-init", "last")
    config = model_config_from_args(args, 100, 49, 1280, None)
    assert config.decoder.attention_type == "coverage" and config.decoder.state_init == "last"
    path = str(tmp_path / "config.yaml")
    config.save(path)
    assert ModelConfig.load(path) == config
    defaults = parse_training_args(tmp_path)
    assert defaults.rnn_attention_type == "mlp" and defaults.rnn_decoder_state_init == "avg"


# --- Show and Tell's fused layers, and the vanilla RNN --------------------------------------------------------------

FUSED = [(cell, layers) for cell in C.RNN_CELL_CHOICES for layers in (1, 2)]


@pytest.mark.parametrize("cell,layers", FUSED, ids=["%s-%d" % f for f in FUSED])
def test_show_and_tell_step_equals_fused_sequence(cell, layers):
    """A caption's log-probabilities from teacher forcing (the fused layers over the whole caption) are those of
    beam search's steps (cells with the same weights, one position at a time, the states carried), to 1e-5."""
    model = make_model(make_config(C.ATT_NONE, "avg", cell, layers))
    model.hybridize()
    features, target_in = make_inputs()
    full = mx.nd.log_softmax(model(features, target_in)[0], axis=-1).asnumpy()
    static, dynamic = model.encode(features)
    assert [d.shape for d in dynamic] == [(BATCH, HIDDEN)] * (layers * (2 if cell == "lstm" else 1))
    for t in range(LENGTH):
        log_probs, _, dynamic = model.step(target_in[:, t], static, dynamic)
        np.testing.assert_allclose(log_probs.asnumpy(), full[:, t], atol=1e-5, rtol=0)
    assert not np.allclose(full[:, 0], full[:, 1], atol=1e-3)


@pytest.mark.parametrize("cell,layers", FUSED, ids=["%s-%d" % f for f in FUSED])
def test_fused_layers_hold_the_cells_of_before(cell, layers, tmp_path):
    """Show and Tell's fused layers save and load under the names of the stack of Gluon cells imcap stepped before
    (so old model files load), and compute what those cells compute with the same weights."""
    model = make_model(make_config(C.ATT_NONE, "avg", cell, layers))
    fused = model.decoder.cell.cells
    # search steps with cells that hold the fused layers' own parameters: one set of weights
    for layer, step_cell in zip(fused.fused_layers, fused.step_cells):
        assert all(getattr(step_cell, name) is getattr(layer, "l0_" + name)
                   for name in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"))
    cells = nn.HybridSequential()
    for layer in range(layers):
        cells.add(CELLS[cell](HIDDEN, input_size=EMBED if layer == 0 else HIDDEN))
    cells.initialize()
    fused.save_parameters(str(tmp_path / "fused.params"))
    cells.load_parameters(str(tmp_path / "fused.params"))  # every name and shape must match
    rng = np.random.RandomState(4)
    inputs = mx.nd.array(rng.normal(size=(BATCH, LENGTH, EMBED)))
    per_layer = 2 if cell == "lstm" else 1
    states = [mx.nd.array(rng.normal(size=(BATCH, HIDDEN))) for _ in range(layers * per_layer)]
    results = fused(inputs, *states)
    layer_inputs = [inputs[:, t] for t in range(LENGTH)]
    expected_states = []
    for layer, step_cell in enumerate(cells):
        layer_states, outputs = states[layer * per_layer:(layer + 1) * per_layer], []
        for x in layer_inputs:
            y, layer_states = step_cell(x, layer_states)
            outputs.append(y)
        layer_inputs = outputs
        expected_states.extend(layer_states)
    np.testing.assert_allclose(results[0].asnumpy(), mx.nd.stack(*layer_inputs, axis=1).asnumpy(), atol=1e-6)
    for got, want in zip(results[1:], expected_states):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), atol=1e-6)
    # and the other way: the cells' file loads into the fused layers
    cells.save_parameters(str(tmp_path / "cells.params"))
    other = make_model(make_config(C.ATT_NONE, "avg", cell, layers), seed=5).decoder.cell.cells
    other.load_parameters(str(tmp_path / "cells.params"))
    np.testing.assert_allclose(other(inputs, *states)[0].asnumpy(), results[0].asnumpy(), atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_show_and_tell_dropout_between_layers_in_training_only(layers):
    """Dropout sits between the fused layers, only in training (MXNet's oneDNN kernel would ignore the operator's
    own dropout), and not on the top layer's output (the deep output has its own)."""
    config = make_config(C.ATT_NONE, "avg", "lstm", layers)
    config.decoder.dropout = 0.5
    fused = make_model(config).decoder.cell.cells
    fused.hybridize()
    rng = np.random.RandomState(4)
    inputs = mx.nd.array(rng.normal(size=(BATCH, LENGTH, EMBED)))
    states = [mx.nd.zeros((BATCH, HIDDEN)) for _ in range(2 * layers)]
    inference = fused(inputs, *states)[0].asnumpy()
    np.testing.assert_array_equal(fused(inputs, *states)[0].asnumpy(), inference)
    with mx.autograd.record():
        training = fused(inputs, *states)[0].asnumpy()
    assert np.allclose(training, inference, atol=1e-6) == (layers == 1)


@pytest.mark.parametrize("attention", [C.ATT_MLP, C.ATT_NONE])
def test_vanilla_rnn_is_one_tanh_state(attention):
    """``--rnn-cell-type rnn``: one state per layer, ``h' = tanh(W x + b + U h + b')`` (Elman), with attention (a
    cell per step) and without (the fused layer; Gluon's fused RNN defaults to ReLU)."""
    model = make_model(make_config(attention, "avg", "rnn", layers=2))
    features, target_in = make_inputs()
    static, dynamic = model.encode(features)
    assert [d.shape for d in dynamic] == [(BATCH, HIDDEN)] * 2
    params = {n: p.data().asnumpy() for n, p in model.decoder._collect_params_with_prefix().items()}
    in_size = EMBED + (ENC if attention == C.ATT_MLP else 0)
    assert params["cell.cells.0.i2h_weight"].shape == (HIDDEN, in_size)
    if attention == C.ATT_NONE:  # the state after the image step, from the init state and the pooled image
        encoded = model.encoder(features)
        init = model.decoder.init(encoded.mean(axis=1)).asnumpy()
        x = model.decoder.image(encoded.mean(axis=1)).asnumpy()
        for layer in range(2):
            h = init[:, layer * HIDDEN:(layer + 1) * HIDDEN]
            p = {k: params["cell.cells.%d.%s" % (layer, k)] for k in ("i2h_weight", "i2h_bias", "h2h_weight",
                                                                          "h2h_bias")}
            x = np.tanh(x @ p["i2h_weight"].T + p["i2h_bias"] + h @ p["h2h_weight"].T + p["h2h_bias"])
            np.testing.assert_allclose(dynamic[layer].asnumpy(), x, atol=1e-5)
    model.hybridize()
    check_stepwise_equals_full(model, features, target_in)
    vocab = build_vocab([["w%d" % i for i in range(VOCAB - 4)]])
    check_beam_search(model, vocab, features[:2])


def test_cli_cell_types(tmp_path):
    for cell in C.RNN_CELL_CHOICES:
        args = parse_training_args(tmp_path, "--rnn-cell-type", cell, "--rnn-attention-type", "none")
        assert model_config_from_args(args, 100, 49, 1280, None).decoder.cell_type == cell
    with pytest.raises(ImcapError, match="cell type"):
        RNNDecoder(RNNDecoderConfig(cell_type="lnlstm"))


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybrid"])
@pytest.mark.parametrize("attention,layers,gating", [("mlp", 2, True), ("coverage", 2, False), ("dot", 1, False),
                                                     ("bilinear", 2, False), ("mlp", 1, False)])
def test_attention_lstm_teacher_forcing_graph_equals_steps(attention, layers, gating, hybridize):
    # the attention LSTM's teacher forcing runs imcap.rnn_teacher_forcing's graph (the words' input projection for
    # the whole caption, query and recurrent projection stacked): it must equal the step the search runs
    model = make_model(make_config(attention, "avg", "lstm", layers=layers, context_gating=gating))
    if hybridize:
        model.hybridize()
    features, target_in = make_inputs()
    check_stepwise_equals_full(model, features, target_in)
    graphs = model.decoder._teacher_forcing
    assert list(graphs.graphs) == [LENGTH] and graphs.graphs[LENGTH]._active == hybridize
