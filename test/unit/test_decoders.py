"""The Transformer and convolutional decoders: stepwise decoding from cached states equals whole-sequence decoding,
causality, beam search, the registry, configs (YAML, CLI) and the fixed 2-D image positions."""
import argparse

import mxnet as mx
import numpy as np
import pytest
import yaml

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from test.unit import decoding_checks
from test.unit.decoding_checks import (check_beam_search, check_every_parameter_is_trained, check_stepwise_equals_full,
                                      make_model, parse_training_args as parse)
from imcap import constants as C
from imcap.beam_search import BeamSearch
from imcap.constraints import count_occurrences
from imcap.convolution import ConvolutionalDecoder, ConvolutionalDecoderConfig
from imcap.decoder import decoder_config_type, decoder_name, decoder_names, get_decoder
from imcap.rnn import RNNDecoder, RNNDecoderConfig
from imcap.encoder import EncoderConfig, ImageFeatureEncoder
from imcap.layers import sinusoids, sinusoids_2d
from imcap.model import CaptionModel, ModelConfig
from imcap.train import add_training_args, model_config_from_args, option_defaults
from imcap.transformer import TransformerDecoder, TransformerDecoderConfig
from imcap.utils import ImcapError
from imcap.vocab import build_vocab

VOCAB, REGIONS, FEATURE_DIM = 20, 9, 12
BATCH, LENGTH = 3, 6
EMBED = 16


def transformer_config(layers=2, heads=2, model_size=EMBED, num_embed=EMBED, dropout=0.0):
    return TransformerDecoderConfig(num_layers=layers, model_size=model_size, attention_heads=heads,
                                    feed_forward_num_hidden=24, dropout_attention=dropout, dropout_act=dropout,
                                    dropout_prepost=dropout, num_embed=num_embed, encoder_num_hidden=20,
                                    max_seq_len=12)


def cnn_config(layers=2, kernel_width=3, output_num_hidden=20, dropout=0.0):
    return ConvolutionalDecoderConfig(num_layers=layers, num_hidden=24, kernel_width=kernel_width, num_embed=EMBED,
                                      output_num_hidden=output_num_hidden, encoder_num_hidden=20, dropout=dropout,
                                      max_seq_len=12)


DECODERS = {"transformer-1": (C.DECODER_TRANSFORMER, lambda: transformer_config(layers=1)),
            "transformer-2": (C.DECODER_TRANSFORMER, lambda: transformer_config(layers=2)),
            "cnn-2": (C.DECODER_CNN, lambda: cnn_config(layers=2)),
            "cnn-1-width-2": (C.DECODER_CNN, lambda: cnn_config(layers=1, kernel_width=2))}


def make_config(name, decoder, positions="fixed", weight_tying=False, vocab_size=VOCAB):
    encoder = EncoderConfig(num_regions=REGIONS, feature_dim=FEATURE_DIM, num_hidden=20,
                            positional_embedding=positions, dropout=0.0)
    return ModelConfig(vocab_size=vocab_size, encoder=encoder, decoder=decoder, decoder_name=name, num_embed=EMBED,
                       embed_dropout=0.0, weight_tying=weight_tying)


def make_inputs(seed=2, batch=BATCH, length=LENGTH):
    return decoding_checks.make_inputs(batch, length, REGIONS, FEATURE_DIM, VOCAB, seed)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybrid"])
@pytest.mark.parametrize("key", list(DECODERS))
def test_stepwise_decoding_equals_full_sequence(key, hybridize):
    name, decoder = DECODERS[key]
    model = make_model(make_config(name, decoder()))
    if hybridize:
        model.hybridize()
    features, target_in = make_inputs()
    _, _, states = check_stepwise_equals_full(model, features, target_in)
    for t, dynamic in enumerate(states):
        np.testing.assert_array_equal(dynamic[-1].asnumpy(), t + 1)  # the position


def test_transformer_cache_grows_one_position_per_step():
    model = make_model(make_config(C.DECODER_TRANSFORMER, transformer_config(layers=2, heads=2)))
    model.hybridize()
    features, target_in = make_inputs()
    static, dynamic = model.encode(features)
    assert [s.shape for s in static] == [(BATCH, REGIONS, 20)] + [(BATCH, 2, REGIONS, EMBED // 2)] * 4
    assert [d.shape for d in dynamic] == [(BATCH, 2, 1, EMBED // 2)] * 4 + [(BATCH, 1)]
    for t in range(3):
        _, _, dynamic = model.step(target_in[:, t], static, dynamic)
        assert [d.shape for d in dynamic] == [(BATCH, 2, t + 2, EMBED // 2)] * 4 + [(BATCH, 1)]


def test_cnn_window_has_the_last_inputs():
    model = make_model(make_config(C.DECODER_CNN, cnn_config(layers=2, kernel_width=3)))
    features, target_in = make_inputs()
    static, dynamic = model.encode(features)
    assert [d.shape for d in dynamic] == [(BATCH, 2, 24)] * 2 + [(BATCH, 1)]
    assert all((d.asnumpy() == 0).all() for d in dynamic)  # the left padding of the causal convolution
    _, _, first = model.step(target_in[:, 0], static, dynamic)
    _, _, second = model.step(target_in[:, 1], static, first)
    for before, after in zip(first[:-1], second[:-1]):  # the window shifts by one input
        np.testing.assert_array_equal(after.asnumpy()[:, 0], before.asnumpy()[:, 1])


@pytest.mark.parametrize("key", list(DECODERS))
def test_decode_sequence_continues_from_a_state(key):
    """Stepping through a prefix, then decoding the rest at once, gives the whole-sequence outputs."""
    name, decoder = DECODERS[key]
    model = make_model(make_config(name, decoder()))
    model.hybridize()
    features, target_in = make_inputs()
    static, dynamic = model.decoder.init_state(model.encoder(features))
    embedded = model.embedding(target_in)
    full, full_attention = model.decoder.decode_sequence(embedded, static, dynamic)
    for t in range(2):
        _, _, dynamic = model.decoder.step(embedded[:, t], static, dynamic)
    rest, rest_attention = model.decoder.decode_sequence(embedded[:, 2:], static, dynamic)
    np.testing.assert_allclose(rest.asnumpy(), full.asnumpy()[:, 2:], atol=1e-4, rtol=0)
    np.testing.assert_allclose(rest_attention.asnumpy(), full_attention.asnumpy()[:, 2:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("key", list(DECODERS))
def test_decoding_is_causal_and_per_image(key):
    """A word depends on the earlier words of its own caption only."""
    name, decoder = DECODERS[key]
    model = make_model(make_config(name, decoder()))
    model.hybridize()
    features, target_in = make_inputs()
    full = model(features, target_in)[0].asnumpy()
    changed = target_in.copy()
    changed[:, 3] = 5
    changed[:, 4:] = 7
    later_changed = model(features, changed)[0].asnumpy()
    np.testing.assert_allclose(later_changed[:, :3], full[:, :3], atol=1e-5)
    assert not np.allclose(later_changed[:, 3:], full[:, 3:])
    alone = model(features[1:2], target_in[1:2])[0].asnumpy()
    np.testing.assert_allclose(alone[0], full[1], atol=1e-5)


@pytest.mark.parametrize("key", list(DECODERS))
def test_every_parameter_is_trained(key):
    """One hybridized forward/backward pass reaches every trainable parameter (the fixed tables have none)."""
    name, decoder = DECODERS[key]
    model = make_model(make_config(name, decoder()))
    model.hybridize()
    check_every_parameter_is_trained(model, *make_inputs())


def test_dropout_is_active_in_training_only():
    model = make_model(make_config(C.DECODER_TRANSFORMER, transformer_config(dropout=0.5)))
    model.hybridize()
    features, target_in = make_inputs()
    inference = [model(features, target_in)[0].asnumpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    with mx.autograd.record():
        training = model(features, target_in)[0].asnumpy()
    assert not np.allclose(training, inference[0])


# --- search ------------------------------------------------------------------------------------------------------

def search_vocab():
    vocab = build_vocab([["w%d" % i for i in range(VOCAB - 4)]])
    assert len(vocab) == VOCAB
    return vocab


def greedy(model, features, max_length):
    static, dynamic = model.encode(features)
    prev = mx.nd.full((features.shape[0],), 2, dtype="int32")
    words = []
    for _ in range(max_length):
        log_probs, _, dynamic = model.step(prev, static, dynamic)
        log_probs = log_probs.asnumpy()
        log_probs[:, [0, 1, 2]] = -np.inf
        words.append(log_probs.argmax(axis=1))
        prev = mx.nd.array(words[-1], dtype="int32")
    return np.stack(words, axis=1)


@pytest.mark.parametrize("key", ["transformer-2", "cnn-2"])
def test_beam_search(key):
    name, decoder = DECODERS[key]
    model = make_model(make_config(name, decoder()))
    model.hybridize()
    vocab = search_vocab()
    features, _ = make_inputs(batch=2)
    results = check_beam_search(model, vocab, features)
    for hyps in results:
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert len(h.ids) < 8 and all(4 <= i < VOCAB for i in h.ids)
            assert np.allclose(h.attention.sum(axis=1), 1.0, atol=1e-5)
    # the best hypothesis' log-probability is what the model gives its words by teacher forcing
    best = results[0][0]
    ids = [2] + best.ids
    logits, _ = model(features[:1], mx.nd.array([ids], dtype="int32"))
    log_probs = mx.nd.log_softmax(logits, axis=-1).asnumpy()[0]
    rescored = sum(log_probs[t, w] for t, w in enumerate(best.ids + [vocab[C.EOS_SYMBOL]]))
    assert rescored == pytest.approx(best.log_prob, abs=1e-3)
    # beam 1 is greedy search (up to the first </s>)
    expected = greedy(model, features, 5)
    beam1 = BeamSearch([model], vocab, beam_size=1, max_output_length=6, length_penalty_alpha=0.0)
    for i, hyps in enumerate(beam1.search(features.asnumpy())):
        ids = hyps[0].ids
        greedy_ids = list(expected[i])
        cut = greedy_ids.index(3) if 3 in greedy_ids else len(greedy_ids)
        assert ids[:cut] == greedy_ids[:cut]


def test_ensemble_of_all_decoders():
    vocab = search_vocab()
    rnn = RNNDecoderConfig(num_hidden=16, attention_num_hidden=16, num_embed=EMBED, output_num_hidden=16,
                           encoder_num_hidden=20, dropout=0.0)
    # and RNNs whose states differ: a vanilla tanh RNN with attention (1 state), a 2-layer GRU Show and Tell (fused)
    vanilla = RNNDecoderConfig(cell_type=C.RNN_CELL_RNN, num_hidden=12, attention_num_hidden=16, num_embed=EMBED,
                               output_num_hidden=16, encoder_num_hidden=20, dropout=0.0)
    show_and_tell = RNNDecoderConfig(cell_type=C.RNN_CELL_GRU, num_layers=2, num_hidden=16, attention_type=C.ATT_NONE,
                                     num_embed=EMBED, output_num_hidden=16, encoder_num_hidden=20, dropout=0.0)
    models = [make_model(make_config(C.DECODER_RNN, rnn)),
              make_model(make_config(C.DECODER_TRANSFORMER, transformer_config())),
              make_model(make_config(C.DECODER_CNN, cnn_config())),
              make_model(make_config(C.DECODER_RNN, vanilla)), make_model(make_config(C.DECODER_RNN, show_and_tell))]
    for model in models:
        model.hybridize()
    features, _ = make_inputs(batch=2)
    results = BeamSearch(models, vocab, beam_size=3, max_output_length=6).search(features.asnumpy())
    assert len(results) == 2 and all(np.isfinite(h[0].log_prob) for h in results)
    # the ensemble's score of its best caption is the mean of its members' teacher-forced log-probabilities
    best = results[0][0]
    ids = mx.nd.array([[2] + best.ids], dtype="int32")
    words = best.ids + [vocab[C.EOS_SYMBOL]]
    member_scores = [sum(mx.nd.log_softmax(m(features[:1], ids)[0], axis=-1).asnumpy()[0, t, w]
                         for t, w in enumerate(words)) for m in models]
    assert np.mean(member_scores) == pytest.approx(best.log_prob, abs=1e-3)


def test_lexical_constraints_with_every_decoder_and_their_ensemble():
    """Constraints and avoided words hold for the rnn (with attention and Show and Tell), Transformer and cnn decoders
    and for their ensemble, and an image without constraints in the same batch gets the plain search's result."""
    vocab = search_vocab()
    rnn = RNNDecoderConfig(num_hidden=16, attention_num_hidden=16, num_embed=EMBED, output_num_hidden=16,
                           encoder_num_hidden=20, dropout=0.0)
    show_and_tell = RNNDecoderConfig(num_hidden=16, attention_type=C.ATT_NONE, num_embed=EMBED, output_num_hidden=16,
                                     encoder_num_hidden=20, dropout=0.0)
    models = [make_model(make_config(C.DECODER_RNN, rnn)), make_model(make_config(C.DECODER_RNN, show_and_tell)),
              make_model(make_config(C.DECODER_TRANSFORMER, transformer_config())),
              make_model(make_config(C.DECODER_CNN, cnn_config()))]
    features, _ = make_inputs(batch=3)
    features = features.asnumpy()
    required, avoided = [[[7, 8], [12]], [], [[15]]], [[[5]], [], [[9, 10], [6]]]
    for members in [[m] for m in models] + [models]:
        search = BeamSearch(members, vocab, beam_size=4, max_output_length=8, nbest_size=2)
        plain = search.search(features)
        results = search.search(features, required, avoided)
        for hyps, need, avoid in zip(results, required, avoided):
            for h in hyps:
                assert all(count_occurrences(h.ids, p) for p in need) and h.constraints_met is (True if need else None)
                assert not any(count_occurrences(h.ids, p) for p in avoid)
        assert [(h.ids, h.score) for h in results[1]] == [(h.ids, h.score) for h in plain[1]]


# --- registry and configs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,config,cls", [(C.DECODER_RNN, RNNDecoderConfig(), RNNDecoder),
                                             (C.DECODER_TRANSFORMER, TransformerDecoderConfig(), TransformerDecoder),
                                             (C.DECODER_CNN, ConvolutionalDecoderConfig(), ConvolutionalDecoder)])
def test_registry(name, config, cls):
    assert name in decoder_names()
    assert isinstance(get_decoder(config), cls)
    assert decoder_name(config) == name
    assert decoder_config_type(name) is type(config)


@pytest.mark.parametrize("key", list(DECODERS))
def test_config_yaml_round_trip(key, tmp_path):
    name, decoder = DECODERS[key]
    config = make_config(name, decoder(), weight_tying=name == C.DECODER_TRANSFORMER)
    path = str(tmp_path / "config.yaml")
    config.save(path)
    values = yaml.safe_load(open(path))
    assert values["decoder_name"] == name
    assert ("output_num_hidden" in values["decoder"]) == (name == C.DECODER_CNN)  # the Transformer's is model_size
    loaded = ModelConfig.load(path)
    assert loaded == config
    assert type(loaded.decoder) is type(config.decoder)
    # and the loaded config builds the same model
    model, again = make_model(config, seed=4), make_model(loaded, seed=4)
    features, target_in = make_inputs()
    np.testing.assert_allclose(model(features, target_in)[0].asnumpy(), again(features, target_in)[0].asnumpy())


def test_config_without_decoder_name_is_rnn():
    values = make_config(C.DECODER_RNN, RNNDecoderConfig(cell_type="gru")).to_dict()
    del values["decoder_name"]
    loaded = ModelConfig.from_dict(values)
    assert isinstance(loaded.decoder, RNNDecoderConfig) and loaded.decoder.cell_type == "gru"


def test_config_errors():
    values = make_config(C.DECODER_CNN, cnn_config()).to_dict()
    values["decoder"]["cell_type"] = "lstm"  # an RNN option in a cnn section
    with pytest.raises(ImcapError, match="cell_type"):
        ModelConfig.from_dict(values)
    values = make_config(C.DECODER_CNN, cnn_config()).to_dict()
    values["decoder_name"] = "no_such_decoder"
    with pytest.raises(ImcapError, match="no_such_decoder"):
        ModelConfig.from_dict(values)
    values = make_config(C.DECODER_TRANSFORMER, transformer_config()).to_dict()
    del values["decoder"]["max_seq_len"]  # fields added later get their defaults
    assert ModelConfig.from_dict(values).decoder.max_seq_len == TransformerDecoderConfig().max_seq_len


def test_transformer_needs_num_embed_equal_to_model_size():
    with pytest.raises(ImcapError, match="num-embed"):
        TransformerDecoder(transformer_config(model_size=16, num_embed=24))
    with pytest.raises(ImcapError, match="heads"):
        TransformerDecoder(transformer_config(model_size=16, heads=3))


def test_cnn_needs_a_kernel_width_of_two():
    with pytest.raises(ImcapError, match="kernel-width"):
        ConvolutionalDecoder(cnn_config(kernel_width=1))


@pytest.mark.parametrize("name,decoder", [(C.DECODER_TRANSFORMER, transformer_config()),
                                          (C.DECODER_CNN, cnn_config(output_num_hidden=EMBED))])
def test_weight_tying(name, decoder):
    model = make_model(make_config(name, decoder, weight_tying=True))
    assert model.output_layer.weight is model.embedding[0].weight
    features, target_in = make_inputs()
    assert model(features, target_in)[0].shape == (BATCH, LENGTH, VOCAB)
    with pytest.raises(ImcapError, match="weight tying"):
        CaptionModel(make_config(C.DECODER_CNN, cnn_config(output_num_hidden=20), weight_tying=True))


# --- command line ------------------------------------------------------------------------------------------------

def test_model_config_from_args(tmp_path):
    args = parse(tmp_path, "--decoder", "transformer", "--num-layers", "3", "--num-embed", "64",
                 "--transformer-model-size", "64", "--transformer-attention-heads", "4",
                 "--transformer-feed-forward-num-hidden", "128", "--transformer-dropout-attention", "0.2",
                 "--transformer-dropout-act", "0.3", "--transformer-dropout-prepost", "0.4", "--weight-tying",
                 "--image-positional-embedding-type", "fixed", "--max-seq-len", "30")
    config = model_config_from_args(args, 100, 49, 1280, None)
    assert config.decoder == TransformerDecoderConfig(num_layers=3, model_size=64, attention_heads=4,
                                                      feed_forward_num_hidden=128, dropout_attention=0.2,
                                                      dropout_act=0.3, dropout_prepost=0.4, num_embed=64,
                                                      encoder_num_hidden=512, max_seq_len=30)
    assert config.decoder_name == "transformer" and config.encoder.positional_embedding == "fixed"
    CaptionModel(config)  # tying works: the output size is the model size

    args = parse(tmp_path, "--decoder", "cnn", "--num-layers", "2", "--cnn-kernel-width", "5", "--cnn-num-hidden",
                 "128", "--cnn-dropout", "0.1", "--output-num-hidden", "96")
    config = model_config_from_args(args, 100, 49, 1280, None)
    assert config.decoder == ConvolutionalDecoderConfig(num_layers=2, num_hidden=128, kernel_width=5, num_embed=256,
                                                        output_num_hidden=96, encoder_num_hidden=512, dropout=0.1,
                                                        max_seq_len=40)
    assert isinstance(model_config_from_args(parse(tmp_path), 100, 49, 1280, None).decoder, RNNDecoderConfig)

    with pytest.raises(ImcapError, match="num-embed"):
        model_config_from_args(parse(tmp_path, "--decoder", "transformer", "--num-embed", "128"), 100, 49, 1280, None)


def test_option_defaults():
    defaults = option_defaults()
    assert defaults["decoder"] == C.DECODER_RNN and defaults["transformer_model_size"] == 256
    assert defaults["num_layers"] == 1 and defaults["cnn_kernel_width"] == 3
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    assert set(defaults) >= {a.dest for a in parser._actions if a.dest != "help"}


# --- fixed 2-D image positions -----------------------------------------------------------------------------------

def test_sinusoid_tables():
    table = sinusoids(5, 8)
    assert table[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(table[3, 0], np.sin(3), rtol=1e-6)
    np.testing.assert_allclose(table[3, 5], np.cos(3 / 10000 ** (2 / 8)), rtol=1e-6)
    grid = sinusoids_2d(9, 8)  # 3x3, row-major
    np.testing.assert_array_equal(grid[5, :4], sinusoids(3, 4)[1])  # region 5: row 1
    np.testing.assert_array_equal(grid[5, 4:], sinusoids(3, 4)[2])  # column 2
    assert len({tuple(r) for r in grid}) == 9


def test_fixed_image_positions():
    config = EncoderConfig(num_regions=REGIONS, feature_dim=FEATURE_DIM, num_hidden=8, positional_embedding="fixed")
    encoder = ImageFeatureEncoder(config)
    encoder.initialize(mx.init.Xavier())
    param = encoder.pos_embed
    assert param.grad_req == "null"
    np.testing.assert_allclose(param.data().asnumpy()[0], sinusoids_2d(REGIONS, FEATURE_DIM), atol=1e-6)
    features = mx.nd.ones((2, REGIONS, FEATURE_DIM))  # the same features in every region ...
    encoded = encoder(features).asnumpy()
    assert not np.allclose(encoded[:, 0], encoded[:, 1])  # ... are told apart by their position
    with pytest.raises(ImcapError, match="square"):
        ImageFeatureEncoder(EncoderConfig(num_regions=10, feature_dim=12, positional_embedding="fixed"))
    with pytest.raises(ImcapError, match="divisible by 4"):
        ImageFeatureEncoder(EncoderConfig(num_regions=9, feature_dim=10, positional_embedding="fixed"))


def test_run_from_before_the_new_options_resumes(tmp_path):
    """An args.yaml written before the decoder options existed matches the same command now (their defaults)."""
    from imcap.train import prepare_model_dir
    args = parse(tmp_path)
    model_dir = tmp_path / "model"
    (model_dir / C.TRAINING_STATE_DIRNAME).mkdir(parents=True)
    (model_dir / C.TRAINING_STATE_DIRNAME / C.TRAINING_STATE_NAME).write_text("{}")
    old = {k: v for k, v in vars(args).items() if not k.startswith(("transformer_", "cnn_"))}
    (model_dir / "args.yaml").write_text(yaml.safe_dump(old))
    assert prepare_model_dir(args)  # no error: same settings; the training resumes
    args.cnn_kernel_width = 5  # a new option set to something else than its default does differ
    with pytest.raises(ImcapError, match="cnn-kernel-width"):
        prepare_model_dir(args)
