"""How varied and how repetitive a set of captions is, with no references needed: the figures captioning papers
report beside BLEU and CIDEr-D (Shetty et al. 2017, "Speaking the Same Language: Matching Machine to Human
Captions by Adversarial Training", ICCV; Dai et al. 2017; Li et al. 2016 for distinct-n).

Captions are whitespace-tokenized, as every file of imcap is. Keys and scales of :func:`diversity_scores`:

``repeated-trigram-%``: the share (0-100) of captions in which some trigram occurs twice ("a man in a white shirt
    and a white shirt" repeats "a white shirt"), what beam search's ``--no-repeat-ngram-size 3`` prevents.
``distinct-captions``: the number of different captions.
``vocabulary``: the number of different words used.
``distinct-1``, ``distinct-2``: different unigrams (bigrams) over all unigrams (bigrams) of all captions, 0-1.
``novel-%``: with ``training_captions``, the share (0-100) of captions that are not a training caption verbatim.

Several captions per image (an n-best list, samples, diverse beam search: ``evaluate --captions-per-image N`` or the
captioner's JSON with ``nbest``), :func:`set_diversity_scores`, each figure the mean over the images of a figure of
that image's set (as Shetty et al. 2017 and the diverse-captioning papers after them report the best-5 captions):

``captions-per-image``: the mean size of the sets.
``set-distinct-captions``: the mean number of different captions in a set.
``set-distinct-1``, ``set-distinct-2``: distinct-n of each image's set (different n-grams over all n-grams of its
    captions, as ``distinct-1/2`` above but within an image), 0-1: 1 when its captions share no word (no bigram);
    the Div-n of diverse-captioning papers divides by the words instead of the n-grams.
``self-BLEU-4``: corpus BLEU-4 (sacrebleu, as imcap's BLEU) of every caption against the other captions of its set as
    references, 0-100 (Zhu et al. 2018's Self-BLEU; Shetty et al.'s mBLEU-4): 100 when an image's captions are all
    the same, lower as they differ. Only images with two or more captions count; none: the key is left out.

With the references, :func:`imcap.scoring.set_cider_scores` adds how good the sets are: the oracle (best caption per
image) and the mean CIDEr-D.
"""
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .scoring import bleu_scores

KEY_REPEATED_TRIGRAM = "repeated-trigram-%"
KEY_DISTINCT_CAPTIONS = "distinct-captions"
KEY_VOCABULARY = "vocabulary"
KEY_DISTINCT_1 = "distinct-1"
KEY_DISTINCT_2 = "distinct-2"
KEY_NOVEL = "novel-%"
KEY_SET_SIZE = "captions-per-image"
KEY_SET_DISTINCT_CAPTIONS = "set-distinct-captions"
KEY_SET_DISTINCT_1 = "set-distinct-1"
KEY_SET_DISTINCT_2 = "set-distinct-2"
KEY_SELF_BLEU = "self-BLEU-4"


def ngrams(tokens: Sequence[str], n: int) -> List[Tuple[str, ...]]:
    """The n-grams of ``tokens`` in order (none when there are fewer than ``n`` tokens)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def has_repeated_ngram(tokens: Sequence[str], n: int = 3) -> bool:
    """Whether some n-gram occurs more than once in ``tokens``."""
    grams = ngrams(tokens, n)
    return len(grams) != len(set(grams))


def distinct_n(captions: Sequence[Sequence[str]], n: int) -> float:
    """Different n-grams over all n-grams of all ``captions`` (0 when there is none), Li et al. 2016's distinct-n."""
    grams = [g for tokens in captions for g in ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity_scores(hypotheses: Sequence[str], training_captions: Optional[Iterable[str]] = None
                     ) -> Dict[str, float]:
    """The figures of the module docstring for ``hypotheses`` (one caption per item); ``novel-%`` only when
    ``training_captions`` are given. Empty hypotheses count as captions (of no words)."""
    captions = [h.split() for h in hypotheses]
    total = max(len(captions), 1)
    scores = {KEY_REPEATED_TRIGRAM: 100.0 * sum(has_repeated_ngram(c, 3) for c in captions) / total,
              KEY_DISTINCT_CAPTIONS: float(len({" ".join(c) for c in captions})),
              KEY_VOCABULARY: float(len({w for c in captions for w in c})),
              KEY_DISTINCT_1: distinct_n(captions, 1),
              KEY_DISTINCT_2: distinct_n(captions, 2)}
    if training_captions is not None:
        seen: Set[str] = {" ".join(c.split()) for c in training_captions}
        scores[KEY_NOVEL] = 100.0 * sum(" ".join(c) not in seen for c in captions) / total
    return scores


def self_bleu(caption_sets: Sequence[Sequence[str]]) -> Optional[float]:
    """Corpus BLEU-4 (0-100) of every caption of a set of two or more against the set's other non-empty captions
    (:func:`imcap.scoring.bleu_scores`); None when no caption has another to be scored against."""
    hypotheses: List[str] = []
    others: List[List[str]] = []
    for captions in caption_sets:
        for k, caption in enumerate(captions):
            rest = [c for j, c in enumerate(captions) if j != k and c.strip()]
            if rest:
                hypotheses.append(caption)
                others.append(rest)
    if not hypotheses:
        return None
    width = max(len(rest) for rest in others)
    streams = [[rest[j] if j < len(rest) else "" for rest in others] for j in range(width)]
    return bleu_scores(hypotheses, streams)["bleu4"]


def set_diversity_scores(caption_sets: Sequence[Sequence[str]]) -> Dict[str, float]:
    """The figures of several captions per image (module docstring): ``caption_sets[i]`` holds image ``i``'s
    captions (at least one)."""
    sets = [[c.split() for c in captions] for captions in caption_sets]
    count = max(len(sets), 1)
    scores = {KEY_SET_SIZE: sum(len(s) for s in sets) / count,
              KEY_SET_DISTINCT_CAPTIONS: sum(len({" ".join(c) for c in s}) for s in sets) / count,
              KEY_SET_DISTINCT_1: sum(distinct_n(s, 1) for s in sets) / count,
              KEY_SET_DISTINCT_2: sum(distinct_n(s, 2) for s in sets) / count}
    value = self_bleu(caption_sets)
    if value is not None:
        scores[KEY_SELF_BLEU] = value
    return scores
