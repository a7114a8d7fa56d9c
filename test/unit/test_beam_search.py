"""Beam search pieces, and the whole search on a hand-built model whose best caption is known."""
import itertools

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.beam_search import (BeamSearch, beaten_hypotheses, block_repeated_ngrams, length_penalty, mask_finished,
                               top_k)
from imcap.constraints import count_occurrences
from imcap.vocab import build_vocab

WORDS = ["a", "b", "c"]


def make_vocab():
    vocab = build_vocab([WORDS])
    assert [vocab[w] for w in (C.PAD_SYMBOL, C.UNK_SYMBOL, C.BOS_SYMBOL, C.EOS_SYMBOL)] == [0, 1, 2, 3]
    return vocab


class MarkovModel:
    """A hand-built bigram model: p(next | previous) from a fixed table, the same for every image.

    It has the interface of imcap.model.CaptionModel that search uses (encode, step) and one dynamic state
    (a step counter), so that state reordering is exercised too."""

    def __init__(self, table: np.ndarray) -> None:
        self.log_table = np.log(table)

    def encode(self, features):
        batch = features.shape[0]
        return [features], [mx.nd.zeros((batch, 1))]

    def step(self, prev_ids, static, dynamic):
        log_probs = mx.nd.array(self.log_table[prev_ids.asnumpy().astype(int)])
        attention = mx.nd.ones((prev_ids.shape[0], static[0].shape[1])) / static[0].shape[1]
        return log_probs, attention, [dynamic[0] + 1]


def table_with(rows):
    """A (7, 7) transition table over <pad> <unk> <s> </s> a b c; unspecified rows are uniform."""
    table = np.full((7, 7), 1e-9)
    for prev, probs in rows.items():
        for word, p in probs.items():
            table[prev, word] = p
    table /= table.sum(axis=1, keepdims=True)
    return table


def exhaustive_best(table, max_len, alpha=1.0, beta=0.0):
    """Best word sequence by enumerating every sequence of at most max_len words (</s> included)."""
    log = np.log(table)
    best, best_score = None, -np.inf
    for n in range(1, max_len + 1):
        for words in itertools.product([4, 5, 6], repeat=n - 1):
            seq = list(words) + [3]
            prev, total = 2, 0.0
            for w in seq:
                total += log[prev, w]
                prev = w
            score = total / length_penalty(np.array([n]), alpha, beta)[0]
            if score > best_score:
                best, best_score = list(words), score
    return best, best_score


# <s> → a (0.6) or b (0.4); a → </s> (0.3) or c (0.7 but c is a dead end); b → </s> (0.9)
GARDEN_PATH = table_with({2: {4: 0.6, 5: 0.4}, 4: {3: 0.3, 6: 0.35, 5: 0.35}, 5: {3: 0.9, 4: 0.1},
                          6: {3: 0.2, 4: 0.4, 5: 0.4}})


def test_length_penalty_gnmt():
    assert length_penalty(np.array([1, 5]), 1.0, 0.0).tolist() == [1.0, 5.0]
    assert length_penalty(np.array([5]), 0.0, 0.0).tolist() == [1.0]
    assert np.allclose(length_penalty(np.array([4]), 0.6, 5.0), ((5 + 4) / 6.0) ** 0.6)


def test_top_k_orders_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    values, indices = top_k(scores, 3)
    assert indices.tolist() == [[1, 3, 2], [0, 1, 2]]
    assert np.allclose(values, [[0.9, 0.7, 0.5], [3.0, 2.0, 1.0]])


def test_mask_finished_keeps_score_with_pad_only():
    log_probs = np.log(np.full((2, 5), 0.2))
    masked = mask_finished(log_probs.copy(), np.array([True, False]), pad_id=0)
    assert masked[0, 0] == 0.0 and (masked[0, 1:] < -1e29).all()
    assert np.allclose(masked[1], np.log(0.2))


def test_mask_finished_on_preselected_words_continues_with_pad():
    values, words = np.log([[0.5, 0.3], [0.6, 0.2]]), np.array([[7, 4], [5, 9]])
    masked = mask_finished(values.copy(), np.array([False, True]), 0, words)
    assert np.allclose(masked[0], np.log([0.5, 0.3])) and words[0].tolist() == [7, 4]
    assert masked[1, 0] == 0.0 and masked[1, 1] < -1e29 and words[1, 0] == 0


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_finds_exhaustive_best_where_greedy_fails(alpha):
    vocab = make_vocab()
    model = MarkovModel(GARDEN_PATH)
    features = np.zeros((3, 4, 2), dtype=np.float32)  # 3 images of 4 regions
    best, best_score = exhaustive_best(GARDEN_PATH, 6, alpha)
    wide = BeamSearch([model], vocab, beam_size=6, max_output_length=6, length_penalty_alpha=alpha)
    for hyps in wide.search(features):
        assert hyps[0].ids == best
        assert hyps[0].score == pytest.approx(best_score, abs=1e-6)  # float32 log-probs
    greedy = BeamSearch([model], vocab, beam_size=1, max_output_length=6, length_penalty_alpha=alpha)
    assert greedy.search(features)[0][0].ids[0] == 4  # greedy takes the likelier first word "a"
    assert best == [5]  # ... but "b </s>" is the best caption


def test_nbest_sorted_and_distinct_with_attention():
    vocab = make_vocab()
    search = BeamSearch([MarkovModel(GARDEN_PATH)], vocab, beam_size=4, max_output_length=5, nbest_size=3,
                        keep_attention=True, length_penalty_alpha=0.0)
    hyps = search.search(np.zeros((2, 4, 2), dtype=np.float32))[0]
    assert len(hyps) == 3
    assert [h.score for h in hyps] == sorted([h.score for h in hyps], reverse=True)
    assert len({tuple(h.ids) for h in hyps}) == 3
    for h in hyps:
        assert h.attention.shape == (len(h.ids) + 1, 4)  # one row per word and </s>
        assert np.allclose(h.attention.sum(axis=1), 1.0)


def test_max_output_length_forces_end():
    vocab = make_vocab()
    loop = table_with({2: {4: 1.0}, 4: {4: 0.99, 3: 0.01}})  # "a a a ..." almost never ends
    hyps = BeamSearch([MarkovModel(loop)], vocab, beam_size=2, max_output_length=4).search(np.zeros((1, 1, 1)))
    assert hyps[0][0].ids == [4, 4, 4]


def test_ensemble_averages_log_probabilities():
    vocab = make_vocab()
    # alone, model 1 prefers "a </s>" and model 2 "b </s>"; averaged log-probs prefer "c </s>"
    m1 = table_with({2: {4: 0.6, 5: 0.01, 6: 0.39}, 4: {3: 1}, 5: {3: 1}, 6: {3: 1}})
    m2 = table_with({2: {4: 0.01, 5: 0.6, 6: 0.39}, 4: {3: 1}, 5: {3: 1}, 6: {3: 1}})
    features = np.zeros((1, 1, 1))
    assert BeamSearch([MarkovModel(m1)], vocab, beam_size=3, max_output_length=3).search(features)[0][0].ids == [4]
    assert BeamSearch([MarkovModel(m2)], vocab, beam_size=3, max_output_length=3).search(features)[0][0].ids == [5]
    ensemble = BeamSearch([MarkovModel(m1), MarkovModel(m2)], vocab, beam_size=3, max_output_length=3, keep_attention=True)
    best = ensemble.search(features)[0][0]
    assert best.ids == [6]
    assert np.allclose(best.attention.sum(axis=1), 1.0)  # averaged over the models, not summed


def has_repeated_ngram(words, n):
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def exhaustive_best_without_repeats(table, max_len, n, alpha=1.0):
    """The best caption (ids) and score among those with no repeated n-gram (``</s>`` included, as generated)."""
    log = np.log(table)
    best, best_score = None, -np.inf
    for length in range(1, max_len + 1):
        for words in itertools.product([4, 5, 6], repeat=length - 1):
            seq = list(words) + [3]
            if has_repeated_ngram(seq, n):
                continue
            prev, total = 2, 0.0
            for w in seq:
                total += log[prev, w]
                prev = w
            score = total / length_penalty(np.array([length]), alpha, 0.0)[0]
            if score > best_score:
                best, best_score = list(words), score
    return best, best_score


# A model that prefers a loop: after <s> "a b a b a b ..." is likely, "c" ends it well, </s> is unlikely early.
LOOP = table_with({2: {4: 0.9, 6: 0.1}, 4: {5: 0.8, 6: 0.1, 3: 0.1}, 5: {4: 0.85, 6: 0.05, 3: 0.1},
                   6: {3: 0.6, 4: 0.2, 5: 0.2}})


def test_block_repeated_ngrams_forbids_the_words_that_would_repeat():
    history = np.array([[4, 5, 4], [4, 5, 6], [4, 4, 4]])
    blocked = block_repeated_ngrams(np.zeros((3, 7)), history, 2)
    assert np.nonzero(blocked[0] < -1e29)[0].tolist() == [5]       # "a b a" + b would repeat "a b"
    assert not (blocked[1] < -1e29).any()                           # "a b c": "c" was never followed
    assert np.nonzero(blocked[2] < -1e29)[0].tolist() == [4]        # "a a a" + a repeats "a a"
    trigram = block_repeated_ngrams(np.zeros((1, 7)), np.array([[4, 5, 6, 4, 5]]), 3)
    assert np.nonzero(trigram[0] < -1e29)[0].tolist() == [6]
    assert (block_repeated_ngrams(np.zeros((1, 7)), np.array([[4, 5]]), 3) == 0).all()  # too short to repeat
    with pytest.raises(ValueError):
        block_repeated_ngrams(np.zeros((1, 7)), history[:1], 1)


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram_search_equals_exhaustive_search_under_the_rule(n):
    vocab = make_vocab()
    unblocked = BeamSearch([MarkovModel(LOOP)], vocab, beam_size=40, max_output_length=7).search(np.zeros((1, 1, 1)))
    assert has_repeated_ngram(unblocked[0][0].ids, n)   # the model does loop
    best, best_score = exhaustive_best_without_repeats(LOOP, 7, n)
    search = BeamSearch([MarkovModel(LOOP)], vocab, beam_size=40, max_output_length=7, no_repeat_ngram_size=n,
                        nbest_size=5)
    for hyps in search.search(np.zeros((2, 1, 1))):
        assert hyps[0].ids == best
        assert hyps[0].score == pytest.approx(best_score, abs=1e-6)
        assert not any(has_repeated_ngram(h.ids + [3], n) for h in hyps)


def test_no_repeat_ngram_size_zero_is_the_plain_search():
    vocab = make_vocab()
    features = np.zeros((3, 2, 1))
    plain = BeamSearch([MarkovModel(LOOP)], vocab, beam_size=3, max_output_length=7, nbest_size=3).search(features)
    off = BeamSearch([MarkovModel(LOOP)], vocab, beam_size=3, max_output_length=7, nbest_size=3,
                     no_repeat_ngram_size=0).search(features)
    assert [[(h.ids, h.score) for h in hyps] for hyps in plain] == [[(h.ids, h.score) for h in hyps] for hyps in off]
    with pytest.raises(ValueError):
        BeamSearch([MarkovModel(LOOP)], vocab, no_repeat_ngram_size=1)


# --- lexical constraints --------------------------------------------------------------------------------------

def meets(words, constraint):
    """Whether ``words`` contain the phrase ``constraint``, or (a list of phrases: disjunctive) one of its phrases."""
    alternatives = constraint if isinstance(constraint[0], list) else [constraint]
    return any(count_occurrences(words, p) for p in alternatives)


def exhaustive_best_constrained(table, max_len, required=(), avoided=(), alpha=1.0):
    """The best captions (a list of ids lists: all those that tie) and their score among all captions of at most
    ``max_len`` words (``</s>`` included) that meet every ``required`` constraint (:func:`meets`) and contain no
    ``avoided`` phrase, as consecutive words."""
    log = np.log(table)
    scored = []
    for length in range(1, max_len + 1):
        for words in itertools.product([4, 5, 6], repeat=length - 1):
            words = list(words)
            if not all(meets(words, c) for c in required) or any(count_occurrences(words, p) for p in avoided):
                continue
            prev, total = 2, 0.0
            for w in words + [3]:
                total += log[prev, w]
                prev = w
            scored.append((total / length_penalty(np.array([length]), alpha, 0.0)[0], words))
    best_score = max(score for score, _ in scored)
    return [words for score, words in scored if score > best_score - 1e-9], best_score


# Phrases that never overlap themselves or each other (the search meets each constraint word with its own word).
# Disjunctive constraints (lists of alternative phrases) too, their alternatives overlapping no other constraint.
CONSTRAINED_CASES = [([[6]], []), ([[6, 4]], []), ([[5], [6]], []), ([[6, 6]], [[4, 5]]), ([[4, 6]], [[5]]),
                     ([], [[5]]), ([], [[4, 4], [5, 6]]), ([[5, 6, 4]], [[4, 4]]),
                     ([[[6], [5]]], []), ([[[6, 4], [5, 5]]], []), ([[[6, 6], [4, 4]], [5]], []),
                     ([[[6], [5, 4]]], [[4, 4]]), ([[[5, 6, 6], [4]], [[5], [6]]], []), ([[[4, 5], [6, 5, 5]]], [[5, 4]])]


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("table", [GARDEN_PATH, LOOP], ids=["garden_path", "loop"])
def test_constrained_search_equals_exhaustive_search_over_the_captions_that_meet_the_constraints(table, alpha):
    vocab = make_vocab()
    search = BeamSearch([MarkovModel(table)], vocab, beam_size=30, max_output_length=6, length_penalty_alpha=alpha,
                        nbest_size=4)
    features = np.zeros((len(CONSTRAINED_CASES), 1, 1))
    results = search.search(features, [c for c, _ in CONSTRAINED_CASES], [a for _, a in CONSTRAINED_CASES])
    for (required, avoided), hyps in zip(CONSTRAINED_CASES, results):
        best, best_score = exhaustive_best_constrained(table, 6, required, avoided, alpha)
        assert hyps[0].ids in best, (required, avoided)
        assert hyps[0].score == pytest.approx(best_score, abs=1e-6)
        assert hyps[0].constraints_met is (True if required else None)
        for h in hyps:   # the whole n-best meets them
            assert all(meets(h.ids, c) for c in required)
            assert not any(count_occurrences(h.ids, p) for p in avoided)


def test_a_batch_without_constraints_decodes_as_the_plain_search_and_so_do_unconstrained_images_beside_others():
    vocab = make_vocab()
    rng = np.random.RandomState(5)
    table = rng.dirichlet(np.ones(7), size=7)   # no ties, so that the order of equal scores cannot differ
    models = [MarkovModel(table), MarkovModel(rng.dirichlet(np.ones(7), size=7))]   # an ensemble
    search = BeamSearch(models, vocab, beam_size=4, max_output_length=7, nbest_size=3, keep_attention=True)
    features = np.zeros((3, 2, 1))
    plain = search.search(features)
    same = search.search(features, [[], [], []], [[], [], []])
    mixed = search.search(features, [[], [[6, 6]], []], [[], [], [[5]]])
    as_tuples = lambda hyps: [(h.ids, h.log_prob, h.score, h.attention.tolist()) for h in hyps]  # noqa: E731
    assert [as_tuples(h) for h in same] == [as_tuples(h) for h in plain]
    assert as_tuples(mixed[0]) == as_tuples(plain[0])
    assert all(count_occurrences(h.ids, [6, 6]) for h in mixed[1]) and mixed[1][0].constraints_met
    assert not any(count_occurrences(h.ids, [5]) for h in mixed[2]) and mixed[2][0].constraints_met is None
    assert [as_tuples(search.search(features[i:i + 1], [c], [a])[0]) for i, (c, a) in
            enumerate([([], []), ([[6, 6]], []), ([], [[5]])])] == [as_tuples(h) for h in mixed]   # batch of 1


def test_the_global_avoid_list_and_what_a_required_phrase_overrides():
    vocab = make_vocab()
    search = BeamSearch([MarkovModel(GARDEN_PATH)], vocab, beam_size=10, max_output_length=6, avoid_list=[[5], [6, 4]],
                        length_penalty_alpha=0.0)
    hyps = search.search(np.zeros((2, 1, 1)), [[], [[5, 4]]])
    assert hyps[0][0].ids in exhaustive_best_constrained(GARDEN_PATH, 6, [], [[5], [6, 4]], alpha=0.0)[0]
    # "b" is inside the required "b a": not avoided for that image; "c a" still is
    assert hyps[1][0].ids in exhaustive_best_constrained(GARDEN_PATH, 6, [[5, 4]], [[6, 4]], alpha=0.0)[0]
    with pytest.raises(ValueError, match="avoid list phrase"):
        BeamSearch([MarkovModel(GARDEN_PATH)], vocab, avoid_list=[[3]])
    with pytest.raises(ValueError, match="constraints phrase"):
        search.search(np.zeros((1, 1, 1)), [[[0]]])
    with pytest.raises(ValueError, match="2 lists of phrases for 1 images"):
        search.search(np.zeros((1, 1, 1)), [[], []])


def test_constraints_that_cannot_be_met_in_time_give_the_best_caption_found():
    vocab = make_vocab()
    search = BeamSearch([MarkovModel(GARDEN_PATH)], vocab, beam_size=5, max_output_length=3, nbest_size=2)
    hyps = search.search(np.zeros((1, 1, 1)), [[[4, 5, 6]]])[0]   # three words and </s> do not fit in 3
    assert hyps[0].constraints_met is False and len(hyps[0].ids) == 2 and len(hyps) == 2


def test_a_required_phrase_is_never_blocked_by_the_repeat_rule():
    vocab = make_vocab()
    for n in (2, 3):
        search = BeamSearch([MarkovModel(LOOP)], vocab, beam_size=20, max_output_length=9, no_repeat_ngram_size=n)
        hyps = search.search(np.zeros((2, 1, 1)), [[[4, 5], [4, 5]], [[6, 4, 5]]])
        # "a b" required twice repeats the bigram "a b": the constraint wins over the rule
        assert count_occurrences(hyps[0][0].ids, [4, 5]) >= 2 and hyps[0][0].constraints_met
        assert count_occurrences(hyps[1][0].ids, [6, 4, 5]) and hyps[1][0].constraints_met


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_open_hypotheses_are_ended_only_when_no_continuation_can_win(alpha):
    # image 0: a finished hypothesis at -1.0 (2 words); the open one at -1.2 can only fall, but the length penalty
    # of a longer caption can still lift it above -1.0 when alpha > 0: it is ended only without normalization.
    # image 1: nothing has finished, so nothing is ended; image 2: the open one already trails by far.
    scores = np.array([[-1.0, -1.2], [-0.5, -0.7], [-0.2, -9.0]])
    lengths = np.array([[2, 2], [2, 2], [1, 3]])
    finished = np.array([[True, False], [False, False], [True, False]])
    ended = beaten_hypotheses(scores, lengths, finished, 1, 10, alpha, 0.0).reshape(3, 2)
    assert ended[0, 1] == (alpha == 0.0)
    assert not ended[1].any() and not ended[:, 0].any()   # finished rows are not "ended" again
    assert ended[2, 1]
    # with an n-best of 2, one finished hypothesis is not enough to end anything
    assert not beaten_hypotheses(scores, lengths, finished, 2, 10, alpha, 0.0).any()
    # the bound holds: the open score normalized at the longest length
    bound = -1.2 / length_penalty(np.array(10), alpha, 0.0)
    assert (bound < -1.0 / length_penalty(np.array(2), alpha, 0.0)) == ended[0, 1]


def test_constraint_only_words_are_written_only_where_a_constraint_asks_for_them():
    vocab = make_vocab()
    table = table_with({2: {4: 0.2, 6: 0.8}, 6: {3: 0.9, 4: 0.1}, 4: {3: 0.9, 6: 0.1}})   # "c" is the best caption
    search = BeamSearch([MarkovModel(table)], vocab, beam_size=4, max_output_length=5, constraint_only=[6])
    features = np.zeros((2, 1, 1))
    plain, required = search.search(features, [[], [[[6], [5]]]])
    assert 6 not in plain[0].ids and plain[0].ids == [4]    # the best caption without "c"
    assert 6 in required[0].ids and required[0].constraints_met   # asked for (as an alternative): written
    assert 6 not in search.search(features[:1])[0][0].ids   # the plain search's device path blocks it too
