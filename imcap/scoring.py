"""Caption metrics: predicted captions scored against reference captions (the library behind
``python -m imcap.evaluate``, also used by training's validation).

Every file has one caption per line, already lower-cased and tokenized by :mod:`imcap.prepare_data`
(tokens separated by whitespace); line ``i`` of each reference file is one of the references of
line ``i`` of the hypotheses. An empty reference line is dropped for its image (every image needs at
least one non-empty reference); runs of whitespace count as one separator.

Metric families (``--metrics`` of imcap.evaluate, default all of them), reported under these keys and scales:

``bleu``: ``bleu1`` .. ``bleu4``, 0-100.
    sacrebleu's corpus BLEU (Papineni et al. 2002; Post 2018, "A Call for Clarity in Reporting BLEU
    Scores") with ``tokenize='none'``, no lower-casing (the text already is) and sacrebleu's default
    ``exp`` smoothing (it only matters when some n-gram order has no match at all in the whole
    corpus). BLEU-n uses n-grams up to order n with uniform weights; the brevity penalty takes for
    each hypothesis the reference length closest to its own (ties: the shorter), as in sacrebleu and
    the COCO caption evaluation.
``meteor``: ``METEOR``, 0-100 (the COCO evaluation's 0-1 value times 100).
    METEOR 1.5 (Denkowski and Lavie 2014) as the COCO caption evaluation runs it: pycocoevalcap's
    ``Meteor``, i.e. ``meteor-1.5.jar - - -stdio -l en -norm`` (exact, stem, synonym and paraphrase
    matches), corpus score from the statistics of all images. It needs a Java runtime: when ``java``
    is not on PATH, METEOR is skipped with a one-line note on STDERR and the other metrics are
    reported (with the default ``--metrics``, so is a failure of the jar; asked for by name, that
    failure is an error). Runs of three or more ``|`` are removed from every caption first: ``|||`` separates the
    fields of the jar's input protocol (pycocoevalcap strips it from the hypothesis only).
``rouge``: ``ROUGE-L``, 0-100 (times 100 as well).
    pycocoevalcap's ``Rouge``: per image, the LCS-based F-measure
    ``(1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``, where P (R) is the best over the references of
    ``LCS / hypothesis length`` (``LCS / reference length``); the mean over the images.
``cider``: ``CIDEr-D``, on its own scale, NOT times 100: 0 for no shared n-gram, 10 at most (the
    hypothesis and all its references identical, with every n-gram order 1-4 present).
    pycocoevalcap's ``Cider`` class, which despite its name is CIDEr-D (Vedantam et al. 2015), the
    variant the COCO evaluation server reports as "CIDEr": TF-IDF vectors of 1- to 4-grams (raw counts,
    IDF from the references of the scored images), hypothesis counts clipped by the reference's,
    a Gaussian length penalty ``exp(-(len_hyp - len_ref)^2 / (2 * 6^2))``, the cosine averaged over
    the references and the four orders, times 10; no stemming. Papers usually print it times 100
    ("CIDEr 61.2" is 0.612 here). The IDF makes it a property of the whole test set: scores of
    different test sets, or of one image alone (always 0), are not comparable.

METEOR, ROUGE-L and CIDEr-D run on the given tokens: pycocoevalcap's PTB tokenizer is not used (the
text is tokenized already, as its output would be).

More metric families plug into :data:`METRICS`: a name mapped to a function
``(hypotheses, references) -> {key: score}``.
"""
import logging
import re
import shutil
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from sacrebleu.metrics import BLEU

from . import constants as C
from .utils import ImcapError, check_condition

logger = logging.getLogger(__name__)

BLEU_MAX_ORDER = 4

# Metric families (--metrics) besides C.METRIC_BLEU, and the keys they report.
METRIC_METEOR = "meteor"
METRIC_ROUGE = "rouge"
METRIC_CIDER = "cider"
KEY_METEOR = "METEOR"
KEY_ROUGE_L = "ROUGE-L"
KEY_CIDER_D = "CIDEr-D"
# Decimals in the text table: scores are on 0-100 except CIDEr-D (0-10, typically below 1.5).
TABLE_DECIMALS = {KEY_CIDER_D: 3}
METEOR_SKIPPED = "METEOR skipped: Java not found (pycocoevalcap's METEOR 1.5 needs `java` on PATH)"
# Field separator of the METEOR jar's stdio protocol; a run of 3+ '|' in a caption is removed.
_METEOR_SEPARATOR = re.compile(r"\|{3,}")

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
        # sacrebleu skips None references (a variable number per segment); its type hints do not say so
        scores["bleu%d" % order] = float(bleu.corpus_score(hypotheses, streams).score)  # type: ignore[arg-type]
    return scores


def coco_inputs(hypotheses: List[str], references: List[List[str]],
                for_meteor: bool = False) -> Tuple[Dict[int, List[str]], Dict[int, List[str]]]:
    """The ``(gts, res)`` dicts of pycocoevalcap's scorers, keyed by 0-based line number.

    Tokens are re-joined with single spaces (pycocoevalcap's ROUGE-L splits on ``' '`` and would
    count empty tokens); empty references are dropped. With ``for_meteor``, runs of three or more
    ``|`` are removed too (the METEOR jar's field separator), and references left empty by that.

    :return: ``gts`` (image -> its references) and ``res`` (image -> ``[hypothesis]``).
    :raises ImcapError: as :func:`_references_per_segment`, if there is no hypothesis, or if
        ``for_meteor`` leaves an image without a reference.
    """
    def clean(text: str) -> str:
        if for_meteor:
            text = _METEOR_SEPARATOR.sub("", text)
        return " ".join(text.split())

    check_condition(len(hypotheses) > 0, "no hypotheses to score")
    streams = _references_per_segment(hypotheses, references)
    gts: Dict[int, List[str]] = {}
    res: Dict[int, List[str]] = {}
    for i, hyp in enumerate(hypotheses):
        refs = [clean(ref) for ref in (stream[i] for stream in streams) if ref is not None]
        gts[i] = [ref for ref in refs if ref]
        check_condition(len(gts[i]) > 0, "line %d has no reference METEOR can read (only '|||')" % (i + 1))
        res[i] = [clean(hyp or "")]
    return gts, res


def _import_pycocoevalcap(module: str, name: str):
    """``pycocoevalcap.<module>.<name>``, imported on first use (BLEU alone does not need it)."""
    try:
        return getattr(__import__("pycocoevalcap.%s" % module, fromlist=[name]), name)
    except ImportError as e:
        raise ImcapError("the %s metric needs pycocoevalcap (pip install pycocoevalcap): %s" % (name, e))


def cider_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """CIDEr-D of the corpus (pycocoevalcap's ``Cider``, see the module docstring), 0-10 scale.

    :return: ``{"CIDEr-D": mean over the images}``.
    """
    gts, res = coco_inputs(hypotheses, references)
    score, _ = _import_pycocoevalcap("cider.cider", "Cider")().compute_score(gts, res)
    return {KEY_CIDER_D: float(score)}


def rouge_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """ROUGE-L (pycocoevalcap's ``Rouge``, F-measure with beta 1.2), mean over images, 0-100 scale."""
    gts, res = coco_inputs(hypotheses, references)
    score, _ = _import_pycocoevalcap("rouge.rouge", "Rouge")().compute_score(gts, res)
    return {KEY_ROUGE_L: 100.0 * float(score)}


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (METEOR needs it)."""
    return shutil.which("java") is not None


def _close_meteor(scorer) -> str:
    """Stop the METEOR jar of ``scorer`` without its lock (held forever if a call failed midway).

    :return: what the jar wrote on its STDERR (for error messages).
    """
    process = getattr(scorer, "meteor_p", None)
    if process is None:
        return ""
    try:
        process.stdin.close()
    except OSError:
        pass
    if process.poll() is None:
        process.kill()
    process.wait()
    try:
        return process.stderr.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    finally:
        process.stdout.close()
        process.stderr.close()


def meteor_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """METEOR 1.5 of the corpus (pycocoevalcap's ``Meteor``: one JVM for the call), 0-100 scale.

    :return: ``{"METEOR": ...}``, or ``{}`` after a note on STDERR if ``java`` is not on PATH.
    :raises ImcapError: if the jar fails (the message ends with its STDERR).
    """
    if not java_available():
        sys.stderr.write(METEOR_SKIPPED + "\n")
        sys.stderr.flush()
        return {}
    gts, res = coco_inputs(hypotheses, references, for_meteor=True)
    meteor_class = _import_pycocoevalcap("meteor.meteor", "Meteor")

    class _Meteor(meteor_class):  # type: ignore
        # Meteor.__del__ takes the lock, which a failed compute_score never releases: it would
        # hang the interpreter at exit. Stop the process without it.
        def __del__(self) -> None:
            _close_meteor(self)

    try:
        scorer = _Meteor()
    except OSError as e:
        raise ImcapError("METEOR: cannot start java (%s)" % e)
    try:
        score, _ = scorer.compute_score(gts, res)
    except (OSError, ValueError) as e:
        message = " ".join(_close_meteor(scorer).split())[-500:]
        raise ImcapError("METEOR (java -jar meteor-1.5.jar) failed: %s%s"
                         % (e, "; its stderr: " + message if message else ""))
    finally:
        _close_meteor(scorer)
    return {KEY_METEOR: 100.0 * float(score)}


# Metric family name (``--metrics``) -> function, in the order the scores are reported.
METRICS: Dict[str, MetricFunction] = {
    C.METRIC_BLEU: bleu_scores,
    METRIC_METEOR: meteor_scores,
    METRIC_ROUGE: rouge_scores,
    METRIC_CIDER: cider_scores,
}
DEFAULT_METRICS = tuple(METRICS)


def evaluate(hypotheses: List[str], references: List[List[str]],
             metrics: Sequence[str] = DEFAULT_METRICS, skip_failing: Sequence[str] = ()) -> Dict[str, float]:
    """Scores of every metric family in ``metrics``, merged into one dict (see :data:`METRICS`).

    The families run in the order of :data:`METRICS` whatever the order of ``metrics``; METEOR is
    left out (with a note on STDERR) when Java is missing.

    :param skip_failing: families whose failure (an :class:`ImcapError`, e.g. the METEOR jar crashing)
        is a one-line note on STDERR instead of an error: the others are still reported.
    :raises ImcapError: for an unknown metric family or inconsistent inputs.
    """
    for name in metrics:
        check_condition(name in METRICS, "unknown metric '%s' (choices: %s)" % (name, ", ".join(METRICS)))
    scores: Dict[str, float] = {}
    for name in METRICS:
        if name in metrics:
            try:
                scores.update(METRICS[name](hypotheses, references))
            except ImcapError as e:
                if name not in skip_failing:
                    raise
                sys.stderr.write("%s skipped: %s\n" % (name.upper(), e))
                sys.stderr.flush()
    return scores
