"""Configs: YAML round trip, defaults for fields added later, unknown keys rejected."""
import pytest
import yaml

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap.rnn import RNNDecoderConfig
from imcap.encoder import EncoderConfig
from imcap.model import ModelConfig
from imcap.utils import ImcapError


def example_config():
    return ModelConfig(vocab_size=1234,
                       encoder=EncoderConfig(num_regions=49, feature_dim=1280, num_hidden=64,
                                             positional_embedding="learned", dropout=0.1),
                       decoder=RNNDecoderConfig(cell_type="gru", num_layers=2, num_hidden=32, attention_type="dot",
                                                attention_num_hidden=16, state_init="zero", context_gating=False,
                                                num_embed=24, output_num_hidden=24, encoder_num_hidden=64,
                                                dropout=0.0),
                       num_embed=24, embed_dropout=0.2, weight_tying=True,
                       feature_extraction={"encoder": "efficientnet_lite0", "layer": "head",
                                           "input_size": [224, 224], "feature_shape": [49, 1280],
                                           "dtype": "float16", "model_path": "efficientnet_lite0.npz"})


def test_yaml_round_trip(tmp_path):
    config = example_config()
    path = str(tmp_path / "config.yaml")
    config.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # written atomically, no temp file left
    loaded = ModelConfig.load(path)
    assert loaded == config
    assert isinstance(loaded.encoder, EncoderConfig) and isinstance(loaded.decoder, RNNDecoderConfig)
    assert loaded.feature_extraction["input_size"] == [224, 224]
    assert yaml.safe_load(open(path))["decoder"]["cell_type"] == "gru"  # plain YAML, nested dicts


def test_default_config_round_trip(tmp_path):
    path = str(tmp_path / "config.yaml")
    ModelConfig().save(path)
    assert ModelConfig.load(path) == ModelConfig()


def test_missing_fields_get_their_defaults(tmp_path):
    """A config.yaml of a model trained before a field existed still loads."""
    values = example_config().to_dict()
    del values["decoder"]["context_gating"]
    del values["weight_tying"]
    del values["feature_extraction"]
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    loaded = ModelConfig.load(str(path))
    assert loaded.decoder.context_gating is RNNDecoderConfig().context_gating is True
    assert loaded.weight_tying is ModelConfig().weight_tying is False
    assert loaded.feature_extraction is None
    assert loaded.decoder.cell_type == "gru" and loaded.decoder.num_layers == 2  # the rest as written
    assert loaded.vocab_size == 1234 and loaded.encoder.positional_embedding == "learned"


def test_missing_nested_section_gets_default():
    values = example_config().to_dict()
    del values["encoder"]
    assert ModelConfig.from_dict(values).encoder == EncoderConfig()


@pytest.mark.parametrize("where", ["top", "decoder", "encoder"])
def test_unknown_key_raises(where):
    values = example_config().to_dict()
    (values if where == "top" else values[where])["no_such_option"] = 3
    with pytest.raises(ImcapError, match="no_such_option"):
        ModelConfig.from_dict(values)


def test_the_decoder_name_is_derived_from_the_decoder_config(tmp_path):
    from imcap.transformer import TransformerDecoderConfig
    config = ModelConfig(vocab_size=10, decoder=TransformerDecoderConfig(model_size=32, num_embed=32),
                         num_embed=32, decoder_name="rnn")   # a stale name given by hand is replaced
    assert config.decoder_name == "transformer"
    path = str(tmp_path / "config.yaml")
    config.save(path)
    loaded = ModelConfig.load(path)
    assert isinstance(loaded.decoder, TransformerDecoderConfig) and loaded == config


@pytest.mark.parametrize("changes, message", [
    (dict(num_embed=16), "the rnn decoder reads embeddings of 24, the model's --num-embed is 16"),
    (dict(encoder=EncoderConfig(num_hidden=32)), "the rnn decoder attends to regions of 64, the encoder makes 32"),
])
def test_a_model_whose_sizes_do_not_fit_is_refused_when_built(changes, message):
    import dataclasses
    from imcap.model import CaptionModel
    config = dataclasses.replace(example_config(), weight_tying=False, **changes)
    with pytest.raises(ImcapError, match=message):
        CaptionModel(config)
    CaptionModel(example_config())   # the example fits
