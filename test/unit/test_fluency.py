"""Fluency (imcap.fluency): NLTK's interpolated Kneser-Ney model of the training captions with indexed continuation
counts gives NLTK's own values, ranks broken sentences below fluent ones, and SLOR discounts rare words."""
import math
import os

import pytest

from imcap.fluency import KEY_FLUENCY, KEY_SLOR, CaptionLanguageModel
from imcap.utils import ImcapError
from test.common import SHARED

CAPTIONS = os.path.join(SHARED, "data", "flickr8k", "captions.tsv")


@pytest.fixture(scope="module")
def flickr_captions():
    from imcap.tokenizer import tokenize
    with open(CAPTIONS, encoding="utf-8") as f:
        return [tokenize(line.split("\t", 1)[1]) for line in f][:4000]


def test_indexed_continuation_counts_are_nltks(flickr_captions):
    from nltk.lm.smoothing import KneserNey
    model = CaptionLanguageModel(flickr_captions[:400])
    indexed = model.model.estimator
    scanning = KneserNey(model.model.vocab, model.model.counts, order=3, discount=0.75)
    for word in ("dog", "a", "the", "running", "snow", "</s>", "zebra"):
        for context in ((), ("a",), ("the",), ("in",)):
            assert indexed._continuation_counts(word, context) == scanning._continuation_counts(word, context)


def test_broken_sentences_score_below_fluent_ones_and_every_word_is_finite(flickr_captions):
    model = CaptionLanguageModel(flickr_captions)
    fluent = "a black dog is running through the snow".split()
    broken = "a dog is standing on a the snow dog".split()
    assert model.fluency(fluent) > model.fluency(broken) + 1.0
    assert model.slor(fluent) > model.slor(broken)
    unseen = model.word_log_probs("a qwertyuiop dog".split())
    assert len(unseen) == 4 and all(math.isfinite(s) and s < 0 for s in unseen)
    scores = model.corpus_scores([fluent, broken])
    assert scores[KEY_FLUENCY] == pytest.approx((model.fluency(fluent) + model.fluency(broken)) / 2)
    assert scores[KEY_SLOR] == pytest.approx((model.slor(fluent) + model.slor(broken)) / 2)


def test_slor_punishes_a_rare_word_less_than_the_mean_log_probability(flickr_captions):
    model = CaptionLanguageModel(flickr_captions)
    rare = "a brown bear is standing in the grass".split()     # "bear" is rare in Flickr8k
    habitual = "a brown dog is standing in the grass".split()
    fluency_gap = model.fluency(habitual) - model.fluency(rare)
    slor_gap = model.slor(habitual) - model.slor(rare)
    assert fluency_gap > 0 and slor_gap < fluency_gap - 0.5


def test_bad_settings_and_files_are_one_clear_error(tmp_path):
    with pytest.raises(ImcapError, match="order must be at least 1, got 0"):
        CaptionLanguageModel([["a", "dog"]], order=0)
    with pytest.raises(ImcapError, match=r"discount must be in \(0, 1\), got 1.5"):
        CaptionLanguageModel([["a", "dog"]], discount=1.5)
    empty = tmp_path / "train.captions"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ImcapError, match="train.captions: no captions to fit a language model on"):
        CaptionLanguageModel.from_file(str(empty))
    with pytest.raises(ImcapError, match="no captions to score"):
        CaptionLanguageModel([["a", "dog"]]).corpus_scores([])
