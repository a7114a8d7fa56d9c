"""EfficientNet-Lite's ImageNet classifier on the host (:class:`HostClassifier`), in numpy alone: the MXNet image
encoder (:mod:`imcap.vision.image_encoder`) and the exported one on ONNX Runtime (:mod:`imcap.export.exported`)
finish their class probabilities with it, so both give the same bits for the same head output.
"""
import numpy as np


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
