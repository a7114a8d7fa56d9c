"""Score predicted captions against reference captions.

    python -m imcap.evaluate --hypotheses test.pred --references test.captions.0 ... test.captions.4

Every file has one caption per line, already lower-cased and tokenized by :mod:`imcap.prepare_data`
(tokens separated by whitespace); line ``i`` of each reference file is one of the references of
line ``i`` of the hypotheses.

BLEU-1..4 are sacrebleu's corpus BLEU (Papineni et al. 2002; Post 2018, "A Call for Clarity in
Reporting BLEU Scores") with ``tokenize='none'``, no lower-casing (the text already is) and
sacrebleu's default ``exp`` smoothing (it only matters when some n-gram order has no match at all in
the whole corpus). BLEU-n uses n-grams up to order n with uniform weights; the brevity penalty takes
for each hypothesis the reference length closest to its own (ties: the shorter), as in sacrebleu and
the COCO caption evaluation. Scores are on the 0-100 scale.

More metric families (CIDEr-D, METEOR, ROUGE-L as the COCO caption evaluation defines them) plug
into :data:`METRICS`: a name mapped to a function ``(hypotheses, references) -> {key: score}``.
"""
import argparse
import json
import logging
import sys
from typing import Callable, Dict, List, Optional, Sequence

from sacrebleu.metrics import BLEU

from . import arguments
from . import constants as C
from .utils import check_condition, read_lines, run_main, setup_logging

logger = logging.getLogger(__name__)

BLEU_MAX_ORDER = 4

# (hypotheses, reference streams) -> {metric key: score}
MetricFunction = Callable[[List[str], List[List[str]]], Dict[str, float]]


def _references_per_segment(hypotheses: Sequence[str],
                            references: Sequence[Sequence[str]]) -> List[List[Optional[str]]]:
    """Check the reference streams and turn empty references into ``None``.

    sacrebleu 2.x skips a reference that is ``None`` (this is how it supports a variable number of
    references per segment) but would score an empty string ``''`` as a reference of length 0,
    which can lower the closest reference length and so cancel the brevity penalty. Empty or
    whitespace-only references are therefore dropped here.

    :param hypotheses: ``n`` hypotheses.
    :param references: ``k`` reference streams of ``n`` lines each.
    :return: the ``k`` streams, with ``None`` for each empty reference.
    :raises ImcapError: if there is no reference stream, a stream's length differs from ``n``, or a
        hypothesis has no non-empty reference.
    """
    check_condition(len(references) > 0, "no references given")
    for i, stream in enumerate(references):
        check_condition(len(stream) == len(hypotheses),
                        "reference stream %d has %d lines, the hypotheses have %d"
                        % (i, len(stream), len(hypotheses)))
    streams = [[ref if ref.strip() else None for ref in stream] for stream in references]
    for line, refs in enumerate(zip(*streams), 1):
        check_condition(any(ref is not None for ref in refs),
                        "line %d has no non-empty reference" % line)
    return streams


def bleu_scores(hypotheses: List[str], references: List[List[str]],
                max_order: int = BLEU_MAX_ORDER) -> Dict[str, float]:
    """Corpus BLEU-1 .. BLEU-``max_order`` of tokenized, lower-cased captions, with sacrebleu.

    :param hypotheses: one predicted caption per image (tokens separated by whitespace; an empty
        caption counts as zero tokens).
    :param references: reference streams, each a list parallel to ``hypotheses``; an image may have
        fewer references than there are streams: its empty lines are skipped.
    :param max_order: highest n-gram order.
    :return: ``{"bleu1": ..., "bleu<max_order>": ...}`` on the 0-100 scale.
    :raises ImcapError: if a stream is not parallel to the hypotheses or an image has no reference.
    """
    streams = _references_per_segment(hypotheses, references)
    hypotheses = [hyp if hyp is not None else "" for hyp in hypotheses]
    scores = {}
    for order in range(1, max_order + 1):
        # force=True: the text is tokenized on purpose, so no "forgot to detokenize" warning.
        bleu = BLEU(max_ngram_order=order, tokenize="none", lowercase=False, smooth_method="exp",
                    force=True)
        scores["bleu%d" % order] = float(bleu.corpus_score(hypotheses, streams).score)
    return scores


# Metric family name (``--metrics``) -> function. Add CIDEr-D, METEOR, ROUGE-L here.
METRICS = {
    C.METRIC_BLEU: bleu_scores,
}  # type: Dict[str, MetricFunction]


def evaluate(hypotheses: List[str], references: List[List[str]],
             metrics: Sequence[str] = (C.METRIC_BLEU,)) -> Dict[str, float]:
    """Scores of every metric family in ``metrics``, merged into one dict (see :data:`METRICS`).

    :raises ImcapError: for an unknown metric family or inconsistent inputs.
    """
    scores = {}  # type: Dict[str, float]
    for name in metrics:
        check_condition(name in METRICS, "unknown metric '%s' (choices: %s)" % (name, ", ".join(METRICS)))
        scores.update(METRICS[name](hypotheses, references))
    return scores


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m imcap.evaluate``."""
    group = parser.add_argument_group("Evaluation")
    group.add_argument("--hypotheses", "-i", required=True, type=arguments.regular_file,
                       help="Predicted captions, one per line (tokenized, lower-cased).")
    group.add_argument("--references", "-r", required=True, nargs="+", type=arguments.regular_file,
                       help="Reference caption files, each parallel to --hypotheses (empty lines: no "
                            "reference in that file for that image).")
    group.add_argument("--metrics", nargs="+", default=[C.METRIC_BLEU], choices=sorted(METRICS),
                       help="Metric families to compute.")
    group.add_argument("--json", action="store_true",
                       help="Print one JSON object instead of a table.")
    arguments.add_logging_args(parser)


def format_table(scores: Dict[str, float]) -> str:
    """A two-column text table (metric, value with 2 decimals), one metric per line."""
    width = max([len("metric")] + [len(key) for key in scores])
    lines = ["%-*s  %6s" % (width, "metric", "value")]
    lines += ["%-*s  %6.2f" % (width, key, value) for key, value in scores.items()]
    return "\n".join(lines) + "\n"


def run_evaluate(args: argparse.Namespace) -> Dict[str, float]:
    """Read the files named in ``args``, print the scores to STDOUT and return them.

    :raises ImcapError: if a reference file's line count differs from the hypotheses'.
    """
    hypotheses = read_lines(args.hypotheses)
    references = []
    for path in args.references:
        stream = read_lines(path)
        check_condition(len(stream) == len(hypotheses), "%s has %d lines, %s has %d"
                        % (path, len(stream), args.hypotheses, len(hypotheses)))
        references.append(stream)
    logger.info("Evaluating %d hypotheses against %d reference file(s)", len(hypotheses), len(references))
    scores = evaluate(hypotheses, references, args.metrics)
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
    args = parser.parse_args(argv)
    setup_logging(quiet=args.quiet)
    run_main(run_evaluate, args)


if __name__ == "__main__":
    main()
