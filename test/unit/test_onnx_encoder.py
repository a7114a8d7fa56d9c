"""OnnxImageEncoder's contract around its session: uint8 pixels of the recorded size in, features and the host
classifier's probabilities out; anything else refused before the session runs."""
import numpy as np
import pytest

from imcap.onnx_encoder import OnnxImageEncoder
from imcap.utils import ImcapError
from imcap.vision.classifier import HostClassifier


class RecordingSession:
    """An onnxruntime session's ``run``: features ``(batch, 4, 8)`` and a head ``(batch, 3, 2, 2)`` of ones."""

    def __init__(self):
        self.calls = []

    def run(self, outputs, feeds):
        self.calls.append((list(outputs), feeds["images"].shape))
        batch = feeds["images"].shape[0]
        made = {"features": np.zeros((batch, 4, 8), np.float32), "head": np.ones((batch, 3, 2, 2), np.float32)}
        return [made[name] for name in outputs]


def encoder():
    classifier = HostClassifier(np.eye(5, 3), np.zeros(5))
    return OnnxImageEncoder(RecordingSession(), classifier, "efficientnet_lite0", "features", (6, 6))


def test_features_and_class_probabilities_come_from_one_run():
    enc = encoder()
    images = np.zeros((2, 6, 6, 3), np.uint8)
    assert enc.encode(images).shape == (2, 4, 8)
    features, probabilities = enc.encode_with_classes(images)
    assert features.shape == (2, 4, 8) and probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert enc.session.calls == [(["features"], (2, 6, 6, 3)), (["features", "head"], (2, 6, 6, 3))]


@pytest.mark.parametrize("method", ["encode", "encode_with_classes"])
def test_normalized_pixels_and_other_shapes_are_refused_before_the_session_runs(method):
    enc = encoder()
    with pytest.raises(ImcapError, match="uint8 pixels, not normalized ones"):
        getattr(enc, method)(np.zeros((1, 6, 6, 3), np.uint8), normalized=True)
    with pytest.raises(ImcapError, match=r"takes \(batch, 6, 6, 3\) uint8 images, not float32 \(1, 6, 6, 3\)"):
        getattr(enc, method)(np.zeros((1, 6, 6, 3), np.float32))
    with pytest.raises(ImcapError, match=r"not uint8 \(1, 7, 6, 3\)"):
        getattr(enc, method)(np.zeros((1, 7, 6, 3), np.uint8))
    assert enc.session.calls == []
