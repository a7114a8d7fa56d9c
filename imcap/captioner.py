"""Captioning: ``python -m imcap.captioner --models DIR < inputs > captions``.

Reads one input per line on STDIN (or ``--input``): a cached feature file (``.npy`` from
:mod:`imcap.extract_features`) or, with ``--extract-image-features``, an image file that goes through the same
CNN the model's features came from. With ``--json-input`` each line is ``{"image": PATH, "constraints": [PHRASE, ...],
"avoid": [PHRASE, ...]}`` (Sockeye's key ``"text"`` for the path is read too): lexical constraints, phrases the caption
must contain or must not contain (:mod:`imcap.constraints`); ``--avoid-list FILE`` avoids its phrases (one a line) in
every caption, and :mod:`imcap.lexical_constraints` writes such JSON lines from tab-separated ones. Writes one output
line per input line, in input order: a line that cannot be read (missing file, broken image, bad UTF-8, empty line,
features with NaN) gives an empty caption and a one-line warning on STDERR naming the line; a phrase that cannot be
used as given (no words, a word outside the vocabulary, too many constraint words for ``--max-output-length``, not a
string or a list of alternative strings, both required and avoided) gives the line's best caption and such a warning;
a summary ends the run.

This module is a loop over :class:`imcap.inference.Captioner`, which does the work: batched beam search
(:mod:`imcap.beam_search`), ensembles of several ``--models``, ``--test-time-augmentations hflip`` adding each model
on the mirrored image to the ensemble. After Sockeye 1.x's ``image_captioning/captioner.py``.
"""
import argparse
import json
import logging
import sys
import time
from typing import IO, Any, Iterator, List, Optional, Tuple, cast

from tqdm import tqdm

from . import arguments
from . import constants as C
from .inference import CaptionInput, CaptionResult, Captioner
from .output_handler import get_output_handler
from .phrases import lenient_phrases
from .utils import ImcapError, check_condition

logger = logging.getLogger("imcap.captioner")

InputLine = Tuple[int, Optional[str], Optional[str]]  # (line number, text, error), see read_input_lines


def add_captioner_args(parser: argparse.ArgumentParser) -> None:
    """Options of the captioner."""
    group = parser.add_argument_group("Model and data")
    group.add_argument("--models", "-m", required=True, nargs="+", help="Model directories (several: an ensemble).")
    group.add_argument("--checkpoints", "-c", nargs="+", default=None,
                       help="Params file per model (e.g. params.best, params.00012, an averaged file). "
                            "Default: params.best. Not with --backend onnxruntime (an exported dir holds one).")
    arguments.add_backend_arg(group, "With onnxruntime, --extract-image-features runs the export's image encoder "
                                     "(python -m imcap.export writes it unless --no-image-encoder); the image "
                                     "encoder options and --guide-expand-vocabulary need mxnet.")
    group.add_argument("--input", "-i", default=None, help="Input file. Default: STDIN.")
    group.add_argument("--output", "-o", default=None,
                       help="Output file (a progress bar of the lines then shows on STDERR for inputs of over 300 "
                            "lines, unless --quiet). Default: STDOUT.")
    group.add_argument("--source-root", default=None, help="Root of relative input paths. Default: the current "
                                                           "directory.")
    group.add_argument("--json-input", action="store_true",
                       help='Each input line is a JSON object {"image": PATH, "constraints": ["a red car", ...], '
                            '"avoid": ["blurry", ...]} (Sockeye\'s "text" for "image" is read too): the caption '
                            "contains every constraint phrase and no avoided one (lexical constraints; "
                            "python -m imcap.lexical_constraints writes such lines).")
    group.add_argument("--extract-image-features", action="store_true",
                       help="Inputs are image files: run the model's CNN on them (settings from the model's "
                            "config.yaml unless --image-encoder* options are given).")
    group.add_argument("--output-type", choices=C.OUTPUT_TYPES, default=C.OUTPUT_TYPE_CAPTION,
                       help="Output format. Captions are written as text by the model's tokenizer (its "
                            "tokenizer.json: pieces joined, Chinese without spaces); the json output also has the "
                            "tokens.")
    group.add_argument("--join-subwords", action="store_true",
                       help="Join subword-nmt's '@@' pieces in the captions written (a model trained on "
                            "pre-segmented captions, prepare_data --tokenizer none; by default they are kept).")
    group.add_argument("--test-time-augmentations", nargs="+", default=[], choices=C.AUGMENTATION_CHOICES,
                       help="Test-time augmentation: every model also decodes these views of each image (hflip: "
                            "mirrored), as members of one ensemble. Cached inputs need the views beside them "
                            "(X.jpg.hflip.npy from imcap.extract_features --augmentations hflip). Attention "
                            "output is over the original image.")
    search = parser.add_argument_group("Search")
    arguments.add_search_args(search, "Hypotheses per image in the json output (at most --beam-size; with "
                                      "constraints, only those that meet them; with --sample, the samples).")
    search.add_argument("--batch-size", type=arguments.int_greater_or_equal(1), default=32,
                        help="Images searched together.")
    search.add_argument("--chunk-size", type=arguments.int_greater_or_equal(1), default=512,
                        help="Input lines read at a time (their features are loaded a batch at a time).")
    search.add_argument("--avoid-list", type=arguments.regular_file, default=None,
                        help="A UTF-8 file of phrases, one a line, that no caption contains (besides each JSON "
                             "input's own \"avoid\"); a phrase inside a line's constraint is not avoided for it. "
                             "Default: none.")
    arguments.add_guide_args(parser)
    arguments.add_image_encoder_args(parser, from_model=True)
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)


def read_input_lines(stream: IO[bytes]) -> Iterator[InputLine]:
    """``(line number, text, error)`` per input line: text without its line end (``\\n`` or ``\\r\\n``), or
    ``None`` and the reason when the line is not valid UTF-8."""
    for number, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            yield number, raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            yield number, None, "not valid UTF-8 (%s)" % e.reason


def parse_input(text: str, json_input: bool, line: Optional[int] = None) -> CaptionInput:
    """The input a line names: a path, or with ``json_input`` ``{"image": PATH}`` (or Sockeye's ``{"text": PATH}``)
    with optional ``constraints`` and ``avoid`` lists of phrases (other keys are ignored). A phrase of the wrong type
    costs the line only itself: :func:`imcap.phrases.lenient_phrases` keeps it as an ignored phrase whose warning (the
    library's ``TypeError`` or ``ValueError``, ``...: ignored``) the line's result carries; phrases that cannot be
    used are the Captioner's to warn about (:meth:`imcap.inference.Captioner.caption`).

    :raises ImcapError: on empty lines, bad JSON, or a JSON line without a path.
    """
    constraints: Any = []
    avoid: Any = []
    if json_input:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ImcapError("not a JSON object (%s)" % e)
        path_key = "image" if isinstance(obj, dict) and "image" in obj else "text"
        check_condition(isinstance(obj, dict) and isinstance(obj.get(path_key), str),
                        'a JSON input line needs {"image": PATH} (or {"text": PATH})')
        text = obj[path_key]
        constraints = lenient_phrases("constraints", obj.get("constraints"), alternatives=True)
        avoid = lenient_phrases("avoid", obj.get("avoid"))
    path = text.strip()
    check_condition(bool(path), "empty line")
    return CaptionInput(path=path, constraints=constraints, avoid=avoid, line=line)


def parse_line(text: str, json_input: bool) -> str:
    """The path an input line names (:func:`parse_input` without its phrases).

    :raises ImcapError: as :func:`parse_input`.
    """
    return cast(str, parse_input(text, json_input).path)  # parse_input always gives a path


def caption_lines(captioner: Captioner, lines: List[InputLine], json_input: bool) -> List[CaptionResult]:
    """Caption a chunk of :func:`read_input_lines`; one result per line, in order (a line that cannot be parsed gets
    its error in its result)."""
    results: List[Optional[CaptionResult]] = [None] * len(lines)
    inputs: List[Tuple[int, CaptionInput]] = []
    for position, (number, text, error) in enumerate(lines):
        try:
            if text is None:
                raise ImcapError(error or "unreadable line")
            inputs.append((position, parse_input(text, json_input, number)))
        except ImcapError as e:
            results[position] = CaptionResult(number, [], error=str(e))
    for (position, _), result in zip(inputs, captioner.caption([item for _, item in inputs])):
        results[position] = result
    return cast(List[CaptionResult], results)  # every position is filled


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


PROGRESS_MIN_LINES = 300  # a progress bar only for inputs of more lines than this (or of unknown length)


def progress_bar(args: argparse.Namespace) -> tqdm:
    """A bar of the lines captioned and their rate on STDERR, shown when the captions go to a file (``--output``),
    not ``--quiet``, and the input (``--input``) has more than :data:`PROGRESS_MIN_LINES` lines or is STDIN; captions
    on STDOUT leave STDERR as it was (warnings and the summary)."""
    total = None
    if args.input:
        with open(args.input, "rb") as f:
            total = sum(1 for _ in f)
    show = bool(args.output) and not args.quiet and (total is None or total > PROGRESS_MIN_LINES)
    return tqdm(total=total, unit="line", desc="captioned", disable=not show, file=sys.stderr, mininterval=1.0)


def run_captioner(args: argparse.Namespace) -> Tuple[int, int]:
    """Caption every input line; return ``(lines, failed lines)``."""
    captioner = Captioner.from_args(args)
    if args.extract_image_features:
        captioner.get_image_encoder()  # a CNN that cannot be made fails the run before any line is read
    source = open(args.input, "rb") if args.input else sys.stdin.buffer
    sink = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    handler = get_output_handler(args.output_type, sink)
    total = failed = 0
    start = time.time()
    bar = progress_bar(args)
    try:
        for chunk in chunks(read_input_lines(source), args.chunk_size):
            for result in caption_lines(captioner, chunk, args.json_input):
                if result.error is not None:
                    failed += 1
                    tqdm.write("Warning: line %d: %s%s" % (result.line, result.error,
                                                           " (%s)" % result.source if result.source else ""),
                               file=sys.stderr)
                for warning in result.warnings:  # phrases that could not be used; the line has its caption
                    tqdm.write("Warning: line %d: %s" % (result.line, warning), file=sys.stderr)
                handler.handle(result)
                total += 1
            sink.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
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
