"""Score predicted captions against reference captions: ``python -m imcap.evaluate``.

    python -m imcap.evaluate --hypotheses test.pred --references test.captions.0 ... test.captions.4
    python -m imcap.evaluate ... --metrics bleu cider --json

Every file has one caption per line, already lower-cased and tokenized by :mod:`imcap.prepare_data`; line ``i`` of
each reference file is one of the references of line ``i`` of the hypotheses. The metrics (BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D), their scales and the sources they follow are described in :mod:`imcap.scoring`; with
``--diversity`` (or ``--training-captions``) also the reference-free figures of :mod:`imcap.diversity`.
"""
import argparse
import json
import logging
import sys
from typing import Dict, List, Optional

from . import arguments
from .diversity import diversity_scores
from .scoring import DEFAULT_METRICS, METRIC_METEOR, METRICS, TABLE_DECIMALS, evaluate
from .utils import check_condition, read_lines

logger = logging.getLogger("imcap.evaluate")


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m imcap.evaluate``."""
    group = parser.add_argument_group(
        "Evaluation",
        "Scales: bleu1..bleu4, METEOR and ROUGE-L on 0-100; CIDEr-D raw (0-10, papers print it x100). "
        "METEOR, ROUGE-L and CIDEr-D are the COCO caption evaluation's (pycocoevalcap) on the given tokens; "
        "METEOR needs Java and is skipped with a note when 'java' is not on PATH.")
    group.add_argument("--hypotheses", "-i", required=True, type=arguments.regular_file,
                       help="Predicted captions, one per line (tokenized, lower-cased).")
    group.add_argument("--references", "-r", required=True, nargs="+", type=arguments.regular_file,
                       help="Reference caption files, each parallel to --hypotheses (empty lines: no "
                            "reference in that file for that image).")
    group.add_argument("--metrics", nargs="+", default=None, choices=list(METRICS),
                       help="Metric families to compute: bleu (BLEU-1..4), meteor, rouge (ROUGE-L), "
                            "cider (CIDEr-D). Default: all available (METEOR is then skipped with a note if "
                            "Java is missing or the METEOR jar fails; named here, a failing jar is an error).")
    group.add_argument("--diversity", action="store_true",
                       help="Also report how varied and repetitive the hypotheses are (imcap.diversity): the share of "
                            "captions with a repeated trigram, distinct captions, vocabulary used, distinct-1 and "
                            "distinct-2.")
    group.add_argument("--training-captions", default=None, type=arguments.regular_file,
                       help="Training captions, one per line (e.g. train.captions): also report the share of "
                            "hypotheses that are no training caption (novel-%%); implies --diversity.")
    group.add_argument("--json", action="store_true",
                       help="Print one JSON object instead of a table.")
    arguments.add_logging_args(parser)


def format_table(scores: Dict[str, float]) -> str:
    """A two-column text table (metric, value), one metric per line: 2 decimals, CIDEr-D 3."""
    width = max([len("metric")] + [len(key) for key in scores])
    lines = ["%-*s  %6s" % (width, "metric", "value")]
    lines += ["%-*s  %6.*f" % (width, key, TABLE_DECIMALS.get(key, 3 if key.startswith("distinct-") and key[-1].isdigit()
                                                               else 2), value) for key, value in scores.items()]
    return "\n".join(lines) + "\n"


def run_evaluate(args: argparse.Namespace) -> Dict[str, float]:
    """Read the files named in ``args``, print the scores to STDOUT and return them.

    :raises ImcapError: if a reference file's line count differs from the hypotheses', or no metric
        could be computed (METEOR alone without Java).
    """
    hypotheses = read_lines(args.hypotheses)
    references = []
    for path in args.references:
        stream = read_lines(path)
        check_condition(len(stream) == len(hypotheses), "%s has %d lines, %s has %d"
                        % (path, len(stream), args.hypotheses, len(hypotheses)))
        references.append(stream)
    logger.info("Evaluating %d hypotheses against %d reference file(s)", len(hypotheses), len(references))
    if args.metrics is None:
        scores = evaluate(hypotheses, references, DEFAULT_METRICS, skip_failing=(METRIC_METEOR,))
    else:
        scores = evaluate(hypotheses, references, args.metrics)
    check_condition(len(scores) > 0, "no metric computed (%s)" % ", ".join(args.metrics or DEFAULT_METRICS))
    if args.diversity or args.training_captions:
        training = read_lines(args.training_captions) if args.training_captions else None
        scores.update(diversity_scores(hypotheses, training))
    if args.json:
        sys.stdout.write(json.dumps(scores) + "\n")
    else:
        sys.stdout.write(format_table(scores))
    sys.stdout.flush()
    return scores


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m imcap.evaluate``."""
    parser = arguments.new_parser(__doc__.strip().splitlines()[0])
    add_evaluate_args(parser)
    arguments.cli_main(parser, run_evaluate, argv)


if __name__ == "__main__":
    main()
