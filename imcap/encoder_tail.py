"""Partial fine-tuning of the image CNN: the rest of the pretrained network after a cached block, inside the model.

The feature cache can hold the output of an intermediate block (``imcap.extract_features --image-encoder-layer
blocks.N``, a ``(channels, H, W)`` map stored as ``(H * W, channels)`` regions); the :class:`EncoderTail` is the
rest of the same pretrained CNN (blocks ``N + 1 ..`` and the 1x1 ``head`` convolution of EfficientNet-Lite), loaded
from the same weight file, and runs as the first layer of :class:`imcap.model.CaptionModel`, so that the last blocks
train with the decoder at a fraction of the cost of the whole CNN. Show, Attend and Tell (Xu et al. 2015) and its
common PyTorch re-implementation fine-tune the CNN's last blocks with a learning rate of their own (``encoder_lr``,
1e-4); so does ``imcap.train --image-encoder-fine-tune --image-encoder-learning-rate``. BatchNorm keeps the
pretrained moving statistics (``use_global_stats``, as detectron's frozen BatchNorm) unless asked, because a batch
of captions holds few distinct images.

Only EfficientNet-Lite (:class:`imcap.image_encoder.EfficientNetLite`, cut at ``stem`` or ``blocks.N``) can be split
so far. See docs/finetuning.md.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from . import constants as C
from .config import Config
from .image_encoder import EfficientNetLite, weights_dir
from .utils import ImcapError, check_condition

# The encoders whose cut can be continued, and the layer the tail ends at (the usual feature map of imcap).
FINE_TUNE_ENCODERS = (C.ENCODER_EFFICIENTNET_LITE0, C.ENCODER_EFFICIENTNET_LITE2)
TAIL_END_LAYER = "head"


@dataclasses.dataclass
class EncoderTailConfig(Config):
    """Which part of which pretrained CNN the model runs on its input features (saved in ``config.yaml``).

    :param encoder: the CNN's name (``efficientnet_lite0`` or ``efficientnet_lite2``).
    :param layer: the layer the cached features were cut at (``stem`` or ``blocks.N``); the tail starts after it.
    :param input_size: ``[height, width]`` pixels the CNN saw (its "SAME" padding depends on it).
    :param model_path: file name of the CNN's weights (as in ``cache.json``), looked for in the shared models folder
        (:func:`imcap.image_encoder.weights_dir`).
    :param input_shape: ``[regions, channels]`` of the cached features (regions = H * W of the cut, row-major).
    :param output_shape: ``[regions, channels]`` of the tail's output (the ``head`` map: 49 x 1280 for Lite0).
    :param train_batchnorm: BatchNorm uses batch statistics in training and updates its moving ones; False: the
        pretrained moving statistics are used and kept (``use_global_stats``).
    """
    encoder: str = C.ENCODER_EFFICIENTNET_LITE0
    layer: str = "blocks.14"
    input_size: List[int] = dataclasses.field(default_factory=lambda: [224, 224])
    model_path: Optional[str] = None
    input_shape: List[int] = dataclasses.field(default_factory=lambda: [49, 192])
    output_shape: List[int] = dataclasses.field(default_factory=lambda: [49, 1280])
    train_batchnorm: bool = False

    @classmethod
    def from_manifest(cls, manifest: Optional[Dict], where: str, train_batchnorm: bool = False,
                      models_dir: Optional[str] = None) -> "EncoderTailConfig":
        """The tail that continues the features a cache manifest (``cache.json``) describes.

        :param where: the cache, named in errors.
        :raises ImcapError: if there is no manifest, its encoder cannot be split, or its layer is not a block
            boundary before ``head``.
        """
        check_condition(manifest is not None, "%s: no %s, so the CNN layer the features were cut at is unknown; "
                        "extract them with imcap.extract_features --image-encoder-layer blocks.N"
                        % (where, C.FEATURE_CACHE_MANIFEST))
        assert manifest is not None
        encoder = str(manifest.get("encoder"))
        check_condition(encoder in FINE_TUNE_ENCODERS, "%s: features of %s cannot be fine-tuned; the CNN must be one "
                        "of %s" % (where, encoder, ", ".join(FINE_TUNE_ENCODERS)))
        layer = str(manifest.get("layer"))
        check_condition(layer == "stem" or layer.startswith("blocks."), "%s: features cut at '%s' leave nothing to "
                        "fine-tune; extract them at a block boundary (imcap.extract_features --image-encoder-layer "
                        "blocks.N, e.g. blocks.14 for the last block and the head of EfficientNet-Lite0)"
                        % (where, layer))
        config = cls(encoder=encoder, layer=layer, input_size=[int(v) for v in manifest["input_size"]],
                     model_path=manifest.get("model_path"), input_shape=[int(v) for v in manifest["feature_shape"]],
                     train_batchnorm=train_batchnorm)
        net, weights = _build_net(config, models_dir)
        config.output_shape = [net.output_hw[0] * net.output_hw[1], int(weights["_conv_head.weight"].shape[0])]
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


def tail_weights_path(config: EncoderTailConfig, models_dir: Optional[str] = None) -> str:
    """The weight file of the tail's CNN: ``config.model_path`` in ``models_dir`` (default: the shared models folder,
    :func:`imcap.image_encoder.weights_dir`), else the encoder's default file ``NAME.npz`` there.

    :raises ImcapError: if neither exists.
    """
    folder = weights_dir(models_dir)
    for name in ([config.model_path] if config.model_path else []) + [config.encoder + ".npz"]:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ImcapError("the CNN tail of the model needs the weights of %s (%s) in %s (set IMCAP_SHARED)"
                     % (config.encoder, config.model_path or config.encoder + ".npz", folder))


def _build_net(config: EncoderTailConfig, models_dir: Optional[str],
               **kwargs) -> Tuple[EfficientNetLite, Dict[str, np.ndarray]]:
    """The network from after ``config.layer`` to ``head``, and the weight file's arrays."""
    with np.load(tail_weights_path(config, models_dir)) as npz:
        weights = {k: npz[k] for k in npz.files}
    size = (int(config.input_size[0]), int(config.input_size[1]))
    net = EfficientNetLite(weights, size, TAIL_END_LAYER, start=config.layer, **kwargs)
    return net, weights


class _Pretrained(mx.init.Initializer):
    """Fills a parameter with a given array (the pretrained CNN's), whatever the model's initializer is."""

    def __init__(self, value: np.ndarray) -> None:
        super().__init__()  # the array stays out of the kwargs that Initializer.dumps serializes
        self.value = value

    def _init_weight(self, name, arr) -> None:
        arr[:] = self.value


def freeze_batchnorm(block: HybridBlock) -> None:
    """Make every BatchNorm inside ``block`` use and keep its moving statistics, in training too (Gluon's
    ``use_global_stats``, set on the layers already built). Call it before the block first runs hybridized."""
    for child in block._children.values():
        if isinstance(child, nn.BatchNorm):
            child._kwargs["use_global_stats"] = True
        freeze_batchnorm(child)


class EncoderTail(HybridBlock):
    """Cached features of a cut CNN ``(batch, regions_in, channels_in)`` → the rest of that CNN → ``(batch, regions,
    channels)`` regions of its ``head`` map (row-major, as :meth:`imcap.image_encoder.ImageEncoder.encode` gives).

    The parameters are initialized with the pretrained ones of the weight file when the model is initialized (any
    initializer), so a new model starts from the CNN's features exactly; a loaded model's params file replaces them.

    :param config: what to build.
    :param models_dir: where the weight file is looked for (default: the shared models folder).
    :raises ImcapError: if the weight file is missing or the CNN cut at ``config.layer`` does not give features of
        ``config.input_shape``.
    """

    def __init__(self, config: EncoderTailConfig, models_dir: Optional[str] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        with self.name_scope():
            self.net, weights = _build_net(config, models_dir, prefix="cnn_")
        channels, height, width = self.net.input_shape
        check_condition([height * width, channels] == list(config.input_shape),
                        "%s cut at %s gives features (regions, channels) = (%d, %d), the model's CNN tail was built "
                        "for %s" % (config.encoder, config.layer, height * width, channels, list(config.input_shape)))
        self._input_hw = (height, width)
        for name, param in self.net.weight_names.items():
            param.init = _Pretrained(weights[name])
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
