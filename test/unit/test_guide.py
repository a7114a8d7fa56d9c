"""Guided captioning's pieces (imcap.guide): the shipped mapping of the 1000 ImageNet classes, its reader's errors,
the choice of an image's guide constraints, and vocabulary expansion on a real (small) model."""
import os
import re

import mxnet as mx
import numpy as np
import pytest

from imcap.guide import (ANIMAL_CLASSES, DEFAULT_CLASS_WORDS, PEOPLE_WORDS, ClassifierGuide, ClassWords,
                         check_guide_settings, expand_vocabulary, read_class_words, stand_ins)
from imcap.vision.image_encoder import read_class_names
from imcap.model import ModelConfig
from imcap.tokenizer import tokenize
from imcap.utils import ImcapError
from imcap.vocab import build_vocab
from test.common import MODELS
from test.unit.decoding_checks import make_model


CLASS_NAMES = os.path.join(MODELS, "imagenet_classes.txt")


def test_every_imagenet_class_is_mapped_or_marked_in_order():
    entries = read_class_words()
    assert len(entries) == 1000 and [e.index for e in entries] == list(range(1000))
    marked = [e for e in entries if not e.alternatives]
    assert 0 < len(marked) < 500
    for e in entries:
        assert len(set(e.alternatives)) == len(e.alternatives), e
        assert all(a == " ".join(tokenize(a)) for a in e.alternatives), e   # written as captions are tokenized
    words = {e.name: e.alternatives for e in entries}
    assert "cat" in words["tabby"] and "coffee" in words["espresso"] and words["golden retriever"][0] == "dog"
    assert all("dog" in entries[i].alternatives for i in range(151, 269))   # the 118 dog breeds


@pytest.mark.skipif(not os.path.isfile(CLASS_NAMES), reason="no %s" % CLASS_NAMES)
def test_every_imagenet_class_has_the_classifiers_name():
    assert [e.name for e in read_class_words()] == read_class_names(CLASS_NAMES)


@pytest.mark.parametrize("text, message", [
    ("0\ttench\tfish\n1\tgoldfish\n", "line 2: needs 3 tab-separated fields"),
    ("0\ttench\tfish\n2\tgoldfish\tfish\n", "line 2: class index '2', expected 1"),
    ("0\ttench\t\n", "line 1: class 0 (tench) has no words; write - for a class without caption words"),
    ("0\ttench\tfish|  \n", "line 1: class 0 (tench) has an alternative without words"),
    ("# a comment\n0\ttench\tfish\n", "words.tsv: 1 classes, the classifier has 2"),
])
def test_a_bad_mapping_is_one_clear_error_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "words.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImcapError, match=re.escape(message)):
        read_class_words(str(path), num_classes=2)
    with pytest.raises(ImcapError, match="no such class words file"):
        read_class_words(str(tmp_path / "missing.tsv"))
    assert os.path.isfile(DEFAULT_CLASS_WORDS)


ENTRIES = [ClassWords(0, "tabby", ["cat", "kitten"]), ClassWords(1, "beagle", ["dog", "puppy"]),
           ClassWords(2, "basset", ["dog", "puppy"]), ClassWords(3, "web site", []),
           ClassWords(4, "espresso", ["coffee", "cup"]), ClassWords(5, "space shuttle", ["space shuttle", "rocket"])]
VOCAB = {"cat": 10, "dog": 11, "puppy": 12, "cup": 13, "space": 14}


def test_the_guide_takes_the_probable_classes_once_per_object():
    guide = ClassifierGuide(ENTRIES, VOCAB, top_k=3, min_probability=0.1)
    guides, constraints = guide.choose(np.array([0.05, 0.4, 0.3, 0.2, 0.03, 0.02]))
    # beagle (dog|puppy); basset shares its words: skipped; web site names no word: skipped
    assert [(g.class_name, g.words) for g in guides] == [("beagle", ["dog", "puppy"])]
    assert constraints == [[[11], [12]]]
    guides, constraints = guide.choose(np.array([0.5, 0.0, 0.0, 0.0, 0.3, 0.2]))
    # kitten and coffee are outside the vocabulary; space shuttle has no word the model knows (space alone is not it)
    assert [(g.class_name, g.words) for g in guides] == [("tabby", ["cat"]), ("espresso", ["cup"])]
    assert guides[0].probability == pytest.approx(0.5) and constraints == [[[10]], [[13]]]
    assert ClassifierGuide(ENTRIES, VOCAB, top_k=1, min_probability=0.6).choose(np.full(6, 1 / 6)) == ([], [])
    with pytest.raises(ImcapError, match="probabilities for 3 classes, the class words file has 6"):
        guide.choose(np.ones(3))
    with pytest.raises(ImcapError, match="guide_top_k must be >= 0"):
        ClassifierGuide(ENTRIES, VOCAB, top_k=-1)
    assert ClassifierGuide(ENTRIES, VOCAB, top_k=0).guide(np.array([0.9, 0.1, 0, 0, 0, 0])).guides == []


def test_stand_ins_are_the_known_more_general_words_of_the_same_entries():
    # "kitten" comes after "cat" in its entry (more general words come later): "cat" is no stand-in of it
    assert stand_ins(ENTRIES, VOCAB) == {"coffee": ["cup"]}
    assert stand_ins([ClassWords(0, "tabby", ["kitten", "cat"])], VOCAB) == {"kitten": ["cat"]}


def test_expanded_words_score_as_their_stand_ins_and_the_rest_is_unchanged():
    vocab = build_vocab([["a", "cat", "dog", "on", "grass"]])
    config = ModelConfig.from_dict(dict(ModelConfig().to_dict(), vocab_size=len(vocab)))
    model = make_model(config)
    model.hybridize()
    models, bigger, new_ids = expand_vocabulary([model], vocab, {"kitten": ["cat"], "puppy": ["dog", "cat"],
                                                                 "grass": ["dog"]})
    assert new_ids == [len(vocab), len(vocab) + 1] and bigger.idx_to_token[len(vocab):] == ["kitten", "puppy"]
    assert bigger.token_to_idx["grass"] == vocab.token_to_idx["grass"]   # known words stay as they are
    ids = mx.nd.array([[2, vocab["a"], vocab["cat"]]], dtype="int32")
    feats = mx.nd.array(np.random.RandomState(0).uniform(0, 6, (1,) + tuple(model.feature_shape)).astype(np.float32))
    old_logits, _ = model(feats, ids)
    new_logits, _ = models[0](feats, ids)
    old_logits, new_logits = old_logits.asnumpy(), new_logits.asnumpy()
    np.testing.assert_allclose(new_logits[..., :len(vocab)], old_logits, atol=1e-5)
    cat, dog = vocab["cat"], vocab["dog"]
    np.testing.assert_allclose(new_logits[..., new_ids[0]], old_logits[..., cat], atol=1e-5)
    np.testing.assert_allclose(new_logits[..., new_ids[1]], (old_logits[..., dog] + old_logits[..., cat]) / 2,
                               atol=1e-5)   # logits are linear in the output rows: the mean of the stand-ins'
    with pytest.raises(ImcapError, match="stand-ins of 'wolf'"):
        expand_vocabulary([model], vocab, {"wolf": ["coyote"]})


def test_soft_guidance_gives_each_word_weight_times_its_classes_probability():
    guide = ClassifierGuide(ENTRIES, VOCAB, top_k=0)
    probabilities = np.array([0.1, 0.5, 0.3, 0.05, 0.05, 0.0])
    guidance = guide.guide(probabilities, soft_weight=2.0)
    assert guidance.bonus.shape == (15,) and guidance.guides == [] and guidance.held_back == []
    expected = np.zeros(15)
    expected[[10, 11, 12, 13]] = 2.0 * np.array([0.1, 0.8, 0.8, 0.05])   # cat; dog and puppy (beagle + basset); cup
    np.testing.assert_allclose(guidance.bonus, expected, rtol=1e-6)      # space: only in a two-word alternative
    assert [(w.word, round(w.bonus, 4)) for w in guidance.pushed] == [("dog", 1.6), ("puppy", 1.6), ("cat", 0.2),
                                                                        ("cup", 0.1)]
    assert guide.guide(probabilities).bonus is None                      # weight 0: no bonus at all
    both = ClassifierGuide(ENTRIES, VOCAB, top_k=1, min_probability=0.4).guide(probabilities, soft_weight=1.0)
    assert [g.class_name for g in both.guides] == ["beagle"] and both.constraints == [[[11], [12]]]


REAL_VOCAB = {w: i for i, w in enumerate("<pad> <unk> <s> </s> a dog puppy cat bear elephant man cricket couch "
                                         "pizza bird dogs puppies".split())}


def test_guidance_against_holds_back_the_animal_words_the_classifier_rules_out():
    guide = ClassifierGuide(read_class_words(), REAL_VOCAB, top_k=1, min_probability=0.5)
    bear = np.zeros(1000)
    bear[294], bear[151] = 0.97, 0.005         # brown bear; a Chihuahua: every dog class together 0.005
    bear[963] = 1.0 - bear.sum()               # the rest on pizza
    held = guide.guide(bear, against=0.01)
    assert [g.words for g in held.guides] == [["bear"]]   # the hard constraint names what is there instead
    assert sorted(w.word for w in held.held_back) == ["bird", "cat", "dog", "dogs", "elephant", "puppies", "puppy"]
    assert held.avoid == [[REAL_VOCAB[w.word]] for w in held.held_back]
    assert {w.word: w.probability for w in held.held_back}["dog"] == pytest.approx(0.005)
    # 0.005 is not below 0.001 x 0.97: the dog is possible at that share
    assert "dog" not in [w.word for w in guide.guide(bear, against=0.001).held_back]
    # people words, words with another sense, objects and scenery are never held back
    assert not {w.word for w in held.held_back} & ({"man", "cricket", "couch", "pizza", "bear"} | PEOPLE_WORDS)
    assert all(c in ANIMAL_CLASSES for c in range(151, 269)) and 963 not in ANIMAL_CLASSES
    assert guide.guide(bear).held_back == [] and guide.guide(bear).avoid == []   # 0: off
    # without a hard constraint (no class confident enough), nothing is held back: the caption keeps its subject
    unsure = ClassifierGuide(read_class_words(), REAL_VOCAB, top_k=0).guide(bear, soft_weight=1.0, against=0.01)
    assert unsure.held_back == [] and unsure.avoid == [] and unsure.pushed[0].word == "bear"


def test_a_hard_constraints_words_are_never_held_back():
    guide = ClassifierGuide(read_class_words(), REAL_VOCAB, top_k=2, min_probability=0.001)
    probabilities = np.zeros(1000)
    probabilities[294], probabilities[151] = 0.995, 0.005
    guidance = guide.guide(probabilities, against=0.5)
    assert [g.words for g in guidance.guides] == [["bear"], ["dog", "puppy"]]
    assert "dog" not in [w.word for w in guidance.held_back] and "cat" in [w.word for w in guidance.held_back]


@pytest.mark.parametrize("weight, against, message", [
    (-0.5, 0.0, "guide_soft_weight must be a finite number of at least 0, got -0.5"),
    (float("inf"), 0.0, "guide_soft_weight must be a finite number of at least 0, got inf"),
    (1.0, 1.5, r"guide_against must be in \[0, 1\]"),
    (1.0, -0.1, r"guide_against must be in \[0, 1\]"),
])
def test_bad_guide_settings_are_one_clear_error(weight, against, message):
    with pytest.raises(ImcapError, match=message):
        check_guide_settings(weight, against)
    with pytest.raises(ImcapError, match=message):
        ClassifierGuide(ENTRIES, VOCAB).guide(np.full(6, 1 / 6), weight, against)
