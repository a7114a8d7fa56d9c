"""The pieces of lexical constraints (imcap.constraints), each alone: phrase slots with progress and undo, bank
allocation, the avoid trie across multi-word phrases, and the batch state that joins them."""
import numpy as np
import pytest

from imcap.constraints import (NEG_INF, AvoidTrie, RequiredPhrases, SearchConstraints, allocate_banks,
                               as_alternatives, conflicting, contains, count_occurrences)

A, B, C, D, E = 4, 5, 6, 7, 8


def test_occurrences_and_conflicts():
    assert count_occurrences([A, A, A], [A, A]) == 2 and count_occurrences([A, B], []) == 0
    assert contains([A, B, C], [B, C]) and not contains([A, B, C], [A, C])
    assert conflicting([[B], [B, C], [C, A], [D]], [[A, B, C]]) == [0, 1]   # inside the required phrase only


# --- required phrases: slots, progress, undo --------------------------------------------------------------------

def test_required_phrases_flatten_into_slots():
    req = RequiredPhrases([[[A, B], [C]], [], [[D, E, A]]])
    assert req.words.tolist() == [[A, B, C], [-1, -1, -1], [D, E, A]]
    assert req.phrase.tolist() == [[0, 0, 1], [-1, -1, -1], [0, 0, 0]]
    assert req.first.tolist() == [[True, False, True], [False] * 3, [True, False, False]]
    assert req.last.tolist() == [[False, True, True], [False] * 3, [False, False, True]]
    assert req.num_words.tolist() == [3, 0, 3]
    with pytest.raises(ValueError):
        RequiredPhrases([[[]]])


def run(req, words, image=0):
    """Feed ``words`` one at a time to one hypothesis of ``image``; its (met, pending) after each."""
    images = np.array([image])
    met, pending = req.start(images)
    trace = []
    for w in words:
        met, pending = req.advance(met, pending, images, np.array([w]))
        trace.append((met[0].tolist(), int(pending[0])))
    return trace


def test_phrase_progress_is_kept_word_by_word_and_completed():
    req = RequiredPhrases([[[A, B, C], [D]]])
    trace = run(req, [E, A, B, C, D])
    assert trace[0] == ([False] * 4, -1)                 # E begins nothing
    assert trace[1] == ([True, False, False, False], 1)  # A begins "A B C": slot 1 expected next
    assert trace[2] == ([True, True, False, False], 2)
    assert trace[3] == ([True, True, True, False], -1)   # done with the phrase
    assert trace[4] == ([True] * 4, -1)                  # the one-word phrase is met at once


def test_a_phrase_not_continued_is_undone_and_may_begin_again():
    req = RequiredPhrases([[[A, B, C], [D]]])
    trace = run(req, [A, B, D, A, A, B, C])
    assert trace[1] == ([True, True, False, False], 2)
    assert trace[2] == ([False, False, False, True], -1)  # D undoes "A B" (and meets "D")
    assert trace[3] == ([True, False, False, True], 1)
    assert trace[4] == ([True, False, False, True], 1)    # A undoes "A" and begins the phrase again
    assert trace[6] == ([True] * 4, -1)


def test_allowed_words_are_the_next_word_or_the_first_words_of_unmet_phrases():
    req = RequiredPhrases([[[A, B], [C], [D, E]]])
    images = np.zeros(3, dtype=np.int64)
    met = np.array([[False] * 5, [True, False, False, False, False], [True, True, True, False, False]])
    pending = np.array([-1, 1, -1])
    allowed = req.allowed(met, pending, images)
    assert allowed.tolist() == [[True, False, True, True, False],    # the first words of the three phrases
                                [False, True, False, False, False],  # in "A B": only B
                                [False, False, False, True, False]]  # "D E" is left


def test_a_phrase_given_twice_needs_two_occurrences_and_rows_are_independent():
    req = RequiredPhrases([[[A], [A]], [[B]]])
    images = np.array([0, 0, 1])
    met, pending = req.start(images)
    met, pending = req.advance(met, pending, images, np.array([A, B, B]))
    assert met.tolist() == [[True, False], [False, False], [True, False]]
    met, pending = req.advance(met, pending, images, np.array([A, A, A]))
    assert met.tolist() == [[True, True], [True, False], [True, False]]


def test_a_constraint_is_a_phrase_or_a_list_of_alternative_phrases():
    assert as_alternatives([A, B]) == [[A, B]] and as_alternatives([[A], [B, C]]) == [[A], [B, C]]
    assert as_alternatives(np.array([A])) == [[A]]
    for bad in ([], [[A], []], [A, [B]]):
        with pytest.raises(ValueError):
            as_alternatives(bad)


def test_disjunctive_constraints_flatten_into_slots_with_their_group_and_weight():
    req = RequiredPhrases([[[[A], [B, C]], [D]], [[[E]]]])   # (A or "B C") and D; E
    assert req.words.tolist() == [[A, B, C, D], [E, -1, -1, -1]]
    assert req.phrase.tolist() == [[0, 1, 1, 2], [0, -1, -1, -1]]
    assert req.group.tolist() == [[0, 0, 0, 1], [0, -1, -1, -1]]
    assert req.begin.tolist()[0] == [0, 1, 1, 3]
    assert req.weight.tolist() == [[2, 1], [1, 0]]   # a constraint weighs its longest alternative
    assert req.num_groups.tolist() == [2, 1] and req.num_words.tolist() == [3, 1]


def test_a_disjunctive_constraint_is_met_by_any_alternative_and_its_bank_counts_its_weight():
    req = RequiredPhrases([[[[A], [B, C]], [D]]])
    images = np.zeros(1, dtype=np.int64)

    def after(words):
        met, pending = req.start(images)
        for w in words:
            met, pending = req.advance(met, pending, images, np.array([w]))
        return met, pending

    for words, bank, done in [([A], 2, False), ([B], 1, False), ([B, C], 2, False), ([B, C, D], 3, True),
                              ([D, A], 3, True), ([B, E], 0, False), ([A, B], 2, False), ([A, B, C, D], 3, True)]:
        met, pending = after(words)
        assert req.banks(met, pending, images).tolist() == [bank], words
        assert req.all_met(met, images).tolist() == [done], words
    met, pending = after([A])   # once A met the constraint, its other alternative no longer advances the row
    assert req.allowed(met, pending, images).tolist() == [[False, False, False, True]]
    met, pending = after([B])
    assert req.allowed(met, pending, images).tolist() == [[False, False, True, False]]
    met, pending = after([])
    assert req.allowed(met, pending, images).tolist() == [[True, True, False, True]]


def test_the_same_disjunction_given_twice_needs_two_of_its_alternatives():
    req = RequiredPhrases([[[[A], [B]], [[A], [B]]]])
    images = np.zeros(1, dtype=np.int64)
    met, pending = req.start(images)
    met, pending = req.advance(met, pending, images, np.array([B]))
    assert not req.all_met(met, images)[0] and req.banks(met, pending, images).tolist() == [1]
    met, pending = req.advance(met, pending, images, np.array([A]))
    assert req.all_met(met, images)[0] and req.banks(met, pending, images).tolist() == [2]


# --- bank allocation ------------------------------------------------------------------------------------------

def test_banks_take_turns_highest_first():
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0]])
    banks = np.array([[0, 0, 0, 1, 1, 2, 0]])
    chosen, valid = allocate_banks(scores, banks, np.ones_like(banks, dtype=bool), np.array([2]), 5)
    # round 1: best of bank 2 (index 5), bank 1 (3), bank 0 (0); round 2: bank 1 (4), bank 0 (1)
    assert chosen.tolist() == [[5, 3, 0, 4, 1]] and valid.all()


def test_a_bank_with_too_few_candidates_leaves_its_places_to_the_others():
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 1.0]])
    banks = np.array([[0, 0, 0, 0, 0, 3]])
    chosen, _ = allocate_banks(scores, banks, np.ones_like(banks, dtype=bool), np.array([3]), 4)
    assert chosen.tolist() == [[5, 0, 1, 2]]   # banks 1 and 2 are empty: bank 0 fills the beam


def test_one_bank_is_the_plain_top_k_and_missing_candidates_come_last():
    rng = np.random.RandomState(0)
    scores = rng.randn(3, 20)
    valid = np.ones_like(scores, dtype=bool)
    valid[2, 3:] = False
    chosen, ok = allocate_banks(scores, np.zeros((3, 20), dtype=np.int64), valid, np.zeros(3, dtype=np.int64), 5)
    assert chosen[:2].tolist() == np.argsort(-scores[:2], axis=1)[:, :5].tolist()
    assert ok[:2].all() and ok[2].tolist() == [True] * 3 + [False] * 2
    assert chosen[2, :3].tolist() == np.argsort(-scores[2, :3]).tolist()


def test_images_have_their_own_banks():
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    banks = np.array([[0, 0, 1], [0, 0, 0]])
    chosen, _ = allocate_banks(scores, banks, np.ones((2, 3), dtype=bool), np.array([1, 0]), 2)
    assert chosen.tolist() == [[2, 0], [0, 1]]


# --- the avoid trie -------------------------------------------------------------------------------------------

def blocked_sets(trie, states):
    rows, words = trie.blocked(states)
    out = [set() for _ in states]
    for r, w in zip(rows, words):
        out[r].add(int(w))
    return out


def walk(trie, words, image=0):
    """The words blocked before each word of ``words``, and after the last, for one hypothesis of set ``image``."""
    state = trie.start(np.array([image]))
    seen = [blocked_sets(trie, state)[0]]
    for w in words:
        state = trie.advance(state, np.array([w]))
        seen.append(blocked_sets(trie, state)[0])
    return seen


def test_avoid_trie_blocks_the_last_word_of_multi_word_phrases():
    trie = AvoidTrie([[[A, B, C], [D]]])
    assert walk(trie, [A, B, E, A, B]) == [{D}, {D}, {D, C}, {D}, {D}, {D, C}]


def test_avoid_trie_follows_overlapping_phrases():
    # "A B C" and "B D" and "A A B": after "A A B" both C (from "A B C") and D (from "B D") are blocked,
    # and "A A" blocks B; the failure links keep every partial match with one node per hypothesis
    trie = AvoidTrie([[[A, B, C], [B, D], [A, A, B]]])
    assert walk(trie, [A, A]) == [set(), set(), {B}]
    assert walk(trie, [A, A, A])[-1] == {B}
    assert walk(trie, [E, B]) == [set(), set(), {D}]
    trie2 = AvoidTrie([[[A, B, C], [B, D]]])
    assert walk(trie2, [A, B])[-1] == {C, D}


def test_avoid_trie_sets_are_apart_and_minus_one_is_off():
    trie = AvoidTrie([[[A, B]], [[C]], []])
    states = trie.start(np.array([0, 1, 2, -1]))
    assert states[3] == -1
    assert blocked_sets(trie, states) == [set(), {C}, set(), set()]
    states = trie.advance(states, np.array([A, A, A, A]))
    assert blocked_sets(trie, states) == [{B}, {C}, set(), set()] and states[3] == -1


def test_avoid_trie_state_reorders_with_the_beam():
    trie = AvoidTrie([[[A, B, C]]])
    states = trie.start(np.zeros(2, dtype=np.int64))
    states = trie.advance(states, np.array([A, D]))
    states = trie.advance(states, np.array([B, B]))
    assert blocked_sets(trie, states) == [{C}, set()]
    swapped = trie.advance(states[[1, 0]], np.array([E, E]))   # both rows now continue other hypotheses
    assert blocked_sets(trie, swapped) == [set(), set()]
    assert blocked_sets(trie, states[[1, 0]]) == [set(), {C}]


def test_empty_avoid_trie():
    trie = AvoidTrie([[]])
    states = trie.advance(trie.start(np.zeros(2, dtype=np.int64)), np.array([A, B]))
    assert blocked_sets(trie, states) == [set(), set()]


# --- the state of a batch search ------------------------------------------------------------------------------

def test_search_constraints_block_eos_until_met_and_avoid_but_not_what_is_required():
    global_phrases = frozenset({(B,), (E,)})
    guide = SearchConstraints([[[A, B]], []], [[[A, B]], [[C]]], beam_size=2,
                              global_avoid=AvoidTrie([sorted(global_phrases)]), global_phrases=global_phrases)
    log_probs = np.zeros((4, 10))
    guide.block(log_probs, eos=3)
    forbidden = [set(np.nonzero(row <= NEG_INF)[0].tolist()) for row in log_probs]
    # image 0 requires "A B": its own "A B" and the global "B" are not avoided, "E" still is; </s> is blocked
    # image 1: no required phrase; its own "C" and the global "B", "E" are avoided
    assert forbidden == [{3, E}, {3, E}, {B, C, E}, {B, C, E}]
    assert guide.all_met().tolist() == [False, False, True, True]
    assert guide.constrained_images().tolist() == [True, False]
    rows, words = guide.constraint_words()
    assert rows.tolist() == [0, 1] and words.tolist() == [A, A]
    guide.update(np.array([0, 1, 2, 3]), np.array([A, C, D, D]))
    guide.update(np.array([0, 0, 2, 3]), np.array([B, D, D, D]))
    assert guide.all_met().tolist() == [True, False, True, True]
    log_probs = np.zeros((4, 10))
    guide.block(log_probs, eos=None)   # the last step: </s> is allowed everywhere
    assert not (log_probs[:, 3] <= NEG_INF).any()


def test_candidates_of_dynamic_beam_allocation():
    # one image, beam 2, vocabulary of 8; row 1 is inactive (NEG_INF); the constraint word C must be a candidate
    guide = SearchConstraints([[[C]]], [[]], beam_size=2)
    log_probs = np.log(np.full((2, 8), 1 / 8.0))
    log_probs[:, A] = np.log(0.5)
    log_probs[:, C] = np.log(0.01)
    raw = np.array([[0.0], [NEG_INF]]) + log_probs
    best, active = guide.candidates(raw, raw, 2)
    assert active.tolist() == [[True, True]]
    # bank 1 ("C" met) first, then the best of bank 0 ("A")
    assert best.tolist() == [[C, A]]


def test_a_constrained_image_stops_when_its_open_hypotheses_cannot_matter():
    guide = SearchConstraints([[[C]], []], [[], []], beam_size=3)
    guide.update(np.array([0, 0, 0, 3, 3, 3]), np.array([C, C, A, A, A, A]))   # rows 0, 1 met "C", row 2 not
    finished = np.array([True, False, False, True, False, False])
    raw = np.array([-3.0, -2.0, -2.5, -1.0, -9.0, -9.0])
    stops = lambda normalized: guide.finished_images(raw, normalized, finished, 1)  # noqa: E731
    # row 1 (met, open) scores better normalized than the finished row 0: go on
    assert not stops(np.array([-1.5, -1.0, -5.0, 0.0, -9.0, -9.0])).any()
    # row 1 worse, but row 2 (not met, open) is still more probable than row 0 (-2.5 > -3): go on
    assert not stops(np.array([-1.5, -2.0, -5.0, 0.0, -9.0, -9.0])).any()
    raw[2] = -3.5
    assert stops(np.array([-1.5, -2.0, -5.0, 0.0, -9.0, -9.0])).tolist() == [False, True, True, False, False, False]
    # an image without constraints never stops this way; two finished ones are needed for an n-best of two
    assert not guide.finished_images(raw, np.array([-1.5, -2.0, -5.0, 0.0, -9.0, -9.0]), finished, 2).any()
