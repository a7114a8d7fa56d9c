"""A pretrained ImageNet CNN cut at a named layer, with its preprocessing: uint8 images in, region features out
(:class:`ImageEncoder`).

Three kinds of encoder share its interface: EfficientNet-Lite0/Lite2 (:mod:`imcap.vision.efficientnet`, with its
ImageNet class probabilities from the same forward pass), any Gluon model-zoo net with a local ``.params`` file and any
MXNet symbolic checkpoint (:mod:`imcap.vision.zoo`). A cut at a spatial layer of shape ``(channels, H, W)`` gives
``H * W`` regions of ``channels`` each.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple, cast

import mxnet as mx
import numpy as np

from .. import constants as C
from ..paths import DEFAULT_MODELS
from ..utils import check_condition
from .classifier import HostClassifier
from .efficientnet import DEFAULT_INPUT_SIZE, EfficientNetLite
from .zoo import ZOO_MEAN, ZOO_STD, _symbol_features, _zoo_features

logger = logging.getLogger(__name__)


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
        check_condition(not classify or name in DEFAULT_INPUT_SIZE, "class probabilities need an EfficientNet-Lite "
                                                                     "encoder (its weight file holds the ImageNet "
                                                                     "classifier), not %s" % name)
        self.has_classifier = classify
        if name in DEFAULT_INPUT_SIZE:
            if model_path is None:
                model_path = os.path.join(weights_dir(models_dir), name + ".npz")
            check_condition(os.path.isfile(model_path), "%s: no such weight file for %s" % (model_path, name))
            size = int(input_size[0]) if input_size else DEFAULT_INPUT_SIZE[name]
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
            self.mean = np.array(ZOO_MEAN, dtype=np.float32).reshape(1, 3, 1, 1) * 255
            self.std = np.array(ZOO_STD, dtype=np.float32).reshape(1, 3, 1, 1) * 255
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


def read_class_names(path: str) -> List[str]:
    """ImageNet class names, one per line in output-index order."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]
