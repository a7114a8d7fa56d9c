"""The EfficientNet-Lite encoders load the real ImageNet weights right, and every encoder kind cuts where asked."""
import os

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401
from imcap.image_encoder import ImageEncoder, _same_padding, load_image, read_class_names
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
