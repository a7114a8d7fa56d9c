"""Uploaded images, checked before they reach the models: size bounded, format sniffed from the bytes, pixel count
bounded (against decompression bombs), decoded in memory. Nothing is written to disk and no path is ever taken from a
request.

    upload = sniff_image(data, UploadLimits(max_bytes=10 * 2 ** 20, max_pixels=40_000_000))   # raises UploadError
    pixels = decode_upload(upload, (224, 224))        # as the captioner CLI decodes the same file
"""
import io
import warnings
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..vision.images import decode_image
from ..utils import ImcapError

# The formats an upload may have (PIL's names): common photo formats whose decoders run no external program.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024   # 10 MB
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000         # e.g. 7300 x 5470
STATUS_BAD_REQUEST = 400
STATUS_TOO_LARGE = 413


class UploadError(ImcapError):
    """An upload that is refused, with the HTTP status that says why (400: not a readable image, 413: too large)."""

    def __init__(self, message: str, status: int = STATUS_BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    """:param max_bytes: largest upload, in bytes. :param max_pixels: largest width x height, in pixels."""
    max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class UploadedImage:
    """The bytes of an image file that passed :func:`sniff_image`, and what its header says."""
    data: bytes
    format: str  # PIL's name, one of ALLOWED_FORMATS
    width: int   # pixels
    height: int  # pixels


def too_large_message(size: int, limit: int) -> str:
    """The message of an upload of ``size`` bytes over ``limit``."""
    return "the upload has %d bytes, more than the limit of %d bytes (%.1f MB)" % (size, limit, limit / 2 ** 20)


def sniff_image(data: bytes, limits: UploadLimits) -> UploadedImage:
    """Check that ``data`` is an image file within ``limits``, reading its header only.

    :raises UploadError: 413 if it has more than ``limits.max_bytes`` bytes or more than ``limits.max_pixels``
        pixels; 400 if it is empty or not an image of :data:`ALLOWED_FORMATS`.
    """
    from PIL import Image, UnidentifiedImageError
    if not data:
        raise UploadError("empty upload: send the bytes of an image file")
    if len(data) > limits.max_bytes:
        raise UploadError(too_large_message(len(data), limits.max_bytes), STATUS_TOO_LARGE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning: the pixel limit below is ours
            with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as opened:
                image_format, (width, height) = str(opened.format), opened.size
    except Image.DecompressionBombError as e:
        raise UploadError("the image has too many pixels (%s)" % e, STATUS_TOO_LARGE)
    except UnidentifiedImageError:
        raise UploadError("not an image file of a known format (%s accepted)" % ", ".join(ALLOWED_FORMATS))
    except Exception as e:  # PIL raises many types for broken headers
        raise UploadError("not an image file (%s accepted): %s" % (", ".join(ALLOWED_FORMATS),
                                                                  str(e).splitlines()[0] if str(e)
                                                                  else type(e).__name__))
    if width * height > limits.max_pixels:
        raise UploadError("the image has %d x %d = %d pixels, more than the limit of %d"
                          % (width, height, width * height, limits.max_pixels), STATUS_TOO_LARGE)
    return UploadedImage(data, image_format, width, height)


def decode_upload(upload: UploadedImage, size: Tuple[int, int]) -> np.ndarray:
    """The pixels of ``upload`` as ``(H, W, 3)`` uint8 RGB at ``size`` = (H, W), decoded exactly as the captioner
    decodes an image file (:func:`imcap.vision.images.decode_image`).

    :raises UploadError: 400 if the image data are broken (e.g. a truncated file).
    """
    try:
        return decode_image(upload.data, size)
    except ImcapError as e:
        raise UploadError(str(e))


def decode_preview(upload: UploadedImage, max_side: int) -> np.ndarray:
    """The pixels of ``upload`` shrunk to at most ``max_side`` pixels a side, aspect ratio kept (for figures).

    :raises UploadError: 400 if the image data are broken.
    """
    scale = min(1.0, max_side / float(max(upload.width, upload.height)))
    size = (max(1, int(round(upload.height * scale))), max(1, int(round(upload.width * scale))))
    return decode_upload(upload, size)
