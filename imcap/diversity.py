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
"""
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

KEY_REPEATED_TRIGRAM = "repeated-trigram-%"
KEY_DISTINCT_CAPTIONS = "distinct-captions"
KEY_VOCABULARY = "vocabulary"
KEY_DISTINCT_1 = "distinct-1"
KEY_DISTINCT_2 = "distinct-2"
KEY_NOVEL = "novel-%"


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
