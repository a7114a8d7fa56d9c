"""imcap.serving.uploads: uploads are bounded in bytes and pixels, sniffed from their bytes (no file name or path is read),
and decoded in memory exactly as the captioner decodes a file."""
import io

import numpy as np
import pytest
from PIL import Image

from imcap.vision.images import decode_image
from imcap.serving.uploads import UploadError, UploadLimits, decode_preview, decode_upload, sniff_image


def encoded(image, fmt="PNG", **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(width=64, height=48):
    rng = np.random.RandomState(0)
    return Image.fromarray(rng.randint(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_images_of_the_allowed_formats_pass(fmt):
    upload = sniff_image(encoded(photo(), fmt), UploadLimits())
    assert (upload.format, upload.width, upload.height) == (fmt, 64, 48)


def test_decoding_is_the_captioners():
    data = encoded(photo(), "JPEG", quality=90)
    upload = sniff_image(data, UploadLimits())
    pixels = decode_upload(upload, (32, 40))
    assert pixels.shape == (32, 40, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, decode_image(data, (32, 40)))
    preview = decode_preview(upload, 16)
    assert preview.shape == (12, 16, 3)  # the aspect ratio is kept
    assert decode_preview(upload, 1000).shape == (48, 64, 3)  # never enlarged


def test_size_and_pixel_limits_give_413():
    data = encoded(photo())
    with pytest.raises(UploadError, match="more than the limit of") as e:
        sniff_image(data, UploadLimits(max_bytes=len(data) - 1))
    assert e.value.status == 413
    bomb = encoded(Image.new("1", (6000, 5000)))  # 30 megapixels in a few kB
    assert len(bomb) < 100_000
    with pytest.raises(UploadError, match="6000 x 5000 = 30000000 pixels, more than the limit of 1000000") as e:
        sniff_image(bomb, UploadLimits(max_pixels=1_000_000))
    assert e.value.status == 413
    assert sniff_image(bomb, UploadLimits(max_pixels=30_000_000)).width == 6000


@pytest.mark.parametrize("data", [b"", b"hello", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                  b"/etc/passwd"])
def test_what_is_no_image_of_an_allowed_format_gives_400(data):
    with pytest.raises(UploadError) as e:
        sniff_image(data, UploadLimits())
    assert e.value.status == 400


def test_a_tiff_is_refused_and_a_truncated_jpeg_fails_when_decoded():
    with pytest.raises(UploadError, match="not an image file") as e:
        sniff_image(encoded(photo(), "TIFF"), UploadLimits())
    assert e.value.status == 400
    data = encoded(photo(256, 256), "JPEG")
    upload = sniff_image(data[:len(data) // 2], UploadLimits())  # the header is intact
    with pytest.raises(UploadError, match="not a readable image") as e:
        decode_upload(upload, (32, 32))
    assert e.value.status == 400
