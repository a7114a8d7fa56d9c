"""Pretrained ImageNet CNNs cut at a named layer, turning images into region features.

Three kinds of encoder share one interface, :class:`ImageEncoder`:

* EfficientNet-Lite0/Lite2 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
  Neural Networks", ICML; the Lite variants of tensorflow/tpu), rebuilt here as Gluon ``HybridBlock``s
  that load the ``.npz`` weights in ``../shared/models`` (PyTorch state-dict names, TensorFlow "SAME"
  padding, input ``(pixel - 127) / 128``).
* any Gluon model-zoo architecture with a local ``.params`` file, cut inside its ``features``;
* any MXNet symbolic checkpoint (``PREFIX-symbol.json`` + ``PREFIX-NNNN.params``) cut at an internal
  node, as Sockeye 1.x's ``image_captioning/extract_features.py`` did.

A cut at a spatial layer of shape ``(channels, H, W)`` gives ``H * W`` regions of ``channels`` each. The first two
kinds also run the rest of their net after a cut (:class:`EfficientNetLite` ``start``, :class:`ZooFeatures`), the
CNN tail that partial fine-tuning trains (:mod:`imcap.encoder_tail`); both build the architecture from code
(:func:`efficientnet_lite_shapes`, the model zoo's), so the tail of a trained model loads without a weight file.
"""
import io
import logging
import math
import os
import re
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from . import constants as C
from .paths import DEFAULT_MODELS
from .utils import ImcapError, check_condition

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

logger = logging.getLogger(__name__)

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
_DEFAULT_INPUT_SIZE = {C.ENCODER_EFFICIENTNET_LITE0: 224, C.ENCODER_EFFICIENTNET_LITE2: 260}
# ImageNet statistics of the Gluon model zoo (RGB, pixels scaled to [0, 1]).
_ZOO_MEAN = (0.485, 0.456, 0.406)
_ZOO_STD = (0.229, 0.224, 0.225)


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
    one forward pass (the head alone when the cut is the head), for :class:`HostClassifier` to finish.

    :param weights: name -> array, as stored in ``efficientnet_lite*.npz``, or name -> shape (only the shapes are read
        here; :func:`efficientnet_lite_shapes` gives them without the file).
    :param input_size: (H, W) in pixels of the images; TF "SAME" padding is fixed for it.
    :param layer: where to cut the network.
    :param start: run the network from the output of this layer (``stem`` or ``blocks.N`` before ``layer``) instead
        of from pixels: the rest of the network after a cut, e.g. the part fine-tuned on a cached block's output
        (:mod:`imcap.encoder_tail`).
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
            # (:class:`HostClassifier`): oneDNN's inner product sums in an order that depends on the batch size on
            # some CPUs (AMD EPYC), so in the graph an image's probabilities would depend on its batch.
            if self.layer_names[self._cut] == "head":
                return x
            return (F.mean(x, axis=(2, 3)) if cut is None else cut), x
        if self.layer_names[self._cut] == "head":
            return x
        x = F.mean(x, axis=(2, 3))
        if self.layer_names[self._cut] == "pool":
            return x
        return self.fc(x)


class HostClassifier:
    """EfficientNet-Lite's classifier (global average pool, fully connected layer, softmax) in float64 numpy, one image
    at a time, so that an image's ImageNet class probabilities are the same bits whatever batch it was computed in.

    oneDNN's inner product (MXNet's ``FullyConnected`` on CPU) picks its kernel, and with it the order of its sums, by
    the batch size on some CPUs: on a 2-core AMD EPYC the float32 logits of one image moved by one float16 step
    between batches of 4 and 8. Here every image goes through the same float64 matrix-vector product of the same
    shape, and float64 rounding is far below the float16 step of the cache.

    :param weight: ``(classes, channels)`` the ``_fc.weight`` of the weight file.
    :param bias: ``(classes,)`` its ``_fc.bias``.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)

    def probabilities(self, head: np.ndarray) -> np.ndarray:
        """``(batch, channels, h, w)`` the head's output → ``(batch, classes)`` float32 softmax probabilities (each
        row sums to 1), computed image by image."""
        out = np.empty((head.shape[0], self.weight.shape[0]), dtype=np.float32)
        for i, image in enumerate(head):
            pooled = image.reshape(image.shape[0], -1).astype(np.float64).mean(axis=1)
            logits = self.weight @ pooled + self.bias
            logits -= logits.max()
            p = np.exp(logits)
            out[i] = p / p.sum()
        return out


def _strided(hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """The (H, W) of a map of ``hw`` after a TF "SAME" convolution of ``stride``."""
    return int(math.ceil(hw[0] / float(stride))), int(math.ceil(hw[1] / float(stride)))


def zoo_network(name: str) -> HybridBlock:
    """The Gluon model-zoo net ``name`` built from the model zoo's code, without weights (nothing is downloaded).

    :raises ImcapError: if the model zoo has no such net.
    """
    from mxnet.gluon.model_zoo import vision
    try:
        return vision.get_model(name, pretrained=False)
    except ValueError as e:
        raise ImcapError("unknown image encoder '%s': %s" % (name, str(e).splitlines()[0]))


def is_zoo_encoder(name: str) -> bool:
    """Whether ``name`` is a Gluon model-zoo net (not EfficientNet-Lite, not ``symbol``)."""
    if name in _DEFAULT_INPUT_SIZE or name == "symbol":
        return False
    try:
        zoo_network(name)
    except ImcapError:
        return False
    return True


def zoo_feature_end(features: Sequence[HybridBlock]) -> int:
    """Where the last spatial map of a model-zoo net's ``features`` ends: the index of its last global pooling
    (``GlobalAvgPool2D``, or ``AvgPool2D`` as DenseNet's and Inception-v3's), else ``len(features)``."""
    pools = [i for i, c in enumerate(features) if isinstance(c, (nn.GlobalAvgPool2D, nn.AvgPool2D))]
    return pools[-1] if pools else len(features)


def read_zoo_weights(name: str, path: str) -> Dict[str, np.ndarray]:
    """The parameters of a model-zoo net's ``.params`` file, by their structural names in the whole net
    (``features.7.0.body.0.weight``, as ``save_parameters`` writes them; files of prefixed names load too).

    :raises ImcapError: if the file is not a ``.params`` file of that net.
    """
    net = zoo_network(name)
    try:
        net.load_parameters(path, ctx=mx.cpu(), ignore_extra=True)
    except (AssertionError, ValueError, mx.base.MXNetError) as e:
        raise ImcapError("%s does not hold the weights of %s: %s" % (path, name, str(e).strip().splitlines()[0]))
    return {key: param.data().asnumpy() for key, param in net._collect_params_with_prefix().items()}


class _Layers(HybridBlock):
    """Layers applied in turn, each registered under its index in the ``features`` it comes from (``start + i``), so
    that their parameters keep their structural names in the whole net."""

    def __init__(self, layers: Sequence[HybridBlock], start: int, **kwargs) -> None:
        super().__init__(**kwargs)
        for offset, layer in enumerate(layers):
            self.register_child(layer, str(start + offset))

    def hybrid_forward(self, F, x):
        for layer in self._children.values():
            x = layer(x)
        return x


class ZooFeatures(HybridBlock):
    """The layers ``features[start:end]`` of a Gluon model-zoo net, built from the model zoo's code (no weights
    loaded): the rest of the net after a cache of ``features[:start]`` (:mod:`imcap.encoder_tail`).

    Input ``(batch, channels, h, w)``, the output of ``features[:start]`` for images of ``input_size``
    (:attr:`input_shape` ``(channels, h, w)``); output ``(batch, channels_out, h_out, w_out)`` (:attr:`output_shape`),
    the last spatial map for the default ``end``. The parameters have their shapes from the start (no deferred
    initialization); :attr:`weight_names` maps their names in a ``.params`` file of the whole net (see
    :func:`read_zoo_weights`) to them.

    :param name: the model-zoo name (``resnet18_v1``, ``mobilenetv2_1.0``, ...).
    :param input_size: (H, W) pixels of the images.
    :param start: index into ``features`` of the first layer.
    :param end: index after the last layer; default :func:`zoo_feature_end` (before the global pooling).
    :raises ImcapError: for an unknown name, unless ``0 <= start < end <= len(features)``, or if the input or the
        output is not a spatial map.
    """

    def __init__(self, name: str, input_size: Tuple[int, int], start: int, end: Optional[int] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            net = zoo_network(name)
        children = list(net.features)
        end = zoo_feature_end(children) if end is None else end
        check_condition(0 <= start < end <= len(children), "%s: no layers features[%d:%d] (it has %d)"
                        % (name, start, end, len(children)))
        pixels = (1, 3, int(input_size[0]), int(input_size[1]))
        data = mx.sym.var("data")
        cut = data
        for layer in children[:start]:
            cut = layer(cut)
        input_shape = tuple(cut.infer_shape(data=pixels)[1][0])
        check_condition(len(input_shape) == 4, "%s: features[:%d] give %s, not a spatial map (batch, channels, h, w)"
                        % (name, start, input_shape))
        self.features = _Layers(children[start:end], start)
        out = self.features(data)
        arg_shapes, out_shapes, aux_shapes = out.infer_shape(data=input_shape)
        shapes = dict(zip(out.list_arguments(), arg_shapes))
        shapes.update(zip(out.list_auxiliary_states(), aux_shapes))
        check_condition(len(out_shapes[0]) == 4, "%s: features[%d:%d] end in %s, not a spatial map (batch, channels, "
                        "h, w)" % (name, start, end, tuple(out_shapes[0])))
        for param in self.features.collect_params().values():
            param.shape = tuple(shapes[param.name])
        self.input_shape: Tuple[int, ...] = input_shape[1:]
        self.output_shape: Tuple[int, ...] = tuple(out_shapes[0][1:])
        self.output_hw = (int(self.output_shape[1]), int(self.output_shape[2]))
        self.weight_names: Dict[str, mx.gluon.Parameter] = dict(self._collect_params_with_prefix())

    def hybrid_forward(self, F, x):
        return self.features(x)


def _zoo_features(name: str, params_path: Optional[str], layer: Optional[str], ctx: mx.Context) -> HybridBlock:
    """A Gluon model-zoo network's ``features`` cut before ``layer`` (an index) or before its global pooling."""
    net = zoo_network(name)
    check_condition(params_path is not None and os.path.isfile(params_path),
                    "model-zoo encoder %s needs --image-encoder-model-path FILE.params (no download at run time); "
                    "got %s" % (name, params_path))
    net.load_parameters(params_path, ctx=ctx, ignore_extra=True)
    children = list(net.features)
    if layer is None:
        cut = zoo_feature_end(children)
    else:
        check_condition(layer.lstrip("-").isdigit(), "--image-encoder-layer for a model-zoo net is an index into "
                        "its 'features' (0..%d), got '%s'" % (len(children), layer))
        cut = int(layer)
    features = nn.HybridSequential(prefix="")
    for child in children[:cut]:
        features.add(child)
    return features


def _symbol_features(prefix: Optional[str], layer: Optional[str], ctx: mx.Context) -> HybridBlock:
    """An MXNet symbolic checkpoint ``PREFIX-symbol.json`` + ``PREFIX-NNNN.params`` cut at node ``layer``."""
    if prefix is None:
        raise ImcapError("--image-encoder symbol needs --image-encoder-model-path PREFIX")
    if layer is None:
        raise ImcapError("--image-encoder symbol needs --image-encoder-layer NAME")
    directory, base = os.path.split(os.path.abspath(prefix))
    pattern = re.compile(re.escape(base) + r"-(\d{4})\.params$")
    epochs = sorted(int(m.group(1)) for m in (pattern.match(f) for f in os.listdir(directory or ".")) if m)
    check_condition(os.path.isfile(prefix + "-symbol.json") and bool(epochs),
                    "no symbolic checkpoint at %s (need %s-symbol.json and %s-NNNN.params)" % (prefix, prefix, prefix))
    symbol, arg_params, aux_params = mx.model.load_checkpoint(prefix, epochs[-1])
    internals = symbol.get_internals()
    name = layer if layer.endswith("_output") else layer + "_output"
    outputs = internals.list_outputs()
    check_condition(name in outputs, "layer '%s' is not in %s-symbol.json; some names: %s"
                    % (layer, prefix, ", ".join(o[:-len("_output")] for o in outputs if o.endswith("_output"))[-400:]))
    data_name = symbol.list_arguments()[0]
    block = mx.gluon.SymbolBlock(internals[name], mx.sym.var(data_name))
    params = block.collect_params()
    for pname, param in params.items():
        source = arg_params.get(pname, aux_params.get(pname))
        check_condition(source is not None, "parameter %s is missing from the checkpoint %s" % (pname, prefix))
        param.initialize(ctx=ctx)
        param.set_data(source.as_in_context(ctx))
    return block


def weights_dir(models_dir: Optional[str] = None) -> str:
    """``models_dir``, else the shared models folder (:data:`imcap.paths.DEFAULT_MODELS`: ``$IMCAP_SHARED/models`` or
    ``../shared/models`` beside the checkout), where the encoders' weight files are looked for by name."""
    return models_dir if models_dir is not None else DEFAULT_MODELS


class ImageEncoder:
    """A pretrained CNN cut at a layer, with its preprocessing: uint8 images in, region features out.

    :param name: ``efficientnet_lite0``, ``efficientnet_lite2``, a Gluon model-zoo name, or ``symbol``.
    :param model_path: weights (see ``--image-encoder-model-path``); EfficientNet-Lite defaults to
        ``models_dir/NAME.npz``.
    :param layer: layer to cut at (encoder-specific names; ``None`` = the last spatial feature map).
    :param input_size: (H, W) pixels the images are resized to; ``None`` = the encoder's default.
    :param fuse: fuse the graph with MXNet's MKLDNN backend (oneDNN) for faster CPU inference.
    :param classify: also compute the ImageNet class probabilities in the same forward pass
        (:meth:`encode_with_classes`); EfficientNet-Lite only (its weight file holds the classifier).
    :raises ImcapError: on unknown names, missing weight files, or unknown layers, and for ``classify`` with another
        encoder.
    """

    def __init__(self, name: str = C.ENCODER_EFFICIENTNET_LITE0, model_path: Optional[str] = None,
                 layer: Optional[str] = None, input_size: Optional[Sequence[int]] = None,
                 models_dir: Optional[str] = None, ctx: Optional[mx.Context] = None, fuse: bool = True,
                 classify: bool = False) -> None:
        self.ctx = ctx or mx.cpu()
        self.name = name
        check_condition(not classify or name in _DEFAULT_INPUT_SIZE, "class probabilities need an EfficientNet-Lite "
                                                                     "encoder (its weight file holds the ImageNet "
                                                                     "classifier), not %s" % name)
        self.has_classifier = classify
        if name in _DEFAULT_INPUT_SIZE:
            if model_path is None:
                model_path = os.path.join(weights_dir(models_dir), name + ".npz")
            check_condition(os.path.isfile(model_path), "%s: no such weight file for %s" % (model_path, name))
            size = int(input_size[0]) if input_size else _DEFAULT_INPUT_SIZE[name]
            self.input_size = (int(input_size[0]), int(input_size[1])) if input_size else (size, size)
            self.layer = layer or "head"
            with np.load(model_path) as npz:
                weights = {k: npz[k] for k in npz.files}
            self.net = EfficientNetLite(weights, self.input_size, self.layer, classify=classify)
            self.net.load_weights(weights, self.ctx)
            if classify:
                self.classifier = HostClassifier(weights["_fc.weight"], weights["_fc.bias"])
            self.mean: np.ndarray = np.full((1, 1, 1, 1), 127.0, dtype=np.float32)
            self.std: np.ndarray = np.full((1, 1, 1, 1), 128.0, dtype=np.float32)
        else:
            self.input_size = (int(input_size[0]), int(input_size[1])) if input_size else (224, 224)
            self.layer = layer or ""
            if name == "symbol":
                self.net = _symbol_features(model_path, layer, self.ctx)
            else:
                self.net = _zoo_features(name, model_path, layer, self.ctx)
            self.mean = np.array(_ZOO_MEAN, dtype=np.float32).reshape(1, 3, 1, 1) * 255
            self.std = np.array(_ZOO_STD, dtype=np.float32).reshape(1, 3, 1, 1) * 255
        self.model_path = model_path
        self._fuse = fuse
        self._ready = False

    def _prepare(self, x: mx.nd.NDArray) -> None:
        if self._fuse:
            try:
                self.net.optimize_for(x, backend="MKLDNN", static_alloc=True, static_shape=True)
            except Exception as e:  # e.g. a GPU build without MKLDNN: fall back to plain hybridization
                logger.info("MKLDNN graph fusion unavailable (%s); using hybridize()", e)
                self.net.hybridize(static_alloc=True, static_shape=True)
        else:
            self.net.hybridize(static_alloc=True, static_shape=True)
        self._ready = True

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """``(batch, H, W, 3)`` uint8 RGB → the network's input ``(batch, 3, H, W)`` float32 (numpy, on the host):
        ``(pixel - mean) / std`` per channel. Thread-safe: extraction runs it in its decoding threads."""
        x = images.astype(np.float32).transpose(0, 3, 1, 2)
        return (x - self.mean) / self.std

    def preprocess(self, images: np.ndarray) -> mx.nd.NDArray:
        """``(batch, H, W, 3)`` uint8 RGB → normalized ``(batch, 3, H, W)`` float32 on the context."""
        return mx.nd.array(self.normalize(images), ctx=self.ctx)

    def forward(self, images: np.ndarray, normalized: bool = False) -> np.ndarray:
        """Run the cut network: ``(batch, H, W, 3)`` uint8 (or, with ``normalized``, the ``(batch, 3, H, W)``
        output of :meth:`normalize`) → its raw output as float32 numpy."""
        return self._run(images, normalized)[0]

    def _run(self, images: np.ndarray, normalized: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The network's raw output and, with a classifier, the head's output ``(batch, channels, h, w)`` (else
        None)."""
        x = mx.nd.array(images, ctx=self.ctx) if normalized else self.preprocess(images)
        if not self._ready:
            self._prepare(x)
        out = self.net(x)
        if not self.has_classifier:
            return out.asnumpy(), None
        if isinstance(out, (list, tuple)):
            return out[0].asnumpy(), out[1].asnumpy()
        head = out.asnumpy()   # cut at the head: the features are the classifier's input
        return head, head

    def encode_with_classes(self, images: np.ndarray, normalized: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Region features and ImageNet class probabilities from one forward pass: ``(batch, H, W, 3)`` uint8 (or the
        output of :meth:`normalize`) → ``(batch, regions, channels)`` float32 and ``(batch, classes)`` float32 softmax
        probabilities (each row sums to 1), computed image by image on the host (:class:`HostClassifier`), the same
        bits in any batch.

        :raises ImcapError: if the encoder was not made with ``classify``.
        """
        check_condition(self.has_classifier, "this image encoder computes no class probabilities (classify=False)")
        out, head = self._run(images, normalized)
        return to_regions(out), self.classifier.probabilities(cast(np.ndarray, head))

    def encode(self, images: np.ndarray, normalized: bool = False) -> np.ndarray:
        """Region features: ``(batch, H, W, 3)`` uint8 (or, with ``normalized``, the output of :meth:`normalize`)
        → ``(batch, regions, channels)`` float32 (:func:`to_regions` of the network's output)."""
        return to_regions(self.forward(images, normalized))

    def describe(self) -> Dict[str, object]:
        """What identifies the features this encoder makes (stored in the cache manifest): ``encoder``, ``layer``,
        ``input_size`` ``[height, width]`` and ``model_path`` (the weight file's name, without its folder)."""
        return {"encoder": self.name, "layer": self.layer, "input_size": list(self.input_size),
                "model_path": os.path.basename(self.model_path) if self.model_path else None}

    @classmethod
    def from_description(cls, description: Optional[Dict], name: Optional[str] = None,
                         model_path: Optional[str] = None, layer: Optional[str] = None,
                         input_size: Optional[Sequence[int]] = None, models_dir: Optional[str] = None,
                         ctx: Optional[mx.Context] = None, fuse: bool = True, classify: bool = False
                         ) -> "ImageEncoder":
        """The encoder that :meth:`describe` described (a cache manifest, or a model's ``config.yaml``
        ``feature_extraction``), each setting replaced by the argument that is given.

        The weights are the given ``model_path``; else, if the encoder is the described one, the file the features
        were made with (a model-zoo cache's ``model_file``) if it is still there, else the described file's name under
        ``models_dir`` (default: the shared models folder) if it is there; else the encoder's default.

        :param description: ``{"encoder", "layer", "input_size", "model_path"}`` and optionally ``"model_file"`` (an
            absolute path), or ``None`` (EfficientNet-Lite0 with its defaults).
        :raises ImcapError: as the constructor.
        """
        made = description or {}
        name = name or made.get("encoder") or C.ENCODER_EFFICIENTNET_LITE0
        if model_path is None and made.get("model_file") and name == made.get("encoder") and name != "symbol" \
                and os.path.isfile(made["model_file"]):
            model_path = made["model_file"]
        if model_path is None and made.get("model_path") and name == made.get("encoder") and name != "symbol":
            candidate = os.path.join(weights_dir(models_dir), made["model_path"])
            model_path = candidate if os.path.isfile(candidate) else None
        return cls(name, model_path, layer or made.get("layer") or None, input_size or made.get("input_size"),
                   models_dir=models_dir, ctx=ctx, fuse=fuse, classify=classify)


def to_regions(out: np.ndarray) -> np.ndarray:
    """A network's output as region features ``(batch, regions, channels)``: a spatial map ``(batch, channels, h,
    w)`` becomes ``h * w`` regions in row-major order (a view, not a copy); a vector ``(batch, channels)`` one
    region."""
    if out.ndim == 4:
        b, c, h, w = out.shape
        return out.reshape(b, c, h * w).transpose(0, 2, 1)
    return out.reshape(out.shape[0], 1, -1)


def augment(image: np.ndarray, view: Optional[str]) -> np.ndarray:
    """An augmented view of an ``(H, W, 3)`` image: ``None`` is the image itself, ``"hflip"`` mirrors it left to
    right (the usual augmentation of captioning CNNs, e.g. Vinyals et al. 2015; few captions say left or right).

    :raises ImcapError: for an unknown view.
    """
    if view is None:
        return image
    check_condition(view == C.AUGMENTATION_HFLIP, "unknown augmentation '%s' (choices: %s)"
                    % (view, ", ".join(C.AUGMENTATION_CHOICES)))
    return np.ascontiguousarray(image[:, ::-1])


def load_image(path: str, size: Tuple[int, int]) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, resized to ``size`` = (H, W) pixels: :func:`decode_image`
    of the file.

    :raises ImcapError: if the file is missing, empty or not a readable image.
    """
    check_condition(os.path.isfile(path), "no such file")
    check_condition(os.path.getsize(path) > 0, "empty file")
    return decode_image(path, size)


def decode_image(source: Union[str, bytes], size: Tuple[int, int], max_pixels: Optional[int] = None) -> np.ndarray:
    """Decode an image file (its path, or its encoded bytes, e.g. a JPEG upload) as ``(H, W, 3)`` uint8 RGB, resized
    to ``size`` = (H, W) pixels (bilinear) if needed.

    Every mode is converted to RGB as :func:`to_rgb_array` says. Decompression is bounded by PIL's own
    decompression-bomb check, which reads the size in the file's header before any pixel is decoded: the process's
    ``PIL.Image.MAX_IMAGE_PIXELS`` (89.5 megapixels by default) is read, never changed; PIL warns above it and refuses
    twice as many pixels. ``max_pixels`` bounds the image further (None: PIL's bound only). A large JPEG is decoded
    through ``draft`` at a reduced scale.

    :raises ImcapError: if the data are empty or not a readable image, or the image has more pixels than
        ``max_pixels`` or twice PIL's limit.
    """
    from PIL import Image
    if not isinstance(source, str):
        check_condition(len(source) > 0, "empty data")
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as opened:
            width, height = opened.size
            check_condition(max_pixels is None or width * height <= max_pixels,
                            "the image has %d x %d = %d pixels, more than the limit of %d"
                            % (width, height, width * height, max_pixels or 0))
            opened.draft("RGB", (size[1], size[0]))
            return to_rgb_array(opened, size)
    except ImcapError:
        raise
    except Image.DecompressionBombError as e:
        raise ImcapError("too many pixels to decode (%s)" % e) from e
    except Exception as e:  # PIL raises many types for broken files
        raise ImcapError("not a readable image (%s: %s)" % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""))


def resize_image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A decoded ``(height, width, 3)`` uint8 RGB image resized to ``size`` = (H, W) pixels as :func:`decode_image`
    resizes (bilinear), so that an image and its file give the same pixels.

    :raises ImcapError: if ``image`` is not such an array (see :func:`check_image`).
    """
    from PIL import Image
    check_image(image)
    return to_rgb_array(Image.fromarray(np.ascontiguousarray(image), "RGB"), size)


def check_image(image: object) -> None:
    """Check that ``image`` is a decoded image: a ``(height, width, 3)`` uint8 RGB array, height and width >= 1.

    :raises ImcapError: if it is not.
    """
    ok = isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 \
        and image.shape[0] > 0 and image.shape[1] > 0
    check_condition(ok, "an image is a (height, width, 3) uint8 RGB array, got %s"
                    % ("%s %s" % (image.shape, image.dtype) if isinstance(image, np.ndarray) else type(image).__name__))


def to_rgb_array(img: "PILImage", size: Tuple[int, int]) -> np.ndarray:
    """A PIL image as ``(H, W, 3)`` uint8 RGB, resized to ``size`` = (H, W) pixels (bilinear) if needed.

    Grayscale, palette, CMYK, RGBA and 16-bit images are converted to RGB (alpha composited on white; 16-bit values
    above 255 scaled to 8 bits).
    """
    from PIL import Image
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if arr.size == 0 or arr.max() <= 255 else 255.0 / 65535.0  # 8-bit values kept as they are
        img = Image.fromarray((arr * scale).astype(np.uint8))
    img = img.convert("RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def read_class_names(path: str) -> List[str]:
    """ImageNet class names, one per line in output-index order."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]
