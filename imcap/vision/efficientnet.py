"""EfficientNet-Lite0/Lite2 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
ICML; the Lite variants of tensorflow/tpu), rebuilt as Gluon ``HybridBlock``s that load the ``.npz`` weights in
``../shared/models`` (PyTorch state-dict names, TensorFlow "SAME" padding, input ``(pixel - 127) / 128``), cut at any
layer or continued from one (:class:`EfficientNetLite`); its ImageNet classifier runs on the host
(:class:`imcap.vision.classifier.HostClassifier`). The architecture comes from code (:func:`efficientnet_lite_shapes`),
so the CNN tail of a trained model (:mod:`imcap.vision.tail`) loads without a weight file.
"""
import math
from typing import Dict, Mapping, Optional, Tuple, Union

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from .. import constants as C
from ..utils import check_condition


# Stage table of EfficientNet-B0 (Tan & Le 2019, Table 1): (kernel, stride) per stage. The repeats and
# channel counts are read off the weight file, so the same code builds Lite0 and Lite2.
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# EfficientNet-B0's stages (Tan & Le 2019, Table 1) as (kernel, expand ratio, repeats, output channels), and the
# (width, depth) coefficients of the Lite variants, which keep the stem (32) and head (1280) widths and the repeats of
# the first and the last stage (tensorflow/tpu's EfficientNet-Lite): the architecture without a weight file.
_B0_STAGES = ((3, 1, 1, 16), (3, 6, 2, 24), (5, 6, 2, 40), (3, 6, 3, 80), (5, 6, 3, 112), (5, 6, 4, 192),
              (3, 6, 1, 320))
_LITE_SCALING = {C.ENCODER_EFFICIENTNET_LITE0: (1.0, 1.0), C.ENCODER_EFFICIENTNET_LITE2: (1.1, 1.2)}
_LITE_STEM, _LITE_HEAD, _IMAGENET_CLASSES = 32, 1280, 1000
_BN_EPSILON = 1e-3
DEFAULT_INPUT_SIZE = {C.ENCODER_EFFICIENTNET_LITE0: 224, C.ENCODER_EFFICIENTNET_LITE2: 260}


def _same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis of ``size`` pixels."""
    out = int(math.ceil(size / float(stride)))
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: ``channels * width`` to the nearest multiple of ``divisor``, at least
    ``divisor`` and not below 90 % of the scaled value."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2.0) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def efficientnet_lite_shapes(name: str) -> Dict[str, Tuple[int, ...]]:
    """The shape of every parameter of EfficientNet-Lite0 or Lite2, by its name in the ``.npz`` weight files
    (PyTorch state-dict names), from the architecture's definition alone: what :class:`EfficientNetLite` builds
    the network from when there is no weight file (a fine-tuned model's CNN tail, whose weights are in the model's
    params file).

    :raises ImcapError: for another name.
    """
    check_condition(name in _LITE_SCALING, "no built-in architecture of '%s'; known: %s"
                    % (name, ", ".join(sorted(_LITE_SCALING))))
    width, depth = _LITE_SCALING[name]
    shapes: Dict[str, Tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, shape: Tuple[int, ...]) -> None:
        shapes[conv + ".weight"] = shape
        for field in ("weight", "bias", "running_mean", "running_var"):
            shapes["%s.%s" % (bn, field)] = (shape[0],)

    conv_bn("_conv_stem", "_bn0", (_LITE_STEM, 3, 3, 3))
    in_channels, block = _LITE_STEM, 0
    for stage, (kernel, expand, repeats, channels) in enumerate(_B0_STAGES):
        fixed = stage in (0, len(_B0_STAGES) - 1)
        out_channels = _round_channels(channels, width)
        for _ in range(repeats if fixed else int(math.ceil(depth * repeats))):
            name_ = "_blocks.%d" % block
            mid_channels = in_channels * expand
            if expand != 1:
                conv_bn(name_ + "._expand_conv", name_ + "._bn0", (mid_channels, in_channels, 1, 1))
            conv_bn(name_ + "._depthwise_conv", name_ + "._bn1", (mid_channels, 1, kernel, kernel))
            conv_bn(name_ + "._project_conv", name_ + "._bn2", (out_channels, mid_channels, 1, 1))
            in_channels, block = out_channels, block + 1
    conv_bn("_conv_head", "_bn1", (_LITE_HEAD, in_channels, 1, 1))
    shapes["_fc.weight"], shapes["_fc.bias"] = (_IMAGENET_CLASSES, _LITE_HEAD), (_IMAGENET_CLASSES,)
    return shapes


class _SameConvBN(HybridBlock):
    """Conv (no bias, TF SAME padding) + BatchNorm (eps 1e-3) + optional ReLU6.

    Input ``(batch, in_channels, H, W)``; output ``(batch, channels, ceil(H/stride), ceil(W/stride))``.
    """

    def __init__(self, in_channels: int, channels: int, kernel: int, stride: int, groups: int,
                 input_hw: Tuple[int, int], activation: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        pad_h = _same_padding(input_hw[0], kernel, stride)
        pad_w = _same_padding(input_hw[1], kernel, stride)
        symmetric = pad_h[0] == pad_h[1] and pad_w[0] == pad_w[1]
        self._explicit_pad = None if symmetric else (0, 0, 0, 0) + pad_h + pad_w
        self.output_hw = (int(math.ceil(input_hw[0] / stride)), int(math.ceil(input_hw[1] / stride)))
        self._activation = activation
        with self.name_scope():
            self.conv = nn.Conv2D(channels, kernel, strides=stride,
                                  padding=(pad_h[0], pad_w[0]) if symmetric else 0,
                                  groups=groups, use_bias=False, in_channels=in_channels)
            self.bn = nn.BatchNorm(epsilon=_BN_EPSILON, in_channels=channels)

    def hybrid_forward(self, F, x):
        if self._explicit_pad is not None:
            x = F.pad(x, mode="constant", pad_width=self._explicit_pad, constant_value=0)
        x = self.bn(self.conv(x))
        return F.clip(x, 0, 6) if self._activation else x

    def weight_map(self, conv_name: str, bn_name: str) -> Dict[str, mx.gluon.Parameter]:
        """Parameters keyed by their PyTorch state-dict names."""
        bn = self.bn.params
        mapping = {conv_name + ".weight": self.conv.weight}
        for torch_name, gluon_name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "running_mean"),
                                       ("running_var", "running_var")):
            mapping["%s.%s" % (bn_name, torch_name)] = bn.get(gluon_name)
        return mapping


class _MBConv(HybridBlock):
    """Mobile inverted bottleneck without squeeze-and-excitation (Sandler et al. 2018, MobileNetV2).

    1x1 expansion (unless the expand ratio is 1), kxk depthwise, 1x1 linear projection; identity skip when
    the stride is 1 and channels are unchanged.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel: int, stride: int,
                 input_hw: Tuple[int, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.skip = stride == 1 and in_channels == out_channels
        with self.name_scope():
            self.expand = None
            if mid_channels != in_channels:
                self.expand = _SameConvBN(in_channels, mid_channels, 1, 1, 1, input_hw, True)
            self.depthwise = _SameConvBN(mid_channels, mid_channels, kernel, stride, mid_channels, input_hw, True)
            self.project = _SameConvBN(mid_channels, out_channels, 1, 1, 1, self.depthwise.output_hw, False)
        self.output_hw = self.depthwise.output_hw

    def hybrid_forward(self, F, x):
        out = self.expand(x) if self.expand is not None else x
        out = self.project(self.depthwise(out))
        return out + x if self.skip else out


class EfficientNetLite(HybridBlock):
    """EfficientNet-Lite (no SE, ReLU6, fixed stem and head) built from a PyTorch-named ``.npz`` file.

    Input ``(batch, 3, H, W)`` float32 already normalized as ``(pixel - 127) / 128``, or with ``start`` the output of
    that layer, ``(batch, channels, h, w)`` as :attr:`input_shape` says. The output depends on ``layer``: ``stem``,
    ``blocks.N`` or ``head`` give ``(batch, channels, h, w)``; ``pool`` gives ``(batch, 1280)``; ``logits`` gives
    ``(batch, 1000)`` ImageNet class scores. Only the layers from ``start`` (excluded) to ``layer`` have parameters;
    with ``classify``, those up to the head, and the output is ``(output at the cut, head (batch, 1280, h, w))`` from
    one forward pass (the head alone when the cut is the head), for :class:`imcap.vision.classifier.HostClassifier` to
    finish.

    :param weights: name -> array, as stored in ``efficientnet_lite*.npz``, or name -> shape (only the shapes are read
        here; :func:`efficientnet_lite_shapes` gives them without the file).
    :param input_size: (H, W) in pixels of the images; TF "SAME" padding is fixed for it.
    :param layer: where to cut the network.
    :param start: run the network from the output of this layer (``stem`` or ``blocks.N`` before ``layer``) instead
        of from pixels: the rest of the network after a cut, e.g. the part fine-tuned on a cached block's output
        (:mod:`imcap.vision.tail`).
    :param classify: also return the head's output, the classifier's input (the layers after the cut run too).
    :raises ImcapError: if ``layer`` or ``start`` is unknown, or ``start`` is not before ``layer``.
    """

    def __init__(self, weights: Mapping[str, Union[np.ndarray, Tuple[int, ...]]], input_size: Tuple[int, int],
                 layer: str = "head", start: Optional[str] = None, classify: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        shapes = {k: tuple(getattr(v, "shape", v)) for k, v in weights.items()}
        num_blocks = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("_blocks."))
        self.layer_names = ["stem"] + ["blocks.%d" % i for i in range(num_blocks)] + ["head", "pool", "logits"]
        check_condition(layer in self.layer_names, "unknown EfficientNet-Lite layer '%s'; choose from: %s"
                        % (layer, ", ".join(self.layer_names)))
        self._cut = self.layer_names.index(layer)
        starts = self.layer_names[:min(self._cut, num_blocks + 1)]
        check_condition(start is None or start in starts, "EfficientNet-Lite cannot start after '%s' and end at '%s'; "
                        "start after one of: %s" % (start, layer, ", ".join(starts)))
        # the index in layer_names of the layer whose output is the input (-1: pixels)
        self._start = -1 if start is None else self.layer_names.index(start)
        self.weight_names: Dict[str, mx.gluon.Parameter] = {}
        hw = (int(input_size[0]), int(input_size[1]))
        self.classify = classify and self.layer_names[self._cut] != "logits"
        # with classify the graph ends at the head: the classifier runs on the host (see ``hybrid_forward``)
        last = max(self._cut, num_blocks + 1) if self.classify else self._cut   # the last layer built
        built = lambda index: self._start < index <= last  # noqa: E731  (whether layer_names[index] has params)
        with self.name_scope():
            stem_out = shapes["_conv_stem.weight"][0]
            if built(0):
                self.stem = _SameConvBN(3, stem_out, 3, 2, 1, hw, True)
                self.weight_names.update(self.stem.weight_map("_conv_stem", "_bn0"))
            self.input_shape: Tuple[int, ...] = (3,) + hw  # (channels, H, W) of one input
            hw = _strided(hw, 2)
            if self._start == 0:
                self.input_shape = (stem_out,) + hw
            self.blocks = nn.HybridSequential()
            in_channels, stage, prev_out = stem_out, -1, None
            for i in range(num_blocks):
                name = "_blocks.%d" % i
                out_channels, mid_channels, _, kernel = [shapes[name + "._project_conv.weight"][0]] + \
                    list(shapes[name + "._depthwise_conv.weight"][0:1]) + \
                    list(shapes[name + "._depthwise_conv.weight"][2:4])
                if out_channels != prev_out:  # a new stage starts where the output width changes
                    stage += 1
                    stride = _STAGE_STRIDES[stage]
                else:
                    stride = 1
                prev_out = out_channels
                if built(i + 1):
                    block = _MBConv(in_channels, mid_channels, out_channels, kernel, stride, hw)
                    self.blocks.add(block)
                    if block.expand is not None:
                        self.weight_names.update(block.expand.weight_map(name + "._expand_conv", name + "._bn0"))
                    self.weight_names.update(block.depthwise.weight_map(name + "._depthwise_conv", name + "._bn1"))
                    self.weight_names.update(block.project.weight_map(name + "._project_conv", name + "._bn2"))
                hw, in_channels = _strided(hw, stride), out_channels
                if self._start == i + 1:
                    self.input_shape = (out_channels,) + hw
            head_out = shapes["_conv_head.weight"][0]
            if built(num_blocks + 1):
                self.head = _SameConvBN(in_channels, head_out, 1, 1, 1, hw, True)
                self.weight_names.update(self.head.weight_map("_conv_head", "_bn1"))
            if built(num_blocks + 3):
                self.fc = nn.Dense(shapes["_fc.weight"][0], in_units=head_out)
                self.weight_names.update({"_fc.weight": self.fc.weight, "_fc.bias": self.fc.bias})
        self.output_hw = hw

    def load_weights(self, weights: Dict[str, np.ndarray], ctx: mx.Context) -> None:
        """Initialize every parameter from ``weights``.

        :raises ImcapError: if a name is missing or a shape differs.
        """
        missing = sorted(set(self.weight_names) - set(weights))
        check_condition(not missing, "weights lack %d parameters, e.g. %s" % (len(missing), missing[:3]))
        for name, param in self.weight_names.items():
            value = weights[name]
            check_condition(tuple(param.shape) == value.shape, "parameter %s has shape %s, the network expects %s"
                            % (name, value.shape, param.shape))
            param.initialize(ctx=ctx)
            param.set_data(mx.nd.array(value, ctx=ctx))

    def hybrid_forward(self, F, x):
        cut = None  # the output at the cut, with classify (the forward goes on to the logits)
        if self._start < 0:
            x = self.stem(x)
            if self._cut == 0:
                if not self.classify:
                    return x
                cut = x
        first = max(self._start, 0)  # the number of the first block built (blocks.N is layer N + 1)
        for offset, block in enumerate(self.blocks):
            x = block(x)
            if self._cut == first + offset + 1:
                if not self.classify:
                    return x
                cut = x
        x = self.head(x)
        if self.classify:
            # The classifier (pool and fully connected layer) is left to the host, image by image
            # (:class:`imcap.vision.classifier.HostClassifier`): oneDNN's inner product sums in an order that depends
            # on the batch size on some CPUs (AMD EPYC), so in the graph an image's probabilities would depend on its
            # batch.
            if self.layer_names[self._cut] == "head":
                return x
            return (F.mean(x, axis=(2, 3)) if cut is None else cut), x
        if self.layer_names[self._cut] == "head":
            return x
        x = F.mean(x, axis=(2, 3))
        if self.layer_names[self._cut] == "pool":
            return x
        return self.fc(x)


def _strided(hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """The (H, W) of a map of ``hw`` after a TF "SAME" convolution of ``stride``."""
    return int(math.ceil(hw[0] / float(stride))), int(math.ceil(hw[1] / float(stride)))
