"""Tests of imcap.evaluate: BLEU against hand-computed values, multiple references, CLI checks."""
import json
import math

import pytest

from imcap import arguments
from imcap import evaluate
from imcap.utils import ImcapError


def _bleu_by_hand(matches, totals, sys_len, ref_len, order):
    """Corpus BLEU-order (0-100) from n-gram match counts and lengths (no smoothing needed here)."""
    brevity_penalty = 1.0 if sys_len >= ref_len else math.exp(1 - ref_len / sys_len)
    log_precisions = [math.log(m / t) for m, t in zip(matches[:order], totals[:order])]
    return 100 * brevity_penalty * math.exp(sum(log_precisions) / order)


def test_identical_is_100():
    hyps = ["a dog runs on the grass", "two men are playing soccer in a field"]
    scores = evaluate.bleu_scores(hyps, [list(hyps)])
    assert sorted(scores) == ["bleu1", "bleu2", "bleu3", "bleu4"]
    for value in scores.values():
        assert value == pytest.approx(100.0)


def test_known_example_by_hand():
    hyps = ["a dog runs on the grass",
            "a man rides a bike",
            "the the the cat"]
    refs = [["a dog runs fast on the green grass",
             "a man rides a red bike down the hill",
             "the cat sat on the mat"]]
    # Clipped n-gram matches / hypothesis n-grams, per sentence:
    #   1: unigrams 6/6; bigrams 3/5 (a dog, dog runs, on the); trigrams 1/4 (a dog runs); 4-grams 0/3
    #   2: unigrams 5/5 (two 'a' in the reference too); bigrams 3/4 (a man, man rides, rides a);
    #      trigrams 2/3 (a man rides, man rides a); 4-grams 1/2 (a man rides a)
    #   3: unigrams 3/4 ('the' x3 clipped to the reference's 2, cat); bigrams 1/3 (the cat);
    #      trigrams 0/2; 4-grams 0/1
    matches = [6 + 5 + 3, 3 + 3 + 1, 1 + 2 + 0, 0 + 1 + 0]
    totals = [6 + 5 + 4, 5 + 4 + 3, 4 + 3 + 2, 3 + 2 + 1]
    sys_len, ref_len = 6 + 5 + 4, 8 + 9 + 6  # brevity penalty exp(1 - 23/15)
    scores = evaluate.bleu_scores(hyps, refs)
    for order in range(1, 5):
        expected = _bleu_by_hand(matches, totals, sys_len, ref_len, order)
        assert scores["bleu%d" % order] == pytest.approx(expected, abs=1e-6)
    assert scores["bleu4"] == pytest.approx(
        100 * math.exp(1 - 23 / 15) * (14 / 15 * 7 / 12 * 3 / 9 * 1 / 6) ** 0.25, abs=1e-6)


def test_bleu1_at_least_bleu4():
    hyps = ["a black dog is running through the grass", "a woman sits on a bench near the water"]
    refs = [["a black dog runs across a grassy field", "a lady is sitting on a park bench by a lake"]]
    scores = evaluate.bleu_scores(hyps, refs)
    assert 0 < scores["bleu4"] < scores["bleu3"] < scores["bleu2"] < scores["bleu1"] < 100


def test_more_references_raise_the_score():
    hyps = ["a black dog is running through the grass", "a woman sits on a bench near the water"]
    single = [["a black dog runs across a grassy field", "a lady is sitting on a park bench by a lake"]]
    double = single + [["a dog is running through the grass", "a woman sits near the water"]]
    one, two = evaluate.bleu_scores(hyps, single), evaluate.bleu_scores(hyps, double)
    for key in one:
        assert two[key] > one[key]


def test_empty_reference_is_skipped():
    # Scored as a length-0 reference, '' would be the closest length to the 3-token hypothesis and
    # cancel the brevity penalty; skipped, the 8-token reference alone sets it.
    hyps = ["a dog runs"]
    with_empty = evaluate.bleu_scores(hyps, [["a dog runs on the green grass fast"], [""]])
    alone = evaluate.bleu_scores(hyps, [["a dog runs on the green grass fast"]])
    assert with_empty == pytest.approx(alone)
    assert alone["bleu1"] == pytest.approx(100 * math.exp(1 - 8 / 3))


def test_line_without_reference_is_an_error():
    with pytest.raises(ImcapError, match="line 2 has no non-empty reference"):
        evaluate.bleu_scores(["a dog", "a cat"], [["a dog", ""], ["a dog", " "]])


def _parse(argv):
    parser = arguments.new_parser("test")
    evaluate.add_evaluate_args(parser)
    return parser.parse_args(argv)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_cli_table_and_json(tmp_path, capsys):
    hyp = _write(tmp_path / "hyp", ["a dog runs on the grass", "a man rides a bike"])
    ref0 = _write(tmp_path / "ref.0", ["a dog runs on the grass", "a man rides a red bike"])
    ref1 = _write(tmp_path / "ref.1", ["", "a man rides a bike"])
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, ref1]))
    assert scores["bleu4"] == pytest.approx(100.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["metric", "value"]
    assert out[1].split() == ["bleu1", "100.00"] and len(out) == 5

    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, "--json"]))
    assert json.loads(capsys.readouterr().out) == pytest.approx(scores)


def test_cli_line_count_mismatch_names_the_file(tmp_path):
    hyp = _write(tmp_path / "hyp", ["a dog", "a cat"])
    ref0 = _write(tmp_path / "ref.0", ["a dog", "a cat"])
    ref1 = _write(tmp_path / "ref.1", ["a dog"])
    with pytest.raises(ImcapError, match=r"ref\.1 has 1 lines, .*hyp has 2"):
        evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, ref1]))
