"""ONNX export of every decoder (imcap.export: the RNN family, the Transformer, the convolutional decoder) and its
ONNX Runtime runtime of the step contract
(imcap.onnx_steps): the exported encode and step graphs give the states, log-probabilities and attention of the
MXNet model (1e-5), and beam search over OnnxSteps gives the captions of beam search over the model (constraints,
repeat blocking, ensembles and views, attention included)."""
import os
import subprocess
import sys
from types import SimpleNamespace

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.beam_search import BeamSearch
from imcap.convolution import ConvolutionalDecoderConfig
from imcap.encoder import EncoderConfig
from imcap.model import CaptionModel, ModelConfig
from imcap.rnn import RNNDecoderConfig
from imcap.search_options import SearchOptions
from imcap.transformer import TransformerDecoderConfig
from imcap.utils import ImcapError
from imcap.vocab import build_vocab

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from imcap.export import encode_graph, export_model, step_graph  # noqa: E402
from imcap.onnx_steps import ENCODE_NAME, STEP_NAME, OnnxModel, OnnxSteps, load_onnx_model, row_best  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB, REGIONS, FEATURE_DIM = 30, 9, 40
TOLERANCE = 1e-5


def make_config(attention=C.ATT_MLP, state_init=C.STATE_INIT_AVG, cell=C.RNN_CELL_LSTM, layers=1,
                positions="none", weight_tying=False, context_gating=True, decoder=None) -> ModelConfig:
    """conftest.TINY_MODEL's sizes (an LSTM of 64 with MLP attention, 32-dimensional embeddings), the default
    dropouts (the identity at inference) and the default attention and state init unless asked; ``decoder``: another
    decoder's config instead of the LSTM's."""
    encoder = EncoderConfig(num_regions=REGIONS, feature_dim=FEATURE_DIM, num_hidden=64, positional_embedding=positions)
    if decoder is None:
        decoder = RNNDecoderConfig(cell_type=cell, num_layers=layers, num_hidden=64, attention_type=attention,
                                   attention_num_hidden=64, state_init=state_init, context_gating=context_gating,
                                   num_embed=32, output_num_hidden=32, encoder_num_hidden=64)
    return ModelConfig(vocab_size=VOCAB, encoder=encoder, decoder=decoder, num_embed=32, weight_tying=weight_tying)


def transformer(layers=2, heads=4, max_seq_len=5) -> TransformerDecoderConfig:
    """A small Transformer decoder; its position table shorter than the searches, so that the last row is reused."""
    return TransformerDecoderConfig(num_layers=layers, model_size=32, attention_heads=heads, feed_forward_num_hidden=48,
                                    num_embed=32, encoder_num_hidden=64, max_seq_len=max_seq_len)


def convolutional(layers=2, width=3, max_seq_len=5) -> ConvolutionalDecoderConfig:
    """A small convolutional decoder; its position table shorter than the searches."""
    return ConvolutionalDecoderConfig(num_layers=layers, num_hidden=48, kernel_width=width, num_embed=32,
                                      output_num_hidden=32, encoder_num_hidden=64, max_seq_len=max_seq_len)


def make_model(config: ModelConfig, seed: int = 1) -> CaptionModel:
    """A hybridized model of ``config`` with random parameters (Xavier, a CNN tail's pretrained ones, then every
    parameter, biases included, moved by noise, but BatchNorm's moving statistics), the same for the same seed."""
    mx.random.seed(seed)
    model = CaptionModel(config, prefix="model_")
    model.initialize(mx.init.Xavier(factor_type="avg", magnitude=2.34))
    rng = np.random.RandomState(seed)
    for param in model.collect_params().values():
        if "running_" not in param.name:   # BatchNorm's moving statistics (a CNN tail's) stay the pretrained ones
            param.set_data(param.data() + mx.nd.array(rng.normal(0, 0.1, size=param.shape)))
    model.hybridize()
    return model


def make_features(batch: int = 4, seed: int = 2) -> np.ndarray:
    """Random features ``(batch, regions, dim)`` in the ReLU6 range of the CNN's."""
    return np.random.RandomState(seed).uniform(0, 6, size=(batch, REGIONS, FEATURE_DIM)).astype(np.float32)


def onnx_model(model: CaptionModel) -> OnnxModel:
    """``model``'s exported graphs on ONNX Runtime (in memory)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(graph.SerializeToString(), sess_options=options,
                                     providers=["CPUExecutionProvider"])
                for graph in (encode_graph(model), step_graph(model))]
    return OnnxModel(*sessions)


def max_differences(model: CaptionModel, exported: OnnxModel, features: np.ndarray, words=None, steps: int = 6,
                    seed: int = 3):
    """The largest differences between MXNet and ONNX Runtime of the log-probabilities and attention (absolute) and
    of the states (after encoding and after each step; absolute, divided by the state's largest magnitude when it is
    above 1: the encoded regions of real features reach 5, and MXNet's own float32 error on them is 4e-5, ten times
    ONNX Runtime's against float64) over the steps on ``words`` (default: ``<s>`` and random words, ``steps`` in
    all), the same for every image."""
    vocab = model.config.vocab_size
    if words is None:
        words = np.random.RandomState(seed).randint(4, vocab, size=(steps, len(features)))
        words[0] = 2
    else:
        words = np.repeat(np.array(words, dtype=np.int64)[:, None], len(features), axis=1)
    steps = len(words)
    static, dynamic = model.encode(mx.nd.array(features))
    o_static, o_dynamic = exported.encode(features)
    assert len(o_static) == len(static) and len(o_dynamic) == len(dynamic)
    assert [s.shape for s in static + dynamic] == [s.shape for s in o_static + o_dynamic]
    worst = dict(states=max(_scaled(a, b) for a, b in zip(static + dynamic, o_static + o_dynamic)),
                 log_probs=0.0, attention=0.0)
    for t in range(steps):
        log_probs, attention, dynamic = model.step(mx.nd.array(words[t], dtype="int32"), static, dynamic)
        o_log_probs, o_attention, o_dynamic = exported.step(words[t], o_static, o_dynamic)
        assert o_log_probs.dtype == np.float32 and o_log_probs.shape == (len(features), vocab)
        worst["log_probs"] = max(worst["log_probs"], np.abs(log_probs.asnumpy() - o_log_probs).max())
        worst["attention"] = max(worst["attention"], np.abs(attention.asnumpy() - o_attention).max())
        worst["states"] = max([worst["states"]] + [_scaled(a, b) for a, b in zip(dynamic, o_dynamic)])
    return worst


def _scaled(state: mx.nd.NDArray, found: np.ndarray) -> float:
    """The largest absolute difference of two states, divided by the largest magnitude of ``state`` if above 1."""
    expected = state.asnumpy()
    return float(np.abs(expected - found).max() / max(1.0, np.abs(expected).max()))


VARIANTS = [dict(),   # the default: a 1-layer LSTM, MLP attention, state from the mean region
            dict(state_init=C.STATE_INIT_LAST, layers=2), dict(attention=C.ATT_DOT, cell=C.RNN_CELL_GRU, layers=2),
            dict(attention=C.ATT_BILINEAR, cell=C.RNN_CELL_RNN, state_init=C.STATE_INIT_ZERO),
            dict(attention=C.ATT_COVERAGE), dict(attention=C.ATT_COVERAGE, cell=C.RNN_CELL_GRU, layers=2),
            dict(attention=C.ATT_MLP, context_gating=False, state_init=C.STATE_INIT_ZERO),
            dict(attention=C.ATT_NONE), dict(attention=C.ATT_NONE, cell=C.RNN_CELL_GRU, layers=2,
                                             state_init=C.STATE_INIT_ZERO),
            dict(positions="learned", weight_tying=True), dict(positions="fixed"),
            dict(decoder=transformer()), dict(decoder=transformer(layers=1, heads=1), positions="fixed"),
            dict(decoder=convolutional()), dict(decoder=convolutional(layers=1, width=2), weight_tying=True)]


def variant_id(variant: dict) -> str:
    return "-".join(type(v).__name__[:-len("DecoderConfig")] + str(v.num_layers) if k == "decoder" else "%s" % v
                    for k, v in variant.items()) or "default"


@pytest.mark.parametrize("variant", VARIANTS, ids=[variant_id(v) for v in VARIANTS])
def test_the_exported_graphs_compute_what_the_model_computes(variant):
    """Over 8 steps: past the block decoders' position tables (5), through the Transformer's growing caches."""
    model = make_model(make_config(**variant))
    worst = max_differences(model, onnx_model(model), make_features(), steps=8)
    assert max(worst.values()) < TOLERANCE, worst


def test_the_graphs_inputs_and_outputs_and_their_dynamic_axes():
    model = make_model(make_config(attention=C.ATT_COVERAGE))
    encode, step = encode_graph(model), step_graph(model)
    names = lambda values: [v.name for v in values]  # noqa: E731
    assert names(encode.graph.input) == ["features"]
    assert names(encode.graph.output) == ["static0", "static1", "dynamic0", "dynamic1", "dynamic2"]
    assert names(step.graph.input) == ["prev_ids", "static0", "static1", "dynamic0", "dynamic1", "dynamic2"]
    assert names(step.graph.output) == ["log_probs", "attention", "new_dynamic0", "new_dynamic1", "new_dynamic2"]
    first = lambda value: value.type.tensor_type.shape.dim[0].dim_param  # noqa: E731
    assert [first(v) for v in encode.graph.input] + [first(v) for v in encode.graph.output] == ["batch"] * 6
    assert {first(v) for v in list(step.graph.input) + list(step.graph.output)} == {"rows"}
    assert {op.domain for g in (encode, step) for op in g.opset_import} == {""}   # the default domain only
    assert "Split" not in {n.op_type for g in (encode, step) for n in g.graph.node}


def searches(models, exported, **settings):
    """The same search over the MXNet models and over their exported graphs."""
    vocab = build_vocab([["w%d" % i for i in range(VOCAB - 4)]])
    options = SearchOptions(**settings)
    return (BeamSearch(models, vocab, options, keep_attention=True),
            BeamSearch(OnnxSteps(exported), vocab, options, keep_attention=True))


def assert_same_captions(a, b):
    assert [[h.ids for h in hyps] for hyps in a] == [[h.ids for h in hyps] for hyps in b]
    for hyps_a, hyps_b in zip(a, b):
        np.testing.assert_allclose([h.score for h in hyps_a], [h.score for h in hyps_b], rtol=1e-5, atol=1e-5)
        assert [h.constraints_met for h in hyps_a] == [h.constraints_met for h in hyps_b]
        for h_a, h_b in zip(hyps_a, hyps_b):
            np.testing.assert_allclose(h_a.attention, h_b.attention, atol=TOLERANCE)


@pytest.mark.parametrize("settings", [dict(beam_size=3), dict(beam_size=3, nbest_size=3, max_output_length=12),
                                      dict(beam_size=4, no_repeat_ngram_size=2, length_penalty_alpha=0.0),
                                      dict(beam_size=1)])
def test_beam_search_over_onnx_runtime_gives_the_captions_of_mxnet(settings):
    model = make_model(make_config())
    on_mxnet, on_onnx = searches([model], [onnx_model(model)], **settings)
    features = make_features(batch=5)
    assert_same_captions(on_mxnet.search(features), on_onnx.search(features))
    constraints = [[[5, 6]], [], [[7], [[8], [9, 10]]], [], [[11]]]   # a phrase, none, a word and a disjunction
    avoid = [[], [[12]], [], [[13, 14]], []]
    assert_same_captions(on_mxnet.search(features, constraints, avoid), on_onnx.search(features, constraints, avoid))


def test_an_ensemble_on_two_views_over_onnx_runtime_gives_the_captions_of_mxnet():
    models = [make_model(make_config(), seed=1), make_model(make_config(attention=C.ATT_COVERAGE, cell="gru"), seed=4),
              make_model(make_config(decoder=transformer()), seed=5)]
    on_mxnet, on_onnx = searches(models, [onnx_model(m) for m in models], beam_size=3, nbest_size=2)
    features = make_features(batch=3)
    views = [features, features[:, ::-1]]
    assert on_onnx.steps.num_members == 0
    assert_same_captions(on_mxnet.search(views), on_onnx.search(views))
    assert on_onnx.steps.num_members == 6


def test_row_best_is_topk_best_first_with_ties_to_the_lower_word():
    scores = np.random.RandomState(0).normal(size=(6, 50)).astype(np.float32)
    scores[0, [3, 7, 20]] = 5.0   # a tie for the best
    scores[1, :] = 0.0            # all tied
    for k in (1, 3, 50):
        values, words = row_best(scores, k)
        assert values.dtype == np.float32 and words.dtype == np.int32 and values.shape == words.shape == (6, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert (words == expected).all()
        np.testing.assert_array_equal(values, np.take_along_axis(scores, expected, axis=1))
        top_values = mx.nd.topk(mx.nd.array(scores), axis=-1, k=k, ret_typ="value").asnumpy()
        np.testing.assert_array_equal(values, top_values)   # MXNet's values; its order of tied words may differ
    assert list(row_best(scores, 3)[1][0]) == [3, 7, 20]


def test_export_model_writes_the_files_that_load_onnx_model_reads(tmp_path):
    model = make_model(make_config())
    paths = export_model(model, str(tmp_path / "onnx"))
    assert [os.path.basename(p) for p in paths] == [ENCODE_NAME, STEP_NAME]
    loaded = load_onnx_model(str(tmp_path / "onnx"), threads=1)
    assert (loaded.num_static, loaded.num_dynamic) == (2, 2)
    assert max(max_differences(model, loaded, make_features(batch=2)).values()) < TOLERANCE


def test_the_runtime_captions_without_mxnet(tmp_path):
    """imcap.onnx_steps loads no MXNet (nor GluonNLP): it encodes and steps an exported model in a process
    without them."""
    model = make_model(make_config())
    export_model(model, str(tmp_path))
    features = make_features(batch=2)
    np.save(str(tmp_path / "features.npy"), features)
    code = ("import sys, numpy as np\nfrom imcap.onnx_steps import OnnxSteps, load_onnx_model\n"
            "steps = OnnxSteps([load_onnx_model(sys.argv[1])])\n"
            "steps.start([np.load(sys.argv[1] + '/features.npy')], 3)\n"
            "summed, attention = steps.step(np.full(6, 2, np.int64), True)\n"
            "values, words = steps.row_best(summed, np.zeros((1, summed.shape[1]), np.float32), 3)\n"
            "steps.reorder(np.arange(6), np.arange(6))\n"
            "loaded = sorted(m for m in ('mxnet', 'gluonnlp') if m in sys.modules)\n"
            "assert not loaded, loaded\nprint(' '.join(map(str, words[:, 0])))\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    static, dynamic = model.encode(mx.nd.array(features))
    log_probs, _, _ = model.step(mx.nd.full((2,), 2, dtype="int32"), static, dynamic)
    assert result.stdout.split() == [str(w) for w in np.repeat(log_probs.asnumpy().argmax(axis=1), 3)]


def test_the_transformer_caches_have_a_growing_axis_and_other_states_fixed_ones():
    model = make_model(make_config(decoder=transformer(layers=1, heads=2)))
    step = step_graph(model)
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(step.graph.input) + list(step.graph.output)}
    assert shapes["static1"] == ["rows", 2, REGIONS, 16] and shapes["static2"] == ["rows", 2, REGIONS, 16]
    assert shapes["dynamic0"] == ["rows", 2, "length0", 16] and shapes["new_dynamic1"] == ["rows", 2, "length1", 16]
    assert shapes["dynamic2"] == ["rows", 1] and shapes["log_probs"] == ["rows", VOCAB]
    conv = step_graph(make_model(make_config(decoder=convolutional(layers=1, width=3))))
    assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in conv.graph.input[-2:]] == \
        [["rows", 2, 48], ["rows", 1]]


@pytest.mark.parametrize("decoder", [transformer(), convolutional()], ids=["transformer", "cnn"])
def test_beam_search_over_the_block_decoders_on_onnx_runtime_gives_the_captions_of_mxnet(decoder):
    model = make_model(make_config(decoder=decoder))
    on_mxnet, on_onnx = searches([model], [onnx_model(model)], beam_size=3, nbest_size=2, max_output_length=9,
                                 no_repeat_ngram_size=2)
    features = make_features(batch=3)
    constraints, avoid = [[[5, 6]], [], [[7], [[8], [9, 10]]]], [[], [[12]], []]
    assert_same_captions(on_mxnet.search(features, constraints, avoid), on_onnx.search(features, constraints, avoid))


def test_a_fine_tuned_model_zoo_tail_is_refused():
    model = make_model(make_config())
    model.encoder_tail = SimpleNamespace(net=object())   # a tail whose CNN is not EfficientNet-Lite
    with pytest.raises(ImcapError, match="fine-tuned CNN tail is a model-zoo net is not implemented yet"):
        encode_graph(model)


def test_a_saved_model_exports_and_captions_as_saved(tmp_path):
    """The tiny RNN model saved by imcap 0.1.0 (test/data/models/rnn-0.1.0), loaded and exported: ONNX Runtime's
    beam search gives the captions stored beside it."""
    from imcap.model import load_model
    folder = os.path.join(REPO, "test", "data", "models", "rnn-0.1.0")
    model, vocab = load_model(folder)
    expected = np.load(os.path.join(folder, "expected.npz"))
    export_model(model, str(tmp_path))
    search = BeamSearch(OnnxSteps([load_onnx_model(str(tmp_path), threads=1)]), vocab, beam_size=3,
                        max_output_length=6)
    hyps = search.search(expected["features"])
    assert [h[0].ids for h in hyps] == [[int(i) for i in ids if i >= 0] for ids in expected["beam_ids"]]
    on_mxnet = BeamSearch([model], vocab, beam_size=3, max_output_length=6).search(expected["features"])
    np.testing.assert_allclose([h[0].score for h in hyps], [h[0].score for h in on_mxnet], rtol=1e-5)
