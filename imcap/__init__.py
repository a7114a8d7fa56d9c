"""imcap: image captioning as sequence-to-sequence translation on MXNet Gluon.

Image regions from a pretrained CNN are the source sequence, caption words the target, following
Bazzani, Domhan and Hieber (2018), "Image Captioning as Neural Machine Translation Task in SOCKEYE",
arXiv:1810.04101.

Importing the package sets ``OMP_NUM_THREADS`` to the number of cores (unless it is already set)
before MXNet is imported anywhere, because MXNet otherwise uses only half of the cores.

Run as a command (``python -m imcap.TOOL``), a tool that needs a module of the MXNet framework (``mxnet``,
``gluonnlp``, ``onnx``) in an install without it (imcap's runtime install, for exported models on ONNX Runtime) ends
with one line saying so (:func:`imcap.utils.missing_framework_message`), not a traceback.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
# The MKLDNN-fused inference path warns on every shape it has not seen; keep the logs readable.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

__version__ = "0.1.0"


def _excepthook(kind, error, traceback) -> None:
    from .utils import missing_framework_message
    message = missing_framework_message(error)
    if message is None:
        sys.__excepthook__(kind, error, traceback)
    else:
        sys.stderr.write(message)


if sys.argv[:1] == ["-m"]:   # imported by ``python -m imcap.TOOL``: the tool's own imports may miss the framework
    sys.excepthook = _excepthook

import warnings  # noqa: E402

# The search graphs share the model's blocks and use only some of their parameters; Gluon warns about the rest.
warnings.filterwarnings("ignore", message="Parameter .* is not used by any computation")
warnings.filterwarnings("ignore", message="Some buckets are empty and will be removed")
# The Transformer and convolutional decoders keep the encoded regions as their first static state (as every decoder
# does) but their search step reads only the keys and values projected from them.
warnings.filterwarnings("ignore", message="The 1-th input to HybridBlock is not used by any computation")
