"""The CNN tail of partial fine-tuning (:mod:`imcap.vision.tail`): a cache cut at a block plus the tail is the whole
CNN, BatchNorm statistics stay frozen unless asked, the learning-rate multiplier, and a model holding a tail; the same
for Gluon model-zoo nets (cut at ``features[:K]``), and models that load without the CNN's weight file."""
import dataclasses
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap.encoder import EncoderConfig
from imcap.vision.tail import EncoderTail, EncoderTailConfig, set_learning_rate_multiplier
from imcap.vision.image_encoder import ImageEncoder
from imcap.vision.images import load_image
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



# --- Gluon model-zoo nets ---------------------------------------------------------------------------------------

def save_zoo_params(name, path):
    """Save a model-zoo net initialized with a fixed seed (Xavier; BatchNorm moving statistics drawn at random, so that
    frozen and batch statistics differ). Not pretrained: these tests check the mechanics of the split, not features
    worth captioning, and nothing is downloaded."""
    from mxnet.gluon.model_zoo import vision
    mx.random.seed(7)
    net = vision.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 224, 224)))
    for param_name, param in net.collect_params().items():
        if param_name.endswith("running_mean"):
            param.set_data(mx.nd.random.normal(0, 0.1, param.shape))
        elif param_name.endswith("running_var"):
            param.set_data(mx.nd.random.uniform(0.5, 2.0, param.shape))
    net.save_parameters(path)
    return path


@pytest.fixture(scope="module")
def zoo_params(tmp_path_factory):
    """``.params`` files of two small model-zoo nets made here (see :func:`save_zoo_params`), by name."""
    folder = tmp_path_factory.mktemp("zoo")
    return {name: save_zoo_params(name, str(folder / (name + ".params")))
            for name in ("resnet18_v1", "mobilenetv2_0.25")}


@pytest.fixture(scope="module")
def zoo_pixels():
    return np.random.RandomState(3).randint(0, 256, (3, 224, 224, 3)).astype(np.uint8)


def zoo_manifest(encoder, shape):
    """A model-zoo cache's manifest, as imcap.extract_features writes it (with the weights' absolute path)."""
    return dict(manifest_of(encoder, shape), model_file=os.path.abspath(encoder.model_path))


@pytest.mark.parametrize("name,layer,shape,output", [
    ("resnet18_v1", "7", (196, 256), (49, 512)),    # stage3's 14 x 14 map; the tail is stage4
    ("mobilenetv2_0.25", "-4", (49, 80), (49, 1280)),  # features[:20]; the tail is the last 1x1 conv, BN, ReLU6
])
def test_zoo_cache_plus_the_tail_is_the_whole_features(zoo_params, zoo_pixels, tmp_path, name, layer, shape, output):
    """features[:K] cached in float16, then the tail features[K:pool] loaded from the same .params file, give the
    regions of the whole features (cut before the global pooling, imcap.extract_features' default)."""
    full = ImageEncoder(name, model_path=zoo_params[name], fuse=False).encode(zoo_pixels)
    cut = ImageEncoder(name, model_path=zoo_params[name], layer=layer, fuse=False)
    cached = cut.encode(zoo_pixels)
    assert cached.shape[1:] == shape and full.shape[1:] == output
    nowhere = str(tmp_path / "no-models")  # the weights come from the manifest's model_file alone
    config = EncoderTailConfig.from_manifest(zoo_manifest(cut, shape), "cache", models_dir=nowhere)
    assert config.input_shape == list(shape) and config.output_shape == list(output)
    tail = EncoderTail(config, models_dir=nowhere, prefix="tail_")
    tail.initialize(mx.init.Xavier())  # any initializer: the parameters start as the .params file's
    assert tail.output_hw == (7, 7)
    tail.hybridize(static_alloc=True)
    np.testing.assert_allclose(tail(mx.nd.array(cached)).asnumpy(), full, rtol=1e-4, atol=1e-5)
    out = tail(mx.nd.array(cached.astype(np.float16).astype(np.float32))).asnumpy()  # as the feature cache stores it
    assert np.abs(out - full).mean() < 1e-3 * np.abs(full).mean() + 1e-4


def test_zoo_cuts_that_cannot_be_continued_are_one_line_errors(zoo_params):
    cut = ImageEncoder("resnet18_v1", model_path=zoo_params["resnet18_v1"], layer="7", fuse=False)
    good = zoo_manifest(cut, (196, 256))
    cases = [(dict(good, layer=""), "cut at the last spatial map (the default layer) leave nothing to fine-tune"),
             (dict(good, layer="8"), "cut at '8' leave nothing to fine-tune; the layers before its global pooling are features[:8]"),
             (dict(good, layer="12"), "cut at '12' leave nothing to fine-tune"),
             (dict(good, layer="stage3"), "features of resnet18_v1 cannot be fine-tuned at layer 'stage3'"),
             (dict(good, layer="6.5"), "cannot be fine-tuned at layer '6.5': a model-zoo net is cut at an index K"),
             (dict(good, layer="-10"), "cannot be fine-tuned at layer '-10'"),
             (dict(good, encoder="vgg11", layer="5"), "features[5:25] end in (1, 4096), not a spatial map"),
             (dict(good, encoder="symbol"), "features of symbol cannot be fine-tuned; the CNN must be one of")]
    for manifest, message in cases:
        with pytest.raises(ImcapError) as e:
            EncoderTailConfig.from_manifest(manifest, "cache")
        assert message in str(e.value), str(e.value)
        assert "\n" not in str(e.value) and str(e.value).startswith("cache: ")
    config = EncoderTailConfig.from_manifest(dict(good, layer="-2"), "cache")  # counts from the end, as slices do
    assert config.input_shape == [196, 256]
    with pytest.raises(ImcapError, match="gives features"):  # a manifest whose shape is not the layer's
        EncoderTail(EncoderTailConfig.from_manifest(dict(good, feature_shape=[49, 512]), "cache"))


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_zoo_batchnorm_statistics_are_frozen_unless_asked(zoo_params, zoo_pixels, train_batchnorm):
    cut = ImageEncoder("resnet18_v1", model_path=zoo_params["resnet18_v1"], layer="7", fuse=False)
    cached = cut.encode(zoo_pixels)
    tail = tail_of(zoo_manifest(cut, cached.shape[1:]), train_batchnorm=train_batchnorm)
    inference = tail(mx.nd.array(cached)).asnumpy()
    stats = {name: p.data().asnumpy().copy() for name, p in tail.collect_params().items() if "running" in name}
    assert len(stats) == 2 * 5  # stage4: two blocks of two BatchNorms, and the downsampling one
    out = train_step(tail, cached)
    changed = [name for name, p in tail.collect_params().items() if name in stats
               and not np.array_equal(p.data().asnumpy(), stats[name])]
    if train_batchnorm:
        assert np.abs(out - inference).mean() > 1e-3 and len(changed) == len(stats)
    else:
        np.testing.assert_allclose(out, inference, rtol=1e-4, atol=1e-5)
        assert not changed


def small_model_config(tail):
    regions, dim = tail.output_shape
    return ModelConfig(vocab_size=12, encoder=EncoderConfig(num_regions=regions, feature_dim=dim, num_hidden=16),
                       decoder=RNNDecoderConfig(num_hidden=16, attention_num_hidden=16, num_embed=8,
                                                encoder_num_hidden=16, output_num_hidden=8),
                       num_embed=8, encoder_tail=tail)


def test_a_model_with_a_tail_loads_without_the_weight_file(zoo_params, tmp_path):
    """The architecture comes from code (EfficientNet-Lite's block table, the model zoo's classes); the params file
    holds every weight of the tail. Only a new model, which starts from the pretrained weights, needs the file."""
    cut = ImageEncoder("resnet18_v1", model_path=zoo_params["resnet18_v1"], layer="7", fuse=False)
    zoo = EncoderTailConfig.from_manifest(zoo_manifest(cut, (196, 256)), "cache")
    lite = EncoderTailConfig(layer="blocks.10", input_shape=[196, 112])
    nowhere = str(tmp_path / "no-models")
    for tail, shape in ((lite, (196, 112)), (zoo, (196, 256))):
        model = CaptionModel(small_model_config(tail), prefix="model_")  # with the weight file
        model.initialize(mx.init.Xavier())
        path = str(tmp_path / ("params." + tail.encoder))
        save_params(model, path)
        features = mx.nd.random.uniform(0, 2, (2,) + shape)
        target = mx.nd.array([[1, 4, 5], [1, 6, 7]])
        expected = model(features, target)[0].asnumpy()
        gone = dataclasses.replace(tail, model_file=str(tmp_path / "moved.params") if tail.model_file else None)
        again = CaptionModel(small_model_config(gone), models_dir=nowhere, prefix="model_")
        assert again.encoder_tail.output_hw == (7, 7)
        load_params(again, path)
        np.testing.assert_allclose(again(features, target)[0].asnumpy(), expected, rtol=1e-5, atol=1e-6)
        fresh = CaptionModel(small_model_config(gone), models_dir=nowhere, prefix="model_")
        with pytest.raises(ImcapError, match="the CNN tail of the model needs the weights of %s" % tail.encoder):
            fresh.initialize(mx.init.Xavier())
