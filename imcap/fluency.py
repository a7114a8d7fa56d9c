"""Fluency: how likely a caption's word sequence is under a smoothed n-gram language model of the training captions.

A guide or a constraint can name the right object by breaking the sentence ("a brown dog is standing on a bear");
CIDEr-D and BLEU reward the named object and barely see the break. The mean per-word log-probability under an
interpolated Kneser-Ney model (Kneser & Ney 1995; Chen & Goodman 1998) of the captions the model was trained on does:
it falls where word sequences leave the training captions' patterns. :class:`CaptionLanguageModel` uses NLTK's
implementation (``nltk.lm``): its counts, its interpolation and its Kneser-Ney formula; :class:`_IndexedKneserNey`
only indexes the continuation counts once after fitting (NLTK scans every higher-order n-gram on each query, about
40 ms a word on Flickr8k's 30000 captions) and closes the lowest order with a uniform distribution, so that a word the
training captions never have gets a finite score.

The mean log-probability also falls with a word's rarity: "a brown bear is standing in the grass" scores below "a
brown dog is standing on a bear" under Flickr8k's captions, where bears are rare. SLOR (the syntactic log-odds ratio,
Pauls & Klein 2012; Kann et al. 2018, CoNLL, "Sentence-Level Fluency Evaluation") subtracts each word's unigram
log-probability: it measures how well the words fit together, not how common they are. Both are reported.
"""
import functools
import math
from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Tuple

from .utils import check_condition, read_lines

#: :meth:`CaptionLanguageModel.corpus_scores` keys: mean log2-probability per word, and SLOR.
KEY_FLUENCY = "fluency"
KEY_SLOR = "slor"
#: The default n-gram order.
DEFAULT_ORDER = 3
#: The default Kneser-Ney discount (Chen & Goodman's usual 0.75; NLTK's default is 0.1).
DEFAULT_DISCOUNT = 0.75


def _kneser_ney_class():
    """NLTK's Kneser-Ney smoothing with indexed continuation counts (imported on first use: NLTK is slow to import)."""
    from nltk.lm.smoothing import KneserNey

    class _IndexedKneserNey(KneserNey):
        """``nltk.lm.smoothing.KneserNey`` whose continuation counts come from an index built once, after the model
        was fitted, rather than from a scan of every higher-order n-gram per query; the same values."""

        def _index(self) -> Tuple[Dict[tuple, Dict[str, int]], Dict[tuple, int]]:
            if getattr(self, "_continuations", None) is None:
                continuations: Dict[tuple, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
                totals: Dict[tuple, int] = defaultdict(int)
                for n in range(2, self._order + 1):
                    for prefix, counts in self.counts[n].items():
                        seen = [w for w, c in counts.items() if c > 0]
                        for word in seen:
                            continuations[prefix[1:]][word] += 1
                        totals[prefix[1:]] += len(seen)
                self._continuations, self._totals = continuations, totals
                self._types: Dict[tuple, int] = {}
            return self._continuations, self._totals

        def _continuation_counts(self, word, context=tuple()):
            continuations, totals = self._index()
            return continuations[context].get(word, 0), totals[context]

        def _types_after(self, context: tuple) -> int:
            """The number of distinct words seen after ``context`` (NLTK's ``_count_values_gt_zero``), cached."""
            self._index()
            if context not in self._types:
                self._types[context] = sum(1 for c in self.counts[context].values() if c > 0)
            return self._types[context]

        def alpha_gamma(self, word, context):
            prefix_counts = self.counts[context]
            count, total = ((prefix_counts[word], prefix_counts.N()) if len(context) + 1 == self._order
                            else self._continuation_counts(word, context))
            return (max(count - self.discount, 0.0) / total,
                    self.discount * self._types_after(context) / total)

        def unigram_score(self, word):
            count, total = self._continuation_counts(word)
            types = len(self._index()[0][()])
            uniform = 1.0 / (len(self.vocab) + 1)
            return max(count - self.discount, 0.0) / total + self.discount * types / total * uniform

    return _IndexedKneserNey


class CaptionLanguageModel:
    """An interpolated Kneser-Ney n-gram language model of tokenized captions (NLTK), for :meth:`fluency`.

    Each caption is padded with ``order - 1`` ``<s>`` and one ``</s>``; a caption's words and its ``</s>`` are scored.

    :param captions: the training captions, each a sequence of tokens (lower-cased words, as ``imcap.prepare_data``
        writes them).
    :param order: the n-gram order, at least 1.
    :param discount: the absolute discount, in (0, 1).
    :raises ImcapError: if ``order`` or ``discount`` is out of range, or there are no captions.
    """

    def __init__(self, captions: Iterable[Sequence[str]], order: int = DEFAULT_ORDER,
                 discount: float = DEFAULT_DISCOUNT) -> None:
        from nltk.lm.models import InterpolatedLanguageModel
        from nltk.lm.preprocessing import padded_everygram_pipeline

        check_condition(order >= 1, "language model order must be at least 1, got %s" % order)
        check_condition(0.0 < discount < 1.0, "language model discount must be in (0, 1), got %s" % discount)
        texts = [list(c) for c in captions if len(c)]
        check_condition(bool(texts), "no captions to fit a language model on")
        self.order = order
        self.model = InterpolatedLanguageModel(_kneser_ney_class(), order,
                                               params={"discount": discount, "order": order})
        ngrams, words = padded_everygram_pipeline(order, texts)
        self.model.fit(ngrams, words)
        self._score = functools.lru_cache(maxsize=1 << 20)(self.model.logscore)

    @classmethod
    def from_file(cls, path: str, order: int = DEFAULT_ORDER) -> "CaptionLanguageModel":
        """The model of a file of tokenized captions, one per line (blank lines skipped).

        :raises ImcapError: naming the file if it cannot be read or has no caption.
        """
        lines = [line.split() for line in read_lines(path)]
        check_condition(any(lines), "%s: no captions to fit a language model on" % path)
        return cls(lines, order)

    def word_log_probs(self, tokens: Sequence[str]) -> List[float]:
        """``log2 p(word | the order - 1 words before)`` of each token and of ``</s>`` (``len(tokens) + 1`` values,
        in bits; a word the training captions never have scores as ``<UNK>``)."""
        padded = ["<s>"] * (self.order - 1) + list(tokens) + ["</s>"]
        return [self._score(padded[i], tuple(padded[i - self.order + 1:i]))
                for i in range(self.order - 1, len(padded))]

    def fluency(self, tokens: Sequence[str]) -> float:
        """The mean per-word log2-probability of a caption (``</s>`` included): closer to 0 is more fluent."""
        scores = self.word_log_probs(tokens)
        return sum(scores) / len(scores)

    def unigram_log_prob(self, word: str) -> float:
        """``log2`` of the word's relative frequency in the training captions (``</s>``: one per caption), add-one
        smoothed over the vocabulary."""
        counts = self.model.counts.unigrams
        return math.log2((counts[word] + 1) / (counts.N() + len(self.model.vocab)))

    def slor(self, tokens: Sequence[str]) -> float:
        """SLOR: :meth:`fluency` minus the mean unigram log2-probability of the same words and ``</s>`` (bits per
        word; higher is more fluent, 0: the words fit together no better than alone)."""
        scores = self.word_log_probs(tokens)
        unigrams = [self.unigram_log_prob(w) for w in list(tokens) + ["</s>"]]
        return (sum(scores) - sum(unigrams)) / len(scores)

    def corpus_scores(self, captions: Sequence[Sequence[str]]) -> Dict[str, float]:
        """``{"fluency": mean of fluency(c), "slor": mean of slor(c)}`` over ``captions`` (each a token sequence).

        :raises ImcapError: if there are no captions.
        """
        check_condition(len(captions) > 0, "no captions to score")
        return {KEY_FLUENCY: sum(self.fluency(c) for c in captions) / len(captions),
                KEY_SLOR: sum(self.slor(c) for c in captions) / len(captions)}


__all__ = ["CaptionLanguageModel", "DEFAULT_DISCOUNT", "DEFAULT_ORDER", "KEY_FLUENCY", "KEY_SLOR"]
