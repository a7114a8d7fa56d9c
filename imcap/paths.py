"""Where the shared data and weights are: ``$IMCAP_SHARED``, else the ``shared`` folder beside the checkout, else
``../shared`` (``constants.DEFAULT_SHARED``). Nothing is downloaded; every tool's path options override these."""
import os

from . import constants as C


def default_shared() -> str:
    """``$IMCAP_SHARED``, else the ``shared`` folder beside the checkout, else ``../shared``."""
    if os.environ.get("IMCAP_SHARED"):
        return os.environ["IMCAP_SHARED"]
    beside_checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
    return os.path.normpath(beside_checkout) if os.path.isdir(beside_checkout) else C.DEFAULT_SHARED


SHARED = default_shared()
DEFAULT_FLICKR8K = os.path.join(SHARED, "data", "flickr8k")   # Flickr8k: images/, captions.tsv, the split lists
DEFAULT_MODELS = os.path.join(SHARED, "models")                # the ImageNet weights of the encoders
DEFAULT_CHECK_IMAGES = os.path.join(SHARED, "data", "imagenet-check")  # four photos (astronaut, cat, coffee, rocket)
