"""Lexical constraints on real data: the tiny models trained on the Flickr8k subset caption the subset's test and
validation images from cached features with 1-2 phrases of each image's own references required and 1-2 words of
its unconstrained caption avoided: every caption contains every required phrase as consecutive words and no avoided
one, for the rnn and Transformer decoders and their ensemble, searched 32 and 1 images at a time with the same
captions. The captioner CLI writes the JSON fields and a warning per bad phrase, and loses no line."""
import json
import os
import random

import pytest

from imcap.inference import CaptionInput, Captioner
from test.common import IMAGES, requires_shared
from test.integration.conftest import NUM_REFERENCES, read_lines, run_cli, train_args

pytestmark = requires_shared

SPLITS = ("test", "val")   # the subset's 8 test images and, for a larger sample, its 8 validation images


@pytest.fixture(scope="module")
def transformer(small_data, tmp_path_factory):
    """A tiny Transformer trained for 10 updates on the subset (seconds), with the rnn model's vocabulary."""
    model_dir = str(tmp_path_factory.mktemp("constraints") / "transformer")
    run_cli("train", *train_args(small_data, model_dir, "--decoder", "transformer", "--num-layers", "1",
                                 "--transformer-model-size", "32", "--transformer-attention-heads", "2",
                                 "--transformer-feed-forward-num-hidden", "64", "--batch-size", "16",
                                 "--checkpoint-interval", "10", "--max-updates", "10", "--quiet"))
    return model_dir


@pytest.fixture(scope="module")
def images(small_data):
    """``(feature path, [reference token lists])`` of every image of :data:`SPLITS`."""
    out = []
    for split in SPLITS:
        features = read_lines(os.path.join(small_data.data, split + ".features"))
        references = [read_lines(os.path.join(small_data.data, "%s.captions.%d" % (split, k)))
                      for k in range(NUM_REFERENCES)]
        out += [(path, [refs[i].split() for refs in references]) for i, path in enumerate(features)]
    return out


def contains(tokens, phrase):
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def draw_constraints(references, vocab, rng):
    """1 or 2 phrases of 1 or 2 consecutive words of the references, every word in the model's vocabulary."""
    candidates = sorted({tuple(ref[i:i + n]) for ref in references for n in (1, 2) for i in range(len(ref) - n + 1)
                         if all(w in vocab.token_to_idx for w in ref[i:i + n])})
    return [list(p) for p in rng.sample(candidates, rng.choice([1, 2]))]


def draw_avoided(caption, constraints, rng):
    """1 or 2 words of the unconstrained caption that are in no required phrase."""
    words = sorted({w for w in caption if not any(w in p for p in constraints)})
    return [[w] for w in rng.sample(words, min(len(words), rng.choice([1, 2])))]


@pytest.mark.parametrize("decoders", ["rnn", "transformer", "ensemble"])
def test_every_caption_meets_its_constraints(decoders, model, transformer, small_data, images):
    dirs = {"rnn": [model.dir], "transformer": [transformer], "ensemble": [model.dir, transformer]}[decoders]
    captioner = Captioner(dirs, source_root=small_data.cache, beam_size=5, batch_size=32)
    plain = captioner.caption([CaptionInput(path=path) for path, _ in images])
    rng = random.Random(12)
    asks = []
    for (path, references), result in zip(images, plain):
        required = draw_constraints(references, captioner.vocab, rng)
        asks.append((required, draw_avoided(result.tokens, required, rng)))
    inputs = [CaptionInput(path=path, constraints=[" ".join(p) for p in required], avoid=[" ".join(p) for p in avoid])
              for (path, _), (required, avoid) in zip(images, asks)]
    results = captioner.caption(inputs)
    for result, (required, avoid) in zip(results, asks):
        assert result.error is None and result.warnings == []
        assert all(contains(result.tokens, p) for p in required), (result.caption, required)
        assert not any(contains(result.tokens, p) for p in avoid), (result.caption, avoid)
        assert result.constraints_met is True and all(p.met for p in result.constraints + result.avoid)
    one_at_a_time = Captioner(dirs, source_root=small_data.cache, beam_size=5, batch_size=1).caption(inputs)
    assert [r.caption for r in one_at_a_time] == [r.caption for r in results]
    assert [r.score for r in one_at_a_time] == pytest.approx([r.score for r in results], abs=1e-4)
    # images without phrases beside constrained ones get their plain captions
    mixed = captioner.caption([item if i % 2 else CaptionInput(path=item.path) for i, item in enumerate(inputs)])
    assert [r.caption for r in mixed[::2]] == [r.caption for r in plain[::2]]
    # the same scores up to float32 rounding (a batch with constraints takes the search's other path: every word's
    # log-probability on the host, BeamSearch.restrict, instead of the runtime's best words, BeamSearch.preselect)
    assert [r.score for r in mixed[::2]] == pytest.approx([r.score for r in plain[::2]], abs=1e-5)
    assert [r.caption for r in mixed[1::2]] == [r.caption for r in results[1::2]]


def test_cli_json_output_avoid_list_helper_and_bad_phrases(model, small_data, images, tmp_path):
    path = images[0][0]
    avoid_list = tmp_path / "avoid.txt"
    avoid_list.write_text("a\n\nin the\n", encoding="utf-8")
    tsv = "%s\tdog\tthe grass\n%s\n" % (path, path)
    helper = run_cli("lexical_constraints", input=tsv).stdout.decode("utf-8").splitlines()
    lines = helper + [json.dumps({"text": path, "constraints": ["zebrafish", "dog"]}),
                      json.dumps({"image": path, "constraints": "dog", "avoid": ["in"]}),
                      json.dumps({"image": path, "constraints": [" ".join(["dog"] * 30)]}),
                      json.dumps({"image": path, "constraints": ["in the water"], "avoid": ["in the water"]}),
                      json.dumps({"image": "missing.npy", "constraints": ["dog"]})]
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--json-input",
                   "--output-type", "json", "--avoid-list", str(avoid_list), "--nbest-size", "2",
                   input="".join(line + "\n" for line in lines))
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == 7
    stderr = proc.stderr.decode("utf-8").splitlines()
    warnings = [line for line in stderr if line.startswith("Warning:")]
    assert warnings == [
        "Warning: line 3: constraint 'zebrafish' has words outside the vocabulary (zebrafish): it cannot be met",
        "Warning: line 4: constraints is not a list of phrases but a str ('dog'): ignored",
        "Warning: line 5: constraint '%s... does not fit: 30 constraint words and </s> exceed max_output_length 30; "
        "not enforced" % " ".join(["dog"] * 30)[:56],   # a long phrase is cut: the warning stays one short line
        "Warning: line 6: avoid phrase 'in the water' occurs in a constraint: not avoided",
        "Warning: line 6: avoid list phrase 'in the' occurs in a constraint: not avoided",
        "Warning: line 7: no such file (missing.npy)"]
    assert stderr[-1].startswith("Captioned 7 lines (1 failed)")
    first = out[0]
    assert first["constraints_met"] is True and contains(first["tokens"], ["dog"])
    assert contains(first["tokens"], ["the", "grass"]) and not contains(first["tokens"], ["a"])
    assert first["constraints"] == [{"phrase": "dog", "met": True}, {"phrase": "the grass", "met": True}]
    assert first["avoid"] == [] and "warnings" not in first
    for n in first["nbest"]:
        assert contains(n["caption"].split(), ["dog"]) and contains(n["caption"].split(), ["the", "grass"])
    assert "constraints_met" not in out[1] and out[1]["caption"] and "a" not in out[1]["tokens"]  # the avoid list
    assert out[2]["constraints_met"] is False and contains(out[2]["tokens"], ["dog"])
    assert out[2]["constraints"] == [{"phrase": "zebrafish", "met": False}, {"phrase": "dog", "met": True}]
    assert out[3]["constraints_met"] is False and out[3]["constraints"] == [{"phrase": "dog", "met": False}]
    assert out[3]["avoid"] == [{"phrase": "in", "met": "in" not in out[3]["tokens"]}]
    assert out[4]["caption"] and out[4]["constraints_met"] is False
    assert contains(out[5]["tokens"], ["in", "the", "water"]) and out[5]["constraints_met"] is False
    assert out[5]["warnings"] == [w.split(": ", 2)[2] for w in warnings[3:5]]
    assert out[6]["error"] == "no such file" and out[6]["caption"] == ""


def test_constraints_on_images_through_the_cnn(model, small_data):
    paths = [os.path.join(IMAGES, image) for image in read_lines(os.path.join(small_data.data, "test.images"))[:2]]
    captioner = Captioner([model.dir], extract_image_features=True, nbest_size=3)
    results = captioner.caption([CaptionInput(path=paths[0], constraints=["a dog"], avoid=["the"]),
                                 CaptionInput(path=paths[1])])
    assert contains(results[0].tokens, ["a", "dog"]) and "the" not in results[0].tokens
    assert results[0].constraints_met is True and results[1].constraints_met is None and results[1].caption
