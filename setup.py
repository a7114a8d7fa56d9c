"""imcap: image captioning as sequence-to-sequence translation on MXNet Gluon and GluonNLP."""
import os
import re

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "imcap", "__init__.py"), encoding="utf-8") as f:
    version = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)

setup(
    name="imcap",
    version=version,
    description="Sockeye-style image captioning on MXNet Gluon and GluonNLP",
    packages=find_packages(include=["imcap", "imcap.*"]),
    package_data={"imcap": ["resources/*.tsv"]},   # the ImageNet class -> caption words mapping (imcap.guide)
    python_requires=">=3.8",
    # The core: what captioning an exported model on ONNX Runtime imports (imcap.captioner --backend onnxruntime), with
    # no numpy pin. The MXNet framework (training, extraction, evaluation, export) is the extra "mxnet".
    install_requires=[
        "numpy",
        "pillow",
        "pyyaml",
        "tqdm",
        "sentencepiece",       # imcap.tokenizer: subword vocabularies
        "jieba",               # imcap.tokenizer: Chinese word segmentation
    ],
    extras_require={
        "mxnet": ["mxnet==1.9.1",      # the GPU build mxnet-cu112==1.9.1 may replace it (install it first)
                  "numpy==1.23.5",     # mxnet 1.9.1 uses np.bool, gone in numpy 1.24
                  "gluonnlp==0.10.0",  # built from source; scripts/install.sh handles its stale Cython file
                  "sacrebleu>=2.0",
                  "pycocoevalcap",     # METEOR (needs java at run time), ROUGE-L, CIDEr-D; pulls in pycocotools
                  "matplotlib",
                  "nltk"],             # imcap.fluency: the Kneser-Ney language model of the training captions
        "test": ["pytest", "pytest-xdist", "ruff==0.17.5", "mypy==2.4.1",  # linters pinned: they gate CI
                 "httpx", "playwright"],                    # API and browser tests (the browser: Debian's chromium)
        "serve": ["gradio==6.31.0",  # python -m imcap.serve; Gradio 3.x and 4.x break on today's dependencies
                  "pillow<13",       # what gradio 6.31 accepts
                  "matplotlib",      # the page's attention figures
                  "fastapi", "uvicorn", "python-multipart"],  # imported by imcap.serving.http_api and imcap.serve
        # imcap.export (graphs built with onnx.helper, opset 17) and imcap.onnx_steps (ONNX Runtime). Ranges: the
        # newest wheels differ per Python (3.8: onnx 1.17, onnxruntime 1.19.2; 3.9: 1.19.1, 1.19.2; 3.10: 1.23.2,
        # 1.23.2; 3.11: 1.23.2, 1.32.0, the tested pair), each accepting numpy 1.23.5; bounded above at the tested.
        "onnx": ["onnx>=1.17,<1.24", "onnxruntime>=1.19,<1.33"],
        # captioning and serving exported models without MXNet (with "serve" for the server): any numpy
        "runtime": ["onnxruntime>=1.19,<1.33"],
    },
)
