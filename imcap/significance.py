"""Is one system better than another on the same images, or is the difference what the choice of images gives?
Paired bootstrap resampling (Koehn 2004, "Statistical Significance Tests for Machine Translation Evaluation"), the
library behind ``python -m imcap.evaluate --compare``.

The test set's images are resampled with replacement ``samples`` times (a seeded numpy generator, as
``sacrebleu.significance`` draws them: with the same seed, 12345 by default, the same resamples as sacrebleu's paired
bootstrap); both systems are scored on each resample, from per-image statistics whose sums give the corpus score:

BLEU-4 (sacrebleu): each image's sufficient statistics as sacrebleu's paired bootstrap takes them (hypothesis and
    closest reference lengths, matched and total n-grams of each order: ``BLEU._extract_corpus_statistics``), and
    sacrebleu's BLEU from their sums (``BLEU._compute_score_from_stats``), the settings of :func:`imcap.scoring.bleu_scores`.
CIDEr-D: each image's CIDEr-D with the document frequencies of the whole reference set (:func:`imcap.scoring.score_cider`),
    the mean over the resample: the IDF is not recomputed on a resample (whose repeated images would count twice).

Reported for system A (``--hypotheses``) against B (``--compare``): both scores on the whole set, the difference
``d = A - B``, its 95% interval (the 2.5th and 97.5th percentiles of the resampled differences) and a two-sided
p-value, ``(1 + #{resamples whose difference is at least |d| from d}) / (samples + 1)``: the share of resamples that,
shifted to the hypothesis of no difference, differ at least as much as the systems do (Koehn's test as Berg-Kirkpatrick
et al. 2012 state it, both directions). A system against itself: ``d = 0``, the interval ``[0, 0]``, p = 1.

sacrebleu's own ``PairedTest(test_type="bs")`` computes its p-value from the same resamples but centres ``|d*|`` on its
mean and counts with a strict ``>``, which gives ``1 / (samples + 1)``, "significant", for a system against itself; it
reports no interval of the difference and takes its seed from the environment (``SACREBLEU_SEED``). Hence its pieces
here rather than the whole.
"""
from typing import Callable, List, NamedTuple, Sequence, Tuple

import numpy as np
from sacrebleu.metrics import BLEU

from .scoring import KEY_CIDER_D, references_per_segment, metric_label, score_cider
from .utils import check_condition

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345   # sacrebleu's default SACREBLEU_SEED: the same resamples as its paired bootstrap
CONFIDENCE = 0.95
KEY_BLEU4 = "bleu4"

# summed per-image statistics of a resample (a 1-D array) -> the corpus score
ScoreFunction = Callable[[np.ndarray], float]


class Comparison(NamedTuple):
    """The paired bootstrap of one metric: A's and B's scores on the whole set, ``difference`` (A - B), its 95%
    interval ``[low, high]`` and the p-value (module docstring)."""
    key: str
    system: float
    other: float
    difference: float
    low: float
    high: float
    p_value: float

    @property
    def label(self) -> str:
        """The metric's name as a table prints it (``BLEU-4 (sacrebleu, tok:none)``)."""
        return metric_label(self.key)


def resample_counts(num_images: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each image is drawn in each resample, ``(samples, num_images)``: ``samples`` draws of
    ``num_images`` images with replacement, ``numpy.random.default_rng(seed).choice``, as sacrebleu draws them."""
    check_condition(num_images > 0, "no images to resample")
    check_condition(samples > 0, "the bootstrap needs at least one resample, got %d" % samples)
    draws = np.random.default_rng(seed).choice(num_images, size=(samples, num_images), replace=True)
    return np.stack([np.bincount(row, minlength=num_images) for row in draws])


def paired_bootstrap(key: str, stats_a: np.ndarray, stats_b: np.ndarray, score: ScoreFunction,
                     counts: np.ndarray) -> Comparison:
    """Koehn's paired bootstrap of one metric.

    :param stats_a: per-image statistics of system A, ``(images, k)``: the corpus score is ``score(sum over images)``.
    :param stats_b: B's, the same shape.
    :param score: summed statistics -> score.
    :param counts: :func:`resample_counts` of the images.
    """
    check_condition(stats_a.shape == stats_b.shape, "the systems' statistics differ in shape: %s and %s"
                    % (stats_a.shape, stats_b.shape))
    system, other = score(stats_a.sum(axis=0)), score(stats_b.sum(axis=0))
    resampled_a, resampled_b = counts @ stats_a, counts @ stats_b
    differences = np.array([score(a) - score(b) for a, b in zip(resampled_a, resampled_b)])
    difference = system - other
    low, high = np.percentile(differences, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    extreme = int(np.sum(np.abs(differences - difference) >= abs(difference)))
    return Comparison(key, system, other, difference, float(low), float(high),
                      (1 + extreme) / (len(differences) + 1))


def bleu_statistics(hypotheses: List[str], references: List[List[str]]) -> Tuple[np.ndarray, ScoreFunction]:
    """sacrebleu's per-image BLEU-4 statistics of ``hypotheses`` (``(images, 10)``) and its BLEU from their sums, with
    the settings of :func:`imcap.scoring.bleu_scores` (empty references dropped)."""
    streams = references_per_segment(hypotheses, references)
    bleu = BLEU(max_ngram_order=4, tokenize="none", lowercase=False, smooth_method="exp", force=True)
    # sacrebleu's paired bootstrap uses these two (its significance.py); it skips None references (not in its hints)
    stats = np.array(bleu._extract_corpus_statistics([h or "" for h in hypotheses], streams),  # type: ignore[arg-type]
                     dtype=np.float64)
    return stats, lambda summed: float(bleu._compute_score_from_stats(summed).score)


def cider_statistics(hypotheses: List[str], references: List[List[str]]) -> Tuple[np.ndarray, ScoreFunction]:
    """Each image's CIDEr-D (IDF of the whole reference set) and a count of 1, ``(images, 2)``: their sums give the
    mean."""
    scores = score_cider(hypotheses, references).images[KEY_CIDER_D]
    stats = np.stack([np.asarray(scores, dtype=np.float64), np.ones(len(scores))], axis=1)
    return stats, lambda summed: float(summed[0] / summed[1])


STATISTICS = {KEY_BLEU4: bleu_statistics, KEY_CIDER_D: cider_statistics}


def compare_systems(hypotheses: Sequence[str], other: Sequence[str], references: List[List[str]],
                    samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                    keys: Sequence[str] = tuple(STATISTICS)) -> List[Comparison]:
    """Paired bootstrap of system A (``hypotheses``) against B (``other``), one caption per image each, on the same
    images and ``references`` (streams parallel to both): one :class:`Comparison` per metric of ``keys`` (``bleu4``,
    ``CIDEr-D``), every metric on the same resamples.

    :raises ImcapError: if the systems caption different numbers of images, or the references are not parallel.
    """
    check_condition(len(hypotheses) == len(other), "the systems have %d and %d captions: a paired test needs the "
                    "captions of the same images" % (len(hypotheses), len(other)))
    counts = resample_counts(len(hypotheses), samples, seed)
    comparisons = []
    for key in keys:
        stats_a, score = STATISTICS[key](list(hypotheses), references)
        stats_b, _ = STATISTICS[key](list(other), references)
        comparisons.append(paired_bootstrap(key, stats_a, stats_b, score, counts))
    return comparisons
