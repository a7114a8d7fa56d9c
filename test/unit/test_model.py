"""The captioning model: stepwise search decoding equals teacher-forced decoding, weight tying, parameter count,
and the training loss (padding, label smoothing, doubly stochastic attention)."""
import itertools
import os

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from test.unit import decoding_checks
from test.unit.decoding_checks import check_stepwise_equals_full, make_model
from imcap.rnn import RNNDecoderConfig
from imcap.encoder import EncoderConfig
from imcap.model import CaptionModel, ModelConfig, load_params, save_params
from imcap.loss import sequence_loss
from imcap.utils import ImcapError

VOCAB, REGIONS, FEATURE_DIM = 20, 6, 12
BATCH, LENGTH = 3, 5


def make_config(cell="lstm", attention="mlp", state_init="avg", layers=1, num_embed=16, output_num_hidden=20,
                weight_tying=False, context_gating=True):
    encoder = EncoderConfig(num_regions=REGIONS, feature_dim=FEATURE_DIM, num_hidden=16, dropout=0.0)
    decoder = RNNDecoderConfig(cell_type=cell, num_layers=layers, num_hidden=24, attention_type=attention,
                               attention_num_hidden=16, state_init=state_init, context_gating=context_gating,
                               num_embed=num_embed, output_num_hidden=output_num_hidden, encoder_num_hidden=16,
                               dropout=0.0)
    return ModelConfig(vocab_size=VOCAB, encoder=encoder, decoder=decoder, num_embed=num_embed, embed_dropout=0.0,
                       weight_tying=weight_tying)


def make_inputs(seed=2):
    return decoding_checks.make_inputs(BATCH, LENGTH, REGIONS, FEATURE_DIM, VOCAB, seed)


GRID = list(itertools.product(["lstm", "gru"], ["mlp", "dot"], ["avg", "zero"], [1, 2]))


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybrid"])
@pytest.mark.parametrize("cell,attention,state_init,layers", GRID,
                         ids=["-".join(map(str, g)) for g in GRID])
def test_stepwise_decoding_equals_teacher_forcing(cell, attention, state_init, layers, hybridize):
    model = make_model(make_config(cell, attention, state_init, layers, context_gating=layers == 1))
    if hybridize:
        model.hybridize()
    features, target_in = make_inputs()
    if state_init == "zero":
        assert all((d.asnumpy() == 0).all() for d in model.encode(features)[1])
    check_stepwise_equals_full(model, features, target_in)
    assert model.decoder.num_dynamic_states == layers * (2 if cell == "lstm" else 1)


def test_hybridized_and_imperative_models_agree():
    config = make_config("lstm", "mlp", "avg", 2)
    features, target_in = make_inputs()
    plain = make_model(config, seed=5)
    hybrid = make_model(config, seed=5)
    hybrid.hybridize()
    np.testing.assert_allclose(plain(features, target_in)[0].asnumpy(), hybrid(features, target_in)[0].asnumpy(),
                               atol=1e-5)


def test_images_are_decoded_independently():
    """One image's log-probabilities do not depend on the other images of the batch."""
    model = make_model(make_config())
    features, target_in = make_inputs()
    full = model(features, target_in)[0].asnumpy()
    alone = model(features[1:2], target_in[1:2])[0].asnumpy()
    np.testing.assert_allclose(alone[0], full[1], atol=1e-5)


@pytest.mark.parametrize("attention", ["mlp", "none"])
def test_repeated_encodings_equal_repeated_images(attention):
    """``model(features, target_in, repeats=k)`` (each image encoded once, for k captions) gives the logits and
    gradients of the images repeated k times, as self-critical training needs."""
    model = make_model(make_config(attention=attention, state_init="zero" if attention == "none" else "avg"))
    features, _ = make_inputs()
    k = 2
    _, target_in = decoding_checks.make_inputs(BATCH * k, LENGTH, REGIONS, FEATURE_DIM, VOCAB, seed=4)
    params = [p for p in model.collect_params().values() if p.grad_req != "null"]
    results = []
    for inputs in ((features, k), (features.repeat(k, axis=0), 1)):
        with mx.autograd.record():
            logits, _ = model(inputs[0], target_in, inputs[1])
            (logits * logits).sum().backward()
        results.append((logits.asnumpy(), [p.grad().asnumpy().copy() for p in params]))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    for once, repeated in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(once, repeated, rtol=1e-4, atol=1e-4)


def test_weight_tying_shares_the_array():
    tied = make_model(make_config(num_embed=20, output_num_hidden=20, weight_tying=True))
    assert tied.output_layer.weight is tied.embedding[0].weight
    assert tied.output_layer.weight.data().shape == (VOCAB, 20)
    tied.embedding[0].weight.data()[:] = 0.5  # writing one writes the other
    assert (tied.output_layer.weight.data().asnumpy() == 0.5).all()
    features, target_in = make_inputs()
    with mx.autograd.record():  # gradients of both uses reach the one array
        logits, _ = tied(features, target_in)
    logits.backward()
    assert np.abs(tied.embedding[0].weight.grad().asnumpy()).sum() > 0


def test_tied_model_saves_and_loads(tmp_path):
    config = make_config(num_embed=20, output_num_hidden=20, weight_tying=True)
    model = make_model(config, seed=3)
    path = str(tmp_path / "params")
    model.save_parameters(path)
    loaded = CaptionModel(config, prefix="model_")
    loaded.load_parameters(path)
    assert loaded.output_layer.weight is loaded.embedding[0].weight
    features, target_in = make_inputs()
    np.testing.assert_allclose(loaded(features, target_in)[0].asnumpy(), model(features, target_in)[0].asnumpy(),
                               atol=1e-6)


def test_num_parameters_counts_shared_weights_once():
    untied = make_model(make_config(num_embed=20, output_num_hidden=20, weight_tying=False))
    tied = make_model(make_config(num_embed=20, output_num_hidden=20, weight_tying=True))
    n_untied, n_tied = untied.num_parameters(), tied.num_parameters()
    assert n_untied > 0 and n_tied > 0
    assert n_tied == n_untied - VOCAB * 20
    total = sum(int(np.prod(p.shape)) for p in untied.collect_params().values() if p.grad_req != "null")
    assert n_untied == total


def test_weight_tying_needs_matching_sizes():
    with pytest.raises(ImcapError, match="weight tying"):
        CaptionModel(make_config(num_embed=16, output_num_hidden=20, weight_tying=True))


# --- the loss ---------------------------------------------------------------------------------------------------

def loss_inputs(seed=3, length=4):
    rng = np.random.RandomState(seed)
    logits = rng.normal(size=(2, length, VOCAB)).astype(np.float32)
    attention = rng.dirichlet(np.ones(REGIONS), size=(2, length)).astype(np.float32)
    target_out = rng.randint(4, VOCAB, size=(2, length))
    target_out[1, 2:] = 0  # second caption: 2 tokens, then padding
    return logits, attention, target_out


def nd(*arrays):
    return [mx.nd.array(a) for a in arrays]


def numpy_nll(logits, target_out):
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, target_out[..., None], axis=-1)[..., 0]
    return -(picked * (target_out != 0)).sum()


def test_loss_without_label_smoothing_is_the_nll():
    logits, attention, target_out = loss_inputs()
    loss, nll = sequence_loss(*nd(logits, attention, target_out), label_smoothing=0.0, attention_weight=0.0)
    assert loss.asscalar() == pytest.approx(nll.asscalar(), rel=1e-6)
    assert nll.asscalar() == pytest.approx(numpy_nll(logits, target_out), rel=1e-5)


@pytest.mark.parametrize("label_smoothing,attention_weight", [(0.0, 0.0), (0.1, 0.0), (0.1, 0.5)])
def test_loss_ignores_padding(label_smoothing, attention_weight):
    logits, attention, target_out = loss_inputs()
    base = [x.asscalar() for x in sequence_loss(*nd(logits, attention, target_out), label_smoothing,
                                                 attention_weight)]
    # three more positions of padding with arbitrary logits and attention
    rng = np.random.RandomState(9)
    longer_logits = np.concatenate([logits, rng.normal(size=(2, 3, VOCAB)).astype(np.float32) * 5], axis=1)
    longer_attention = np.concatenate([attention, rng.dirichlet(np.ones(REGIONS), size=(2, 3))], axis=1)
    longer_target = np.concatenate([target_out, np.zeros((2, 3), dtype=target_out.dtype)], axis=1)
    padded = [x.asscalar() for x in sequence_loss(*nd(longer_logits, longer_attention, longer_target),
                                                   label_smoothing, attention_weight)]
    assert padded == pytest.approx(base, rel=1e-5)
    # and what the padded positions of the second caption hold does not matter either
    changed = logits.copy()
    changed[1, 2:] = 100.0
    same = [x.asscalar() for x in sequence_loss(*nd(changed, attention, target_out), label_smoothing,
                                                 attention_weight)]
    assert same == pytest.approx(base, rel=1e-5)


def test_label_smoothing_adds_the_mean_log_probability():
    logits, attention, target_out = loss_inputs()
    eps = 0.2
    loss, nll = sequence_loss(*nd(logits, attention, target_out), label_smoothing=eps, attention_weight=0.0)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    mean = (log_probs.mean(axis=-1) * (target_out != 0)).sum()
    expected = (1 - eps) * numpy_nll(logits, target_out) - eps * mean
    assert loss.asscalar() == pytest.approx(expected, rel=1e-5)
    assert nll.asscalar() == pytest.approx(numpy_nll(logits, target_out), rel=1e-5)


def test_doubly_stochastic_attention_term():
    logits, attention, target_out = loss_inputs()
    args = nd(logits, attention, target_out)
    without = sequence_loss(*args, label_smoothing=0.0, attention_weight=0.0)[0].asscalar()
    nll = sequence_loss(*args, label_smoothing=0.0, attention_weight=0.0)[1].asscalar()
    assert without == pytest.approx(nll, rel=1e-6)  # weight 0: no term
    weight = 0.7
    with_term, nll_with = [x.asscalar() for x in sequence_loss(*args, label_smoothing=0.0, attention_weight=weight)]
    assert nll_with == pytest.approx(nll, rel=1e-6)  # the reported nll never includes it
    coverage = (attention * (target_out != 0)[..., None]).sum(axis=1)  # (batch, regions)
    term = weight * ((1 - coverage) ** 2).sum()
    assert term > 0
    assert with_term - without == pytest.approx(term, rel=1e-4)


def test_params_file_stores_each_parameter_once(tmp_path):
    """A params file holds one array per parameter (not also the search graphs' copies, as imcap 0.1.0's did) and
    takes about 4 bytes per float32 parameter, the names adding under 5% for a model of ~100k parameters."""
    config = make_config()
    config.vocab_size = 2000
    model = make_model(config, seed=3)
    path = str(tmp_path / "params")
    save_params(model, path)
    arrays = mx.nd.load(path)
    assert len(arrays) == len(set(model.collect_params().values()))
    assert not any(name.startswith(("_encode.", "_step.")) for name in arrays)
    assert abs(os.path.getsize(path) / (4 * model.num_parameters()) - 1) < 0.05
    loaded = CaptionModel(config, prefix="model_")
    load_params(loaded, path)
    features, target_in = make_inputs()
    np.testing.assert_array_equal(loaded(features, target_in)[0].asnumpy(), model(features, target_in)[0].asnumpy())


def test_params_that_do_not_fit_are_a_one_line_error(tmp_path):
    model = make_model(make_config(), seed=3)
    path = str(tmp_path / "params")
    save_params(model, path)
    other = CaptionModel(make_config(layers=2), prefix="model_")
    with pytest.raises(ImcapError, match="does not fit the model"):
        load_params(other, path)
