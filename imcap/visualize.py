"""Figures for inspecting a captioning model: captioned image grids, training curves, attention maps.

    python -m imcap.visualize captions --images test.images --hypotheses test.pred \\
        --references test.captions.0 test.captions.1 --output captions.png
    python -m imcap.visualize curves --model MODEL_DIR --output curves.png
    python -m imcap.captioner --models MODEL_DIR --extract-image-features --output-type json \\
        < images.txt > captions.json
    python -m imcap.visualize attention --json captions.json --line 1 --output attention.png
    python -m imcap.evaluate --hypotheses test.pred --references ... --per-image test.per-image.jsonl
    python -m imcap.visualize worst-best --per-image test.per-image.jsonl --images test.images --output worst-best.png

``captions`` draws a grid of images, each with its predicted caption (black on a white box) and its
ground-truth references (``GT:``, dark text on a light-green box) below it. ``curves`` plots the
model dir's ``metrics`` file (:mod:`imcap.metrics_file`): perplexity and validation BLEU against updates, and
against wall-clock time. ``attention`` draws, for one line of the captioner's ``--output-type json``
output, the image with the predicted caption as title, then one panel per generated word (``</s>``
shown as ``<end>``): the image under the word's attention weights over the encoder's regions as a
semi-transparent heat map (see :func:`imcap.plots.attention.plot_attention`). ``worst-best`` draws, from the per-image
scores ``imcap.evaluate --per-image`` writes, the images whose caption scored lowest and highest (by CIDEr-D unless
``--by`` names another score) as a captions grid: the worst first, then the best. Figures are PNG files, written
atomically, rendered with matplotlib's Agg backend (no display needed).

This module is the command line only: options, reading the files, choosing the lines; the figures are drawn by
:mod:`imcap.plots`.
"""
import argparse
import json
import logging
import os
import random
from typing import Any, Dict, List, Optional, Tuple

from . import arguments
from . import constants as C
from .features import region_grid
from .plots.attention import ATTENTION_COLUMNS, AttentionPlot, check_attention_record, plot_attention
from .plots.captions import plot_captions
from .plots.curves import plot_training_curves
from .plots.figure import DPI
from .scoring import KEY_CIDER_D
from .utils import ImcapError, check_condition, read_lines

logger = logging.getLogger(__name__)

FAILED = "the captioner failed on this line"  # a JSON line with an 'error'; --all-lines skips it


def parse_grid(value: str) -> Tuple[int, int]:
    """``HxW`` (e.g. ``7x7``) as ``(H, W)``; for ``--grid``."""
    parts = value.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError("expected HEIGHTxWIDTH, e.g. 7x7, got '%s'" % value)
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError("grid sides must be >= 1, got '%s'" % value)
    return height, width


def attention_grid(record: Dict[str, Any], grid: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """The ``(rows, columns)`` of a checked record's regions: ``--grid`` if given, else a square
    (:func:`imcap.features.region_grid`).

    :raises ImcapError: if ``--grid`` does not hold the attention's regions, or none is given and their number is
        not a square (asking for ``--grid``).
    """
    regions = int(record["attention"].shape[1])
    shape = region_grid(regions, grid)
    if shape is None and grid is not None:
        raise ImcapError("--grid %dx%d has %d regions, the attention has %d"
                         % (grid[0], grid[1], grid[0] * grid[1], regions))
    if shape is None:
        raise ImcapError("%d attention regions is not a square grid: give --grid HxW" % regions)
    return shape


def read_caption_json(path: str, line: int) -> Dict[str, Any]:
    """Line ``line`` (1-based) of a captioner ``--output-type json`` file, checked for plotting.

    :return: the JSON object, with ``tokens`` (from ``caption`` if missing) and ``attention`` a
        ``(rows, regions)`` float array whose ``rows`` is ``len(tokens) + 1`` (``</s>`` last) or
        ``len(tokens)`` (:func:`imcap.plots.attention.check_attention_record`).
    :raises ImcapError: naming the file and line, if the line is missing, empty or not JSON, has an
        ``error`` (the captioner could not caption it) or has no ``attention``.
    """
    lines = read_lines(path)
    check_condition(1 <= line <= len(lines), "%s has %d lines, no line %d" % (path, len(lines), line))
    return parse_caption_json(lines[line - 1], path, line)


def parse_caption_json(text: str, path: str, line: int) -> Dict[str, Any]:
    """Parse and check one JSON line (see :func:`read_caption_json`)."""
    where = "%s line %d" % (path, line)
    check_condition(bool(text.strip()), "%s is empty" % where)
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ImcapError("%s: not JSON (%s); expected the captioner's --output-type json" % (where, e))
    check_condition(isinstance(record, dict), "%s: not a JSON object" % where)
    check_condition("error" not in record, "%s: %s: %s" % (where, FAILED, record.get("error")))
    return check_attention_record(record, where)


def attention_output_path(output: str, line: int, image: str) -> str:
    """Where ``--all-lines`` writes the figure of ``line``: ``output`` formatted with ``{line}`` and
    ``{image}`` (the image file name without extension) if it has either, else
    ``output/line<line>_<image>.png``."""
    stem = os.path.splitext(os.path.basename(image[:-4] if image.endswith(".npy") else image))[0] or "image"
    if "{line" in output or "{image" in output:
        try:
            return output.format(line=line, image=stem)
        except (KeyError, IndexError, ValueError) as e:
            raise ImcapError("--output pattern '%s': %s (use {line} and {image})" % (output, e))
    return os.path.join(output, "line%d_%s.png" % (line, stem))


def _plot_record(record: Dict[str, Any], output: str, args: argparse.Namespace) -> AttentionPlot:
    """Plot one checked JSON line to ``output`` with the ``attention`` options."""
    plot = plot_attention(record, output, image_root=args.image_root, grid=attention_grid(record, args.grid),
                          columns=args.columns, title=args.title, dpi=args.dpi)
    logger.info("Wrote %s", output)
    return plot


def run_attention(args: argparse.Namespace) -> List[AttentionPlot]:
    """``attention`` subcommand: plot ``--line`` of ``--json``, or with ``--all-lines`` the first
    ``--max-images`` lines that have a caption (failed lines are skipped with a warning)."""
    if not args.all_lines:
        return [_plot_record(read_caption_json(args.json, args.line), args.output, args)]
    plots: List[AttentionPlot] = []
    for number, text in enumerate(read_lines(args.json), 1):
        if len(plots) >= args.max_images:
            break
        if not text.strip():
            continue
        try:
            record = parse_caption_json(text, args.json, number)
        except ImcapError as e:
            if FAILED not in str(e):
                raise
            logger.warning("Skipping %s", e)
            continue
        plots.append(_plot_record(record, attention_output_path(args.output, number, str(record["image"])), args))
    check_condition(len(plots) > 0, "%s: no line to plot" % args.json)
    return plots


def select_lines(num_lines: int, num_images: int, sample: bool, seed: int) -> List[int]:
    """Indices of the lines to plot: the first ``num_images``, or with ``sample`` a seeded random
    choice of that many, in file order."""
    count = min(num_images, num_lines)
    if not sample:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(num_lines), count))


def _read_parallel(path: str, images_path: str, num_images: int) -> List[str]:
    """The lines of ``path``, which must be as many as ``images_path``'s ``num_images``."""
    lines = read_lines(path)
    check_condition(len(lines) == num_images, "%s has %d lines, %s has %d"
                    % (path, len(lines), images_path, num_images))
    return lines


def run_captions(args: argparse.Namespace) -> Tuple[int, int]:
    """``captions`` subcommand: read the parallel files, select lines, call
    :func:`imcap.plots.captions.plot_captions`.

    :raises ImcapError: if a file is not parallel to ``--images`` (the message names it).
    """
    images = read_lines(args.images)
    check_condition(len(images) > 0, "%s is empty" % args.images)
    hypotheses: Optional[List[str]] = None
    if args.hypotheses:
        hypotheses = _read_parallel(args.hypotheses, args.images, len(images))
    streams = [_read_parallel(path, args.images, len(images)) for path in args.references or []]
    chosen = select_lines(len(images), args.num_images, args.sample, args.seed)
    size = plot_captions([images[i] for i in chosen], args.output,
                         hypotheses=[hypotheses[i] for i in chosen] if hypotheses is not None else None,
                         references=[[s[i] for s in streams] for i in chosen] if streams else None,
                         image_root=args.image_root, columns=args.columns, title=args.title, dpi=args.dpi)
    logger.info("Wrote %s", args.output)
    return size


def read_per_image_scores(path: str, key: str) -> List[Dict[str, Any]]:
    """The JSON lines of ``imcap.evaluate --per-image`` (blank lines skipped), each checked for a 1-based ``line``,
    a ``hypothesis``, ``references`` and a number under ``key``.

    :raises ImcapError: naming the file and line of a line that is not such an object, or if there is none.
    """
    records = []
    for number, text in enumerate(read_lines(path), 1):
        if not text.strip():
            continue
        where = "%s line %d" % (path, number)
        try:
            record = json.loads(text)
        except ValueError as e:
            raise ImcapError("%s: not JSON (%s); expected imcap.evaluate --per-image's lines" % (where, e))
        check_condition(isinstance(record, dict) and isinstance(record.get("line"), int) and record["line"] >= 1
                        and "hypothesis" in record and isinstance(record.get("references"), list),
                        "%s: not a per-image record of imcap.evaluate --per-image (line, hypothesis, references)"
                        % where)
        value = record.get(key)
        check_condition(isinstance(value, (int, float)) and not isinstance(value, bool),
                        "%s has no '%s' score (it has: %s)" % (where, key, ", ".join(
                            k for k, v in record.items() if isinstance(v, (int, float)) and k != "line")))
        records.append(record)
    check_condition(len(records) > 0, "%s: no per-image scores" % path)
    return records


def worst_and_best(records: List[Dict[str, Any]], key: str, count: int) -> List[Tuple[str, int, Dict[str, Any]]]:
    """``("worst", rank, record)`` for the ``count`` lowest scores under ``key`` (lowest first), then ``("best", rank,
    record)`` for the ``count`` highest (highest first); ties in file order."""
    ascending = sorted(records, key=lambda r: (r[key], r["line"]))
    descending = sorted(records, key=lambda r: (-r[key], r["line"]))
    return [("worst", rank, r) for rank, r in enumerate(ascending[:count], 1)] + \
        [("best", rank, r) for rank, r in enumerate(descending[:count], 1)]


def run_worst_best(args: argparse.Namespace) -> Tuple[int, int]:
    """``worst-best`` subcommand: the ``--num-images`` worst and best images of ``--per-image`` by ``--by``, drawn
    with their caption and references by :func:`imcap.plots.captions.plot_captions`.

    :raises ImcapError: if a record's line is not a line of ``--images``.
    """
    images = read_lines(args.images)
    records = read_per_image_scores(args.per_image, args.by)
    for record in records:
        check_condition(record["line"] <= len(images), "%s: a score of line %d, %s has %d lines"
                        % (args.per_image, record["line"], args.images, len(images)))
    chosen = worst_and_best(records, args.by, args.num_images)
    labels = ["%s · %s %d · %s %.3f" % (images[r["line"] - 1], which, rank, args.by, r[args.by])
              for which, rank, r in chosen]
    title = args.title or "The %d worst and %d best of %d images by %s" % (
        min(args.num_images, len(records)), min(args.num_images, len(records)), len(records), args.by)
    size = plot_captions([images[r["line"] - 1] for _, _, r in chosen], args.output,
                         hypotheses=[str(r["hypothesis"]) for _, _, r in chosen],
                         references=[[str(ref) for ref in r["references"]] for _, _, r in chosen],
                         image_root=args.image_root, columns=args.columns or min(args.num_images, len(records)),
                         title=title, dpi=args.dpi, labels=labels)
    logger.info("Wrote %s", args.output)
    return size


def run_curves(args: argparse.Namespace) -> Tuple[int, int]:
    """``curves`` subcommand: plot ``MODEL/metrics``."""
    check_condition(os.path.isdir(args.model), "%s: no such model directory" % args.model)
    size = plot_training_curves(os.path.join(args.model, C.METRICS_NAME), args.output, title=args.title,
                                dpi=args.dpi)
    logger.info("Wrote %s", args.output)
    return size


def run_visualize(args: argparse.Namespace):
    """Run the chosen subcommand; returns the PNG's size in pixels (``attention``: an
    :class:`~imcap.plots.attention.AttentionPlot` per PNG written)."""
    return args.run(args)


def _add_captions_parser(subparsers: Any) -> argparse.ArgumentParser:
    captions = subparsers.add_parser("captions", help="Grid of images with predicted and reference captions.",
                                     formatter_class=arguments.HelpFormatter)
    captions.add_argument("--images", required=True, type=arguments.regular_file,
                          help="Image paths, one per line, relative to --image-root.")
    captions.add_argument("--image-root", default=os.path.join(arguments.DEFAULT_FLICKR8K, "images"),
                          help="Folder the image paths are relative to.")
    captions.add_argument("--hypotheses", default=None, type=arguments.regular_file,
                          help="Predicted captions, parallel to --images.")
    captions.add_argument("--references", nargs="+", default=None, type=arguments.regular_file,
                          help="Reference caption files, each parallel to --images.")
    captions.add_argument("--num-images", type=arguments.int_greater_or_equal(1), default=8,
                          help="Number of images to plot (the first lines unless --sample).")
    captions.add_argument("--sample", action="store_true", help="Plot a random (seeded) choice of lines.")
    captions.add_argument("--seed", type=int, default=1, help="Seed of --sample.")
    captions.add_argument("--columns", type=arguments.int_greater_or_equal(1), default=4, help="Images per row.")
    captions.add_argument("--output", "-o", required=True, help="PNG file to write.")
    captions.set_defaults(run=run_captions)
    return captions


def _add_curves_parser(subparsers: Any) -> argparse.ArgumentParser:
    curves = subparsers.add_parser("curves", help="Training curves from a model dir's metrics file.",
                                   formatter_class=arguments.HelpFormatter)
    curves.add_argument("--model", required=True, help="Model directory (its '%s' file is read)." % C.METRICS_NAME)
    curves.add_argument("--output", "-o", required=True, help="PNG file to write.")
    curves.set_defaults(run=run_curves)
    return curves


def _add_attention_parser(subparsers: Any) -> argparse.ArgumentParser:
    attention = subparsers.add_parser(
        "attention", formatter_class=arguments.HelpFormatter,
        help="Attention maps of a caption, one panel per word, from the captioner's --output-type json.",
        description="The image, then per generated word (</s> as <end>) the image under that word's attention "
                    "weights over the regions, upsampled bicubically, as a 'jet' heat map at 50% opacity scaled "
                    "from 0 to the word's largest weight. The encoder saw the image resized to its input size "
                    "(e.g. 224x224) without keeping the aspect ratio, so the region grid covers the whole frame.")
    attention.add_argument("--json", required=True, type=arguments.regular_file,
                           help="Output of python -m imcap.captioner --output-type json (one JSON object a line).")
    attention.add_argument("--image-root", default=None,
                           help="Folder the 'image' paths of the JSON are relative to (absolute paths are used "
                                "as they are; a cached feature file X.npy stands for the image X). Default: the "
                                "current directory.")
    which = attention.add_mutually_exclusive_group()
    which.add_argument("--line", type=arguments.int_greater_or_equal(1), default=1,
                       help="Which line of --json to plot (1-based).")
    which.add_argument("--all-lines", action="store_true",
                       help="Plot every line (up to --max-images; lines the captioner failed on are skipped), "
                            "one PNG each: --output is then a directory or a pattern with {line} and {image}.")
    attention.add_argument("--max-images", type=arguments.int_greater_or_equal(1), default=20,
                           help="With --all-lines: at most this many PNGs.")
    attention.add_argument("--grid", type=parse_grid, default=None, metavar="HxW",
                           help="Rows x columns of the region grid (row-major). Default: square, e.g. 7x7 for 49 "
                                "regions.")
    attention.add_argument("--columns", type=arguments.int_greater_or_equal(1), default=ATTENTION_COLUMNS,
                           help="Panels per row.")
    attention.add_argument("--output", "-o", required=True,
                           help="PNG file to write; with --all-lines a directory (line<N>_<image>.png in it) or a "
                                "pattern such as 'att/{image}-{line}.png'.")
    attention.set_defaults(run=run_attention)
    return attention


def _add_worst_best_parser(subparsers: Any) -> argparse.ArgumentParser:
    ranked = subparsers.add_parser(
        "worst-best", formatter_class=arguments.HelpFormatter,
        help="The images whose captions scored worst and best (imcap.evaluate --per-image), with their references.",
        description="A captions grid of the --num-images lowest-scoring images (lowest first), then the --num-images "
                    "highest (highest first), each labelled with its rank and score.")
    ranked.add_argument("--per-image", required=True, type=arguments.regular_file,
                        help="The per-image scores of python -m imcap.evaluate --per-image (JSON lines).")
    ranked.add_argument("--images", required=True, type=arguments.regular_file,
                        help="Image paths, one per line, parallel to the hypotheses evaluate scored (e.g. "
                             "test.images).")
    ranked.add_argument("--image-root", default=os.path.join(arguments.DEFAULT_FLICKR8K, "images"),
                        help="Folder the image paths are relative to.")
    ranked.add_argument("--by", default=KEY_CIDER_D,
                        help="The per-image score to rank by: CIDEr-D, sentence-bleu4, coco-bleu4, METEOR, ROUGE-L.")
    ranked.add_argument("--num-images", type=arguments.int_greater_or_equal(1), default=4,
                        help="How many worst and how many best images.")
    ranked.add_argument("--columns", type=arguments.int_greater_or_equal(1), default=None,
                        help="Images per row (default --num-images: a row of the worst, then one of the best).")
    ranked.add_argument("--output", "-o", required=True, help="PNG file to write.")
    ranked.set_defaults(run=run_worst_best)
    return ranked


def create_parser() -> argparse.ArgumentParser:
    """The ``python -m imcap.visualize`` parser, with subcommands ``captions``, ``curves``, ``attention`` and
    ``worst-best``."""
    parser = arguments.new_parser(__doc__.strip().splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for sub in (_add_captions_parser(subparsers), _add_curves_parser(subparsers), _add_attention_parser(subparsers),
                _add_worst_best_parser(subparsers)):
        sub.add_argument("--title", default=None, help="Figure title (curves: default the model dir's name; "
                                                       "attention: the image, line and score; worst-best: what it "
                                                       "shows).")
        sub.add_argument("--dpi", type=arguments.int_greater_or_equal(10), default=DPI, help="Pixels per inch.")
        arguments.add_logging_args(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m imcap.visualize``."""
    arguments.cli_main(create_parser(), run_visualize, argv)


if __name__ == "__main__":
    main()
