"""The target vocabulary: special symbols first, min count, frequency order, unknowns, save/load, ids → tokens."""
import json

import numpy as np

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.vocab import build_vocab, ids_to_tokens, load_vocab, never_generated_bias, save_vocab, tokens_to_ids

SPECIALS = [C.PAD_SYMBOL, C.UNK_SYMBOL, C.BOS_SYMBOL, C.EOS_SYMBOL]
# counts: dog 4, a 3, runs 2, the 2, cat 1, sits 1
CAPTIONS = [["a", "dog", "runs"], ["the", "dog", "runs"], ["a", "dog", "sits"], ["a", "cat"], ["the", "dog"]]


def test_special_symbols_at_0_to_3():
    vocab = build_vocab(CAPTIONS)
    assert vocab.idx_to_token[:4] == SPECIALS
    assert [vocab[s] for s in SPECIALS] == [0, 1, 2, 3]
    assert vocab.padding_token == C.PAD_SYMBOL and vocab.unknown_token == C.UNK_SYMBOL
    assert vocab.bos_token == C.BOS_SYMBOL and vocab.eos_token == C.EOS_SYMBOL


def test_most_frequent_first_ties_stable():
    vocab = build_vocab(CAPTIONS)
    words = vocab.idx_to_token[4:]
    assert words[:2] == ["dog", "a"]
    assert set(words[2:4]) == {"runs", "the"} and set(words[4:]) == {"cat", "sits"}
    assert len(vocab) == 4 + 6
    assert build_vocab(CAPTIONS).idx_to_token == vocab.idx_to_token  # deterministic


def test_min_count_drops_rare_words():
    vocab = build_vocab(CAPTIONS, min_count=2)
    assert vocab.idx_to_token[:4] == SPECIALS
    assert set(vocab.idx_to_token[4:]) == {"dog", "a", "runs", "the"}
    assert vocab["cat"] == vocab[C.UNK_SYMBOL] == 1
    assert len(build_vocab(CAPTIONS, min_count=5)) == 4  # only the special symbols left


def test_max_size():
    vocab = build_vocab(CAPTIONS, max_size=2)
    assert vocab.idx_to_token == SPECIALS + ["dog", "a"]


def test_special_symbols_in_captions_are_not_duplicated():
    vocab = build_vocab([["<s>", "a", "</s>", "<pad>"]])
    assert vocab.idx_to_token == SPECIALS + ["a"]


def test_unknown_tokens_map_to_unk():
    vocab = build_vocab(CAPTIONS)
    ids = tokens_to_ids(vocab, ["a", "zebra", "dog", "Dog"])
    assert ids.dtype == np.int32
    assert ids.tolist() == [vocab["a"], 1, vocab["dog"], 1]
    assert tokens_to_ids(vocab, []).tolist() == []


def test_json_round_trip(tmp_path):
    vocab = build_vocab(CAPTIONS, min_count=2)
    path = str(tmp_path / C.VOCAB_TRG_NAME)
    save_vocab(vocab, path)
    assert [p.name for p in tmp_path.iterdir()] == [C.VOCAB_TRG_NAME]  # no temporary file left
    json.loads(open(path, encoding="utf-8").read())  # plain JSON
    loaded = load_vocab(path)
    assert loaded.idx_to_token == vocab.idx_to_token
    assert loaded.token_to_idx == vocab.token_to_idx
    assert loaded["cat"] == 1  # unknown still maps to <unk>
    assert [loaded[s] for s in SPECIALS] == [0, 1, 2, 3]
    assert loaded.padding_token == C.PAD_SYMBOL and loaded.eos_token == C.EOS_SYMBOL


def test_ids_to_tokens_stops_at_eos_and_drops_bos_and_pad():
    vocab = build_vocab(CAPTIONS)
    a, dog, runs = vocab["a"], vocab["dog"], vocab["runs"]
    assert ids_to_tokens(vocab, [2, a, 0, dog, runs, 3, dog, a]) == ["a", "dog", "runs"]
    assert ids_to_tokens(vocab, np.array([a, dog, 1], dtype=np.int32)) == ["a", "dog", C.UNK_SYMBOL]
    assert ids_to_tokens(vocab, [3, a]) == []
    assert ids_to_tokens(vocab, []) == []
    assert ids_to_tokens(vocab, [2, 0, 0]) == []


def test_never_generated_bias_marks_start_pad_and_unk():
    vocab = build_vocab([["a", "dog"], ["a", "cat"]])
    bias = never_generated_bias(vocab, -1e9)
    assert bias.shape == (1, len(vocab)) and bias.dtype == np.float32
    assert sorted(np.flatnonzero(bias[0]).tolist()) == sorted([vocab[C.BOS_SYMBOL], vocab[C.PAD_SYMBOL], vocab[C.UNK_SYMBOL]])
    assert (bias[0][bias[0] != 0] == -1e9).all()
    assert vocab[C.UNK_SYMBOL] not in np.flatnonzero(never_generated_bias(vocab, -1e9, allow_unk=True)[0]).tolist()
