"""The EfficientNet-Lite encoders load the real ImageNet weights right, every encoder kind cuts where asked, and the
rest of a net after a cut builds from code alone (EfficientNet-Lite's block table, the model zoo's classes)."""
import os

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401
from imcap.vision.efficientnet import EfficientNetLite, _same_padding, efficientnet_lite_shapes
from imcap.vision.image_encoder import ImageEncoder, read_class_names
from imcap.vision.zoo import ZooFeatures, read_zoo_weights, zoo_feature_end
from imcap.vision.images import load_image
from imcap.utils import ImcapError
from test.common import CHECK_IMAGES, IMAGES, MODELS, requires_shared

pytestmark = requires_shared
CAT_CLASSES = range(281, 286)   # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def test_same_padding_matches_tensorflow():
    assert _same_padding(224, 3, 2) == (0, 1)   # even input, stride 2: all padding after
    assert _same_padding(224, 5, 2) == (1, 2)
    assert _same_padding(65, 3, 2) == (1, 1)    # odd input: symmetric
    assert _same_padding(7, 3, 1) == (1, 1)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_imagenet_classes_of_check_photos(name):
    encoder = ImageEncoder(name, layer="logits", models_dir=MODELS)
    images = np.stack([load_image(os.path.join(CHECK_IMAGES, f), encoder.input_size)
                       for f in ("chelsea.jpg", "coffee.jpg")])
    logits = encoder.forward(images)
    assert logits.shape == (2, 1000)
    names = read_class_names(os.path.join(MODELS, "imagenet_classes.txt"))
    assert int(logits[0].argmax()) in CAT_CLASSES, names[int(logits[0].argmax())]
    assert int(logits[1].argmax()) == ESPRESSO, names[int(logits[1].argmax())]


@pytest.mark.parametrize("layer", ["head", "blocks.14"])
def test_class_probabilities_come_from_the_same_forward_pass_as_unchanged_features(layer):
    images = np.stack([load_image(os.path.join(CHECK_IMAGES, f), (224, 224)) for f in ("chelsea.jpg", "coffee.jpg")])
    classify = ImageEncoder(layer=layer, models_dir=MODELS, classify=True)
    features, probabilities = classify.encode_with_classes(images)
    np.testing.assert_allclose(features, ImageEncoder(layer=layer, models_dir=MODELS).encode(images), atol=1e-4)
    np.testing.assert_allclose(classify.encode(images), features, atol=1e-6)   # encode still gives the features
    logits = ImageEncoder(layer="logits", models_dir=MODELS).forward(images)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(axis=1, keepdims=True), atol=1e-4)
    assert int(probabilities[0].argmax()) in CAT_CLASSES and int(probabilities[1].argmax()) == ESPRESSO
    with pytest.raises(ImcapError, match="computes no class probabilities"):
        ImageEncoder(layer=layer, models_dir=MODELS).encode_with_classes(images)
    with pytest.raises(ImcapError, match="class probabilities need an EfficientNet-Lite encoder"):
        ImageEncoder("resnet18_v1", classify=True)


def test_fused_and_plain_graphs_agree_and_regions_are_row_major():
    image = load_image(os.path.join(IMAGES, "1000268201_693b08cb0e.jpg"), (224, 224))[None]
    fused = ImageEncoder("efficientnet_lite0", models_dir=MODELS, fuse=True)
    plain = ImageEncoder("efficientnet_lite0", models_dir=MODELS, fuse=False)
    regions = fused.encode(image)
    assert regions.shape == (1, 49, 1280)
    np.testing.assert_allclose(regions, plain.encode(image), rtol=1e-3, atol=1e-3)
    feature_map = plain.forward(image)   # (1, 1280, 7, 7)
    np.testing.assert_allclose(regions[0, 7 * 2 + 3], feature_map[0, :, 2, 3], rtol=1e-4, atol=1e-4)
    assert 0.0 <= regions.min() and regions.max() <= 6.0  # ReLU6 output


def test_intermediate_layer_and_input_size():
    encoder = ImageEncoder("efficientnet_lite2", layer="blocks.15", models_dir=MODELS, fuse=False)
    assert encoder.input_size == (260, 260)
    out = encoder.forward(np.zeros((1, 260, 260, 3), dtype=np.uint8))
    assert out.shape == (1, 208, 9, 9)


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(ImcapError, match="unknown EfficientNet-Lite layer 'blocks.99'"):
        ImageEncoder("efficientnet_lite0", layer="blocks.99", models_dir=MODELS)


def test_symbolic_checkpoint_cut_equals_native_cut(tmp_path):
    """Export the real Lite0 as an MXNet symbolic checkpoint; cutting it by node name must give the same regions."""
    native = ImageEncoder("efficientnet_lite0", layer="head", models_dir=MODELS, fuse=False)
    image = load_image(os.path.join(CHECK_IMAGES, "chelsea.jpg"), (224, 224))[None]
    expected = native.encode(image)
    prefix = str(tmp_path / "lite0")
    native.net.export(prefix, epoch=3)
    import json
    nodes = json.load(open(prefix + "-symbol.json"))["nodes"]
    head_clip = [n["name"] for n in nodes if n["op"] == "clip"][-1]   # ReLU6 after the head conv + BN
    symbolic = ImageEncoder("symbol", model_path=prefix, layer=head_clip, fuse=False)
    symbolic.mean, symbolic.std = native.mean, native.std
    np.testing.assert_allclose(symbolic.encode(image), expected, rtol=1e-4, atol=1e-4)


def test_model_zoo_architecture_with_local_params(tmp_path):
    from mxnet.gluon.model_zoo import vision
    net = vision.get_model("resnet18_v1", pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 224, 224)))
    path = str(tmp_path / "resnet18_v1.params")
    net.save_parameters(path)
    encoder = ImageEncoder("resnet18_v1", model_path=path)
    assert encoder.encode(np.zeros((2, 224, 224, 3), dtype=np.uint8)).shape == (2, 49, 512)
    with pytest.raises(ImcapError, match="needs --image-encoder-model-path"):
        ImageEncoder("resnet18_v1", model_path=None)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_built_in_architecture_is_that_of_the_weight_file(name):
    """EfficientNet-Lite's architecture without its .npz (a fine-tuned model's CNN tail loads from its params file)."""
    with np.load(os.path.join(MODELS, name + ".npz")) as npz:
        shapes = {k: npz[k].shape for k in npz.files}
    assert efficientnet_lite_shapes(name) == shapes
    size = (224, 224) if name == "efficientnet_lite0" else (260, 260)
    built, read = EfficientNetLite(efficientnet_lite_shapes(name), size), EfficientNetLite(shapes, size)
    assert {k: p.shape for k, p in built.weight_names.items()} == {k: p.shape for k, p in read.weight_names.items()}
    with pytest.raises(ImcapError, match="no built-in architecture of 'efficientnet_lite4'"):
        efficientnet_lite_shapes("efficientnet_lite4")


def test_model_zoo_features_after_a_cut(tmp_path):
    """ZooFeatures builds features[start:end] from the model zoo's code alone, with the parameters' shapes and their
    names in a .params file of the whole net; an untrained net initialized here (nothing is downloaded)."""
    from mxnet.gluon.model_zoo import vision
    assert zoo_feature_end(list(vision.get_model("resnet18_v1").features)) == 8        # GlobalAvgPool2D
    assert zoo_feature_end(list(vision.get_model("densenet121").features)) == 13       # AvgPool2D
    assert zoo_feature_end(list(vision.get_model("vgg11").features)) == 25             # none: all of them
    tail = ZooFeatures("resnet18_v1", (224, 224), 6)
    assert tail.input_shape == (128, 28, 28) and tail.output_shape == (512, 7, 7) and tail.output_hw == (7, 7)
    assert all(p.shape and 0 not in p.shape for p in tail.collect_params().values())  # no deferred initialization
    net = vision.get_model("resnet18_v1")
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 224, 224)))
    path = str(tmp_path / "resnet18_v1.params")
    net.save_parameters(path)
    weights = read_zoo_weights("resnet18_v1", path)
    assert set(tail.weight_names) == {k for k in weights if k.startswith(("features.6.", "features.7."))}
    assert all(tail.weight_names[k].shape == weights[k].shape for k in tail.weight_names)
    with pytest.raises(ImcapError, match="no layers features\\[8:8\\]"):
        ZooFeatures("resnet18_v1", (224, 224), 8)
    with pytest.raises(ImcapError, match="does not hold the weights of mobilenet0.25"):
        read_zoo_weights("mobilenet0.25", path)
    # the captioner finds the weights a model-zoo cache was made with by its model_file
    encoder = ImageEncoder.from_description({"encoder": "resnet18_v1", "layer": "7", "input_size": [224, 224],
                                             "model_path": "resnet18_v1.params", "model_file": path},
                                            models_dir=str(tmp_path / "elsewhere"), fuse=False)
    assert encoder.model_path == path and encoder.encode(np.zeros((1, 224, 224, 3), np.uint8)).shape == (1, 196, 256)
