"""imcap.vision.images.decode_image bounds decompression by PIL's own check of the header's size and by its
``max_pixels``, and leaves PIL's process-wide limit, ``PIL.Image.MAX_IMAGE_PIXELS``, as it found it (it used to
lift it for the whole process on every call)."""
import io
import warnings

import numpy as np
import pytest
from PIL import Image

from imcap.vision.images import decode_image, to_rgb_array
from imcap.utils import ImcapError

PIL_DEFAULT = Image.MAX_IMAGE_PIXELS


def encoded(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


def photo(width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.RandomState(0)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3)).astype(np.uint8), "RGB")


def test_a_normal_image_leaves_the_pil_limit_alone(tmp_path):
    path = str(tmp_path / "photo.jpg")
    photo().save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in (path, encoded(photo())):
            assert decode_image(source, (24, 32)).shape == (24, 32, 3)
    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT


def test_a_large_image_is_read_at_a_reduced_scale_and_the_limit_stays():
    big = encoded(Image.new("L", (9500, 9500), 77), "JPEG")   # 90.25 megapixels: above PIL's limit, below twice it
    with pytest.warns(Image.DecompressionBombWarning):
        assert np.array_equal(decode_image(big, (16, 16)), np.full((16, 16, 3), 77, np.uint8))
    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT


def test_a_decompression_bomb_is_a_clear_error_before_decoding():
    bomb = encoded(Image.new("1", (20000, 20000)))   # 400 megapixels in a few kB
    assert len(bomb) < 100_000 and 20000 * 20000 > 2 * PIL_DEFAULT
    with pytest.raises(ImcapError, match="too many pixels to decode"):
        decode_image(bomb, (224, 224))
    assert Image.MAX_IMAGE_PIXELS == PIL_DEFAULT


def test_the_process_limit_is_obeyed_and_max_pixels_bounds_further(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)   # a process that set a strict limit for itself
    with pytest.raises(ImcapError, match="too many pixels to decode"):
        decode_image(encoded(photo(300, 200)), (20, 30))     # 60000 pixels: more than twice that limit
    assert Image.MAX_IMAGE_PIXELS == 10_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIL_DEFAULT)
    small = encoded(Image.new("1", (6000, 5000)))
    with pytest.raises(ImcapError, match="6000 x 5000 = 30000000 pixels, more than the limit of 1000000"):
        decode_image(small, (224, 224), max_pixels=1_000_000)
    assert decode_image(small, (10, 12), max_pixels=30_000_000).shape == (10, 12, 3)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM"])
def test_every_format_decodes_as_pil_opens_it(image_format):
    data = encoded(photo(), image_format)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.format == image_format
        opened.draft("RGB", (32, 24))
        expected = to_rgb_array(opened, (24, 32))
    assert np.array_equal(decode_image(data, (24, 32)), expected)


def test_unreadable_data_is_an_imcap_error():
    for data in (b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 10):
        with pytest.raises(ImcapError, match="not a readable image"):
            decode_image(data, (8, 8))
    with pytest.raises(ImcapError, match="empty data"):
        decode_image(b"", (8, 8))
