"""An exported model dir (what ``python -m imcap.export`` writes, :mod:`imcap.export.package`), read back and checked
without MXNet or GluonNLP, for ONNX Runtime (:mod:`imcap.onnx_steps`).

An exported dir holds the two graphs (``encode.onnx``, ``step.onnx``), the image encoder when the model records how
its features were made (``image_encoder.onnx`` and ``classifier.npz``), the model's vocabulary (``vocab.trg.json``)
and configuration (``config.yaml``, a copy, for people: nothing here reads it), and ``export.json``: the format
version, imcap's version, the model dir and params file exported, the SHA-256 of the vocabulary file, the ONNX
opset, the decoder, the feature shape ``(regions, dim)``, each graph's input and output names, and the image encoder
(its files, CNN, layer, input size and weight file's SHA-256). Loading checks that every file is there, that the
vocabulary is the one the graphs were exported with (its hash) and that the graphs have the recorded inputs and
outputs and the vocabulary's size.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import constants as C
from ..onnx_encoder import OnnxImageEncoder
from ..onnx_steps import ENCODE_NAME, STEP_NAME, OnnxModel, onnx_session
from ..utils import ImcapError, check_condition
from ..vision.classifier import HostClassifier
from ..vocab import Vocabulary

EXPORT_INFO_NAME = "export.json"
EXPORT_FORMAT = 1    # the version of export.json's layout
# The files of an exported dir
EXPORTED_FILES = (ENCODE_NAME, STEP_NAME, C.VOCAB_TRG_NAME, C.CONFIG_NAME, EXPORT_INFO_NAME)
EXPORT_HINT = "python -m imcap.export --models MODEL_DIR --output DIR writes one"
# The image encoder's files, when the export has one (export.json's "image_encoder" names them)
IMAGE_ENCODER_NAME = "image_encoder.onnx"
CLASSIFIER_NAME = "classifier.npz"


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_export_info(folder: str) -> Dict[str, Any]:
    """``folder``'s ``export.json``, checked to be one this imcap reads.

    :raises ImcapError: naming ``folder`` if it is no exported dir (a model dir: say how to export it) or its
        ``export.json`` is unreadable or of another format.
    """
    path = os.path.join(folder, EXPORT_INFO_NAME)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, C.CONFIG_NAME)):
            raise ImcapError("%s: a model dir, not an exported one (no %s): python -m imcap.export --models %s "
                             "--output DIR exports it for ONNX Runtime" % (folder, EXPORT_INFO_NAME, folder))
        raise ImcapError("%s: not an exported model (no %s; %s)" % (folder, EXPORT_INFO_NAME, EXPORT_HINT))
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as e:
        raise ImcapError("%s: not readable (%s)" % (path, e))
    check_condition(isinstance(info, dict) and info.get("format") == EXPORT_FORMAT,
                    "%s: an export of another format (%r, this imcap reads %d): export the model again"
                    % (path, info.get("format") if isinstance(info, dict) else None, EXPORT_FORMAT))
    return info


class ExportedModel(NamedTuple):
    """An exported dir loaded for ONNX Runtime: its graphs (:class:`imcap.onnx_steps.OnnxModel`), vocabulary
    (:class:`imcap.vocab.Vocabulary`), ``export.json``, feature shape ``(regions, dim)`` and image encoder
    (:class:`imcap.onnx_encoder.OnnxImageEncoder`, None if exported without one)."""
    folder: str
    model: OnnxModel
    vocab: Vocabulary
    info: Dict[str, Any]
    feature_shape: Tuple[int, int]
    image_encoder: Optional[OnnxImageEncoder] = None


def load_exported(folder: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None
                  ) -> ExportedModel:
    """The exported dir ``folder`` on ONNX Runtime (``threads``, ``providers``: as
    :func:`imcap.onnx_steps.onnx_session`).

    :raises ImcapError: naming the file, if ``folder`` is no exported dir, misses a file, its vocabulary is not the
        one its graphs were exported with, ONNX Runtime cannot load a graph (broken, or with an operator it lacks), or
        its graphs do not have the recorded inputs and outputs.
    """
    check_condition(os.path.isdir(folder), "%s: no such directory" % folder)
    info = read_export_info(folder)
    for name in EXPORTED_FILES:
        check_condition(os.path.isfile(os.path.join(folder, name)), "%s: an incomplete export (no %s): export the "
                                                                    "model again" % (folder, name))
    vocab_path = os.path.join(folder, C.VOCAB_TRG_NAME)
    check_condition(file_sha256(vocab_path) == info.get("vocab_sha256"),
                    "%s: another vocabulary than the one the graphs were exported with (its SHA-256 is not %s's): "
                    "export the model again" % (vocab_path, EXPORT_INFO_NAME))
    vocab = Vocabulary.load(vocab_path)
    sessions = []
    for name in (ENCODE_NAME, STEP_NAME):
        path = os.path.join(folder, name)
        try:
            sessions.append(onnx_session(path, threads, providers))
        except Exception as e:   # onnxruntime's own errors (a broken graph, an operator it does not have)
            raise ImcapError("%s: ONNX Runtime cannot load it (%s)" % (path, _first_line(e)))
    model = OnnxModel(*sessions)
    _check_graphs(folder, model, info, len(vocab))
    model.config = _read_config(folder)
    model.checkpoint = str(info.get("params") or "") or None
    grid = info.get("attention_grid")
    model.attention_grid = (int(grid[0]), int(grid[1])) if isinstance(grid, list) and len(grid) == 2 else None
    shape: Any = info.get("feature_shape")
    check_condition(isinstance(shape, list) and len(shape) == 2, "%s: no feature_shape in %s"
                    % (folder, EXPORT_INFO_NAME))
    return ExportedModel(folder, model, vocab, info, (int(shape[0]), int(shape[1])),
                         _load_image_encoder(folder, info, threads, providers))


def _load_image_encoder(folder: str, info: Dict[str, Any], threads: Optional[int],
                        providers: Optional[Sequence[str]]) -> Optional[OnnxImageEncoder]:
    """The image encoder ``export.json`` records, on ONNX Runtime; None if it records none.

    :raises ImcapError: naming the file, if a recorded file is missing or unreadable.
    """
    recorded = info.get("image_encoder")
    if not recorded:
        return None
    paths = [os.path.join(folder, recorded.get(key) or "") for key in ("file", "classifier")]
    for path in paths:
        check_condition(os.path.isfile(path), "%s: an incomplete export (no %s): export the model again"
                        % (folder, os.path.basename(path) or "image encoder file"))
    try:
        session = onnx_session(paths[0], threads, providers)
    except Exception as e:   # onnxruntime's own errors (a broken or truncated graph)
        raise ImcapError("%s: ONNX Runtime cannot load it (%s)" % (paths[0], _first_line(e)))
    try:
        with np.load(paths[1]) as npz:
            classifier = HostClassifier(npz["weight"], npz["bias"])
    except Exception as e:   # not an npz, or without the arrays
        raise ImcapError("%s: not the classifier's weights (%s)" % (paths[1], _first_line(e)))
    return OnnxImageEncoder(session, classifier, str(recorded.get("encoder")), str(recorded.get("layer")),
                            recorded.get("input_size") or [0, 0])


def _read_config(folder: str) -> Dict[str, Any]:
    """The exported ``config.yaml`` as a dict (what the server's ``GET /v1/model`` shows).

    :raises ImcapError: naming the file if it is not YAML.
    """
    import yaml
    path = os.path.join(folder, C.CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ImcapError("%s: not readable (%s)" % (path, _first_line(e)))
    return config if isinstance(config, dict) else {}


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _check_graphs(folder: str, model: OnnxModel, info: Dict[str, Any], vocab_size: int) -> None:
    """The graphs' inputs and outputs are those ``export.json`` records, their vocabulary ``vocab_size`` words.

    :raises ImcapError: naming the graph file otherwise.
    """
    graphs = info.get("graphs") or {}
    for name, session in ((ENCODE_NAME, model.encode_session), (STEP_NAME, model.step_session)):
        recorded = graphs.get(name[:-len(".onnx")], {})
        found = {"inputs": [i.name for i in session.get_inputs()], "outputs": [o.name for o in session.get_outputs()]}
        check_condition(found == {k: recorded.get(k) for k in found}, "%s: its inputs and outputs are not those %s "
                        "records: export the model again" % (os.path.join(folder, name), EXPORT_INFO_NAME))
    words = model.step_session.get_outputs()[0].shape[-1]
    check_condition(words == vocab_size, "%s: its graphs score %s words, its %s has %d: export the model again"
                    % (os.path.join(folder, STEP_NAME), words, C.VOCAB_TRG_NAME, vocab_size))


def load_exported_models(folders: Sequence[str], threads: Optional[int] = None,
                         providers: Optional[Sequence[str]] = None
                         ) -> Tuple[List[OnnxModel], Vocabulary, Tuple[int, int], Optional[OnnxImageEncoder]]:
    """The exported dirs of an ensemble (:func:`load_exported` each): ``(models, vocab, feature shape, the first's
    image encoder)`` (the members share their features, so one CNN serves them all).

    :raises ImcapError: as :func:`load_exported`, if there is none, or if they disagree on the vocabulary or the
        features.
    """
    check_condition(bool(folders), "no exported model dir given")
    loaded = [load_exported(str(folder), threads, providers) for folder in folders]
    first = loaded[0]
    for other in loaded[1:]:
        check_condition(other.vocab.idx_to_token == first.vocab.idx_to_token, "%s has another vocabulary than %s"
                        % (other.folder, first.folder))
        check_condition(other.feature_shape == first.feature_shape, "%s expects other features than %s"
                        % (other.folder, first.folder))
    return [e.model for e in loaded], first.vocab, first.feature_shape, first.image_encoder
