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
    the COCO caption evaluation. Printed as ``BLEU-n (sacrebleu, tok:none)``: the figure of imcap's own tables.
``coco-bleu``: ``coco-bleu1`` .. ``coco-bleu4``, 0-100 (the toolkit's 0-1 value times 100).
    BLEU as the COCO caption evaluation toolkit computes it, the figure captioning papers print (Show, Attend and
    Tell and the papers on the Karpathy splits): every caption through pycocoevalcap's ``PTBTokenizer`` (Stanford
    CoreNLP 3.4.1's PTB tokenizer, lower-cased, punctuation removed: one JVM for all the captions), then its
    ``Bleu(4)`` (corpus BLEU, closest reference length, no smoothing but the toolkit's own tiny constants), exactly
    as ``COCOEvalCap.evaluate`` does. Printed as ``BLEU-n (coco-caption, PTB)``. It needs Java as METEOR does
    (skipped with a note when ``java`` is not on PATH). The two BLEUs differ by tokenization (the PTB tokenizer
    splits "t-shirt" and drops punctuation; imcap's files are tokenized already) and smoothing, typically by a few
    tenths: compare a paper's BLEU with ``coco-bleu4``, imcap's own table with ``bleu4``.
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

Per-image scores (:func:`evaluate_detailed` with ``per_image=True``, ``evaluate --per-image``): each family also
gives one score per image where it has one: ``sentence-bleu4`` (sacrebleu's sentence BLEU-4: effective order, ``exp``
smoothing), ``coco-bleu4`` (the toolkit's per-image BLEU-4, as ``COCOEvalCap.imgToEval``), ``METEOR`` (the jar's
segment scores), ``ROUGE-L`` and ``CIDEr-D`` (each image's CIDEr-D with the document frequencies of the whole
reference set: their mean is the corpus CIDEr-D). :func:`cider_of_sets` scores several captions per image the same
way (``oracle-CIDEr-D``, ``mean-CIDEr-D``).

More metric families plug into :data:`METRICS`: a name mapped to a function
``(hypotheses, references, per_image) -> MetricScores``.
"""
import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, Hashable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from sacrebleu.metrics import BLEU

from . import constants as C
from .utils import ImcapError, check_condition

logger = logging.getLogger(__name__)

BLEU_MAX_ORDER = 4

# Metric families (--metrics) besides C.METRIC_BLEU, and the keys they report.
METRIC_COCO_BLEU = "coco-bleu"
METRIC_METEOR = "meteor"
METRIC_ROUGE = "rouge"
METRIC_CIDER = "cider"
KEY_METEOR = "METEOR"
KEY_ROUGE_L = "ROUGE-L"
KEY_CIDER_D = "CIDEr-D"
KEY_SENTENCE_BLEU = "sentence-bleu4"   # per image: sacrebleu's sentence BLEU-4
KEY_ORACLE_CIDER_D = "oracle-CIDEr-D"  # several captions per image: the mean of each image's best CIDEr-D
KEY_MEAN_CIDER_D = "mean-CIDEr-D"      # ... and of all its captions' CIDEr-D
COCO_BLEU_PREFIX = "coco-bleu"
# Decimals in the text table: scores are on 0-100 except CIDEr-D (0-10, typically below 1.5).
TABLE_DECIMALS = {KEY_CIDER_D: 3, KEY_ORACLE_CIDER_D: 3, KEY_MEAN_CIDER_D: 3}
METEOR_SKIPPED = "METEOR skipped: Java not found (pycocoevalcap's METEOR 1.5 needs `java` on PATH)"
COCO_BLEU_SKIPPED = "BLEU (coco-caption) skipped: Java not found (pycocoevalcap's PTB tokenizer needs `java` on PATH)"
# What the Stanford PTB tokenizer always writes on STDERR: dropped, anything else is passed on.
_PTB_CHATTER = re.compile(r"^PTBTokenizer tokenized \d+ tokens")
# Field separator of the METEOR jar's stdio protocol; a run of 3+ '|' in a caption is removed.
_METEOR_SEPARATOR = re.compile(r"\|{3,}")



class MetricScores(NamedTuple):
    """What metric families computed: ``corpus`` maps a key to its score on the whole test set, ``images`` a key to
    one score per image (parallel to the hypotheses; only the keys a family has per-image scores for)."""
    corpus: Dict[str, float]
    images: Dict[str, List[float]]


# (hypotheses, reference streams, per_image) -> MetricScores; per_image asks for scores that cost extra
MetricFunction = Callable[[List[str], List[List[str]], bool], MetricScores]


def metric_label(key: str) -> str:
    """The name a table prints for ``key``: which BLEU each BLEU is (``bleu4`` is ``BLEU-4 (sacrebleu, tok:none)``,
    ``coco-bleu4`` ``BLEU-4 (coco-caption, PTB)``, ``self-BLEU-4`` sacrebleu's too); other keys as they are."""
    match = re.match(r"^(coco-bleu|bleu|self-BLEU-)(\d)$", key)
    if not match:
        return key
    prefix, order = match.groups()
    if prefix == COCO_BLEU_PREFIX:
        return "BLEU-%s (coco-caption, PTB)" % order
    return "%s-%s (sacrebleu, tok:none)" % ("BLEU" if prefix == "bleu" else "self-BLEU", order)


def _note(message: str) -> None:
    """One line on STDERR at once (a metric skipped)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def references_per_segment(hypotheses: Sequence[str],
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
    streams = references_per_segment(hypotheses, references)
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
    :raises ImcapError: as :func:`references_per_segment`, if there is no hypothesis, or if
        ``for_meteor`` leaves an image without a reference.
    """
    def clean(text: str) -> str:
        if for_meteor:
            text = _METEOR_SEPARATOR.sub("", text)
        return " ".join(text.split())

    check_condition(len(hypotheses) > 0, "no hypotheses to score")
    streams = references_per_segment(hypotheses, references)
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


def sentence_bleu_scores(hypotheses: List[str], references: List[List[str]]) -> List[float]:
    """Each image's sacrebleu sentence BLEU-4 (0-100; its tokenizer off, ``exp`` smoothing, effective order: what
    sacrebleu's ``sentence_bleu`` recommends), against its non-empty references."""
    streams = references_per_segment(hypotheses, references)
    bleu = BLEU(tokenize="none", lowercase=False, smooth_method="exp", effective_order=True, force=True)
    return [float(bleu.sentence_score(hyp or "", [ref for ref in refs if ref is not None]).score)
            for hyp, refs in zip(hypotheses, zip(*streams))]


def score_bleu(hypotheses: List[str], references: List[List[str]], per_image: bool = False) -> MetricScores:
    """The ``bleu`` family: :func:`bleu_scores`, and with ``per_image`` each image's ``sentence-bleu4``."""
    images = {KEY_SENTENCE_BLEU: sentence_bleu_scores(hypotheses, references)} if per_image else {}
    return MetricScores(bleu_scores(hypotheses, references), images)


def score_cider(hypotheses: List[str], references: List[List[str]], per_image: bool = False) -> MetricScores:
    """CIDEr-D of the corpus (pycocoevalcap's ``Cider``, see the module docstring), 0-10 scale, and of each image
    (with the document frequencies of the whole reference set: the corpus score is their mean)."""
    gts, res = coco_inputs(hypotheses, references)
    score, scores = _import_pycocoevalcap("cider.cider", "Cider")().compute_score(gts, res)
    return MetricScores({KEY_CIDER_D: float(score)}, {KEY_CIDER_D: [float(x) for x in scores]})


def cider_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """``{"CIDEr-D": mean over the images}`` (:func:`score_cider`)."""
    return score_cider(hypotheses, references).corpus


def cider_of_sets(caption_sets: Sequence[Sequence[str]], references: List[List[str]]) -> List[List[float]]:
    """The CIDEr-D of every caption of several per image (``caption_sets[i]``: image ``i``'s, at least one), each
    with the document frequencies of the whole reference set, as :func:`score_cider` scores one caption per image:
    one ``Cider`` run per rank, the ``k``-th captions of every image (an image with fewer fills in an empty one,
    whose score is dropped)."""
    check_condition(all(len(s) > 0 for s in caption_sets), "an image without any caption")
    scores: List[List[float]] = [[] for _ in caption_sets]
    for rank in range(max(len(s) for s in caption_sets)):
        column = [s[rank] if rank < len(s) else "" for s in caption_sets]
        for image, score in enumerate(score_cider(column, references).images[KEY_CIDER_D]):
            if rank < len(caption_sets[image]):
                scores[image].append(score)
    return scores


def set_cider_scores(caption_sets: Sequence[Sequence[str]], references: List[List[str]]
                     ) -> Tuple[Dict[str, float], List[List[float]]]:
    """``oracle-CIDEr-D`` (the mean over the images of each image's best caption's CIDEr-D) and ``mean-CIDEr-D`` (the
    mean over every caption), with the CIDEr-D of every caption (:func:`cider_of_sets`)."""
    scores = cider_of_sets(caption_sets, references)
    oracle = sum(max(s) for s in scores) / len(scores)
    mean = sum(sum(s) for s in scores) / sum(len(s) for s in scores)
    return {KEY_ORACLE_CIDER_D: oracle, KEY_MEAN_CIDER_D: mean}, scores


def score_rouge(hypotheses: List[str], references: List[List[str]], per_image: bool = False) -> MetricScores:
    """ROUGE-L (pycocoevalcap's ``Rouge``, F-measure with beta 1.2), mean over images and per image, 0-100 scale."""
    gts, res = coco_inputs(hypotheses, references)
    score, scores = _import_pycocoevalcap("rouge.rouge", "Rouge")().compute_score(gts, res)
    return MetricScores({KEY_ROUGE_L: 100.0 * float(score)}, {KEY_ROUGE_L: [100.0 * float(x) for x in scores]})


def rouge_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """``{"ROUGE-L": mean over the images}`` (:func:`score_rouge`)."""
    return score_rouge(hypotheses, references).corpus


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


@contextlib.contextmanager
def _stderr_into(captured: List[str]) -> Iterator[None]:
    """While the block runs, what is written on file descriptor 2 (a child process's STDERR: the JVM's) goes into a
    temporary file, appended to ``captured`` as text at the end."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            captured.append(capture.read().decode("utf-8", "replace"))


def ptb_tokenize(captions: Dict[Hashable, List[str]]) -> Dict[Hashable, List[str]]:
    """Every caption through pycocoevalcap's ``PTBTokenizer`` (as ``COCOEvalCap`` tokenizes; one JVM for all): key ->
    its captions, tokenized, lower-cased, punctuation removed. The tokenizer's count of tokens on STDERR is dropped.

    :raises ImcapError: if the tokenizer cannot run or does not give back every caption (with what Java said).
    """
    tokenizer = _import_pycocoevalcap("tokenizer.ptbtokenizer", "PTBTokenizer")()
    captured: List[str] = []
    try:
        with _stderr_into(captured):
            tokenized = tokenizer.tokenize({key: [{"caption": c} for c in texts] for key, texts in captions.items()})
    except OSError as e:
        raise ImcapError("coco-caption BLEU: cannot run the PTB tokenizer (java): %s" % e)
    said = [line for line in captured[0].splitlines() if line.strip() and not _PTB_CHATTER.match(line)]
    lost = [key for key, texts in captions.items() if len(tokenized.get(key, [])) != len(texts)]
    if lost:
        raise ImcapError("coco-caption BLEU: the PTB tokenizer (java) gave back %d of %d captions%s" % (
            sum(len(tokenized.get(key, [])) for key in captions), sum(len(t) for t in captions.values()),
            "; its stderr: " + " ".join(" ".join(said).split())[-500:] if said else ""))
    if said:
        _note("\n".join(said))
    return tokenized


def score_coco_bleu(hypotheses: List[str], references: List[List[str]], per_image: bool = False) -> MetricScores:
    """The ``coco-bleu`` family: BLEU-1..4 as ``COCOEvalCap`` computes them (``PTBTokenizer``, then ``Bleu(4)``),
    0-100, and each image's BLEU-4 (``coco-bleu4``); ``{}`` after a note on STDERR if ``java`` is not on PATH.

    :raises ImcapError: if the tokenizer fails.
    """
    if not java_available():
        _note(COCO_BLEU_SKIPPED)
        return MetricScores({}, {})
    gts, res = coco_inputs(hypotheses, references)
    keyed: Dict[Hashable, List[str]] = {("ref", i): refs for i, refs in gts.items()}
    keyed.update({("hyp", i): hyp for i, hyp in res.items()})
    tokenized = ptb_tokenize(keyed)
    gts = {i: tokenized[("ref", i)] for i in gts}
    res = {i: tokenized[("hyp", i)] for i in res}
    bleu, per_order = _import_pycocoevalcap("bleu.bleu", "Bleu")(BLEU_MAX_ORDER).compute_score(gts, res, verbose=0)
    corpus = {"%s%d" % (COCO_BLEU_PREFIX, n + 1): 100.0 * float(b) for n, b in enumerate(bleu)}
    return MetricScores(corpus, {"%s%d" % (COCO_BLEU_PREFIX, BLEU_MAX_ORDER): [100.0 * x for x in per_order[-1]]})


def coco_bleu_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """``{"coco-bleu1": ..., "coco-bleu4": ...}`` (:func:`score_coco_bleu`)."""
    return score_coco_bleu(hypotheses, references).corpus


def _meteor_scorer() -> Any:
    """pycocoevalcap's ``Meteor`` (its JVM started), made safe to delete after a failed call."""
    meteor_class = _import_pycocoevalcap("meteor.meteor", "Meteor")

    class _Meteor(meteor_class):  # type: ignore
        # Meteor.__del__ takes the lock, which a failed compute_score never releases: it would
        # hang the interpreter at exit. Stop the process without it.
        def __del__(self) -> None:
            _close_meteor(self)

    try:
        return _Meteor()
    except OSError as e:
        raise ImcapError("METEOR: cannot start java (%s)" % e)


def score_meteor(hypotheses: List[str], references: List[List[str]], per_image: bool = False) -> MetricScores:
    """METEOR 1.5 of the corpus and of each image (pycocoevalcap's ``Meteor``: one JVM for the call), 0-100 scale.

    :return: ``METEOR`` scores, or none after a note on STDERR if ``java`` is not on PATH.
    :raises ImcapError: if the jar fails (the message ends with its STDERR).
    """
    if not java_available():
        _note(METEOR_SKIPPED)
        return MetricScores({}, {})
    gts, res = coco_inputs(hypotheses, references, for_meteor=True)
    scorer = _meteor_scorer()
    try:
        score, scores = scorer.compute_score(gts, res)
    except (OSError, ValueError) as e:
        message = " ".join(_close_meteor(scorer).split())[-500:]
        raise ImcapError("METEOR (java -jar meteor-1.5.jar) failed: %s%s"
                         % (e, "; its stderr: " + message if message else ""))
    finally:
        _close_meteor(scorer)
    return MetricScores({KEY_METEOR: 100.0 * float(score)}, {KEY_METEOR: [100.0 * float(x) for x in scores]})


def meteor_scores(hypotheses: List[str], references: List[List[str]]) -> Dict[str, float]:
    """``{"METEOR": ...}``, or ``{}`` without Java (:func:`score_meteor`)."""
    return score_meteor(hypotheses, references).corpus


# Metric family name (``--metrics``) -> function, in the order the scores are reported.
METRICS: Dict[str, MetricFunction] = {
    C.METRIC_BLEU: score_bleu,
    METRIC_COCO_BLEU: score_coco_bleu,
    METRIC_METEOR: score_meteor,
    METRIC_ROUGE: score_rouge,
    METRIC_CIDER: score_cider,
}
DEFAULT_METRICS = tuple(METRICS)
# Families the command line's default skips with a note when they fail (Java is there, the jar or tokenizer fails).
JAVA_METRICS = (METRIC_COCO_BLEU, METRIC_METEOR)


def evaluate_detailed(hypotheses: List[str], references: List[List[str]], metrics: Sequence[str] = DEFAULT_METRICS,
                      skip_failing: Sequence[str] = (), per_image: bool = False) -> MetricScores:
    """Scores of every metric family in ``metrics``, merged (see :data:`METRICS`); with ``per_image`` also the scores
    that cost extra per image (sacrebleu's sentence BLEU).

    The families run in the order of :data:`METRICS` whatever the order of ``metrics``; METEOR and the coco-caption
    BLEU are left out (with a note on STDERR) when Java is missing.

    :param skip_failing: families whose failure (an :class:`ImcapError`, e.g. the METEOR jar crashing)
        is a one-line note on STDERR instead of an error: the others are still reported.
    :raises ImcapError: for an unknown metric family or inconsistent inputs.
    """
    for name in metrics:
        check_condition(name in METRICS, "unknown metric '%s' (choices: %s)" % (name, ", ".join(METRICS)))
    merged = MetricScores({}, {})
    for name in METRICS:
        if name in metrics:
            try:
                scores = METRICS[name](hypotheses, references, per_image)
            except ImcapError as e:
                if name not in skip_failing:
                    raise
                _note("%s skipped: %s" % (name.upper(), e))
                continue
            merged.corpus.update(scores.corpus)
            merged.images.update(scores.images)
    return merged


def evaluate(hypotheses: List[str], references: List[List[str]],
             metrics: Sequence[str] = DEFAULT_METRICS, skip_failing: Sequence[str] = ()) -> Dict[str, float]:
    """The corpus scores of :func:`evaluate_detailed`: every family in ``metrics``, merged into one dict."""
    return evaluate_detailed(hypotheses, references, metrics, skip_failing).corpus
