"""The vision side of imcap: pretrained ImageNet CNNs and the images they read.

- :mod:`imcap.vision.images`: decoding, resizing, mirroring and checking images (no MXNet);
- :mod:`imcap.vision.efficientnet`: EfficientNet-Lite0/Lite2 as Gluon blocks;
- :mod:`imcap.vision.classifier`: its ImageNet classifier on the host, in numpy (no MXNet);
- :mod:`imcap.vision.zoo`: Gluon model-zoo nets and MXNet symbolic checkpoints cut at a layer;
- :mod:`imcap.vision.image_encoder`: :class:`~imcap.vision.image_encoder.ImageEncoder`, a CNN cut at a layer with its
  preprocessing (what ``imcap.extract_features`` and the captioner run);
- :mod:`imcap.vision.tail`: the rest of the CNN after a cached layer, fine-tuned with the decoder.
"""
