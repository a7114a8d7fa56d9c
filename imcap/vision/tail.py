"""Partial fine-tuning of the image CNN: the rest of the pretrained network after a cached layer, inside the model.

The feature cache can hold the output of an intermediate layer (``imcap.extract_features --image-encoder-layer
blocks.N``, a ``(channels, H, W)`` map stored as ``(H * W, channels)`` regions); the :class:`EncoderTail` is the
rest of the same pretrained CNN, loaded from the same weight file, and runs as the first layer of
:class:`imcap.model.CaptionModel`, so that the last layers train with the decoder at a fraction of the cost of the
whole CNN. Show, Attend and Tell (Xu et al. 2015) and its common PyTorch re-implementation fine-tune the CNN's last
blocks with a learning rate of their own (``encoder_lr``, 1e-4); so does ``imcap.train --image-encoder-fine-tune
--image-encoder-learning-rate``. BatchNorm keeps the pretrained moving statistics (``use_global_stats``, as
detectron's frozen BatchNorm) unless asked, because a batch of captions holds few distinct images.

Two kinds of CNN can be split:

* EfficientNet-Lite0/Lite2 (:class:`imcap.vision.efficientnet.EfficientNetLite`) cut at ``stem`` or ``blocks.N``: the tail
  is blocks ``N + 1 ..`` and the 1x1 ``head`` convolution, its weights those of the ``.npz`` file;
* a Gluon model-zoo net (:class:`imcap.vision.zoo.ZooFeatures`) cut at ``features[:K]`` (``--image-encoder-layer
  K``): the tail is ``features[K:end]``, ``end`` its global pooling (the last spatial map, where
  ``imcap.extract_features`` cuts by default), its weights those of the cache's ``.params`` file.

The architecture comes from code (:func:`imcap.vision.efficientnet.efficientnet_lite_shapes` when the ``.npz`` file is not
there, the model zoo's classes), and the weight file is read only when a new tail is initialized: a trained model,
whose params file holds every weight of its tail, loads without it. See docs/finetuning.md.
"""
import dataclasses
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from .. import constants as C
from ..config import Config
from ..utils import ImcapError, check_condition
from .efficientnet import EfficientNetLite, efficientnet_lite_shapes
from .image_encoder import weights_dir
from .zoo import ZooFeatures, is_zoo_encoder, read_zoo_weights, zoo_feature_end, zoo_network

# The EfficientNet-Lite encoders whose block cuts can be continued, and the layer their tail ends at (the usual
# feature map of imcap); Gluon model-zoo nets (imcap.vision.zoo.is_zoo_encoder) can be continued too.
FINE_TUNE_ENCODERS = (C.ENCODER_EFFICIENTNET_LITE0, C.ENCODER_EFFICIENTNET_LITE2)
TAIL_END_LAYER = "head"


@dataclasses.dataclass
class EncoderTailConfig(Config):
    """Which part of which pretrained CNN the model runs on its input features (saved in ``config.yaml``).

    :param encoder: the CNN's name (``efficientnet_lite0``, ``efficientnet_lite2`` or a Gluon model-zoo name such as
        ``resnet18_v1``).
    :param layer: the layer the cached features were cut at, the tail starts after it: ``stem`` or ``blocks.N`` of
        EfficientNet-Lite; for a model-zoo net the index ``K`` (a string, as in ``cache.json``) of the cache's
        ``features[:K]``.
    :param input_size: ``[height, width]`` pixels the CNN saw (EfficientNet's "SAME" padding depends on it).
    :param model_path: file name of the CNN's weights (as in ``cache.json``), looked for in the shared models folder
        (:func:`imcap.vision.image_encoder.weights_dir`).
    :param input_shape: ``[regions, channels]`` of the cached features (regions = H * W of the cut, row-major).
    :param output_shape: ``[regions, channels]`` of the tail's output (the ``head`` map: 49 x 1280 for Lite0; the
        last spatial map of a model-zoo net: 49 x 512 for ``resnet18_v1``).
    :param train_batchnorm: BatchNorm uses batch statistics in training and updates its moving ones; False: the
        pretrained moving statistics are used and kept (``use_global_stats``).
    :param model_file: absolute path of the weight file the features were made with (``cache.json``'s
        ``model_file``, recorded for model-zoo nets), tried before ``model_path`` in the shared models folder.
    """
    encoder: str = C.ENCODER_EFFICIENTNET_LITE0
    layer: str = "blocks.14"
    input_size: List[int] = dataclasses.field(default_factory=lambda: [224, 224])
    model_path: Optional[str] = None
    input_shape: List[int] = dataclasses.field(default_factory=lambda: [49, 192])
    output_shape: List[int] = dataclasses.field(default_factory=lambda: [49, 1280])
    train_batchnorm: bool = False
    model_file: Optional[str] = None

    @classmethod
    def from_manifest(cls, manifest: Optional[Dict], where: str, train_batchnorm: bool = False,
                      models_dir: Optional[str] = None) -> "EncoderTailConfig":
        """The tail that continues the features a cache manifest (``cache.json``) describes. No weight file is read
        (the architecture comes from code).

        :param where: the cache, named in errors.
        :raises ImcapError: if there is no manifest, its encoder cannot be split, or its layer is not a cut that
            leaves layers to fine-tune (EfficientNet-Lite: a block boundary before ``head``; a model-zoo net: an
            integer index before its global pooling).
        """
        check_condition(manifest is not None, "%s: no %s, so the CNN layer the features were cut at is unknown; "
                        "extract them with imcap.extract_features --image-encoder-layer blocks.N"
                        % (where, C.FEATURE_CACHE_MANIFEST))
        assert manifest is not None
        encoder = str(manifest.get("encoder"))
        zoo = encoder not in FINE_TUNE_ENCODERS and is_zoo_encoder(encoder)
        check_condition(encoder in FINE_TUNE_ENCODERS or zoo, "%s: features of %s cannot be fine-tuned; the CNN must "
                        "be one of %s or a Gluon model-zoo net" % (where, encoder, ", ".join(FINE_TUNE_ENCODERS)))
        layer = str(manifest.get("layer"))
        if zoo:
            zoo_cut(encoder, layer, where)
        else:
            check_condition(layer == "stem" or layer.startswith("blocks."), "%s: features cut at '%s' leave nothing "
                            "to fine-tune; extract them at a block boundary (imcap.extract_features "
                            "--image-encoder-layer blocks.N, e.g. blocks.14 for the last block and the head of "
                            "EfficientNet-Lite0)" % (where, layer))
        config = cls(encoder=encoder, layer=layer, input_size=[int(v) for v in manifest["input_size"]],
                     model_path=manifest.get("model_path"), input_shape=[int(v) for v in manifest["feature_shape"]],
                     train_batchnorm=train_batchnorm, model_file=manifest.get("model_file"))
        try:
            _, _, output_shape = _build_net(config, models_dir)
        except ImcapError as e:
            if not zoo:
                raise
            raise ImcapError("%s: %s" % (where, e))
        config.output_shape = list(output_shape)
        return config

    def check_features(self, manifest: Optional[Dict], where: str) -> None:
        """Check that the features a cache manifest describes are those this tail continues.

        :raises ImcapError: if the manifest is missing or names another encoder, layer, input size or shape.
        """
        check_condition(manifest is not None, "%s: no %s; the model's CNN tail needs features of %s cut at %s"
                        % (where, C.FEATURE_CACHE_MANIFEST, self.encoder, self.layer))
        assert manifest is not None
        expected = {"encoder": self.encoder, "layer": self.layer, "input_size": list(self.input_size),
                    "feature_shape": list(self.input_shape)}
        differing = ["%s %s, not %s" % (key, manifest.get(key), value) for key, value in expected.items()
                     if (list(manifest[key]) if isinstance(manifest.get(key), (list, tuple)) else manifest.get(key))
                     != value]
        check_condition(not differing, "%s: features of other settings than the model's CNN tail continues (%s)"
                        % (where, "; ".join(differing)))


def zoo_cut(encoder: str, layer: str, where: str) -> int:
    """The index ``K`` into a model-zoo net's ``features`` that a cache cut at ``layer`` (``features[:K]``) ends at,
    checked to leave layers before the global pooling to fine-tune; a negative ``K`` counts from the end, as Python's
    slices (and ``imcap.extract_features``) do; ``""`` is extraction's default cut, the global pooling.

    :param where: the cache or model, named in errors.
    :raises ImcapError: for an unknown net, or a layer that is not an integer ``K`` with ``0 <= K < end`` (``end``:
        the index of the global pooling, :func:`imcap.vision.zoo.zoo_feature_end`).
    """
    features = list(zoo_network(encoder).features)
    end = zoo_feature_end(features)
    check_condition(layer == "" or re.fullmatch(r"-?[0-9]+", layer) is not None and -len(features) <= int(layer),
                    "%s: features of %s cannot be fine-tuned at layer '%s': a model-zoo net is cut at an index K into "
                    "its 'features' (imcap.extract_features --image-encoder-layer K, 0 <= K < %d: before its global "
                    "pooling)"
                    % (where, encoder, layer, end))
    index = end if layer == "" else int(layer) + (len(features) if int(layer) < 0 else 0)  # "": the default cut
    check_condition(index < end, "%s: features of %s cut at %s leave nothing to fine-tune; the layers before its "
                    "global pooling are features[:%d]: extract them at an index K < %d (imcap.extract_features "
                    "--image-encoder-layer K)" % (where, encoder, "'%s'" % layer if layer else
                                                  "the last spatial map (the default layer)", end, end))
    return index


def _weight_file_names(config: EncoderTailConfig) -> List[str]:
    default = config.encoder + (".npz" if config.encoder in FINE_TUNE_ENCODERS else ".params")
    return ([config.model_path] if config.model_path else []) + [default]


def tail_weights_path(config: EncoderTailConfig, models_dir: Optional[str] = None) -> str:
    """The weight file of the tail's CNN: ``config.model_file`` if it exists, else ``config.model_path`` in
    ``models_dir`` (default: the shared models folder, :func:`imcap.vision.image_encoder.weights_dir`), else the encoder's
    default file there (``NAME.npz``, ``NAME.params`` for a model-zoo net).

    :raises ImcapError: if none exists.
    """
    if config.model_file and os.path.isfile(config.model_file):
        return config.model_file
    folder = weights_dir(models_dir)
    names = _weight_file_names(config)
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ImcapError("the CNN tail of the model needs the weights of %s (%s%s) in %s (set IMCAP_SHARED)"
                     % (config.encoder, "%s, or " % config.model_file if config.model_file else "", names[0], folder))


class _WeightFile:
    """The pretrained arrays of a CNN tail by their names in the weight file, read on the first request (a model
    loaded from its params file never asks)."""

    def __init__(self, read: Callable[[], Dict[str, np.ndarray]], what: str) -> None:
        self._read = read
        self._what = what
        self._arrays: Optional[Dict[str, np.ndarray]] = None

    def __getitem__(self, name: str) -> np.ndarray:
        if self._arrays is None:
            self._arrays = self._read()
        check_condition(name in self._arrays, "the weights of %s lack the parameter %s" % (self._what, name))
        return self._arrays[name]


def _build_net(config: EncoderTailConfig, models_dir: Optional[str],
               **kwargs) -> Tuple[HybridBlock, _WeightFile, Tuple[int, int]]:
    """The network from after ``config.layer`` to the tail's end (``head``, or a model-zoo net's last spatial map),
    its pretrained weights (read when first asked for) and its output ``(regions, channels)``.

    EfficientNet-Lite's architecture is read off its ``.npz`` file when it is there (as it always was), else built
    from :func:`imcap.vision.efficientnet.efficientnet_lite_shapes`; a model-zoo net's comes from the model zoo's code.
    """
    size = (int(config.input_size[0]), int(config.input_size[1]))
    if config.encoder in FINE_TUNE_ENCODERS:
        try:
            path: Optional[str] = tail_weights_path(config, models_dir)
        except ImcapError:
            path = None
        if path is not None:
            arrays = _read_npz(path)
            architecture: Dict = arrays
            weights = _WeightFile(lambda: arrays, path)
            channels = int(arrays["_conv_head.weight"].shape[0])
        else:
            architecture = efficientnet_lite_shapes(config.encoder)
            weights = _WeightFile(lambda: _read_npz(tail_weights_path(config, models_dir)), config.encoder)
            channels = int(architecture["_conv_head.weight"][0])
        net: HybridBlock = EfficientNetLite(architecture, size, TAIL_END_LAYER, start=config.layer, **kwargs)
    else:
        net = ZooFeatures(config.encoder, size, zoo_cut(config.encoder, config.layer, "the CNN tail"), **kwargs)
        weights = _WeightFile(lambda: read_zoo_weights(config.encoder, tail_weights_path(config, models_dir)),
                              config.encoder)
        channels = int(net.output_shape[0])
    height, width = net.output_hw
    return net, weights, (int(height) * int(width), channels)


def _read_npz(path: str) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, by name."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


class _Pretrained(mx.init.Initializer):
    """Fills a parameter with the pretrained CNN's array of that name, whatever the model's initializer is."""

    def __init__(self, weights: _WeightFile, name: str) -> None:
        super().__init__()  # the weights stay out of the kwargs that Initializer.dumps serializes
        self.weights = weights
        self.weight_name = name

    def _init_weight(self, _, arr) -> None:
        value = self.weights[self.weight_name]
        check_condition(tuple(value.shape) == tuple(arr.shape), "the pretrained %s has shape %s, the CNN tail's "
                        "parameter %s" % (self.weight_name, tuple(value.shape), tuple(arr.shape)))
        arr[:] = value


def freeze_batchnorm(block: HybridBlock) -> None:
    """Make every BatchNorm inside ``block`` use and keep its moving statistics, in training too (Gluon's
    ``use_global_stats``, set on the layers already built). Call it before the block first runs hybridized."""
    for child in block._children.values():
        if isinstance(child, nn.BatchNorm):
            child._kwargs["use_global_stats"] = True
        freeze_batchnorm(child)


class EncoderTail(HybridBlock):
    """Cached features of a cut CNN ``(batch, regions_in, channels_in)`` → the rest of that CNN → ``(batch, regions,
    channels)`` regions of its last map (``head`` of EfficientNet-Lite, the last spatial map of a model-zoo net;
    row-major, as :meth:`imcap.vision.image_encoder.ImageEncoder.encode` gives), ``regions = output_hw[0] * output_hw[1]``.

    The parameters are initialized with the pretrained ones of the weight file when the model is initialized (any
    initializer; the file is read then, not before), so a new model starts from the CNN's features exactly; a loaded
    model's params file replaces them, and a model that is only loaded never reads the weight file.

    :param config: what to build.
    :param models_dir: where the weight file is looked for (default: the shared models folder).
    :raises ImcapError: if the CNN cut at ``config.layer`` does not give features of ``config.input_shape`` or cannot
        be continued; on initialization, if the weight file is missing or does not fit.
    """

    def __init__(self, config: EncoderTailConfig, models_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        with self.name_scope():
            self.net, weights, _ = _build_net(config, models_dir, prefix="cnn_")
        channels, height, width = self.net.input_shape
        check_condition([height * width, channels] == list(config.input_shape),
                        "%s cut at %s gives features (regions, channels) = (%d, %d), the model's CNN tail was built "
                        "for %s" % (config.encoder, config.layer, height * width, channels, list(config.input_shape)))
        self._input_hw = (height, width)
        self.output_hw: Tuple[int, int] = (int(self.net.output_hw[0]), int(self.net.output_hw[1]))
        for name, param in self.net.weight_names.items():
            param.init = _Pretrained(weights, name)
        if not config.train_batchnorm:
            freeze_batchnorm(self.net)

    def hybrid_forward(self, F, features):
        x = F.reshape(F.transpose(features, axes=(0, 2, 1)), shape=(0, 0) + self._input_hw)  # (batch, C, H, W)
        x = self.net(x)
        return F.transpose(F.reshape(x, shape=(0, 0, -1)), axes=(0, 2, 1))


def set_learning_rate_multiplier(tail: EncoderTail, multiplier: float) -> None:
    """Train the tail's parameters at ``multiplier`` times the optimizer's learning rate (Gluon's
    ``Parameter.lr_mult``, so warm-up and reductions scale it too); 0 freezes them (no gradient is computed).
    BatchNorm's moving statistics are never trained by gradients. Call it before the ``gluon.Trainer`` is built.

    :raises ImcapError: if ``multiplier`` is negative.
    """
    check_condition(multiplier >= 0, "the CNN tail's learning-rate multiplier must be >= 0, not %s" % multiplier)
    for param in tail.collect_params().values():
        param.grad_req = "write" if multiplier > 0 else "null"  # no effect on the moving statistics
        param.lr_mult = multiplier
