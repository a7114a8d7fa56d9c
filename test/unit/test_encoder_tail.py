"""The CNN tail of partial fine-tuning (:mod:`imcap.encoder_tail`): a cache cut at a block plus the tail is the whole
CNN, BatchNorm statistics stay frozen unless asked, the learning-rate multiplier, and a model holding a tail."""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap.encoder import EncoderConfig
from imcap.encoder_tail import EncoderTail, EncoderTailConfig, set_learning_rate_multiplier
from imcap.image_encoder import ImageEncoder, load_image
from imcap.model import CaptionModel, ModelConfig, load_params, save_params
from imcap.rnn import RNNDecoderConfig
from imcap.utils import ImcapError
from test.common import IMAGES, requires_shared

pytestmark = requires_shared


def manifest_of(encoder, shape):
    return dict(encoder.describe(), feature_shape=list(shape), dtype="float16")


@pytest.fixture(scope="module")
def images():
    """Four Flickr8k images at 224 x 224, and the full CNN's ``head`` regions of them ``(4, 49, 1280)``."""
    full = ImageEncoder()
    names = sorted(os.listdir(IMAGES))[:4]
    pixels = np.stack([load_image(os.path.join(IMAGES, name), full.input_size) for name in names])
    return pixels, full.encode(pixels)


def tail_of(manifest, **kwargs):
    tail = EncoderTail(EncoderTailConfig.from_manifest(manifest, "test", **kwargs), prefix="tail_")
    tail.initialize(mx.init.Xavier())  # any initializer: the parameters start as the pretrained ones
    return tail


@pytest.mark.parametrize("layer,shape", [("blocks.14", (49, 192)), ("blocks.10", (196, 112))])
def test_cache_at_a_block_plus_the_tail_is_the_whole_cnn(images, layer, shape):
    pixels, head = images
    cut = ImageEncoder(layer=layer)
    cached = cut.encode(pixels).astype(np.float16)  # as the feature cache stores it
    assert cached.shape[1:] == shape
    tail = tail_of(manifest_of(cut, shape))
    assert tail.config.input_shape == list(shape) and tail.config.output_shape == [49, 1280]
    tail.hybridize(static_alloc=True)
    out = tail(mx.nd.array(cached.astype(np.float32))).asnumpy()
    assert out.shape == head.shape
    # float16 rounding of the cached map (a relative 1e-3) is all that differs
    np.testing.assert_allclose(out, head, atol=0.02)
    assert np.abs(out - head).mean() < 1e-3


def test_only_block_cuts_of_efficientnet_lite_can_be_continued():
    cut = ImageEncoder(layer="blocks.14")
    with pytest.raises(ImcapError, match="no cache.json"):
        EncoderTailConfig.from_manifest(None, "cache")
    with pytest.raises(ImcapError, match="features cut at 'head' leave nothing to fine-tune"):
        EncoderTailConfig.from_manifest(dict(manifest_of(cut, (49, 192)), layer="head"), "cache")
    with pytest.raises(ImcapError, match="features of mobilenet1.0 cannot be fine-tuned"):
        EncoderTailConfig.from_manifest(dict(manifest_of(cut, (49, 192)), encoder="mobilenet1.0"), "cache")
    config = EncoderTailConfig.from_manifest(manifest_of(cut, (49, 192)), "cache")
    config.check_features(manifest_of(cut, (49, 192)), "val")
    with pytest.raises(ImcapError, match=r"val: features of other settings .*layer blocks.13, not blocks.14"):
        config.check_features(dict(manifest_of(cut, (49, 192)), layer="blocks.13"), "val")
    with pytest.raises(ImcapError, match="gives features"):  # a manifest whose shape is not the layer's
        EncoderTail(EncoderTailConfig.from_manifest(manifest_of(cut, (49, 320)), "cache"))


def train_step(tail, features):
    """One forward and backward pass in training mode; the output."""
    x = mx.nd.array(features)
    with autograd.record():
        out = tail(x)
    out.backward()
    return out.asnumpy()


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_batchnorm_statistics_are_frozen_unless_asked(images, train_batchnorm):
    pixels, head = images
    cut = ImageEncoder(layer="blocks.14")
    cached = cut.encode(pixels)
    tail = tail_of(manifest_of(cut, cached.shape[1:]), train_batchnorm=train_batchnorm)
    stats = {name: p.data().asnumpy().copy() for name, p in tail.collect_params().items() if "running" in name}
    assert len(stats) == 2 * 4  # mean and variance of the expansion, depthwise, projection and head BatchNorms
    out = train_step(tail, cached)
    changed = [name for name, p in tail.collect_params().items() if name in stats
               and not np.array_equal(p.data().asnumpy(), stats[name])]
    if train_batchnorm:  # batch statistics in training, moving ones updated
        assert np.abs(out - head).mean() > 0.01 and changed
    else:  # training computes what inference computes, and keeps the statistics
        np.testing.assert_allclose(out, head, atol=1e-3)
        assert not changed


def test_learning_rate_multiplier():
    tail = EncoderTail(EncoderTailConfig(), prefix="tail_")
    tail.initialize()
    trained = [p for p in tail.collect_params().values() if "running" not in p.name]
    set_learning_rate_multiplier(tail, 0.1)
    assert all(p.grad_req == "write" and p.lr_mult == 0.1 for p in trained)
    set_learning_rate_multiplier(tail, 0)
    assert all(p.grad_req == "null" for p in tail.collect_params().values())
    with pytest.raises(ImcapError, match=">= 0"):
        set_learning_rate_multiplier(tail, -1)


def test_a_model_with_a_tail_saves_and_loads_it(tmp_path):
    tail = EncoderTailConfig()
    config = ModelConfig(vocab_size=12, encoder=EncoderConfig(num_regions=49, feature_dim=1280, num_hidden=16),
                         decoder=RNNDecoderConfig(num_hidden=16, attention_num_hidden=16, num_embed=8, encoder_num_hidden=16,
                                                  output_num_hidden=8), num_embed=8, encoder_tail=tail)
    config.save(str(tmp_path / "config.yaml"))
    loaded_config = ModelConfig.load(str(tmp_path / "config.yaml"))
    assert loaded_config.encoder_tail == tail
    model = CaptionModel(config, prefix="model_")
    model.initialize(mx.init.Xavier())
    assert model.feature_shape == (49, 192)
    features = mx.nd.random.uniform(0, 2, (2, 49, 192))
    target = mx.nd.array([[1, 4, 5], [1, 6, 7]])
    logits, attention = model(features, target)
    assert logits.shape == (2, 3, 12) and attention.shape == (2, 3, 49)
    # the tail's parameters (changed, as by training) are in the model's params file
    weight = model.encoder_tail.net.head.conv.weight
    weight.set_data(weight.data() * 0.5)
    save_params(model, str(tmp_path / "params"))
    names = list(mx.nd.load(str(tmp_path / "params")))
    assert any(name.startswith("encoder_tail.net.head.") for name in names)
    again = CaptionModel(loaded_config, prefix="model_")
    load_params(again, str(tmp_path / "params"))
    again.hybridize()
    np.testing.assert_allclose(again(features, target)[0].asnumpy(), model(features, target)[0].asnumpy(),
                               rtol=1e-4, atol=1e-5)

