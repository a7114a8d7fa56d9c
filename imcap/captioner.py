"""Captioning: ``python -m imcap.captioner --models DIR < inputs > captions``.

Reads one input per line on STDIN (or ``--input``): a cached feature file (``.npy`` from
:mod:`imcap.extract_features`) or, with ``--extract-image-features``, an image file that goes through the same
CNN the model's features came from. With ``--json-input`` each line is ``{"image": PATH}``. Writes one output
line per input line, in input order: a line that cannot be read (missing file, broken image, bad UTF-8, empty
line) gives an empty caption and a one-line warning on STDERR naming the line; a summary ends the run.

Images are captioned in batches with beam search (:mod:`imcap.beam_search`); several ``--models`` decode as an
ensemble, and ``--test-time-augmentations hflip`` adds each model on the mirrored image to it. After Sockeye 1.x's
``image_captioning/captioner.py``.
"""
import argparse
import json
import logging
import os
import sys
import time
from typing import IO, Any, Iterator, List, Optional, Tuple

import mxnet as mx
import numpy as np

from . import arguments
from . import constants as C
from .beam_search import BeamSearch
from .features import check_features_match, resolve, view_path
from .model import CaptionModel, load_model
from .output_handler import CaptionResult, get_output_handler
from .utils import ImcapError, check_condition
from .vocab import ids_to_tokens

logger = logging.getLogger("imcap.captioner")


def add_captioner_args(parser: argparse.ArgumentParser) -> None:
    """Options of the captioner."""
    group = parser.add_argument_group("Model and data")
    group.add_argument("--models", "-m", required=True, nargs="+", help="Model directories (several: an ensemble).")
    group.add_argument("--checkpoints", "-c", nargs="+", default=None,
                       help="Params file per model (e.g. params.best, params.00012, an averaged file). "
                            "Default: params.best.")
    group.add_argument("--input", "-i", default=None, help="Input file. Default: STDIN.")
    group.add_argument("--output", "-o", default=None, help="Output file. Default: STDOUT.")
    group.add_argument("--source-root", default=None, help="Root of relative input paths. Default: the current "
                                                           "directory.")
    group.add_argument("--json-input", action="store_true",
                       help='Each input line is a JSON object {"image": PATH}; the key "constraints" is reserved '
                            "for lexical constraints, not supported yet.")
    group.add_argument("--extract-image-features", action="store_true",
                       help="Inputs are image files: run the model's CNN on them (settings from the model's "
                            "config.yaml unless --image-encoder* options are given).")
    group.add_argument("--output-type", choices=C.OUTPUT_TYPES, default=C.OUTPUT_TYPE_CAPTION,
                       help="Output format.")
    group.add_argument("--test-time-augmentations", nargs="+", default=[], choices=C.AUGMENTATION_CHOICES,
                       help="Test-time augmentation: every model also decodes these views of each image (hflip: "
                            "mirrored), as members of one ensemble. Cached inputs need the views beside them "
                            "(X.jpg.hflip.npy from imcap.extract_features --augmentations hflip). Attention "
                            "output is over the original image.")
    search = parser.add_argument_group("Search")
    search.add_argument("--beam-size", "-b", type=arguments.int_greater_or_equal(1), default=5, help="Beam size.")
    search.add_argument("--batch-size", type=arguments.int_greater_or_equal(1), default=32,
                        help="Images searched together.")
    search.add_argument("--chunk-size", type=arguments.int_greater_or_equal(1), default=512,
                        help="Input lines read (and features loaded) at a time.")
    search.add_argument("--max-output-length", type=arguments.int_greater_or_equal(1), default=30,
                        help="Most words per caption (</s> included).")
    search.add_argument("--length-penalty-alpha", type=float, default=1.0,
                        help="GNMT length penalty alpha (0: none).")
    search.add_argument("--length-penalty-beta", type=float, default=0.0, help="GNMT length penalty beta.")
    search.add_argument("--allow-unk", action="store_true", help="Let captions contain <unk>.")
    search.add_argument("--nbest-size", type=arguments.int_greater_or_equal(1), default=1,
                        help="Hypotheses per image in the json output (at most --beam-size).")
    parser.add_argument("--image-encoder", default=None, help="See imcap.extract_features (default: the model's).")
    parser.add_argument("--image-encoder-model-path", default=None, help="See imcap.extract_features.")
    parser.add_argument("--image-encoder-layer", default=None, help="See imcap.extract_features.")
    parser.add_argument("--source-image-size", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                        help="See imcap.extract_features.")
    parser.add_argument("--image-encoder-no-fusion", action="store_true", help="See imcap.extract_features.")
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)


def read_input_lines(stream: IO[bytes]) -> Iterator[Tuple[int, Optional[str], Optional[str]]]:
    """``(line number, text, error)`` per input line: text without its line end (``\\n`` or ``\\r\\n``), or
    ``None`` and the reason when the line is not valid UTF-8."""
    for number, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            yield number, None, "not valid UTF-8 (%s)" % e.reason


def parse_line(text: str, json_input: bool) -> str:
    """The path an input line names.

    :raises ImcapError: on empty lines, bad JSON, or a ``constraints`` key (not supported yet).
    """
    if json_input:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ImcapError("not a JSON object (%s)" % e)
        check_condition(isinstance(obj, dict) and isinstance(obj.get("image"), str),
                        'a JSON input line needs {"image": PATH}')
        check_condition("constraints" not in obj, "lexical constraints are not supported yet (key 'constraints')")
        text = obj["image"]
    path = text.strip()
    check_condition(bool(path), "empty line")
    return path


class Captioner:
    """Loads the models once and captions chunks of input lines.

    :raises ImcapError: if the models disagree on vocabulary or feature shape.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = mx.gpu(args.device_ids[0]) if not args.use_cpu and mx.context.num_gpus() > 0 \
            and args.device_ids[0] >= 0 else mx.cpu()
        checkpoints = args.checkpoints or [C.PARAMS_BEST_NAME] * len(args.models)
        check_condition(len(checkpoints) == len(args.models), "--checkpoints needs one name per model")
        self.models: List[CaptionModel] = []
        self.vocab: Any = None
        for model_dir, checkpoint in zip(args.models, checkpoints):
            model, vocab = load_model(model_dir, checkpoint, self.ctx)
            if self.vocab is not None:
                check_condition(vocab.idx_to_token == self.vocab.idx_to_token,
                                "%s has another vocabulary than %s" % (model_dir, args.models[0]))
                check_condition((model.config.encoder.num_regions, model.config.encoder.feature_dim) ==
                                (self.models[0].config.encoder.num_regions, self.models[0].config.encoder.feature_dim),
                                "%s expects other features than %s" % (model_dir, args.models[0]))
            self.models.append(model)
            self.vocab = vocab
        encoder_config = self.models[0].config.encoder
        self.feature_shape = (encoder_config.num_regions, encoder_config.feature_dim)
        self.search = BeamSearch(self.models, self.vocab, beam_size=args.beam_size,
                                 max_output_length=args.max_output_length,
                                 length_penalty_alpha=args.length_penalty_alpha,
                                 length_penalty_beta=args.length_penalty_beta, nbest_size=args.nbest_size,
                                 keep_attention=args.output_type == C.OUTPUT_TYPE_JSON, allow_unk=args.allow_unk,
                                 ctx=self.ctx)
        self.image_encoder = self._image_encoder() if args.extract_image_features else None

    def _image_encoder(self):
        from .image_encoder import ImageEncoder
        args = self.args
        made = self.models[0].config.feature_extraction or {}
        name = args.image_encoder or made.get("encoder") or C.ENCODER_EFFICIENTNET_LITE0
        layer = args.image_encoder_layer or made.get("layer") or None
        size = args.source_image_size or made.get("input_size")
        path = args.image_encoder_model_path
        if path is None and made.get("model_path") and name != "symbol":
            candidate = os.path.join(arguments.DEFAULT_MODELS, made["model_path"])
            path = candidate if os.path.isfile(candidate) else None
        encoder = ImageEncoder(name, path, layer, size, fuse=not args.image_encoder_no_fusion, ctx=self.ctx)
        probe = encoder.encode(np.zeros((1,) + tuple(encoder.input_size) + (3,), dtype=np.uint8))
        check_features_match({"feature_shape": list(probe.shape[1:])}, self.feature_shape[0], self.feature_shape[1],
                             "image encoder %s" % name)
        return encoder

    def _load(self, path: str) -> List[np.ndarray]:
        """The image (``--extract-image-features``) or the cached features a line names, one array per view
        (the original first, then each of ``--test-time-augmentations``)."""
        full = resolve(path, self.args.source_root)
        augmentations = self.args.test_time_augmentations
        if self.image_encoder is not None:
            from .image_encoder import augment, load_image
            image = load_image(full, self.image_encoder.input_size)
            return [image] + [augment(image, view) for view in augmentations]
        return [self._load_features(full)] + [self._load_features(view_path(full, view), view)
                                              for view in augmentations]

    def _load_features(self, full: str, view: Optional[str] = None) -> np.ndarray:
        """One ``.npy`` of the model's feature shape; ``view`` names an augmented view in the errors."""
        where = "'%s' features %s: " % (view, full) if view else ""
        check_condition(os.path.isfile(full), "%sno such file%s" % (
            where, " (imcap.extract_features --augmentations %s makes it)" % view if view else ""))
        try:
            features = np.load(full, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ImcapError("%snot a feature file (%s)" % (where, str(e).splitlines()[0] if str(e)
                                                             else type(e).__name__))
        check_condition(tuple(features.shape) == self.feature_shape, "%sfeatures have shape %s, the model expects %s"
                        % (where, tuple(features.shape), self.feature_shape))
        return features.astype(np.float32)

    def caption_chunk(self, lines: List[Tuple[int, Optional[str], Optional[str]]]) -> List[CaptionResult]:
        """Caption a chunk of ``(line number, text, error)``; one result per line, in order."""
        results: List[Optional[CaptionResult]] = [None] * len(lines)
        good = []  # (position, arrays (one per view), path)
        for position, (number, text, error) in enumerate(lines):
            path = ""
            try:
                if text is None:
                    raise ImcapError(error or "unreadable line")
                path = parse_line(text, self.args.json_input)
                good.append((position, self._load(path), path))
            except ImcapError as e:
                results[position] = CaptionResult(number, [], error=str(e), source=path)
        batch_size = self.args.batch_size
        for start in range(0, len(good), batch_size):
            part = good[start:start + batch_size]
            views = [np.stack([arrays[v] for _, arrays, _ in part]) for v in range(len(part[0][1]))]
            if self.image_encoder is not None:
                views = [self.image_encoder.encode(images) for images in views]
            for (position, _, path), hyps in zip(part, self.search.search(views)):
                best = hyps[0]
                tokens = ids_to_tokens(self.vocab, best.ids)
                nbest = [(ids_to_tokens(self.vocab, h.ids), h.score) for h in hyps]
                results[position] = CaptionResult(lines[position][0], tokens, best.score, best.attention,
                                                   nbest if self.args.nbest_size > 1 else None, source=path)
        return results  # type: ignore


def chunks(iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_captioner(args: argparse.Namespace) -> Tuple[int, int]:
    """Caption every input line; return ``(lines, failed lines)``."""
    captioner = Captioner(args)
    source = open(args.input, "rb") if args.input else sys.stdin.buffer
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    handler = get_output_handler(args.output_type, sink)
    total = failed = 0
    start = time.time()
    try:
        for chunk in chunks(read_input_lines(source), args.chunk_size):
            for result in captioner.caption_chunk(chunk):
                if result.error is not None:
                    failed += 1
                    sys.stderr.write("Warning: line %d: %s%s\n" % (result.line, result.error,
                                                                    " (%s)" % result.source if result.source else ""))
                handler.handle(result)
                total += 1
            sink.flush()
    finally:
        if args.input:
            source.close()
        if args.output:
            sink.close()
    elapsed = time.time() - start
    sys.stderr.write("Captioned %d lines (%d failed) in %.1f s, %.1f lines/s\n"
                     % (total, failed, elapsed, total / max(elapsed, 1e-9)))
    return total, failed


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and caption."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    add_captioner_args(parser)
    arguments.cli_main(parser, run_captioner, argv)


if __name__ == "__main__":
    main()
