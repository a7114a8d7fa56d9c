"""Tests of imcap.reward.CiderD, the reward of self-critical training: equal to pycocoevalcap's CIDEr-D when its
IDF corpus is the scored corpus (pinned toy example, and real Flickr8k captions), and per-caption behaviour."""
import os
from collections import defaultdict

import pytest

from imcap import scoring
from imcap.tokenizer import tokenize
from imcap.reward import CiderD, ngram_counts
from test.common import FLICKR8K, requires_shared
from test.unit.test_evaluate import CIDER_D, HYPS, REFS


def _references(refs=REFS):
    """The toy example's references per image, empty ones dropped, tokenized."""
    return [[r.split() for r in (refs[k][image] for k in range(len(refs))) if r] for image in range(len(HYPS))]


def test_pinned_toy_example():
    cider = CiderD(_references())
    assert cider.corpus_score([h.split() for h in HYPS]) == pytest.approx(CIDER_D, abs=1e-9)


@requires_shared
def test_equals_pycocoevalcap_on_flickr8k():
    """The first reference of 300 validation images scored against the other four, both ways."""
    captions = defaultdict(list)
    with open(os.path.join(FLICKR8K, "captions.tsv"), encoding="utf-8") as f:
        for line in f:
            image, caption = line.rstrip("\n").split("\t", 1)
            captions[image].append(" ".join(tokenize(caption)))
    with open(os.path.join(FLICKR8K, "val.txt"), encoding="utf-8") as f:
        images = [line.strip() for line in f if line.strip()][:300]
    hyps = [captions[i][0] for i in images]
    refs = [[captions[i][k] for i in images] for k in range(1, 5)]
    expected = scoring.cider_scores(hyps, refs)["CIDEr-D"]
    cider = CiderD([[captions[i][k].split() for k in range(1, 5)] for i in images])
    assert cider.corpus_score([h.split() for h in hyps]) == pytest.approx(expected, abs=1e-9)
    assert 0.3 < expected < 1.5   # one human caption against four others


def test_per_caption_scores():
    refs = [["a dog runs on the grass".split(), "a brown dog runs outside".split()],
            ["a man rides a bike".split(), "a cyclist rides down a hill".split()],
            ["two children play in the snow".split()]]
    cider = CiderD(refs)
    right, wrong = cider.scores([0, 1], [refs[0][0], refs[0][0]])
    assert right > 1.0 and wrong < 0.1 * right  # its own image's reference, then another image's ("a" shared)
    assert cider.score(1, "an orange kite".split()) == 0.0   # no shared n-gram
    assert cider.score(2, []) == 0.0            # an empty caption
    longer = cider.score(0, "a dog runs on the grass on the grass on the grass".split())
    assert 0 < longer < right                   # repeats are clipped and the length penalized
    assert cider.scores([], []).shape == (0,)
    with pytest.raises(ValueError):
        CiderD([])


def test_ngram_counts():
    assert ngram_counts("a a b".split()) == {("a",): 2, ("b",): 1, ("a", "a"): 1, ("a", "b"): 1, ("a", "a", "b"): 1}
