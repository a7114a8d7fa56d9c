"""EfficientNet-Lite (:class:`imcap.vision.efficientnet.EfficientNetLite`) as ONNX nodes: the image encoder of an
exported model (uint8 pixels → the features at the model's cut, and the head's output for the ImageNet classifier)
and a fine-tuned CNN tail (the features of the cached layer → the head's regions).

Each convolution + BatchNorm pair is one ``Conv`` with the BatchNorm folded into its weights and bias (inference: the
moving statistics), TensorFlow's "SAME" padding as ``Conv``'s own (possibly asymmetric) ``pads``, ReLU6 a ``Clip``.
The classifier itself stays on the host (:class:`imcap.vision.classifier.HostClassifier`), as in the MXNet encoder.
"""
from typing import Any, Optional, Tuple

import numpy as np

from .blocks import array
from .builder import GraphBuilder

IMAGE_MEAN, IMAGE_STD = 127.0, 128.0   # EfficientNet-Lite's input: (pixel - 127) / 128


def conv_bn(g: GraphBuilder, block: Any, x: str, hint: str) -> str:
    """A ``_SameConvBN`` block (convolution without bias, TF "SAME" padding, BatchNorm, optional ReLU6) on ``x
    (batch, channels, H, W)``."""
    conv, bn = block.conv, block.bn
    scale = array(bn.gamma) / np.sqrt(array(bn.running_var).astype(np.float64) + bn._kwargs["eps"])
    weight = array(conv.weight) * scale.reshape(-1, 1, 1, 1)
    bias = array(bn.beta) - array(bn.running_mean) * scale
    kernel, stride = list(conv._kwargs["kernel"]), list(conv._kwargs["stride"])
    if block._explicit_pad is not None:   # MXNet's pad_width: (0, 0, 0, 0, top, bottom, left, right)
        top, bottom, left, right = block._explicit_pad[4:]
        pads = [top, left, bottom, right]
    else:
        pads = list(conv._kwargs["pad"]) * 2
    y = g.one("Conv", [x, g.constant(weight, hint + "_weight"), g.constant(bias, hint + "_bias")], hint,
              kernel_shape=kernel, strides=stride, pads=[int(p) for p in pads], group=int(conv._kwargs["num_group"]))
    if not block._activation:
        return y
    return g.one("Clip", [y, g.constant(np.array(0, np.float32), "relu6_min", key="relu6_min"),
                          g.constant(np.array(6, np.float32), "relu6_max", key="relu6_max")], hint + "_relu6")


def _mbconv(g: GraphBuilder, block: Any, x: str, hint: str) -> str:
    """An ``_MBConv`` block: expansion, depthwise, projection and the identity skip."""
    out = conv_bn(g, block.expand, x, hint + "_expand") if block.expand is not None else x
    out = conv_bn(g, block.project, conv_bn(g, block.depthwise, out, hint + "_depthwise"), hint + "_project")
    return g.one("Add", [out, x], hint) if block.skip else out


def network(g: GraphBuilder, net: Any, x: str) -> Tuple[str, Optional[str]]:
    """:meth:`EfficientNetLite.hybrid_forward` on ``x``: ``(output at the cut, head output or None)``; the head's
    output ``(batch, 1280, h, w)`` only for a net built with ``classify`` (the classifier's input)."""
    names, cut_index = net.layer_names, net._cut
    cut: Optional[str] = None
    if net._start < 0:
        x = conv_bn(g, net.stem, x, "stem")
        cut = x if cut_index == 0 else None
    first = max(net._start, 0)
    for offset, block in enumerate(net.blocks):
        x = _mbconv(g, block, x, "block%d" % (first + offset))
        if cut_index == first + offset + 1:
            cut = x
    if cut is not None and not net.classify:
        return cut, None
    x = conv_bn(g, net.head, x, "head")
    head = x if net.classify else None
    if names[cut_index] == "head":
        return x, head
    if cut is None:   # pool or logits
        cut = g.one("ReduceMean", [x], "pool", axes=[2, 3], keepdims=0)
        if names[cut_index] == "logits":
            cut = g.dense(cut, array(net.fc.weight), array(net.fc.bias), hint="logits")
    return cut, head


def to_regions(g: GraphBuilder, x: str) -> str:
    """:func:`imcap.vision.image_encoder.to_regions`: ``(batch, channels, h, w)`` → ``(batch, h * w, channels)``
    (row-major), a vector ``(batch, channels)`` → one region ``(batch, 1, channels)``."""
    flat = g.one("Reshape", [x, g.ints([0, 0, -1])], "flat")
    return g.one("Transpose", [flat], "regions", perm=[0, 2, 1])


def from_regions(g: GraphBuilder, features: str, channels: int, height: int, width: int) -> str:
    """Cached features ``(batch, regions, channels)`` → the map ``(batch, channels, height, width)`` (as
    :class:`imcap.vision.tail.EncoderTail` reads them)."""
    transposed = g.one("Transpose", [features], "channels_first", perm=[0, 2, 1])
    return g.one("Reshape", [transposed, g.ints([0, channels, height, width])], "map")


def normalized_pixels(g: GraphBuilder, images: str) -> str:
    """uint8 ``images (batch, H, W, 3)`` → ``(batch, 3, H, W)`` float32 ``(pixel - 127) / 128`` (as
    :meth:`imcap.vision.image_encoder.ImageEncoder.normalize`)."""
    x = g.one("Transpose", [g.one("Cast", [images], "pixels", to=1)], "pixels", perm=[0, 3, 1, 2])
    x = g.one("Sub", [x, g.constant(np.array([IMAGE_MEAN], np.float32), "image_mean")])
    return g.one("Div", [x, g.constant(np.array([IMAGE_STD], np.float32), "image_std")], "normalized")
