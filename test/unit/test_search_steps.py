"""The named steps of BeamSearch (score, select, advance, shrink, collect), each on its own, and the step contract of
imcap.search_steps implemented without MXNet: a numpy runtime gives the captions of MXNetSteps."""
import numpy as np
import pytest

from imcap.beam_search import BeamSearch, BeamState, Scored, length_penalty, sample_words, sampling_uniforms
from imcap.constraints import NEG_INF
from imcap.search_options import SearchOptions
from test.unit.test_beam_search import GARDEN_PATH, LOOP, MarkovModel, make_vocab, table_with

BOS, EOS, PAD = 2, 3, 0


class NumpySteps:
    """The step contract over a bigram table, in numpy only: one dynamic state per row (its step count), reordered
    as the contract says; records every reorder."""

    def __init__(self, table: np.ndarray, members: int = 1) -> None:
        self.log_table = np.log(table).astype(np.float32)
        self.members = members
        self.reorders = []

    @property
    def num_members(self):
        return self.members

    def start(self, views, beam):
        self.regions = views[0].shape[1]
        self.counts = np.zeros(views[0].shape[0] * beam, dtype=np.int64)

    def step(self, words, attention=False):
        assert len(words) == len(self.counts)
        self.counts = self.counts + 1
        summed = self.members * self.log_table[words]
        return summed, (np.full((len(words), self.regions), 1.0 / self.regions, np.float32) if attention else None)

    def row_best(self, summed, bias, k):
        scores = summed + bias
        words = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, words, axis=1).astype(np.float32), words.astype(np.int32)

    @staticmethod
    def to_host(summed):
        return summed

    def reorder(self, keep, origin):
        self.reorders.append((keep.copy(), origin.copy()))
        self.counts = self.counts[origin]


def searches(table, **settings):
    """The same search on MXNet (MarkovModel) and on the numpy runtime."""
    vocab = make_vocab()
    return (BeamSearch([MarkovModel(table)], vocab, SearchOptions(**settings)),
            BeamSearch(NumpySteps(table), vocab, SearchOptions(**settings)))


@pytest.mark.parametrize("settings", [dict(beam_size=3, max_output_length=6),
                                      dict(beam_size=4, max_output_length=7, nbest_size=3, no_repeat_ngram_size=2),
                                      dict(beam_size=1, max_output_length=5, length_penalty_alpha=0.0)])
def test_a_numpy_runtime_of_the_step_contract_gives_the_captions_of_mxnet(settings):
    features = np.zeros((3, 2, 1), dtype=np.float32)
    for table in (GARDEN_PATH, LOOP):
        on_mxnet, on_numpy = searches(table, **settings)
        for a, b in zip(on_mxnet.search(features), on_numpy.search(features)):
            assert [h.ids for h in a] == [h.ids for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)
        constrained = [[[6]], [], [[5, 4]]]
        for a, b in zip(on_mxnet.search(features, constrained), on_numpy.search(features, constrained)):
            assert [(h.ids, h.constraints_met) for h in a] == [(h.ids, h.constraints_met) for h in b]


def start(search, batch):
    search.steps.start([np.zeros((batch, 2, 1), np.float32)], search.beam_size)
    return BeamState.start(batch, search.beam_size, BOS)


def test_score_preselects_each_rows_best_words_and_masks_finished_rows():
    search = BeamSearch(NumpySteps(GARDEN_PATH, members=2), make_vocab(), beam_size=2)
    beam = start(search, 1)
    beam.finished[1] = True
    scored = search.score(beam, None, None, last=False)
    assert scored.words.tolist() == [[4, 5], [PAD, 5]]                 # a, b after <s>; row 1 finished: <pad>
    np.testing.assert_allclose(scored.log_probs[0], np.log([0.6, 0.4]), rtol=1e-6)   # the members' mean
    assert scored.log_probs[1, 0] == 0.0 and scored.log_probs[1, 1] == NEG_INF and scored.attention is None


def test_score_gives_sampling_every_word():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), sample=True, nbest_size=2)
    search.steps.start([np.zeros((1, 2, 1), np.float32)], 2)
    scored = search.score(BeamState.start(1, 2, BOS, groups=2), None, None, last=False)
    assert scored.words is None and scored.log_probs.shape == (2, 7)


def test_score_restricts_every_word_at_the_last_step_and_by_repeat_blocking():
    search = BeamSearch(NumpySteps(LOOP), make_vocab(), beam_size=2, no_repeat_ngram_size=2, max_output_length=4)
    beam = start(search, 1)
    beam.history = np.array([[4, 5, 4], [4, 6, 4]])
    beam.words = np.array([4, 4])   # the last word of each row: "a" again would repeat "a b" / "a c"
    scored = search.score(beam, None, None, last=False)
    assert scored.words is None and scored.log_probs.shape == (2, 7)
    assert scored.log_probs[0, 5] == NEG_INF and scored.log_probs[1, 6] == NEG_INF   # the repeated bigrams
    assert (scored.log_probs[:, [0, 1, 2]] == NEG_INF).all()                        # never written
    last = search.score(start(search, 1), None, None, last=True).log_probs
    assert (last[:, EOS] > NEG_INF).all() and (np.delete(last, EOS, axis=1) == NEG_INF).all()


def test_select_takes_each_images_best_continuations_by_normalized_score():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=2, length_penalty_alpha=1.0)
    beam = start(search, 1)
    beam.scores = np.array([[-1.0, -1.2]])
    beam.lengths = np.array([3, 1])
    log_probs = np.full((2, 7), NEG_INF)
    log_probs[0, 4], log_probs[1, 5], log_probs[1, 6] = -1.0, -1.0, -0.5
    selected = search.select(beam, Scored(log_probs, None, None), None)
    # row 0: (-2.0) / 4 = -0.5; row 1: (-2.2) / 2 = -1.1 and (-1.7) / 2 = -0.85
    assert selected.origin.tolist() == [0, 1] and selected.words.tolist() == [4, 6]
    np.testing.assert_allclose(selected.scores, [[-2.0, -1.7]])
    assert selected.lengths.tolist() == [4, 2] and selected.active is None


def test_select_diverse_keeps_each_groups_best_penalized_for_the_words_of_the_groups_before():
    log_probs = np.full((3, 7), NEG_INF)
    log_probs[:, 4], log_probs[:, 5] = np.log(0.6), np.log(0.4)
    for strength, second in [(1.0, 5), (0.1, 4)]:   # log 0.6 - 1.0 < log 0.4 < log 0.6 - 0.1
        search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=3, diverse_beam_groups=3,
                            diverse_beam_strength=strength, length_penalty_alpha=0.0)
        beam = start(search, 1)
        beam.scores = np.zeros((1, 3))                                  # one live hypothesis per group
        selected = search.select_diverse(beam, Scored(log_probs.copy(), None, None), None)
        # the third group: "a" chosen once (strength 1) or twice (0.1) before it, still ahead of "b"
        assert selected.origin.tolist() == [0, 1, 2] and selected.words.tolist() == [4, second, 4]
        np.testing.assert_allclose(selected.scores, [np.log([0.6, 0.6 if second == 4 else 0.4, 0.6])])   # true
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=2, diverse_beam_groups=2,
                        diverse_beam_strength=5.0)
    beam = start(search, 1)
    beam.scores, beam.finished = np.array([[-1.0, -1.0]]), np.array([True, True])
    beam.lengths = np.array([1, 1])   # a finished hypothesis has written </s> at least
    finished = log_probs[:2].copy()
    finished[:] = NEG_INF
    finished[:, PAD] = 0.0
    selected = search.select_diverse(beam, Scored(finished, None, None), None)
    assert selected.words.tolist() == [PAD, PAD] and selected.scores.tolist() == [[-1.0, -1.0]]   # <pad> not counted


def test_select_sample_extends_each_sample_with_the_word_its_own_uniform_draws():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), sample=True, nbest_size=3, seed=9,
                        sampling_temperature=0.7)
    beam = BeamState.start(2, 3, BOS, groups=3, keys=[4, 7])
    assert (beam.scores == 0).all()                                    # every sample starts live
    beam.finished[5] = True
    log_probs = np.log(np.tile(GARDEN_PATH[BOS], (6, 1)))
    log_probs[5] = NEG_INF
    log_probs[5, PAD] = 0.0
    selected = search.select_sample(beam, Scored(log_probs, None, None), None)
    uniforms = sampling_uniforms(9, np.array([4, 7]), 3, 0).reshape(6)
    assert selected.origin.tolist() == list(range(6)) and selected.words[5] == PAD
    assert selected.words.tolist() == sample_words(log_probs, uniforms, 0.7).tolist()
    np.testing.assert_allclose(selected.scores.reshape(6), log_probs[np.arange(6), selected.words])
    assert selected.lengths.tolist() == [1, 1, 1, 1, 1, 0] and selected.active is None


def test_advance_ends_hypotheses_at_eos_and_those_that_cannot_win():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=2, max_output_length=5,
                        length_penalty_alpha=0.0)
    beam = start(search, 1)
    selected = search.select(beam, Scored(np.log(np.tile(GARDEN_PATH[BOS], (2, 1))), None, None), None)
    search.advance(beam, selected, None, None, None)
    assert beam.history.tolist() == [[4], [5]] and not beam.finished.any()
    log_probs = np.log(np.stack([GARDEN_PATH[4], GARDEN_PATH[5]]))
    search.advance(beam, search.select(beam, Scored(log_probs, None, None), None), None, None, None)
    # "b </s>" (0.36) is finished; "a c ..." (0.21 at most) can never beat it without a length penalty: ended too
    assert beam.history[0].tolist() == [5, EOS] and beam.finished.tolist() == [True, True]
    np.testing.assert_allclose(beam.scores[0, 0], np.log(0.4 * 0.9))


def test_shrink_drops_the_rows_of_finished_images_and_reorders_the_others():
    steps = NumpySteps(GARDEN_PATH)
    search = BeamSearch(steps, make_vocab(), beam_size=2)
    beam = start(search, 2)
    beam.finished = np.array([True, True, False, True])
    search.shrink(beam, origin=np.array([1, 0, 3, 2]))
    keep, origin = steps.reorders[-1]
    assert keep.tolist() == [2, 3] and origin.tolist() == [3, 2] and beam.computed.tolist() == [2, 3]
    beam.finished = np.array([True, True, False, False])
    search.shrink(beam, origin=np.array([0, 1, 3, 3]))
    keep, origin = steps.reorders[-1]
    assert keep.tolist() == [2, 3] and origin.tolist() == [1, 1]   # positions among the rows computed before


def test_collect_ranks_by_normalized_score_and_returns_the_nbest():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=3, nbest_size=2, length_penalty_alpha=1.0)
    beam = start(search, 1)
    beam.scores = np.array([[-3.0, -1.0, -2.5]])
    beam.lengths = np.array([3, 1, 5])
    beam.history = np.array([[4, 5, EOS, PAD, PAD], [EOS, PAD, PAD, PAD, PAD], [4, 4, 4, 4, EOS]])
    [hyps] = search.collect(beam, None)
    # normalized: -1.0, -1.0, -0.5: the third first, then the first of the tie
    assert [h.ids for h in hyps] == [[4, 4, 4, 4], [4, 5]]
    assert [h.score for h in hyps] == [-0.5, -1.0] and hyps[0].log_prob == -2.5
    assert length_penalty(np.array([5]), 1.0, 0.0)[0] == 5.0


def test_settings_come_from_search_options_and_keywords_override_them():
    search = BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), SearchOptions(beam_size=4, nbest_size=2), beam_size=3)
    assert search.options == SearchOptions(beam_size=3, nbest_size=2)
    assert BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam_size=2, nbest_size=5).nbest_size == 2
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be 0"):
        BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), no_repeat_ngram_size=1)
    with pytest.raises(TypeError, match="unknown search options beam"):
        BeamSearch(NumpySteps(GARDEN_PATH), make_vocab(), beam=3)
    assert table_with({}).shape == (7, 7)


def test_soft_guidance_moves_each_words_score_by_exactly_its_bonus_until_the_row_has_written_it():
    search = BeamSearch(NumpySteps(LOOP), make_vocab(), beam_size=2)
    beam = start(search, 2)
    plain = search.score(beam, None, None, last=False).log_probs
    beam = start(search, 2)
    beam.bonus = np.zeros((2, 7))
    beam.bonus[0, 5], beam.bonus[0, 6], beam.bonus[1, 6] = 0.25, 0.5, 1.5   # image 0: b and c; image 1: c
    beam.history = np.array([[4, 6], [4, 4], [4, 5], [4, 4]])               # row 0 has written c already
    beam.words = np.array([4, 4, 5, 4])
    guided = search.score(beam, None, None, last=False).log_probs
    assert guided.shape == (4, 7)                       # every word on the host: the bonus may change the best ones
    plain_rows = search.restrict(np.log(LOOP[beam.words]).astype(np.float32), _without_bonus(beam), None, None,
                                 False)
    moved = guided - plain_rows
    live = plain_rows > NEG_INF / 2
    expected = np.zeros((4, 7))
    expected[1, 5], expected[1, 6] = 0.25, 0.5          # row 1 (image 0): both words still unwritten
    expected[0, 5] = 0.25                               # row 0: c written once, its bonus is spent
    expected[2, 6], expected[3, 6] = 1.5, 1.5           # image 1's rows
    np.testing.assert_allclose(moved[live], expected[live], atol=1e-6)
    assert plain.shape == (4, 2)                        # without a bonus: the preselected best words
    with pytest.raises(ValueError, match=r"bonus: shape \(1, 7\), expected \(batch, vocab\) = \(2, 7\)"):
        search.search(np.zeros((2, 2, 1), np.float32), bonus=np.zeros((1, 7)))


def _without_bonus(beam):
    import copy
    plain = copy.copy(beam)
    plain.bonus = None
    return plain


def test_a_bonus_changes_the_caption_and_its_score_includes_the_bonus():
    vocab = make_vocab()
    search = BeamSearch(NumpySteps(GARDEN_PATH), vocab, beam_size=1, max_output_length=3, length_penalty_alpha=0.0)
    features = np.zeros((1, 2, 1), np.float32)
    plain = search.search(features)[0][0]
    assert plain.ids[0] == 4                                     # "a" (0.6) first
    bonus = np.zeros((1, 7))
    bonus[0, 5] = 1.0                                            # "b" (0.4 after <s>) gains 1.0 > log(0.6 / 0.4)
    pushed = search.search(features, bonus=bonus)[0][0]
    assert pushed.ids[0] == 5
    words = [BOS] + pushed.ids + [EOS]
    expected = sum(np.log(GARDEN_PATH[a, b]) for a, b in zip(words, words[1:])) + 1.0   # b once: one bonus
    assert pushed.score == pytest.approx(expected, rel=1e-5)
