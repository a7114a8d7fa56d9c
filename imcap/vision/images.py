"""Images as the CNNs take them: decoded from a file or its bytes (bounded by PIL's decompression-bomb check), converted
to RGB, resized (bilinear), mirrored for augmentation, checked. Imports no MXNet: a server decodes uploads with it
without loading a network.
"""
import io
import os
from typing import TYPE_CHECKING, Optional, Tuple, Union

import numpy as np

from .. import constants as C
from ..utils import ImcapError, check_condition

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


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
