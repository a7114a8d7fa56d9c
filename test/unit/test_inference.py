"""The library API of captioning (imcap.inference): CaptionInput validation, and a Captioner over the tiny model dir
of ``test/data/models/rnn-0.1.0`` (features ``(4, 8)``) fed feature arrays and files, broken ones included: one
result per input, in order, never an exception; phrases of the wrong type are refused by CaptionInput, and the
captioner CLI's reading of its JSON lines turns them into warnings of their line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import inference, output_handler, phrases
from imcap.captioner import caption_lines
from imcap.inference import CaptionInput, CaptionResult, Captioner
from imcap.phrases import IgnoredPhrase
from imcap.search_options import SearchOptions
from imcap.utils import ImcapError
from test.common import requires_shared

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "models", "rnn-0.1.0")
SHAPE = (4, 8)


# --- CaptionInput -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({}, "exactly one of path, data, image, features; got none"),
    ({"path": "a.npy", "data": b"x"}, "got path, data"),
    ({"path": ""}, "path must be a non-empty string"),
    ({"path": 3}, "path must be a non-empty string"),
    ({"data": "not bytes"}, "data must be the bytes of an image file, got str"),
    ({"image": np.zeros((4, 4), dtype=np.uint8)}, r"\(height, width, 3\) uint8 RGB array, got \(4, 4\) uint8"),
    ({"image": np.zeros((4, 4, 3), dtype=np.float32)}, "got \\(4, 4, 3\\) float32"),
    ({"image": np.zeros((0, 4, 3), dtype=np.uint8)}, "uint8 RGB array"),
    ({"features": np.zeros(8, dtype=np.float32)}, r"\(regions, dim\) float array, got \(8,\) float32"),
    ({"features": [[0.0]]}, "got list"),
    ({"features": np.zeros(SHAPE, dtype=bool)}, "float array"),
    ({"path": "a.npy", "source": 7}, "source must be a string"),
    ({"path": "a.npy", "line": "7"}, "line must be an integer"),
])
def test_caption_input_validation(kwargs, message):
    with pytest.raises(ImcapError, match=message) as error:
        CaptionInput(**kwargs)
    assert "\n" not in str(error.value)


def test_caption_input_defaults():
    item = CaptionInput(path="dir/a.jpg.npy", constraints=("a dog",))
    assert item.source == "dir/a.jpg.npy" and item.line is None
    assert item.constraints == ["a dog"] and item.avoid == []
    assert CaptionInput(path="a.npy", constraints=None, avoid=None).avoid == []
    phrases = ["a dog", ["cat", "kitten"], "", IgnoredPhrase("3", "3 is not a phrase: ignored")]
    assert CaptionInput(path="a.npy", constraints=phrases).constraints is phrases   # well-typed: kept as given
    assert CaptionInput(data=b"\xff\xd8").source is None
    assert CaptionInput(features=np.zeros(SHAPE, dtype=np.float16), source="upload 3").source == "upload 3"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"constraints": "a dog"}, TypeError, r"^constraints is not a list of phrases but a str \('a dog'\)$"),
    ({"constraints": {"a": 1}}, TypeError, r"^constraints is not a list of phrases but a dict"),
    ({"constraints": 3}, TypeError, r"^constraints is not a list of phrases but a int \(3\)$"),
    ({"constraints": ["a dog", 3]}, TypeError,
     r"^constraints\[1\] must be a phrase \(a string\) or a list of alternative phrases, got 3$"),
    ({"constraints": [("cat", "kitten")]}, TypeError, r"^constraints\[0\] must be a phrase"),
    ({"constraints": [["cat", 3]]}, TypeError, r"^constraints\[0\]\[1\] must be a phrase \(a string\), got 3$"),
    ({"constraints": [["cat", ["kitten"]]]}, TypeError, r"^constraints\[0\]\[1\] must be a phrase"),
    ({"constraints": ["red", []]}, ValueError, r"^constraints\[1\] is an empty list of alternative phrases"),
    ({"avoid": "grass"}, TypeError, r"^avoid is not a list of phrases but a str"),
    ({"avoid": ["grass", None]}, TypeError, r"^avoid\[1\] must be a phrase \(a string\), got None$"),
    ({"avoid": [["cat", "kitten"]]}, TypeError, r"^avoid\[0\] must be a phrase \(a string\), got \['cat'"),
])
def test_phrases_of_the_wrong_type_are_refused_naming_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        CaptionInput(path="a.npy", **kwargs)


def test_caption_result_lives_in_inference_and_output_handler_uses_it():
    assert output_handler.CaptionResult is CaptionResult
    assert inference.PhraseResult is phrases.PhraseResult   # PhraseResult lives in phrases, importable from both
    result = CaptionResult(2, ["a", "dog"], -0.5)
    assert result.caption == "a dog" and result.nbest == [] and result.error is None and result.source == ""
    assert CaptionResult(3, [], error="no such file").caption == ""


def test_inference_imports_no_cli_or_training_module():
    with open(os.path.join(os.path.dirname(imcap.__file__), "inference.py"), encoding="utf-8") as f:
        source = f.read()
    assert "argparse" not in source and "Namespace" not in source
    code = ("import sys, imcap.inference; print(sorted(m for m in sys.modules if m in ('imcap.arguments', "
            "'imcap.captioner', 'imcap.train', 'imcap.training', 'imcap.extract_features')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(imcap.__file__)))
    assert out.stdout.decode().strip() == "[]"


# --- Captioner on feature arrays and files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def captioner():
    return Captioner(MODEL, beam_size=3, max_output_length=6, nbest_size=3, allow_unk=True)


@pytest.fixture(scope="module")
def features():
    """Six different ``(4, 8)`` float32 inputs."""
    return list(np.random.RandomState(3).randn(6, *SHAPE).astype(np.float32) * 2)


def summary(result):
    """What a successful result says: its caption, score and n-best."""
    assert result.error is None
    return result.caption, result.score, [(" ".join(t), s) for t, s in result.nbest]


def assert_same(results, expected, abs=1e-5):
    """The same captions and n-best lists, the same scores up to ``abs``."""
    assert len(results) == len(expected)
    for (caption, score, nbest), (caption2, score2, nbest2) in zip(map(summary, results), map(summary, expected)):
        assert caption == caption2 and [c for c, _ in nbest] == [c for c, _ in nbest2]
        assert [score] + [s for _, s in nbest] == pytest.approx([score2] + [s for _, s in nbest2], abs=abs)


def test_features_are_captioned_in_order_with_nbest(captioner, features):
    results = captioner.caption([CaptionInput(features=x) for x in features])
    assert [r.line for r in results] == [1, 2, 3, 4, 5, 6]
    assert all(r.error is None and len(r.nbest) == 3 and r.attention is None for r in results)
    assert len({r.score for r in results}) == 6  # six inputs, six searches
    for result in results:
        assert result.nbest[0] == (result.tokens, result.score)
        assert [s for _, s in result.nbest] == sorted((s for _, s in result.nbest), reverse=True)
    # one at a time or two at a time: the same results
    assert_same(results, [captioner.caption([CaptionInput(features=x)])[0] for x in features])
    two = Captioner(MODEL, beam_size=3, max_output_length=6, nbest_size=3, allow_unk=True, batch_size=2)
    assert_same(two.caption([CaptionInput(features=x) for x in features]), results)


def test_a_feature_file_and_its_array_agree(captioner, features, tmp_path):
    np.save(str(tmp_path / "a.jpg.npy"), features[0].astype(np.float16))
    from_file = captioner.caption([CaptionInput(path="a.jpg.npy")])[0]
    from_array = captioner.caption([CaptionInput(features=features[0].astype(np.float16))])[0]
    assert from_file.error is not None and "no such file" in from_file.error  # relative to the current directory
    rooted = Captioner(MODEL, beam_size=3, max_output_length=6, nbest_size=3, allow_unk=True,
                       source_root=str(tmp_path))
    from_file = rooted.caption([CaptionInput(path="a.jpg.npy")])[0]
    assert summary(from_file) == summary(from_array)
    assert from_file.source == "a.jpg.npy" and from_array.source == ""


def test_bad_inputs_get_error_results_and_cost_no_other_input(captioner, features, tmp_path):
    nan, inf = features[1].copy(), features[2].astype(np.float16)
    nan[2, 3] = np.nan
    inf[0, 0] = np.inf
    np.save(str(tmp_path / "nan.npy"), nan)
    np.save(str(tmp_path / "wide.npy"), np.zeros((4, 9), dtype=np.float32))
    np.savez(str(tmp_path / "archive.npz"), x=features[0])
    open(str(tmp_path / "empty.npy"), "wb").close()
    with open(str(tmp_path / "text.npy"), "w") as f:
        f.write("not an array\n")
    inputs = [CaptionInput(features=features[0]),
              CaptionInput(features=nan),
              CaptionInput(features=inf, line=40),
              CaptionInput(path=str(tmp_path / "nan.npy")),
              CaptionInput(features=np.ones((5, 8), dtype=np.float32)),
              CaptionInput(path=str(tmp_path / "wide.npy")),
              CaptionInput(path=str(tmp_path / "archive.npz")),
              CaptionInput(path=str(tmp_path / "empty.npy")),
              CaptionInput(path=str(tmp_path / "text.npy")),
              CaptionInput(path=str(tmp_path / "missing.npy")),
              CaptionInput(features=np.full(SHAPE, 1e39)),   # finite in float64, infinite as float32
              CaptionInput(features=features[4])]
    results = captioner.caption(inputs)
    assert len(results) == len(inputs)
    assert [r.line for r in results] == [1, 2, 40] + list(range(4, 13))
    errors = [r.error for r in results]
    assert errors[0] is None and errors[-1] is None
    assert_same(results[:1], captioner.caption([inputs[0]]))
    assert errors[1] == errors[2] == errors[3] == errors[10] == "features contain NaN or infinite values"
    assert errors[4] == "features have shape (5, 8), the model expects (4, 8)"
    assert errors[5] == "features have shape (4, 9), the model expects (4, 8)"
    assert errors[6].startswith("not a feature file (an .npz archive")
    assert errors[7].startswith("not a feature file") and errors[8].startswith("not a feature file")
    assert errors[9] == "no such file"
    for result in results[1:-1]:
        assert result.tokens == [] and result.caption == "" and result.nbest == [] and result.score == 0.0
        assert "\n" not in result.error
    assert results[3].source == str(tmp_path / "nan.npy") and results[1].source == ""


def test_test_time_augmentation_needs_the_views(features, tmp_path):
    tta = Captioner(MODEL, beam_size=3, max_output_length=6, test_time_augmentations=["hflip"],
                    source_root=str(tmp_path))
    np.save(str(tmp_path / "a.jpg.npy"), features[0])
    np.save(str(tmp_path / "b.jpg.npy"), features[1])
    np.save(str(tmp_path / "b.jpg.hflip.npy"), features[1])
    np.save(str(tmp_path / "c.jpg.npy"), features[2])
    np.save(str(tmp_path / "c.jpg.hflip.npy"), features[3] * np.nan)
    a, b, c, array = tta.caption([CaptionInput(path="a.jpg.npy"), CaptionInput(path="b.jpg.npy"),
                                  CaptionInput(path="c.jpg.npy"), CaptionInput(features=features[1])])
    assert "'hflip' features" in a.error and "no such file" in a.error and "--augmentations hflip" in a.error
    assert b.error is None
    plain = Captioner(MODEL, beam_size=3, max_output_length=6).caption([CaptionInput(features=features[1])])[0]
    assert b.score == pytest.approx(plain.score, abs=1e-5)  # the view is a copy: the ensemble scores as one model
    assert c.error.endswith("features contain NaN or infinite values") and "'hflip'" in c.error
    assert "test-time augmentation (hflip) needs the image" in array.error


def test_captioner_options_are_checked():
    with pytest.raises(ImcapError, match="one params file name per model"):
        Captioner([MODEL, MODEL], ["params.best"])
    with pytest.raises(ValueError, match="beam_size must be at least 1, got 0"):
        Captioner(MODEL, beam_size=0)
    with pytest.raises(TypeError, match="unknown search options beam"):
        Captioner(MODEL, beam=3)
    with pytest.raises(TypeError, match="max_output_length must be an integer, got '30'"):
        Captioner(MODEL, search=SearchOptions(), max_output_length="30")
    with pytest.raises(ImcapError, match="unknown test-time augmentation vflip"):
        Captioner(MODEL, test_time_augmentations=["vflip"])
    with pytest.raises(ImcapError, match="at least one model dir"):
        Captioner([])


def test_caption_refuses_what_is_not_a_caption_input(captioner):
    with pytest.raises(ImcapError, match="input 2 is a str, not a CaptionInput"):
        captioner.caption([CaptionInput(features=np.zeros(SHAPE)), "a.npy"])  # type: ignore[list-item]
    assert captioner.caption([]) == []


@requires_shared
def test_an_image_encoder_of_other_features_is_an_error_not_a_result(features):
    """The model's features are (4, 8); EfficientNet-Lite0 (its default, the model recording none) makes (49, 1280):
    that is not one input's fault, so caption raises (the CLI fails before reading a line)."""
    captioner = Captioner(MODEL, beam_size=2, max_output_length=4)
    assert captioner.caption([CaptionInput(features=features[0])])[0].error is None  # no CNN needed, none made
    with pytest.raises(ImcapError, match=r"features are \[49, 1280\] but the model expects \(4, 8\)"):
        captioner.caption([CaptionInput(image=np.zeros((10, 10, 3), dtype=np.uint8))])


# --- lexical constraints --------------------------------------------------------------------------------------

def contains(tokens, phrase):
    words = phrase.split()
    return any(tokens[i:i + len(words)] == words for i in range(len(tokens) - len(words) + 1))


def test_constraints_and_avoided_phrases_are_met_and_reported(features):
    captioner = Captioner(MODEL, beam_size=4, max_output_length=8, nbest_size=3, avoid_list=["grass", "", "sits"])
    asks = [(["the cat"], ["a"]), (["dog runs", "On"], []), ([], ["on", "the dog"]), (["Grass!"], ["dog"])]
    results = captioner.caption([CaptionInput(features=x, constraints=c, avoid=a, line=7 + i)
                                 for i, (x, (c, a)) in enumerate(zip(features, asks))])
    for result, (required, avoided) in zip(results, asks):
        assert result.error is None and result.line == 7 + results.index(result)
        for phrase in required:
            assert contains(result.tokens, phrase.lower().strip("!"))
        for phrase in avoided + ["sits"]:
            assert not contains(result.tokens, phrase)
        assert [p.phrase for p in result.constraints] == required and all(p.met for p in result.constraints)
        for tokens, _ in result.nbest:   # the n-best meets the constraints too
            assert all(contains(tokens, p.lower().strip("!")) for p in required)
    assert results[1].constraints[1].tokens == ["on"]
    # "grass" of the avoid list is inside the constraint "Grass!": the constraint wins, with a warning
    assert results[3].warnings == ["avoid list phrase 'grass' occurs in a constraint: not avoided"]
    assert [(p.phrase, p.met) for p in results[3].avoid] == [("dog", True), ("grass", False)]
    assert results[3].constraints_met is False   # the caption has "grass", which the avoid list asked to avoid
    assert [r.warnings for r in results[:3]] == [[], [], []]
    assert [r.constraints_met for r in results[:3]] == [True] * 3


def test_bad_phrases_cost_only_themselves(features):
    captioner = Captioner(MODEL, beam_size=3, max_output_length=5)
    plain = captioner.caption([CaptionInput(features=features[0])])[0]
    cases = [([IgnoredPhrase("3", "the caller's warning")], [], "the caller's warning"),
             (["zebra"], [], "constraint 'zebra' has words outside the vocabulary (zebra): it cannot be met"),
             (["..."], [], "constraint '...' has no words: ignored"),
             ([["zebra", "!"]], [], "constraint alternative 'zebra' has words outside the vocabulary (zebra): "
                                    "ignored"),
             (["a dog on the grass"], [], "constraint 'a dog on the grass' does not fit: 5 constraint words and "
                                          "</s> exceed max_output_length 5; not enforced"),
             (["the cat"], ["the cat"], "avoid phrase 'the cat' occurs in a constraint: not avoided"),
             ([], ["..."], "avoid phrase '...' has no words: ignored"),
             ([], ["zebra"], None)]   # an avoided word the model cannot write: nothing to say
    results = captioner.caption([CaptionInput(features=features[0], constraints=c, avoid=a) for c, a, _ in cases])
    for result, (_, _, warning) in zip(results, cases):
        assert result.error is None
        assert result.warnings[:1] == ([warning] if warning else [])
    assert results[3].warnings[1:] == ["constraint alternative '!' has no words: ignored",
                                       "constraint 'zebra | !' has no alternative the model can write: it cannot be "
                                       "met"]
    # each phrase is reported, unmet when it could not be used; the caption meets them all only in the last case
    # ("the cat" is not avoided: the constraint wins)
    assert [[(p.phrase, p.met) for p in r.constraints + r.avoid] for r in results] == [
        [("3", False)], [("zebra", False)], [("...", False)], [("zebra | !", False)], [("a dog on the grass", False)],
        [("the cat", True), ("the cat", False)], [("...", False)], [("zebra", True)]]
    assert [r.constraints_met for r in results] == [False] * 7 + [True]
    # what could not be used (or not enforced) is as if it were not given: the plain caption
    for i in (0, 1, 2, 3, 4, 6, 7):
        assert results[i].tokens == plain.tokens and results[i].score == pytest.approx(plain.score, abs=1e-5)
    assert contains(results[5].tokens, "the cat") and results[5].tokens != plain.tokens


def test_inputs_without_phrases_caption_as_before_beside_constrained_ones(features):
    kwargs = dict(beam_size=3, max_output_length=6, nbest_size=3, allow_unk=True)
    plain = Captioner(MODEL, **kwargs).caption([CaptionInput(features=x) for x in features])
    mixed_inputs = [CaptionInput(features=x, constraints=["dog"] if i % 2 else [], avoid=["a"] if i == 3 else [])
                    for i, x in enumerate(features)]
    mixed = Captioner(MODEL, **kwargs).caption(mixed_inputs)
    assert all(r.constraints_met is None for r in mixed[::2]) and all(r.constraints_met for r in mixed[1::2])
    assert [summary(r) for r in mixed[::2]] == [summary(r) for r in plain[::2]]   # the same floats
    one_by_one = Captioner(MODEL, batch_size=1, **kwargs).caption(mixed_inputs)
    assert_same(one_by_one, mixed)   # the same captions; scores up to float32 rounding of other batch shapes


def test_constraints_with_test_time_augmentation_and_nbest(features, tmp_path):
    for name, array in (("a", features[0]), ("b", features[1])):
        np.save(str(tmp_path / ("%s.jpg.npy" % name)), array)
        np.save(str(tmp_path / ("%s.jpg.hflip.npy" % name)), array[::-1].copy())
    tta = Captioner(MODEL, beam_size=4, max_output_length=7, nbest_size=3, test_time_augmentations=["hflip"],
                    source_root=str(tmp_path))
    plain_b = tta.caption([CaptionInput(path="b.jpg.npy")])[0]
    a, b = tta.caption([CaptionInput(path="a.jpg.npy", constraints=["the dog"], avoid=["on"]),
                        CaptionInput(path="b.jpg.npy")])
    assert contains(a.tokens, "the dog") and "on" not in a.tokens and a.constraints_met is True
    assert a.nbest and all(contains(tokens, "the dog") and "on" not in tokens for tokens, _ in a.nbest)
    assert_same([b], [plain_b])   # a batch of one and of two: float32 rounding apart


def test_phrases_changed_to_the_wrong_type_after_the_input_was_made_are_refused_before_any_search(features):
    captioner = Captioner(MODEL, beam_size=2, max_output_length=4)
    bad = CaptionInput(features=features[1])
    bad.avoid = [3]   # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"avoid\[0\] must be a phrase"):
        captioner.caption([CaptionInput(features=features[0]), bad])


# --- the captioner CLI: a phrase of the wrong type in a JSON line is a warning of that line ------------------------

def test_the_cli_warns_about_phrases_of_the_wrong_type_and_captions_the_rest_of_the_line(features, tmp_path):
    np.save(str(tmp_path / "a.npy"), features[0])
    captioner = Captioner(MODEL, beam_size=3, max_output_length=5, source_root=str(tmp_path))
    lines = [{"image": "a.npy", "constraints": "a dog", "avoid": ["the"]},
             {"image": "a.npy", "constraints": [3, "dog"], "avoid": {"a": 1}},
             {"image": "a.npy", "constraints": [["cat", 3], []], "avoid": [["x"], None]},
             {"image": "a.npy", "constraints": None, "avoid": None},
             {"image": "a.npy", "constraints": ["dog"]},
             {"image": "a.npy", "avoid": ["the"]}]
    results = caption_lines(captioner, [(n, json.dumps(line), None) for n, line in enumerate(lines, 1)], True)
    assert all(r.error is None for r in results) and [r.line for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r.warnings for r in results] == [
        ["constraints is not a list of phrases but a str ('a dog'): ignored"],
        ["constraints[0] must be a phrase (a string) or a list of alternative phrases, got 3: ignored",
         "avoid is not a list of phrases but a dict ({'a': 1}): ignored"],
        ["constraints[0][1] must be a phrase (a string), got 3: ignored",
         "constraints[1] is an empty list of alternative phrases (a disjunctive constraint needs one at least): "
         "ignored",
         "avoid[0] must be a phrase (a string), got ['x']: ignored",
         "avoid[1] must be a phrase (a string), got None: ignored"],
        [], [], []]
    # the rest of each line is still used: its good phrases enforced, the bad ones reported unmet in their place
    assert [(p.phrase, p.tokens, p.met) for p in results[0].constraints] == [("a dog", ["a", "dog"], False)]
    assert results[0].tokens == results[5].tokens and "the" not in results[0].tokens
    assert [(p.phrase, p.met) for p in results[1].constraints] == [("3", False), ("dog", True)]
    assert results[1].tokens == results[4].tokens and [(p.phrase, p.met) for p in results[1].avoid] == [
        ("{'a': 1}", False)]
    assert [(p.phrase, p.alternatives) for p in results[2].constraints] == [("cat | 3", ["cat", "3"]), ("[]", [])]
    assert [(p.phrase, p.met) for p in results[2].avoid] == [("['x']", False), ("None", False)]
    assert [r.constraints_met for r in results] == [False, False, False, None, True, True]
    assert "cat" in results[2].tokens   # the disjunction's string alternative is enforced
