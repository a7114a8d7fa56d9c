"""The image encoder of an exported model on ONNX Runtime (:class:`OnnxImageEncoder`): uint8 images in, region
features and ImageNet class probabilities out, as :class:`imcap.vision.image_encoder.ImageEncoder` gives them, with
no MXNet imported. ``python -m imcap.export`` writes its graph (``image_encoder.onnx``: the CNN cut at the model's
layer, :func:`imcap.export.graphs.image_encoder_graph`) and the classifier's weights (``classifier.npz``); the
classifier runs on the host (:class:`imcap.vision.classifier.HostClassifier`), as the MXNet encoder's does.
"""
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from .utils import ImcapError, check_condition
from .vision.classifier import HostClassifier


class OnnxImageEncoder:
    """An exported CNN: ``session`` (an ``onnxruntime.InferenceSession`` of ``image_encoder.onnx``, input
    ``images (batch, H, W, 3)`` uint8, outputs ``features (batch, regions, channels)`` and ``head (batch, 1280, h,
    w)``) and the ``classifier`` of its head.

    :param name: the CNN's name (``efficientnet_lite0``), :attr:`layer` its cut and :attr:`input_size` ``(H, W)``
        the pixels it reads.
    """

    has_classifier = True

    def __init__(self, session: Any, classifier: HostClassifier, name: str, layer: str,
                 input_size: Sequence[int]) -> None:
        self.session, self.classifier = session, classifier
        self.name, self.layer = name, layer
        self.input_size: Tuple[int, int] = (int(input_size[0]), int(input_size[1]))

    def describe(self) -> Dict[str, object]:
        """What identifies the features it makes, as :meth:`ImageEncoder.describe` (``model_path``: None, the
        weights are inside the graph)."""
        return {"encoder": self.name, "layer": self.layer, "input_size": list(self.input_size), "model_path": None}

    def _run(self, images: np.ndarray, outputs: Sequence[str], normalized: bool) -> list:
        if normalized:
            raise ImcapError("the exported image encoder takes uint8 pixels, not normalized ones")
        check_condition(images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == self.input_size + (3,),
                        "the exported image encoder takes (batch, %d, %d, 3) uint8 images, not %s %s"
                        % (self.input_size + (images.dtype, images.shape)))
        return self.session.run(list(outputs), {"images": np.ascontiguousarray(images)})

    def encode(self, images: np.ndarray, normalized: bool = False) -> np.ndarray:
        """``(batch, H, W, 3)`` uint8 RGB → ``(batch, regions, channels)`` float32 features.

        :raises ImcapError: for ``normalized`` inputs (the graph normalizes the pixels itself) or another shape.
        """
        return self._run(images, ["features"], normalized)[0]

    def encode_with_classes(self, images: np.ndarray, normalized: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Features and ImageNet class probabilities ``(batch, classes)`` (image by image on the host: the same bits
        in any batch) from one forward pass, as :meth:`ImageEncoder.encode_with_classes`.

        :raises ImcapError: as :meth:`encode`.
        """
        features, head = self._run(images, ["features", "head"], normalized)
        return features, self.classifier.probabilities(head)
