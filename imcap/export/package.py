"""A model dir exported as a self-contained dir for ONNX Runtime (``python -m imcap.export``): the ``encode`` and
``step`` graphs of one checkpoint (:mod:`imcap.export.graphs`), the image encoder the model's features were made with
(``image_encoder.onnx`` and the ImageNet classifier's ``classifier.npz``), the vocabulary, the tokenizer, a copy of
``config.yaml`` and ``export.json`` (:mod:`imcap.export.exported` describes the files and reads them back without MXNet).

The dir is written whole or not at all: into ``OUT.tmp`` beside it, renamed to ``OUT`` once complete (an existing
``OUT`` is replaced only when asked, after the new one is complete).
"""
import json
import logging
import os
import shutil
from typing import Any, Dict, Optional, Tuple

from .. import __version__
from .. import constants as C
from ..utils import ImcapError, check_condition
from .builder import OPSET
from .exported import CLASSIFIER_NAME, EXPORT_FORMAT, EXPORT_INFO_NAME, IMAGE_ENCODER_NAME, file_sha256

logger = logging.getLogger(__name__)


def check_model_dir(model_dir: str, params_name: str) -> None:
    """``model_dir`` holds a config, a vocabulary and ``params_name``, and nothing that does not export yet.

    :raises ImcapError: naming the missing file, or a decoder or a fine-tuned CNN tail (a model-zoo net's) not exported
        yet.
    """
    check_condition(os.path.isdir(model_dir), "%s: no such directory" % model_dir)
    for name in (C.CONFIG_NAME, C.VOCAB_TRG_NAME, params_name):
        check_condition(os.path.isfile(os.path.join(model_dir, name)), "%s: not a model dir (no %s)"
                        % (model_dir, name))
    from ..model import ModelConfig
    from .graphs import EXPORTERS, exported_decoders
    config = ModelConfig.load(os.path.join(model_dir, C.CONFIG_NAME))
    check_condition(type(config.decoder) in EXPORTERS, "%s: ONNX export of the %s decoder is not implemented yet "
                    "(exported: %s)" % (model_dir, config.decoder_name, ", ".join(exported_decoders())))
    tail = config.encoder_tail
    check_condition(tail is None or tail.encoder in C.EFFICIENTNET_LITE, "%s: ONNX export of a model whose fine-tuned "
                    "CNN tail is a model-zoo net (%s) is not implemented yet (EfficientNet-Lite tails export)"
                    % (model_dir, tail.encoder if tail else None))


def export_model_dir(model_dir: str, output: str, params_name: str = C.PARAMS_BEST_NAME, force: bool = False,
                     image_encoder: bool = True, image_encoder_model_path: Optional[str] = None) -> Dict[str, Any]:
    """Export ``model_dir``'s ``params_name`` checkpoint to the dir ``output`` (see the module docstring).

    :param force: replace an existing ``output``.
    :param image_encoder: also export the CNN the model's features were made with (its ``config.yaml``
        ``feature_extraction``), when the model records one: ``image_encoder.onnx`` and, for the guide, the ImageNet
        classifier's weights ``classifier.npz``.
    :param image_encoder_model_path: the CNN's weight file (default: the recorded one in the shared models folder).
    :return: what ``export.json`` holds.
    :raises ImcapError: if ``model_dir`` misses a file or has a decoder or CNN tail that does not export yet, or
        ``output`` exists (without ``force``) or is not a dir, or (with ``image_encoder``) the recorded CNN does not
        export or its weights are missing; ``output`` is then left as it was.
    """
    output = os.path.normpath(output)
    check_condition(force or not os.path.lexists(output), "%s exists (--force replaces it)" % output)
    check_condition(not os.path.lexists(output) or os.path.isdir(output), "%s exists and is not a directory" % output)
    check_model_dir(model_dir, params_name)
    tmp = output + ".tmp"
    if os.path.lexists(tmp):   # left by an export that failed
        shutil.rmtree(tmp)
    try:
        info = _write(model_dir, params_name, tmp, image_encoder, image_encoder_model_path)
        _replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Exported %s (%s) to %s: %s", model_dir, params_name, output, ", ".join(sorted(os.listdir(output))))
    return info


def _write(model_dir: str, params_name: str, folder: str, image_encoder: bool,
           image_encoder_model_path: Optional[str]) -> Dict[str, Any]:
    """Write the exported files of ``model_dir``'s ``params_name`` into the new dir ``folder``."""
    from ..model import load_model
    from ..tokenizer import load_tokenizer
    from .graphs import encode_graph, step_graph
    import onnx
    model, _ = load_model(model_dir, params_name)
    graphs = {"encode": encode_graph(model), "step": step_graph(model)}
    os.makedirs(folder)
    for name, graph in graphs.items():
        onnx.save_model(graph, os.path.join(folder, name + ".onnx"))
    for name in (C.VOCAB_TRG_NAME, C.CONFIG_NAME):
        shutil.copyfile(os.path.join(model_dir, name), os.path.join(folder, name))
    load_tokenizer(model_dir).copy_to(folder)   # how captions become text (and constraints tokens)
    info = {"format": EXPORT_FORMAT, "imcap_version": __version__, "model_dir": os.path.abspath(model_dir),
            "params": params_name, "vocab_sha256": file_sha256(os.path.join(folder, C.VOCAB_TRG_NAME)),
            "vocab_size": model.config.vocab_size, "opset": OPSET, "decoder": model.config.decoder_name,
            "feature_shape": list(model.feature_shape),
            "attention_grid": list(model.attention_grid) if model.attention_grid else None,
            "graphs": {name: {"file": name + ".onnx", "inputs": [i.name for i in graph.graph.input],
                              "outputs": [o.name for o in graph.graph.output]} for name, graph in graphs.items()}}
    made = model.config.feature_extraction
    if image_encoder and made:
        info["image_encoder"] = _write_image_encoder(model_dir, made, model.feature_shape, folder,
                                                     image_encoder_model_path)
    elif image_encoder:
        logger.info("%s records no image encoder (config.yaml feature_extraction): exported without one, for "
                    "cached features only", model_dir)
    with open(os.path.join(folder, EXPORT_INFO_NAME), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return info


def _write_image_encoder(model_dir: str, made: Dict[str, Any], feature_shape: Tuple[int, int], folder: str,
                         model_path: Optional[str]) -> Dict[str, Any]:
    """Write the CNN that ``made`` (the model's ``feature_extraction``) describes into ``folder``: its graph
    (:func:`imcap.export.graphs.image_encoder_graph`) and its classifier's weights; what ``export.json`` says of it.

    :raises ImcapError: if the CNN does not export, its weights are missing or its features are not the model's.
    """
    import numpy as np
    import onnx
    from ..vision.image_encoder import ImageEncoder
    from .graphs import image_encoder_graph
    hint = " (python -m imcap.export --no-image-encoder exports the model for cached features only)"
    encoder_name = made.get("encoder")
    check_condition(encoder_name in C.EFFICIENTNET_LITE, "%s: ONNX export of its image encoder %s is not implemented "
                    "yet (EfficientNet-Lite exports)%s" % (model_dir, encoder_name, hint))
    try:
        encoder = ImageEncoder.from_description(made, model_path=model_path, fuse=False, classify=True)
    except ImcapError as e:
        raise ImcapError("%s: its image encoder: %s%s" % (model_dir, e, hint))
    graph = image_encoder_graph(encoder)
    shape = graph.graph.output[0].type.tensor_type.shape.dim
    found = (shape[1].dim_value, shape[2].dim_value)
    check_condition(found == tuple(feature_shape), "%s: its image encoder (%s cut at %s) gives features %s, the model "
                    "takes %s%s" % (model_dir, encoder.name, encoder.layer, found, tuple(feature_shape), hint))
    onnx.save_model(graph, os.path.join(folder, IMAGE_ENCODER_NAME))
    np.savez(os.path.join(folder, CLASSIFIER_NAME), weight=encoder.classifier.weight.astype(np.float32),
             bias=encoder.classifier.bias.astype(np.float32))
    return {"file": IMAGE_ENCODER_NAME, "classifier": CLASSIFIER_NAME, "encoder": encoder.name,
            "layer": encoder.layer, "input_size": list(encoder.input_size),
            "weights_sha256": file_sha256(str(encoder.model_path))}


def _replace(tmp: str, output: str) -> None:
    """Rename the complete dir ``tmp`` to ``output``; an existing ``output`` is removed once the new one is in place."""
    if not os.path.lexists(output):
        os.rename(tmp, output)
        return
    old = "%s.old.%d" % (output, os.getpid())
    os.rename(output, old)
    try:
        os.rename(tmp, output)
    except OSError as e:
        os.rename(old, output)
        raise ImcapError("cannot replace %s: %s" % (output, e))
    shutil.rmtree(old)
