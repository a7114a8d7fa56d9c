"""Several captions per image on the tiny model of the pipeline (``model`` in conftest.py): the captioner CLI's
sampling and diverse beam search write one line per input line (the same at any batch size for one seed), bad
options are one clear error, required phrases are refused line by line; the library's Captioner takes the same
options."""
import json
import os

import numpy as np
import pytest

from imcap.inference import CaptionInput, Captioner
from imcap.utils import ImcapError
from test.common import requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared


@pytest.fixture(scope="module")
def features(small_data):
    """The feature files of the eight test images, relative to the cache."""
    return read_lines(os.path.join(small_data.data, "test.features"))


def caption_json(model, small_data, lines, *options):
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--output-type", "json",
                   "--quiet", *options, input="".join(line + "\n" for line in lines))
    return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()], proc.stderr.decode("utf-8")


@pytest.mark.parametrize("options, message", [
    (["--sample", "--sampling-temperature", "0"], "--sampling-temperature must be a finite number above 0, got 0.0"),
    (["--sample", "--sampling-temperature", "-1"], "--sampling-temperature must be a finite number above 0, got -1.0"),
    (["--sample", "--sampling-top-p", "1.5"], "--sampling-top-p must be above 0 and at most 1 (1: off), got 1.5"),
    (["--sample", "--sampling-top-p", "0"], "--sampling-top-p must be above 0 and at most 1 (1: off), got 0.0"),
    (["--sample", "--sampling-top-k", "-2"], "--sampling-top-k must be 0 (off) or at least 1, got -2"),
    (["--beam-size", "5", "--diverse-beam-groups", "2"],
     "--diverse-beam-groups must be at least 1 and divide --beam-size (5), got 2"),
    (["--beam-size", "4", "--diverse-beam-groups", "2", "--sample"],
     "--diverse-beam-groups must be 1 with --sample (sampling draws independent captions, it keeps no beam), got 2"),
])
def test_a_bad_option_is_one_clear_error(model, features, options, message):
    proc = run_cli("captioner", "--models", model.dir, *options, input="x.npy\n", expect=1)
    assert proc.stderr.decode("utf-8").splitlines() == ["Error: " + message]
    assert proc.stdout == b""


def test_sampled_captions_are_one_line_per_input_line_and_the_same_at_any_batch_size(model, small_data, features):
    lines = features[:5] + ["no_such_file.npy", features[0]]
    options = ["--sample", "--nbest-size", "3", "--seed", "7", "--sampling-top-p", "0.95"]
    one, stderr = caption_json(model, small_data, lines, *options, "--batch-size", "1")
    four, _ = caption_json(model, small_data, lines, *options, "--batch-size", "4", "--chunk-size", "3")
    assert len(one) == len(lines) and [r["line"] for r in one] == list(range(1, 8))
    captions = lambda records: [[n["caption"] for n in r.get("nbest", [])] for r in records]  # noqa: E731
    assert captions(one) == captions(four)                            # the same samples in any batch
    assert [n["score"] for r in one for n in r.get("nbest", [])] == pytest.approx(   # (MXNet's sums: the last bits)
        [n["score"] for r in four for n in r.get("nbest", [])], abs=1e-5)
    assert "error" in one[5] and "Warning: line 6: no such file" in stderr
    for record in one[:5] + one[6:]:
        assert len(record["nbest"]) == 3 and record["caption"] == record["nbest"][0]["caption"]
        assert [n["score"] for n in record["nbest"]] == sorted([n["score"] for n in record["nbest"]], reverse=True)
    assert len({n["caption"] for r in one[:5] for n in r["nbest"]}) > 5  # samples, not one caption repeated
    assert captions(one)[6] != captions(one)[0]      # the same image on another line: its own draws
    other_seed, _ = caption_json(model, small_data, lines, "--sample", "--nbest-size", "3", "--seed", "8",
                                 "--sampling-top-p", "0.95")
    assert captions(other_seed) != captions(one)
    plain = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--quiet", "--sample",
                    "--seed", "7", input="".join(line + "\n" for line in lines)).stdout.decode("utf-8")
    assert plain.endswith("\n") and len(plain.split("\n")) == len(lines) + 1 and plain.split("\n")[5] == ""


def test_diverse_beam_search_of_strength_0_doubles_the_plain_n_best_of_half_the_beam(model, small_data, features):
    diverse, _ = caption_json(model, small_data, features[:4], "--beam-size", "4", "--diverse-beam-groups", "2",
                              "--diverse-beam-strength", "0", "--nbest-size", "4")
    plain, _ = caption_json(model, small_data, features[:4], "--beam-size", "2", "--nbest-size", "2")
    for d, p in zip(diverse, plain):
        assert [n["caption"] for n in d["nbest"]] == [n["caption"] for n in p["nbest"] for _ in range(2)]
        assert d["caption"] == p["caption"] and d["score"] == pytest.approx(p["score"], abs=1e-5)   # other rows
    strong, _ = caption_json(model, small_data, features[:4], "--beam-size", "4", "--diverse-beam-groups", "2",
                             "--diverse-beam-strength", "2", "--nbest-size", "2")
    assert len(strong) == 4 and all(len(r["nbest"]) == 2 for r in strong)
    assert sum(r["nbest"][0]["caption"] != r["nbest"][1]["caption"] for r in strong) >= 3


def test_required_phrases_are_refused_line_by_line_when_sampling(model, small_data, features):
    lines = [json.dumps({"image": features[0]}), json.dumps({"image": features[1], "constraints": ["a dog"]}),
             json.dumps({"image": features[2], "avoid": ["a"]})]
    records, stderr = caption_json(model, small_data, lines, "--json-input", "--sample", "--nbest-size", "2")
    assert len(records) == 3 and records[0]["caption"] and "error" not in records[2]
    assert records[1]["error"] == "constraints need beam search: not with sample" and records[1]["caption"] == ""
    assert "Warning: line 2: constraints need beam search: not with sample" in stderr
    assert all("a" not in n["caption"].split() for n in records[2]["nbest"])   # avoided phrases are kept


def test_the_library_takes_the_same_options(model, small_data, features):
    arrays = [np.load(os.path.join(small_data.cache, f)) for f in features[:4]]
    captioner = Captioner([model.dir], sample=True, nbest_size=5, seed=11, batch_size=3)
    results = captioner.caption([CaptionInput(features=a) for a in arrays])
    assert all(len(r.nbest) == 5 and r.tokens == r.nbest[0][0] for r in results)
    alone = [captioner.with_search_options(batch_size=1).caption([CaptionInput(features=a, line=i + 1)])[0]
             for i, a in enumerate(arrays)]
    assert [[tokens for tokens, _ in r.nbest] for r in alone] == [[tokens for tokens, _ in r.nbest] for r in results]
    diverse = Captioner([model.dir], beam_size=6, diverse_beam_groups=3, nbest_size=3)
    assert all(len(r.nbest) == 3 for r in diverse.caption([CaptionInput(features=a) for a in arrays]))
    with pytest.raises(ImcapError, match="guide_with_classifier with guide_top_k above 0 needs beam search .*: not with sample"):
        Captioner([model.dir], sample=True, guide_with_classifier=True)
