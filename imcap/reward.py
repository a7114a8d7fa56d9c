"""CIDEr-D with fixed document frequencies: the reward of self-critical training.

CIDEr-D (Vedantam et al. 2015, "CIDEr: Consensus-based Image Description Evaluation", section 4 and the
CIDEr-D variant of the COCO evaluation server): for n = 1..4, a caption's n-grams are weighted by TF-IDF, where
the IDF is ``log(images) - log(images whose references contain the n-gram)``; the score for n is the mean over
the references of the cosine similarity of the hypothesis and reference vectors, with each hypothesis weight
clipped to the reference's and a Gaussian penalty ``exp(-(l_h - l_r)^2 / (2 sigma^2))`` (sigma 6) on the
difference in length; CIDEr-D is 10 times the mean over n.

:mod:`imcap.scoring` scores a corpus with pycocoevalcap, whose IDF comes from the references of the corpus being
scored. Self-critical training (Rennie et al. 2017) scores a few sampled captions per update, so here the
document frequencies are computed once, from all the training references, and every image's reference vectors
are cached. Given the references of a corpus as the IDF corpus, :meth:`CiderD.corpus_score` equals
pycocoevalcap's CIDEr-D of that corpus (a test checks this on Flickr8k).
"""
import math
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

MAX_N = 4
SIGMA = 6.0

Vector = Tuple[List[Dict[Tuple[str, ...], float]], np.ndarray, int]   # per-n weights, per-n norms, length


def ngram_counts(tokens: Sequence[str], max_n: int = MAX_N) -> Counter:
    """Counts of the 1..``max_n``-grams of ``tokens``, as tuples."""
    return Counter(tuple(tokens[i:i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))


class CiderD:
    """CIDEr-D against fixed references, with document frequencies from those references.

    :param references: per image, its reference captions, each a list of tokens (e.g. 5 per Flickr8k image).
    :raises ValueError: if there are no images.
    """

    def __init__(self, references: Sequence[Sequence[Sequence[str]]]) -> None:
        if not references:
            raise ValueError("CIDEr-D needs the references of at least one image")
        counts = [[ngram_counts(ref) for ref in refs] for refs in references]
        document_frequency: Counter = Counter()
        for image_counts in counts:
            document_frequency.update(set(ngram for ref in image_counts for ngram in ref))
        self.log_images = math.log(float(len(references)))
        self.document_frequency = document_frequency
        self.references: List[List[Vector]] = [[self._vector(c) for c in image_counts] for image_counts in counts]

    def _vector(self, counts: Counter) -> Vector:
        weights: List[Dict[Tuple[str, ...], float]] = [{} for _ in range(MAX_N)]
        norms = np.zeros(MAX_N)
        for ngram, tf in counts.items():
            n = len(ngram) - 1
            idf = self.log_images - math.log(max(1.0, float(self.document_frequency[ngram])))
            weight = tf * idf
            weights[n][ngram] = weight
            norms[n] += weight * weight
        length = sum(tf for ngram, tf in counts.items() if len(ngram) == 2)   # the bigram count, as coco-caption
        return weights, np.sqrt(norms), length

    def score(self, image: int, tokens: Sequence[str]) -> float:
        """CIDEr-D (0-10 scale) of the caption ``tokens`` against the references of image number ``image``."""
        hyp_weights, hyp_norms, hyp_length = self._vector(ngram_counts(tokens))
        total = np.zeros(MAX_N)
        for ref_weights, ref_norms, ref_length in self.references[image]:
            penalty = math.exp(-((hyp_length - ref_length) ** 2) / (2 * SIGMA ** 2))
            for n in range(MAX_N):
                ref = ref_weights[n]
                dot = sum(min(w, ref[g]) * ref[g] for g, w in hyp_weights[n].items() if g in ref)
                if hyp_norms[n] != 0 and ref_norms[n] != 0:
                    total[n] += penalty * dot / (hyp_norms[n] * ref_norms[n])
        return float(10.0 * total.mean() / len(self.references[image]))

    def scores(self, images: Sequence[int], captions: Sequence[Sequence[str]]) -> np.ndarray:
        """CIDEr-D of each caption against the references of its image: ``(len(captions),)`` float."""
        return np.array([self.score(i, c) for i, c in zip(images, captions)], dtype=np.float64)

    def corpus_score(self, captions: Sequence[Sequence[str]]) -> float:
        """Mean CIDEr-D of one caption per image (caption ``i`` for image ``i``)."""
        return float(self.scores(range(len(captions)), captions).mean())
