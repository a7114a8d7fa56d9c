"""``imcap.extract_features`` on 10 real Flickr8k images when a feature file cannot be written (its path taken by a
directory): the run ends with exit code 1 and one line naming the file, the features written before it kept, and
the same command computes only what is missing once the path is free."""
import os

from test.common import FLICKR8K, IMAGES, requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared


def test_an_unwritable_feature_file_stops_the_run_with_its_name(tmp_path):
    images = [line.strip() for line in read_lines(os.path.join(FLICKR8K, "train.txt")) if line.strip()][:10]
    listing, cache = str(tmp_path / "a.images"), str(tmp_path / "cache")
    with open(listing, "w", encoding="utf-8") as f:
        f.write("".join(image + "\n" for image in images))
    blocked = os.path.join(cache, images[6] + ".npy")   # in the second batch of 4
    os.makedirs(blocked)
    args = ["--input", listing, "--image-root", IMAGES, "--output-root", cache, "--batch-size", "4", "--quiet"]
    proc = run_cli("extract_features", *args, expect=1)
    errors = [line for line in proc.stderr.decode().splitlines() if line.strip()]
    assert len(errors) == 1 and blocked in errors[0] and "cannot write the features" in errors[0], errors
    assert all(os.path.isfile(os.path.join(cache, image + ".npy")) for image in images[:4])
    assert not os.path.exists(os.path.join(cache, "a.features"))          # no list over an incomplete cache
    os.rmdir(blocked)
    proc = run_cli("extract_features", *args[:-1])
    assert "6 already cached, 4 to compute" in proc.stderr.decode()     # the 6 before the blocked one were kept
    assert read_lines(os.path.join(cache, "a.features")) == [image + ".npy" for image in images]
