"""Paths to the shared data and weights, for every test."""
import os

import pytest

SHARED = os.environ.get("IMCAP_SHARED") or os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
FLICKR8K = os.path.join(SHARED, "data", "flickr8k")
IMAGES = os.path.join(FLICKR8K, "images")
CHECK_IMAGES = os.path.join(SHARED, "data", "imagenet-check")
COCO_DEV = os.path.join(SHARED, "data", "coco-dev100")
MODELS = os.path.join(SHARED, "models")

requires_shared = pytest.mark.skipif(not os.path.isdir(FLICKR8K), reason="../shared is not beside the checkout")
