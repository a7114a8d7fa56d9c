"""Gluon model-zoo nets and MXNet symbolic checkpoints cut at a layer: any model-zoo architecture with a local
``.params`` file, cut inside its ``features`` and continued from a cut (:class:`ZooFeatures`, built from the model
zoo's code, nothing downloaded), and any ``PREFIX-symbol.json`` + ``PREFIX-NNNN.params`` cut at an internal node, as
Sockeye 1.x's ``image_captioning/extract_features.py`` did.
"""
import os
import re
from typing import Dict, Optional, Sequence, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from ..utils import ImcapError, check_condition
from .efficientnet import DEFAULT_INPUT_SIZE


# ImageNet statistics of the Gluon model zoo (RGB, pixels scaled to [0, 1]).
ZOO_MEAN = (0.485, 0.456, 0.406)
ZOO_STD = (0.229, 0.224, 0.225)


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
    if name in DEFAULT_INPUT_SIZE or name == "symbol":
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
    loaded): the rest of the net after a cache of ``features[:start]`` (:mod:`imcap.vision.tail`).

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
