"""Score predicted captions against reference captions: ``python -m imcap.evaluate``.

    python -m imcap.evaluate --hypotheses test.pred --references test.captions.0 ... test.captions.4
    python -m imcap.evaluate ... --metrics bleu cider --json
    python -m imcap.evaluate ... --per-image test.per-image.jsonl --compare baseline.pred
    python -m imcap.evaluate --hypotheses test.samples --captions-per-image 5 --references ...

Every file has one caption per line, already lower-cased and tokenized by :mod:`imcap.prepare_data`; line ``i`` of
each reference file is one of the references of line ``i`` of the hypotheses. The metrics (BLEU-1..4 of sacrebleu
and of the coco-caption toolkit, METEOR, ROUGE-L, CIDEr-D), their scales and the sources they follow are described
in :mod:`imcap.scoring`; with ``--diversity`` (or ``--training-captions``) also the reference-free figures of
:mod:`imcap.diversity`; with ``--training-captions`` also fluency under an n-gram language model of them
(:mod:`imcap.fluency`: the mean log2-probability per word, and SLOR).

Several captions per image (an n-best list, samples): ``--captions-per-image N`` reads N consecutive lines per image,
and a hypotheses file whose first line is a JSON object is read as the captioner's ``--output-type json`` (its
``caption``, and its ``nbest`` list as the image's captions). The first caption of each image is scored as the
system's caption; the sets add the figures of :func:`imcap.diversity.set_diversity_scores` and the oracle and mean
CIDEr-D. ``--per-image FILE`` writes each image's scores as JSON lines (``visualize worst-best`` draws them);
``--compare OTHER`` tests the difference from another system on the same images (:mod:`imcap.significance`).
"""
import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import arguments
from .diversity import diversity_scores, set_diversity_scores
from .fluency import DEFAULT_ORDER, KEY_FLUENCY, KEY_SLOR, CaptionLanguageModel
from .scoring import DEFAULT_METRICS, JAVA_METRICS, KEY_CIDER_D, METRICS, TABLE_DECIMALS, MetricScores, \
    evaluate_detailed, metric_label, set_cider_scores
from .tokenizer import SCORING_CHOICES, load_tokenizer, segment_for_scoring
from .significance import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED, Comparison, compare_systems
from .utils import ImcapError, atomic_open, check_condition, read_lines

logger = logging.getLogger("imcap.evaluate")


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m imcap.evaluate``."""
    group = parser.add_argument_group(
        "Evaluation",
        "Scales: BLEU, METEOR and ROUGE-L on 0-100; CIDEr-D raw (0-10, papers print it x100). Two BLEUs, each "
        "labelled: sacrebleu's on the given tokens (bleu1..4, imcap's tables) and the coco-caption toolkit's after its "
        "PTB tokenizer (coco-bleu1..4, what papers print). METEOR, ROUGE-L and CIDEr-D are the COCO caption "
        "evaluation's (pycocoevalcap) on the given tokens; METEOR and the coco-caption BLEU need Java and are skipped "
        "with a note when 'java' is not on PATH.")
    group.add_argument("--hypotheses", "-i", required=True, type=arguments.regular_file,
                       help="Predicted captions, one per line (tokenized, lower-cased); or N per image with "
                            "--captions-per-image; or the captioner's --output-type json (recognized by its first "
                            "line, a JSON object), whose 'nbest' lists are the images' sets of captions.")
    group.add_argument("--references", "-r", required=True, nargs="+", type=arguments.regular_file,
                       help="Reference caption files, one line per image (empty lines: no reference in that file "
                            "for that image).")
    group.add_argument("--captions-per-image", type=arguments.int_greater_or_equal(1), default=1, metavar="N",
                       help="--hypotheses (and --compare) hold N consecutive lines per image: the first is scored as "
                            "the caption, the N as a set (distinct-n and self-BLEU within it, oracle and mean "
                            "CIDEr-D).")
    group.add_argument("--metrics", nargs="+", default=None, choices=list(METRICS),
                       help="Metric families to compute: bleu (sacrebleu BLEU-1..4), coco-bleu (coco-caption's "
                            "BLEU-1..4), meteor, rouge (ROUGE-L), cider (CIDEr-D). Default: all available (METEOR and "
                            "coco-bleu are then skipped with a note if Java is missing or fails; named here, a "
                            "failure is an error).")
    group.add_argument("--per-image", default=None, metavar="FILE",
                       help="Also write each image's scores as JSON lines to FILE: line, hypothesis, references, "
                            "sentence-bleu4 (sacrebleu), coco-bleu4, METEOR, ROUGE-L, CIDEr-D (as computed), and "
                            "with several captions per image each one's CIDEr-D.")
    group.add_argument("--diversity", action="store_true",
                       help="Also report how varied and repetitive the hypotheses are (imcap.diversity): the share of "
                            "captions with a repeated trigram, distinct captions, vocabulary used, distinct-1 and "
                            "distinct-2.")
    group.add_argument("--training-captions", default=None, type=arguments.regular_file,
                       help="Training captions, one per line (e.g. a data dir's train.captions, read as text by the "
                            "tokenizer recorded beside it: SentencePiece's pieces decoded): also report the share of "
                            "hypotheses that are no training caption (novel-%%), implying --diversity, and fluency: "
                            "the mean log2-probability per word of the hypotheses under an interpolated Kneser-Ney "
                            "n-gram model of these captions (NLTK; closer to 0 is more fluent), and SLOR, the same "
                            "minus the words' unigram log2-probabilities (how well the words fit together, whatever "
                            "their frequency; higher is more fluent).")
    group.add_argument("--language-model-order", type=arguments.int_greater_or_equal(1), default=DEFAULT_ORDER,
                       help="The n-gram order of the fluency model.")
    group.add_argument("--tokenize", choices=SCORING_CHOICES, default="none",
                       help="How hypotheses and references are segmented before every metric: none (as given, "
                            "words separated by spaces), zh (sacrebleu's Chinese tokenizer: each Chinese character a "
                            "token), char (every character), jieba (jieba's Chinese words, as Li et al. 2016 scored "
                            "Flickr8k-CN). METEOR and the coco-caption BLEU are English only: not computed with zh, "
                            "char or jieba.")
    group.add_argument("--json", action="store_true",
                       help="Print one JSON object instead of a table.")
    _add_compare_args(parser)
    arguments.add_logging_args(parser)


def _add_compare_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Comparison", "Paired bootstrap resampling (Koehn 2004) of --hypotheses (A) against another system (B) on the "
                      "same images: A - B, its 95% interval and a p-value for BLEU-4 (sacrebleu) and CIDEr-D.")
    group.add_argument("--compare", default=None, type=arguments.regular_file, metavar="OTHER",
                       help="Captions of another system for the same images, in the same order, read as "
                            "--hypotheses is.")
    group.add_argument("--bootstrap-samples", type=arguments.int_greater_or_equal(1), default=BOOTSTRAP_SAMPLES,
                       help="Resamples of the test set.")
    group.add_argument("--seed", type=int, default=BOOTSTRAP_SEED,
                       help="Seed of the resampling (the default is sacrebleu's: the same resamples as its paired "
                            "bootstrap).")


def _json_captions(text: str, path: str, line: int) -> Tuple[str, List[str]]:
    """The caption and the set of captions (``nbest``, else the caption alone) of one captioner JSON line."""
    where = "%s line %d" % (path, line)
    try:
        record = json.loads(text)
    except ValueError as e:
        raise ImcapError("%s: not JSON (%s); the first line is, so every line must be a captioner JSON object"
                         % (where, e))
    check_condition(isinstance(record, dict) and isinstance(record.get("caption"), str),
                    "%s: no 'caption' string (expected the captioner's --output-type json)" % where)
    nbest = record.get("nbest") or [{"caption": record["caption"]}]
    check_condition(isinstance(nbest, list) and all(isinstance(n, dict) and isinstance(n.get("caption"), str)
                                                    for n in nbest),
                    "%s: 'nbest' is not a list of {\"caption\": ...}" % where)
    return record["caption"], [n["caption"] for n in nbest]


def parse_caption_sets(lines: Sequence[str], path: str, per_image: int = 1) -> Tuple[List[str], List[List[str]]]:
    """The caption of each image and its set of captions, from the lines of a hypotheses file: ``per_image``
    consecutive lines per image (the first is the caption), or captioner JSON lines (first line a JSON object).

    :raises ImcapError: naming the file (and line) for a line count that is no multiple of ``per_image``, a JSON
        file with ``per_image`` > 1 or a bad JSON line.
    """
    if lines and lines[0].lstrip().startswith("{"):
        check_condition(per_image == 1, "%s is the captioner's JSON: its sets of captions are its 'nbest' lists, "
                                        "not --captions-per-image %d" % (path, per_image))
        read = [_json_captions(text, path, number) for number, text in enumerate(lines, 1)]
        return [caption for caption, _ in read], [captions for _, captions in read]
    check_condition(len(lines) % per_image == 0, "%s has %d lines, not a multiple of --captions-per-image %d"
                    % (path, len(lines), per_image))
    sets = [list(lines[i:i + per_image]) for i in range(0, len(lines), per_image)]
    return [captions[0] for captions in sets], sets


def read_references(paths: Sequence[str], hypotheses_path: str, num_images: int, per_image: int) -> List[List[str]]:
    """The reference streams, each checked to have one line per image of the hypotheses."""
    references = []
    for path in paths:
        stream = read_lines(path)
        check_condition(len(stream) == num_images, "%s has %d lines, %s has %d%s" % (
            path, len(stream), hypotheses_path, num_images * per_image,
            "" if per_image == 1 else " (%d images x %d captions)" % (num_images, per_image)))
        references.append(stream)
    return references


def _decimals(key: str) -> int:
    """Decimals of a score in the table: CIDEr-D, distinct-n, fluency and SLOR 3, the others 2."""
    return TABLE_DECIMALS.get(key, 3 if ("distinct-" in key and key[-1].isdigit()) or key in (KEY_FLUENCY, KEY_SLOR)
                              else 2)


def format_table(scores: Dict[str, float]) -> str:
    """A two-column text table (metric, value), one metric per line under its label (which BLEU each BLEU is):
    2 decimals, CIDEr-D and distinct-n 3."""
    width = max([len("metric")] + [len(metric_label(key)) for key in scores])
    lines = ["%-*s  %6s" % (width, "metric", "value")]
    lines += ["%-*s  %6.*f" % (width, metric_label(key), _decimals(key), value) for key, value in scores.items()]
    return "\n".join(lines) + "\n"


def format_comparison(comparisons: Sequence[Comparison], system: str, other: str, images: int, samples: int,
                      seed: int) -> str:
    """The table of ``--compare``: per metric A, B, A - B, its 95% interval and the p-value."""
    width = max(len(c.label) for c in comparisons)
    lines = ["paired bootstrap (Koehn 2004): A = %s, B = %s, %d images, %d resamples, seed %d"
             % (system, other, images, samples, seed),
             "%-*s  %7s  %7s  %8s  %-20s  %7s" % (width, "metric", "A", "B", "A - B", "95% interval", "p-value")]
    for c in comparisons:
        digits = _decimals(c.key)
        interval = "[%+.*f, %+.*f]" % (digits, c.low, digits, c.high)
        lines.append("%-*s  %7.*f  %7.*f  %+8.*f  %-20s  %7.3f" % (width, c.label, digits, c.system, digits, c.other,
                                                                   digits, c.difference, interval, c.p_value))
    return "\n".join(lines) + "\n"


def per_image_records(hypotheses: Sequence[str], references: Sequence[Sequence[str]], scores: MetricScores,
                      sets: Optional[List[List[str]]] = None,
                      set_cider: Optional[List[List[float]]] = None) -> List[Dict[str, Any]]:
    """One JSON object per image for ``--per-image``: its line (1-based), caption, non-empty references and
    per-image scores; with sets, each caption of the set with its CIDEr-D."""
    records = []
    for i, hypothesis in enumerate(hypotheses):
        record: Dict[str, Any] = {"line": i + 1, "hypothesis": hypothesis,
                                  "references": [stream[i] for stream in references if stream[i].strip()]}
        record.update((key, values[i]) for key, values in scores.images.items())
        if sets is not None and set_cider is not None:
            record["captions"] = [{"caption": c, KEY_CIDER_D: s} for c, s in zip(sets[i], set_cider[i])]
        records.append(record)
    return records


def _training_captions(path: str, scheme: str) -> List[str]:
    """The training captions of ``path`` (the model's tokens, one caption a line) in the hypotheses' segmentation:
    as text by the tokenizer recorded beside the file (a data dir's ``tokenizer.json``: SentencePiece's pieces
    decoded into words; none recorded: the tokens as they are), then segmented by ``scheme`` (a model of Chinese
    characters, scored on jieba's words, is compared with its training captions as jieba's words too).

    :raises ImcapError: if the recorded tokenizer cannot be loaded (naming its file).
    """
    tokenizer = load_tokenizer(os.path.dirname(os.path.abspath(path)))
    return [segment_for_scoring(tokenizer.scoring_text(line.split()), scheme) for line in read_lines(path)]


def _write_json_lines(path: str, records: Sequence[Dict[str, Any]]) -> None:
    with atomic_open(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    logger.info("Wrote the scores of %d images to %s", len(records), path)


def _read_systems(args: argparse.Namespace) -> Tuple[List[str], List[List[str]], Optional[List[str]]]:
    """The captions and sets of --hypotheses, and the captions of --compare (checked to be as many lines)."""
    lines = read_lines(args.hypotheses)
    hypotheses, sets = parse_caption_sets(lines, args.hypotheses, args.captions_per_image)
    if args.compare is None:
        return hypotheses, sets, None
    other_lines = read_lines(args.compare)
    check_condition(len(other_lines) == len(lines), "%s has %d lines, %s has %d: --compare needs the captions of the "
                    "same images, in the same order" % (args.compare, len(other_lines), args.hypotheses, len(lines)))
    return hypotheses, sets, parse_caption_sets(other_lines, args.compare, args.captions_per_image)[0]


def _compare(args: argparse.Namespace, hypotheses: List[str], other: List[str],
             references: List[List[str]]) -> Tuple[List[Comparison], Dict[str, Any]]:
    """Run ``--compare``: the comparisons and their JSON form."""
    comparisons = compare_systems(hypotheses, other, references, args.bootstrap_samples, args.seed)
    summary: Dict[str, Any] = {"system": args.hypotheses, "other": args.compare, "images": len(hypotheses),
                               "bootstrap_samples": args.bootstrap_samples, "seed": args.seed}
    summary.update((c.key, {"label": c.label, "system": c.system, "other": c.other, "difference": c.difference,
                            "low": c.low, "high": c.high, "p_value": c.p_value}) for c in comparisons)
    return comparisons, summary


def _metrics_for(args: argparse.Namespace) -> List[str]:
    """The metric families to compute: ``--metrics``, else the default; without the English-only ones (METEOR and
    the coco-caption BLEU, whose tokenizer is the PTB's) for a Chinese ``--tokenize``.

    :raises ImcapError: if an English-only metric is asked for with a Chinese ``--tokenize``.
    """
    if args.tokenize == "none":
        return list(args.metrics or DEFAULT_METRICS)
    english = [m for m in (args.metrics or []) if m in JAVA_METRICS]
    check_condition(not english, "--metrics %s: English only, not with --tokenize %s" % (" ".join(english),
                                                                                            args.tokenize))
    return [m for m in (args.metrics or DEFAULT_METRICS) if m not in JAVA_METRICS]


def _segmented(scheme: str, hypotheses: List[str], references: List[List[str]], sets: List[List[str]],
               other: Optional[List[str]]) -> Tuple[List[str], List[List[str]], List[List[str]], Optional[List[str]]]:
    """Every caption segmented by ``scheme`` (:func:`imcap.tokenizer.segment_for_scoring`)."""
    def segment(captions: Sequence[str]) -> List[str]:
        return [segment_for_scoring(c, scheme) for c in captions]
    return (segment(hypotheses), [segment(stream) for stream in references], [segment(s) for s in sets],
            None if other is None else segment(other))


def run_evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    """Read the files named in ``args``, print the scores to STDOUT (and the comparison), write the per-image scores,
    and return the scores (with ``comparison`` after ``--compare``, as ``--json`` prints them).

    :raises ImcapError: if a reference file's or the compared file's line count differs from the hypotheses', or no
        metric could be computed (METEOR alone without Java).
    """
    hypotheses, sets, other = _read_systems(args)
    references = read_references(args.references, args.hypotheses, len(hypotheses), args.captions_per_image)
    logger.info("Evaluating %d hypotheses against %d reference file(s)", len(hypotheses), len(references))
    metrics = _metrics_for(args)
    if args.tokenize != "none":
        hypotheses, references, sets, other = _segmented(args.tokenize, hypotheses, references, sets, other)
    detailed = evaluate_detailed(hypotheses, references, metrics, skip_failing=() if args.metrics else JAVA_METRICS,
                                 per_image=args.per_image is not None)
    scores: Dict[str, Any] = dict(detailed.corpus)
    check_condition(len(scores) > 0, "no metric computed (%s)" % ", ".join(metrics))
    if args.diversity or args.training_captions:
        training = _training_captions(args.training_captions, args.tokenize) if args.training_captions else None
        scores.update(diversity_scores(hypotheses, training))
    if args.training_captions:
        check_condition(any(line.strip() for line in training or []), "%s: no captions to fit a language model on"
                        % args.training_captions)
        language_model = CaptionLanguageModel([line.split() for line in training or []], args.language_model_order)
        scores.update(language_model.corpus_scores([h.split() for h in hypotheses]))
    set_cider = None
    if any(len(captions) > 1 for captions in sets):
        set_scores, set_cider = set_cider_scores(sets, references)
        scores.update(set_diversity_scores(sets))
        scores.update(set_scores)
    if args.per_image:
        _write_json_lines(args.per_image, per_image_records(hypotheses, references, detailed, sets, set_cider))
    comparisons: List[Comparison] = []
    if other is not None:
        comparisons, scores["comparison"] = _compare(args, hypotheses, other, references)
    if args.json:
        sys.stdout.write(json.dumps(scores) + "\n")
    else:
        sys.stdout.write(format_table({k: v for k, v in scores.items() if k != "comparison"}))
        if comparisons:
            sys.stdout.write("\n" + format_comparison(comparisons, args.hypotheses, args.compare, len(hypotheses),
                                                      args.bootstrap_samples, args.seed))
    sys.stdout.flush()
    return scores


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m imcap.evaluate``."""
    parser = arguments.new_parser(__doc__.strip().splitlines()[0])
    add_evaluate_args(parser)
    arguments.cli_main(parser, run_evaluate, argv)


if __name__ == "__main__":
    main()
