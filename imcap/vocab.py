"""Target vocabulary: GluonNLP's ``Vocab`` with Sockeye's special symbols, saved as ``vocab.trg.json``."""
import collections
import logging
from typing import Iterable, List, Optional, Sequence

import gluonnlp as nlp
import numpy as np

from . import constants as C
from .utils import atomic_open, check_condition

logger = logging.getLogger(__name__)


def build_vocab(captions: Iterable[Sequence[str]], min_count: int = 1, max_size: Optional[int] = None) -> nlp.Vocab:
    """Vocabulary of the tokens seen at least ``min_count`` times (most frequent first, at most ``max_size``).

    Index 0 is ``<pad>``, then ``<unk>``, ``<s>``, ``</s>``.
    """
    counter = collections.Counter(token for caption in captions for token in caption)
    vocab = nlp.Vocab(counter, max_size=max_size, min_freq=min_count, unknown_token=C.UNK_SYMBOL,
                      padding_token=C.PAD_SYMBOL, bos_token=C.BOS_SYMBOL, eos_token=C.EOS_SYMBOL,
                      reserved_tokens=None,
                      token_to_idx={C.PAD_SYMBOL: 0, C.UNK_SYMBOL: 1, C.BOS_SYMBOL: 2, C.EOS_SYMBOL: 3})
    check_condition(vocab[C.PAD_SYMBOL] == 0, "padding must be id 0")
    logger.info("vocabulary: %d types (%d tokens in the data, min count %d)", len(vocab), len(counter), min_count)
    return vocab


def save_vocab(vocab: nlp.Vocab, path: str) -> None:
    """Write ``vocab.trg.json`` atomically."""
    with atomic_open(path) as f:
        f.write(vocab.to_json())


def load_vocab(path: str) -> nlp.Vocab:
    """Read a vocabulary written by :func:`save_vocab`."""
    with open(path, encoding="utf-8") as f:
        return nlp.Vocab.from_json(f.read())


def ids_to_tokens(vocab: nlp.Vocab, ids: Sequence[int]) -> List[str]:
    """Word ids → tokens, stopping at ``</s>`` and dropping ``<s>``/``<pad>``."""
    eos, skip = vocab[C.EOS_SYMBOL], {vocab[C.BOS_SYMBOL], vocab[C.PAD_SYMBOL]}
    tokens = []
    for i in ids:
        i = int(i)
        if i == eos:
            break
        if i not in skip:
            tokens.append(vocab.idx_to_token[i])
    return tokens


def never_generated(vocab: nlp.Vocab, allow_unk: bool = False) -> List[int]:
    """Ids of the words no caption contains: ``<s>``, ``<pad>`` and (unless ``allow_unk``) ``<unk>``; beam search
    and the sampler of self-critical training never write them."""
    return [vocab[C.BOS_SYMBOL], vocab[C.PAD_SYMBOL]] + ([] if allow_unk else [vocab[C.UNK_SYMBOL]])


def never_generated_bias(vocab: nlp.Vocab, value: float, allow_unk: bool = False) -> np.ndarray:
    """``(1, vocab)`` float32: ``value`` (a large negative score) at the :func:`never_generated` words and 0 at the
    others, to add to a row of scores so that a search or a sampler never picks those words."""
    bias = np.zeros((1, len(vocab)), dtype=np.float32)
    bias[0, never_generated(vocab, allow_unk)] = value
    return bias


def tokens_to_ids(vocab: nlp.Vocab, tokens: Sequence[str]) -> np.ndarray:
    """Tokens → int32 ids (unknown tokens → ``<unk>``)."""
    return np.array(vocab[list(tokens)], dtype=np.int32)
