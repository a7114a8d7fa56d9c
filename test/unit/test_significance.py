"""Tests of imcap.significance (paired bootstrap resampling, Koehn 2004) and of ``imcap.evaluate --compare``, on the
human captions of the Flickr8k test split: a system against itself (difference 0, p = 1), against a clearly worse
one (p < 0.05, the interval excluding 0), the interval covering the difference of the whole population on subsets,
and the BLEU resamples being sacrebleu's own paired bootstrap's."""
import json
import os

import numpy as np
import pytest

from imcap import arguments, evaluate, significance
from imcap.utils import ImcapError
from test.common import FLICKR8K

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(FLICKR8K, "captions.tsv")),
                                reason="Flickr8k not found under %s" % FLICKR8K)


@pytest.fixture(scope="module")
def flickr_test():
    """The five tokenized captions of each of the 1000 test images, as five streams (prepare_data's tokenizer)."""
    from imcap.prepare_data import read_flickr_captions
    from imcap.tokenizer import tokenize
    captions = read_flickr_captions(os.path.join(FLICKR8K, "captions.tsv"))
    with open(os.path.join(FLICKR8K, "test.txt"), encoding="utf-8") as f:
        images = [line.strip() for line in f if line.strip()]
    return [[" ".join(tokenize(captions[image][k])) for image in images] for k in range(5)]


def _swapped(captions, every=4):
    """``captions`` with every ``every``-th one replaced by the next image's: fluent, but about another image."""
    return [captions[(i + 1) % len(captions)] if i % every == 0 else c for i, c in enumerate(captions)]


def test_a_system_against_itself(flickr_test):
    human, references = flickr_test[0][:300], [stream[:300] for stream in flickr_test[1:]]
    comparisons = significance.compare_systems(human, list(human), references, samples=500)
    assert [c.key for c in comparisons] == ["bleu4", "CIDEr-D"]
    for c in comparisons:
        assert c.system == c.other and c.difference == 0.0
        assert c.low == 0.0 and c.high == 0.0 and c.p_value == 1.0


def test_a_clearly_better_system(flickr_test):
    human, references = flickr_test[0][:300], [stream[:300] for stream in flickr_test[1:]]
    worse = _swapped(human)
    better = significance.compare_systems(human, worse, references)
    for c in better:
        assert c.difference == pytest.approx(c.system - c.other) and c.difference > 0
        assert 0 < c.low < c.difference < c.high          # the interval holds the observed difference, not 0
        assert c.p_value < 0.05
    bleu, cider = better
    assert 2 < bleu.difference < 10 and 0.1 < cider.difference < 0.4
    # the other way round: the opposite difference and interval, the same p-value
    for c, r in zip(better, significance.compare_systems(worse, human, references)):
        assert r.difference == pytest.approx(-c.difference)
        assert (r.low, r.high) == pytest.approx((-c.high, -c.low))
        assert r.p_value == c.p_value
    # seeded: the same resamples give the same figures, another seed others
    assert significance.compare_systems(human, worse, references) == better
    assert significance.compare_systems(human, worse, references, seed=7)[0].low != bleu.low


def test_a_small_difference_is_not_significant(flickr_test):
    # one image in 100 swapped, on 100 images: the test cannot tell
    human, references = flickr_test[0][:100], [stream[:100] for stream in flickr_test[1:]]
    for c in significance.compare_systems(human, _swapped(human, every=100), references):
        assert c.low <= 0 <= c.high      # the resamples without the swapped image differ by exactly 0
        assert c.p_value > 0.05


def test_the_interval_covers_the_population_difference(flickr_test):
    """Two human annotators (captions 0 and 1, scored against captions 2-4) on the 1000 images are the population:
    its difference is the true one. On each of 10 disjoint samples of 100 images, the bootstrap's 95% interval must
    cover it (at least 8 of 10, for the interval's 95%: P(8 or more) = 0.99)."""
    a, b, references = flickr_test[0], flickr_test[1], flickr_test[2:]
    for statistics in (significance.bleu_statistics, significance.cider_statistics):
        stats_a, score = statistics(a, references)
        stats_b, _ = statistics(b, references)
        true_difference = score(stats_a.sum(axis=0)) - score(stats_b.sum(axis=0))
        covered, widths = 0, []
        for sample in range(10):
            rows = slice(100 * sample, 100 * (sample + 1))
            counts = significance.resample_counts(100, 1000, seed=sample)
            c = significance.paired_bootstrap("x", stats_a[rows], stats_b[rows], score, counts)
            covered += c.low <= true_difference <= c.high
            widths.append(c.high - c.low)
        assert covered >= 8, (statistics.__name__, covered, true_difference)
        assert min(widths) > 0


def test_bleu_resamples_are_sacrebleus(flickr_test, monkeypatch):
    """With the same seed, the BLEU of each resample is the one sacrebleu's own paired bootstrap computes: the mean and
    95% half-width of both systems' resampled BLEU match its PairedTest's."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest, estimate_ci
    monkeypatch.setenv("SACREBLEU_SEED", str(significance.BOOTSTRAP_SEED))
    human, references = flickr_test[0][:200], [stream[:200] for stream in flickr_test[1:]]
    worse = _swapped(human)
    bleu = BLEU(tokenize="none", lowercase=False, smooth_method="exp", force=True)
    _, results = PairedTest([("human", human), ("worse", worse)], {"BLEU": bleu}, references, test_type="bs",
                            n_samples=300)()
    counts = significance.resample_counts(200, 300)
    for system, result in zip((human, worse), results["BLEU"]):
        stats, score = significance.bleu_statistics(system, references)
        assert score(stats.sum(axis=0)) == pytest.approx(result.score, abs=1e-9)
        resampled = np.array([score(summed) for summed in counts @ stats])
        assert estimate_ci(resampled) == pytest.approx((result.mean, result.ci), abs=1e-6)


def test_resample_counts():
    counts = significance.resample_counts(50, 20, seed=3)
    assert counts.shape == (20, 50) and (counts.sum(axis=1) == 50).all()
    assert (counts == significance.resample_counts(50, 20, seed=3)).all()
    with pytest.raises(ImcapError, match="no images"):
        significance.resample_counts(0)
    with pytest.raises(ImcapError, match="the systems have 2 and 3 captions"):
        significance.compare_systems(["a dog", "a cat"], ["a dog", "a cat", "a cow"], [["a dog", "a cat"]])


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_compare_cli(flickr_test, tmp_path, capsys):
    human, references = flickr_test[0][:200], [stream[:200] for stream in flickr_test[1:]]
    hyp = _write(tmp_path / "human.0", human)
    other = _write(tmp_path / "swapped.0", _swapped(human))
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(references, 1)]
    parser = arguments.new_parser("test")
    evaluate.add_evaluate_args(parser)
    argv = ["--hypotheses", hyp, "--references"] + refs + ["--metrics", "bleu", "--compare", other,
                                                             "--bootstrap-samples", "200", "--seed", "5"]
    scores = evaluate.run_evaluate(parser.parse_args(argv))
    out = capsys.readouterr().out.splitlines()
    expected = significance.compare_systems(human, _swapped(human), references, samples=200, seed=5)
    comparison = scores["comparison"]
    assert (comparison["images"], comparison["bootstrap_samples"], comparison["seed"]) == (200, 200, 5)
    assert comparison["bleu4"]["difference"] == expected[0].difference
    assert comparison["CIDEr-D"]["p_value"] == expected[1].p_value
    assert out[6] == "paired bootstrap (Koehn 2004): A = %s, B = %s, 200 images, 200 resamples, seed 5" % (hyp, other)
    assert out[7].split() == ["metric", "A", "B", "A", "-", "B", "95%", "interval", "p-value"]
    bleu = expected[0]
    assert out[8].split() == ["BLEU-4", "(sacrebleu,", "tok:none)", "%.2f" % bleu.system, "%.2f" % bleu.other,
                              "%+.2f" % bleu.difference, "[%+.2f," % bleu.low, "%+.2f]" % bleu.high,
                              "%.3f" % bleu.p_value]
    assert out[9].split()[0] == "CIDEr-D" and out[9].split()[3] == "%+.3f" % expected[1].difference
    # --json: the comparison under "comparison"
    scores = evaluate.run_evaluate(parser.parse_args(argv + ["--json"]))
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(scores))
    assert scores["comparison"]["bleu4"]["label"] == "BLEU-4 (sacrebleu, tok:none)"
