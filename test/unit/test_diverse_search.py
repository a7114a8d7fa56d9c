"""Several different captions per image, on the hand-built Markov models of test_beam_search.py and the numpy runtime
of test_search_steps.py: sampling (its frequencies are the model's, temperature sharpens or flattens, top-k and top-p
never write a word outside their cut-off, the same seed gives the same samples in any batch) and diverse beam search
(strength 0: each group is the plain beam search of its size; strength above 0: the groups' captions differ where the
plain n-best repeats itself)."""
import collections

import numpy as np
import pytest

from imcap.beam_search import (BeamSearch, best_words, nucleus, nucleus_words, sample_words, sampling_uniforms)
from imcap.constraints import NEG_INF
from imcap.search_options import SearchOptions
from test.unit.test_beam_search import GARDEN_PATH, LOOP, MarkovModel, make_vocab, table_with
from test.unit.test_search_steps import NumpySteps

BOS, EOS, PAD = 2, 3, 0
WRITABLE = [3, 4, 5, 6]    # </s> a b c: the words a caption may contain (<pad> <unk> <s> are never written)


def random_table(seed):
    return np.random.RandomState(seed).dirichlet(np.ones(7), size=7)


def sampler(table, **settings):
    return BeamSearch(NumpySteps(table), make_vocab(), SearchOptions(sample=True, **settings))


def features(batch):
    return np.zeros((batch, 2, 1), dtype=np.float32)


def caption_probability(table, ids):
    """The probability the model writes ``ids`` then ``</s>``, the words never written left out (renormalized), as
    the search samples."""
    allowed = np.zeros(7)
    allowed[WRITABLE] = 1.0
    probability, prev = 1.0, BOS
    for word in list(ids) + [EOS]:
        row = table[prev] * allowed
        probability *= row[word] / row.sum()
        prev = word
    return probability


# -- the pieces ----------------------------------------------------------------------------------------------------

def test_sampling_uniforms_hash_the_seed_the_key_the_sample_and_the_step_alone():
    u = sampling_uniforms(7, np.array([3, 9, 4]), 5, 2)
    assert u.shape == (3, 5) and u.dtype == np.float64 and ((u >= 0) & (u < 1)).all()
    assert (sampling_uniforms(7, np.array([9]), 5, 2) == u[1]).all()            # another batch: the same numbers
    assert (sampling_uniforms(7, np.array([4, 3]), 5, 2) == u[[2, 0]]).all()
    assert not np.isin(sampling_uniforms(8, np.array([3, 9, 4]), 5, 2), u).any()   # another seed, step, key...
    assert not np.isin(sampling_uniforms(7, np.array([3, 9, 4]), 5, 3), u).any()
    assert (sampling_uniforms(2 ** 64 - 1, np.array([-1]), 1, 0) < 1).all()      # the extremes of seed and key
    many = sampling_uniforms(1, np.arange(2000), 50, 0).ravel()
    assert abs(many.mean() - 0.5) < 0.005 and abs(np.mean(many < 0.1) - 0.1) < 0.005
    assert np.histogram(many, bins=10, range=(0, 1))[0].min() > 9500   # 10000 per bin expected


def test_sample_words_inverts_the_cumulative_distribution_and_never_draws_a_forbidden_word():
    probs = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    log_probs = np.log(np.maximum(probs, 1e-300))
    log_probs[0] = NEG_INF
    grid = (np.arange(1000) + 0.5) / 1000                        # evenly spread uniforms: counts are exact
    drawn = sample_words(np.tile(log_probs, (1000, 1)), grid)
    assert np.bincount(drawn, minlength=5).tolist() == [0, 100, 200, 300, 400]
    sharp = np.bincount(sample_words(np.tile(log_probs, (1000, 1)), grid, temperature=0.5), minlength=5)
    np.testing.assert_allclose(sharp / 1000.0, probs ** 2 / (probs ** 2).sum(), atol=0.002)
    assert np.bincount(sample_words(np.tile(log_probs, (1000, 1)), grid, top_k=2), minlength=5).tolist() == \
        [0, 0, 0, 429, 571]                                       # 0.3 and 0.4 renormalized
    assert np.bincount(sample_words(np.tile(log_probs, (1000, 1)), grid, top_p=0.6), minlength=5).tolist() == \
        [0, 0, 0, 429, 571]                                       # 0.4 + 0.3 is the fewest that reach 0.6
    assert set(sample_words(np.tile(log_probs, (1000, 1)), grid, temperature=1e-6)) == {4}    # greedy
    assert set(sample_words(np.tile(log_probs, (1000, 1)), grid, temperature=1e30)) == {1, 2, 3, 4}   # flat, not 0


def test_best_words_and_the_nucleus_found_in_rounds_are_the_full_sorts():
    logits = np.log(np.random.RandomState(3).dirichlet(np.full(300, 0.3), size=20))
    logits[:, 7] = logits[:, 8]                                   # a tie: the lower id first
    words, values = best_words(logits, 300)
    order = np.lexsort((np.broadcast_to(np.arange(300), logits.shape), -logits), axis=-1)
    assert (words == order).all() and (values == np.take_along_axis(logits, order, axis=1)).all()
    assert (best_words(logits, 5)[0] == order[:, :5]).all()
    for top_p in (0.3, 0.9, 0.999):
        full = nucleus(values, top_p)
        found, kept = nucleus_words(logits, top_p, first=2)          # rounds of 2, 8, 32, ... words
        width = found.shape[1]
        assert (np.isfinite(full[:, width:]) == 0).all()
        assert (found[np.isfinite(kept)] == words[:, :width][np.isfinite(kept)]).all()
        assert (np.isfinite(kept) == np.isfinite(full[:, :width])).all()


# -- sampling -------------------------------------------------------------------------------------------------------

def test_sampled_captions_come_as_often_as_the_model_writes_them():
    samples = sampler(GARDEN_PATH, nbest_size=2000, max_output_length=6, seed=1).search(features(2))
    assert [len(hyps) for hyps in samples] == [2000, 2000]
    counts = collections.Counter(tuple(h.ids) for hyps in samples for h in hyps)
    for ids in [(5,), (4, 5), (4,), (4, 6, 5), (4, 6), (5, 4, 5)]:
        expected = caption_probability(GARDEN_PATH, ids)
        assert counts[ids] / 4000.0 == pytest.approx(expected, abs=4 * np.sqrt(expected / 4000.0)), ids
    hyps = samples[0]
    assert [h.score for h in hyps] == sorted([h.score for h in hyps], reverse=True)   # best first
    best = hyps[0]
    assert best.log_prob == pytest.approx(np.log(caption_probability(GARDEN_PATH, best.ids)), abs=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_the_temperature_sharpens_or_flattens_the_distribution(temperature):
    samples = sampler(GARDEN_PATH, nbest_size=4000, max_output_length=4, sampling_temperature=temperature,
                      seed=2).search(features(1))[0]
    first_a = np.mean([h.ids[0] == 4 for h in samples])             # p(a | <s>) = 0.6, p(b | <s>) = 0.4
    expected = 0.6 ** (1 / temperature) / (0.6 ** (1 / temperature) + 0.4 ** (1 / temperature))
    assert first_a == pytest.approx(expected, abs=0.03)             # 0.69, 0.6, 0.55


def transitions(ids, max_output_length):
    """The (previous, next) words of a caption, its forced last </s> (at max_output_length) left out."""
    words = [BOS] + list(ids) + [EOS]
    pairs = list(zip(words, words[1:]))
    return pairs[:-1] if len(ids) + 1 == max_output_length else pairs


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_never_writes_a_word_outside_the_k_likeliest(k):
    table = random_table(11)
    samples = sampler(table, nbest_size=300, max_output_length=8, sampling_top_k=k, seed=5).search(features(3))
    used = set()
    for h in (h for hyps in samples for h in hyps):
        for prev, word in transitions(h.ids, 8):
            likeliest = sorted(WRITABLE, key=lambda w: -table[prev, w])[:k]
            assert word in likeliest, (prev, word, k)
            used.add((prev, word))
    assert len(used) > (4 if k > 1 else 3)                               # it does draw among them


@pytest.mark.parametrize("top_p", [0.3, 0.6, 0.9])
def test_top_p_never_writes_a_word_outside_the_nucleus(top_p):
    table = random_table(12)
    samples = sampler(table, nbest_size=300, max_output_length=8, sampling_top_p=top_p, seed=6).search(features(3))
    for h in (h for hyps in samples for h in hyps):
        for prev, word in transitions(h.ids, 8):
            ranked = sorted(WRITABLE, key=lambda w: -table[prev, w])
            probs = np.array([table[prev, w] for w in ranked]) / sum(table[prev, w] for w in WRITABLE)
            size = int(np.searchsorted(np.cumsum(probs), top_p - 1e-12)) + 1
            assert word in ranked[:size], (prev, word, top_p)


def test_the_same_seed_gives_the_same_samples_whatever_the_batch_and_the_other_images():
    table = random_table(13)
    search = sampler(table, nbest_size=4, max_output_length=9, sampling_top_p=0.95, seed=42)
    keys = [5, 17, 2, 40, 8, 11]
    together = search.search(features(6), keys=keys)
    as_ids = lambda hyps: [(h.ids, h.log_prob) for h in hyps]  # noqa: E731
    alone = [as_ids(search.search(features(1), keys=[key])[0]) for key in keys]
    assert [as_ids(hyps) for hyps in together] == alone
    order = [3, 0, 5, 1, 4, 2]
    shuffled = search.search(features(6), keys=[keys[i] for i in order])
    assert [as_ids(hyps) for hyps in shuffled] == [alone[i] for i in order]
    on_mxnet = BeamSearch([MarkovModel(table)], make_vocab(), search.options).search(features(6), keys=keys)
    assert [[h.ids for h in hyps] for hyps in on_mxnet] == [[ids for ids, _ in a] for a in alone]
    other_seed = sampler(table, nbest_size=4, max_output_length=9, sampling_top_p=0.95, seed=43)
    assert [as_ids(hyps) for hyps in other_seed.search(features(6), keys=keys)] != alone
    assert len({tuple(map(tuple, (ids for ids, _ in a))) for a in alone}) > 1     # images of other keys differ


def test_sampling_keeps_avoided_phrases_and_refuses_required_ones():
    search = sampler(LOOP, nbest_size=200, max_output_length=7, seed=3)
    unrestricted = search.search(features(1))[0]
    assert any(5 in h.ids for h in unrestricted)
    avoiding = search.search(features(1), avoid=[[[5]]])[0]
    assert len(avoiding) == 200 and not any(5 in h.ids for h in avoiding)
    with pytest.raises(ValueError, match="required phrases \\(constraints\\) need beam search: not with sample"):
        search.search(features(1), [[[6]]])
    blocked = sampler(LOOP, nbest_size=200, max_output_length=9, seed=3, no_repeat_ngram_size=2).search(features(1))
    assert not any(len(set(zip(h.ids, h.ids[1:]))) < len(h.ids) - 1 for h in blocked[0])   # no bigram twice


# -- diverse beam search --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [dict(), dict(no_repeat_ngram_size=2), dict(length_penalty_alpha=0.0)])
def test_diverse_beam_search_of_strength_0_is_in_each_group_the_plain_beam_search_of_its_size(settings):
    table = random_table(5)                                          # no ties
    plain = BeamSearch(NumpySteps(table), make_vocab(), SearchOptions(beam_size=2, nbest_size=2,
                                                                      max_output_length=7, **settings))
    diverse = BeamSearch(NumpySteps(table), make_vocab(), SearchOptions(
        beam_size=6, nbest_size=6, diverse_beam_groups=3, diverse_beam_strength=0.0, max_output_length=7, **settings))
    for p, d in zip(plain.search(features(2)), diverse.search(features(2))):
        assert [(h.ids, h.log_prob, h.score) for h in d] == [(h.ids, h.log_prob, h.score) for h in p for _ in range(3)]


# <s> → a (0.5), b (0.3), c (0.2); a → b (0.5), c (0.4), </s> (0.1); b and c → </s> (0.9)
NEAR_COPIES = table_with({2: {4: 0.5, 5: 0.3, 6: 0.2}, 4: {5: 0.5, 6: 0.4, 3: 0.1}, 5: {3: 0.9, 4: 0.05, 6: 0.05},
                          6: {3: 0.9, 4: 0.05, 5: 0.05}})


def test_diverse_groups_write_different_captions_where_the_plain_n_best_repeats_itself():
    def captions(**settings):
        options = SearchOptions(beam_size=3, nbest_size=3, max_output_length=6, length_penalty_alpha=0.0, **settings)
        return [[h.ids for h in hyps] for hyps in BeamSearch(NumpySteps(NEAR_COPIES), make_vocab(), options).search(
            features(2))]
    plain = captions()
    assert plain[0] == [[5], [4, 5], [4, 6]]                        # two of three begin alike: "a b", "a c"
    diverse = captions(diverse_beam_groups=3, diverse_beam_strength=1.0)
    assert diverse == [[[5], [4, 5], [6]]] * 2                      # each group's best: three first words
    assert diverse[0][0] == plain[0][0]                             # the best caption is still the best found


def test_diverse_beam_search_on_mxnet_keeps_avoided_phrases_and_refuses_required_ones():
    options = SearchOptions(beam_size=4, nbest_size=4, max_output_length=7, diverse_beam_groups=2,
                            diverse_beam_strength=0.7)
    on_numpy = BeamSearch(NumpySteps(LOOP), make_vocab(), options).search(features(2), avoid=[[[6]], []])
    on_mxnet = BeamSearch([MarkovModel(LOOP)], make_vocab(), options).search(features(2), avoid=[[[6]], []])
    assert [[h.ids for h in hyps] for hyps in on_numpy] == [[h.ids for h in hyps] for hyps in on_mxnet]
    assert len(on_numpy[0]) == 4 and not any(6 in h.ids for h in on_numpy[0]) and any(6 in h.ids for h in on_numpy[1])
    with pytest.raises(ValueError, match="need beam search: not with diverse_beam_groups above 1"):
        BeamSearch(NumpySteps(LOOP), make_vocab(), options).search(features(1), [[[6]]])
