"""A trained :class:`imcap.model.CaptionModel` as two ONNX graphs, the two that search runs
(:mod:`imcap.search_steps`):

- ``encode``: ``features (batch, regions, feature_dim)`` float32 → the decoder's states, as
  :meth:`CaptionModel.encode` gives them: outputs ``static0 .. static{S-1}`` then ``dynamic0 .. dynamic{D-1}``;
- ``step``: ``prev_ids (rows,)`` int64, ``static0 ..``, ``dynamic0 ..`` → ``log_probs (rows, vocab)`` float32
  (log-softmax), ``attention (rows, regions)`` float32 and the new dynamic states ``new_dynamic0 ..``, as
  :meth:`CaptionModel.step`.

``batch`` and ``rows`` are dynamic axes; the regions and sizes are the model's. The graphs hold the weights as
initializers (read from the Gluon parameters, float32) and use only the default ONNX domain at opset
:data:`imcap.export.builder.OPSET`. :mod:`imcap.onnx_steps` runs them under ONNX Runtime without MXNet.

Exported: the model's encoder (layer norm, positional embedding, projection), a fine-tuned EfficientNet-Lite tail
before it (:mod:`imcap.export.cnn`), and every decoder: the RNN family (:mod:`imcap.export.rnn`), the Transformer
(:mod:`imcap.export.transformer`) and the convolutional one (:mod:`imcap.export.convolution`). Not (yet): a model-zoo
tail. A third graph, ``image_encoder`` (:func:`image_encoder_graph`), is the CNN that makes the features from pixels.
"""
import os
from typing import Dict, List, Tuple

import mxnet as mx
import numpy as np
import onnx

from ..convolution import ConvolutionalDecoderConfig
from ..onnx_steps import ENCODE_NAME, STEP_NAME
from ..rnn import RNNDecoderConfig
from ..transformer import TransformerDecoderConfig
from ..utils import ImcapError, atomic_path, check_condition
from . import cnn, convolution, rnn, transformer
from .builder import GraphBuilder, tensor_info
from .blocks import array, dense, layer_norm

# The decoders' exporters by config type: each has init_state(g, decoder, encoded) and step(g, decoder, embedded,
# static, dynamic) (see imcap.export.rnn).
EXPORTERS: Dict[type, object] = {RNNDecoderConfig: rnn, TransformerDecoderConfig: transformer,
                                  ConvolutionalDecoderConfig: convolution}


def exported_decoders() -> List[str]:
    """The names (``--decoder``) of the decoders that export to ONNX."""
    from ..decoder import Decoder
    return [Decoder._registry[t][0] if t in Decoder._registry else t.__name__ for t in EXPORTERS]


def _exporter(model):
    """The exporter module of ``model``'s decoder.

    :raises ImcapError: for a decoder or a CNN tail (a model-zoo net's) that cannot be exported yet.
    """
    check_condition(model.encoder_tail is None or is_efficientnet(model.encoder_tail.net), "ONNX export of a model "
                    "whose fine-tuned CNN tail is a model-zoo net is not implemented yet (EfficientNet-Lite tails "
                    "export)")
    exporter = EXPORTERS.get(type(model.config.decoder))
    if exporter is None:
        raise ImcapError("ONNX export of the %s decoder is not implemented yet (exported: %s)"
                         % (model.config.decoder_name, ", ".join(exported_decoders())))
    return exporter


def _state_infos(model, prefix: str, batch: str) -> Tuple[List[onnx.ValueInfoProto], List[onnx.ValueInfoProto]]:
    """The value infos ``static<i>`` and ``<prefix>dynamic<i>`` of the states, their shapes those of
    :meth:`CaptionModel.encode` on one image, with the dynamic axis ``batch`` first, and a dynamic axis
    ``length<i>`` wherever a step changes the size of dynamic state ``i`` (the Transformer's caches grow)."""
    regions, dim = model.feature_shape
    context = _context(model)
    static, dynamic = model.encode(mx.nd.zeros((1, regions, dim), ctx=context))
    _, _, stepped = model.step(mx.nd.zeros((1,), dtype="int32", ctx=context), static, dynamic)  # shapes only

    def shape(i: int, before: Tuple[int, ...], after: Tuple[int, ...]) -> List:
        return [batch] + [size if size == later else "length%d" % i for size, later in zip(before[1:], after[1:])]
    return ([tensor_info("static%d" % i, np.float32, [batch] + list(s.shape[1:])) for i, s in enumerate(static)],
            [tensor_info("%sdynamic%d" % (prefix, i), np.float32, shape(i, d.shape, new.shape))
             for i, (d, new) in enumerate(zip(dynamic, stepped))])


def _context(model):
    """The device of ``model``'s parameters."""
    return next(iter(model.collect_params().values())).list_ctx()[0]


def encode_graph(model) -> onnx.ModelProto:
    """The ``encode`` graph of ``model`` (module docstring).

    :raises ImcapError: for a model that cannot be exported yet.
    """
    exporter: object = _exporter(model)
    config, encoder = model.config, model.encoder
    regions, dim = model.feature_shape
    g = GraphBuilder("imcap_encode")
    static_infos, dynamic_infos = _state_infos(model, "", "batch")
    g.reserve("features", *[i.name for i in static_infos + dynamic_infos])
    x = "features"
    if model.encoder_tail is not None:   # the rest of the CNN, from the cached layer to the head's regions
        tail = model.encoder_tail
        x = cnn.to_regions(g, cnn.network(g, tail.net, cnn.from_regions(g, x, *tail.net.input_shape))[0])
    x = layer_norm(g, x, encoder.norm)
    if encoder.pos_embed is not None:
        x = g.one("Add", [x, g.constant(array(encoder.pos_embed), "pos_embed")])
    encoded = dense(g, x, encoder.projection, "projection")
    static, dynamic = exporter.init_state(g, model.decoder, encoded)  # type: ignore[attr-defined]
    for value, info in zip(static + dynamic, static_infos + dynamic_infos):
        g.rename(value, info.name)
    doc = "imcap encode: features -> %d static + %d dynamic states (%s decoder)" % (
        len(static), len(dynamic), config.decoder_name)
    return g.model([tensor_info("features", np.float32, ["batch", regions, dim])], static_infos + dynamic_infos, doc)


def step_graph(model) -> onnx.ModelProto:
    """The ``step`` graph of ``model`` (module docstring).

    :raises ImcapError: for a model that cannot be exported yet.
    """
    exporter: object = _exporter(model)
    config = model.config
    g = GraphBuilder("imcap_step")
    static_infos, dynamic_infos = _state_infos(model, "", "rows")
    _, new_infos = _state_infos(model, "new_", "rows")
    g.reserve("prev_ids", "log_probs", "attention", *[i.name for i in static_infos + dynamic_infos + new_infos])
    embedded = g.one("Gather", [g.constant(array(model.embedding[0].weight), "embedding_weight"), "prev_ids"],
                     "embedded", axis=0)
    output, attention, dynamic = exporter.step(  # type: ignore[attr-defined]
        g, model.decoder, embedded, [i.name for i in static_infos], [i.name for i in dynamic_infos])
    logits = dense(g, output, model.output_layer, "logits")
    g.rename(g.one("LogSoftmax", [logits], "log_softmax", axis=-1), "log_probs")
    g.rename(attention, "attention")
    for value, info in zip(dynamic, new_infos):
        g.rename(value, info.name)
    outputs = [tensor_info("log_probs", np.float32, ["rows", config.vocab_size]),
               tensor_info("attention", np.float32, ["rows", model.feature_shape[0]])] + new_infos
    doc = "imcap step: prev_ids, %d static + %d dynamic states -> log_probs, attention, new dynamic states (%s " \
          "decoder)" % (len(static_infos), len(dynamic_infos), config.decoder_name)
    return g.model([tensor_info("prev_ids", np.int64, ["rows"])] + static_infos + dynamic_infos, outputs, doc)


def is_efficientnet(net) -> bool:
    """Whether ``net`` is an EfficientNet-Lite (the CNN that exports: :mod:`imcap.export.cnn`)."""
    from ..vision.efficientnet import EfficientNetLite
    return isinstance(net, EfficientNetLite)


def image_encoder_graph(encoder) -> onnx.ModelProto:
    """The ``image_encoder`` graph of an :class:`imcap.vision.image_encoder.ImageEncoder` (EfficientNet-Lite): input
    ``images (batch, H, W, 3)`` uint8 RGB, already resized to ``encoder.input_size``; outputs ``features (batch,
    regions, channels)`` float32, as :meth:`ImageEncoder.encode` gives them, and, for an encoder made with
    ``classify``, ``head (batch, 1280, h, w)``, the input of the classifier that runs on the host
    (:class:`imcap.vision.classifier.HostClassifier`).

    :raises ImcapError: for another CNN (a model-zoo net, a symbolic checkpoint).
    """
    check_condition(is_efficientnet(encoder.net), "ONNX export of the image encoder %s is not implemented yet "
                    "(EfficientNet-Lite exports)" % encoder.name)
    height, width = encoder.input_size
    g = GraphBuilder("imcap_image_encoder")
    g.reserve("images", "features", "head")
    cut, head = cnn.network(g, encoder.net, cnn.normalized_pixels(g, "images"))
    g.rename(cnn.to_regions(g, cut), "features")
    regions, channels = _regions_and_channels(encoder)
    outputs = [tensor_info("features", np.float32, ["batch", regions, channels])]
    if encoder.has_classifier:
        assert head is not None
        g.rename(head, "head")
        outputs.append(tensor_info("head", np.float32, ["batch", encoder.classifier.weight.shape[1],
                                                        *encoder.net.output_hw]))
    doc = "imcap image encoder: %s cut at %s, %dx%d uint8 RGB images -> features%s" % (
        encoder.name, encoder.layer, height, width, " and the head's output" if encoder.has_classifier else "")
    return g.model([tensor_info("images", np.uint8, ["batch", height, width, 3])], outputs, doc)


def _regions_and_channels(encoder) -> Tuple[int, int]:
    """``(regions, channels)`` of ``encoder``'s features (one image through the MXNet network)."""
    probe = encoder.encode(np.zeros((1,) + tuple(encoder.input_size) + (3,), dtype=np.uint8))
    return int(probe.shape[1]), int(probe.shape[2])


def export_model(model, directory: str) -> Tuple[str, str]:
    """Write ``model``'s ``encode`` and ``step`` graphs into ``directory`` (made if missing) as
    :data:`imcap.onnx_steps.ENCODE_NAME` and :data:`imcap.onnx_steps.STEP_NAME`, each atomically.

    :return: the two paths.
    :raises ImcapError: for a model that cannot be exported yet.
    """
    graphs = [(ENCODE_NAME, encode_graph(model)), (STEP_NAME, step_graph(model))]
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, graph in graphs:
        path = os.path.join(directory, name)
        with atomic_path(path) as tmp:
            onnx.save_model(graph, tmp)
        paths.append(path)
    return paths[0], paths[1]
