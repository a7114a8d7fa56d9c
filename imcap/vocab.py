"""Target vocabulary: GluonNLP's ``Vocab`` with Sockeye's special symbols, saved as ``vocab.trg.json``; and
:class:`Vocabulary`, the same file read without GluonNLP (what the search needs: ids ↔ tokens), for runtimes
without MXNet (:mod:`imcap.onnx_steps`).

This module imports GluonNLP only where it builds or loads a GluonNLP ``Vocab`` (:func:`build_vocab`,
:func:`load_vocab`): the search (:mod:`imcap.beam_search`) imports its helpers, which take either kind.
"""
import collections
import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from . import constants as C
from .utils import ImcapError, atomic_open, check_condition

if TYPE_CHECKING:   # pragma: no cover
    import gluonnlp as nlp  # noqa: F401

logger = logging.getLogger(__name__)


class Vocabulary:
    """A ``vocab.trg.json`` (GluonNLP's format, :func:`save_vocab`) read without GluonNLP: the ids ↔ tokens of a
    GluonNLP ``Vocab`` of the same file, unknown tokens mapped to ``<unk>``.

    :param spec: the file's JSON object (``idx_to_token``, ``token_to_idx``, ``unknown_token``, ...).
    :raises ImcapError: if ``spec`` is not such an object (tokens not strings, ids not their positions).
    """

    def __init__(self, spec: Dict[str, Any]) -> None:
        check_condition(isinstance(spec, dict) and isinstance(spec.get("idx_to_token"), list)
                        and isinstance(spec.get("token_to_idx"), dict), "not a vocabulary: no idx_to_token list "
                                                                        "and token_to_idx object")
        self.idx_to_token: List[str] = list(spec["idx_to_token"])
        self.token_to_idx: Dict[str, int] = dict(spec["token_to_idx"])
        size = len(self.idx_to_token)
        inverse = len(self.token_to_idx) == size and all(
            isinstance(i, int) and 0 <= i < size and self.idx_to_token[i] == t for t, i in self.token_to_idx.items())
        check_condition(inverse and all(isinstance(t, str) for t in self.idx_to_token),
                        "not a vocabulary: token_to_idx does not invert idx_to_token")
        self.unknown_token: Optional[str] = spec.get("unknown_token")
        identifiers = spec.get("identifiers_to_tokens") or {}
        self.padding_token = identifiers.get("padding_token")
        self.bos_token = identifiers.get("bos_token")
        self.eos_token = identifiers.get("eos_token")
        self._spec = spec

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        """The vocabulary of a ``vocab.trg.json``'s text."""
        try:
            spec = json.loads(text)
        except ValueError as e:
            raise ImcapError("not a vocabulary: not JSON (%s)" % e)
        return cls(spec)

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        """Read ``path`` (a ``vocab.trg.json``).

        :raises ImcapError: naming ``path`` if it cannot be read or is not a vocabulary.
        """
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise ImcapError("%s: cannot read the vocabulary (%s)" % (path, e))
        except ImcapError as e:
            raise ImcapError("%s: %s" % (path, e))

    def to_json(self) -> str:
        """The JSON text it was read from (re-serialized), as GluonNLP writes it."""
        return json.dumps(self._spec)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: str) -> bool:
        return token in self.token_to_idx

    def __getitem__(self, tokens: Union[str, Sequence[str]]) -> Union[int, List[int]]:
        """The id of a token, or the ids of a list of tokens (unknown ones: ``<unk>``'s)."""
        unk = self.token_to_idx.get(self.unknown_token) if self.unknown_token is not None else None
        if isinstance(tokens, str):
            return self._id(tokens, unk)
        return [self._id(t, unk) for t in tokens]

    def _id(self, token: str, unk: Optional[int]) -> int:
        found = self.token_to_idx.get(token, unk)
        if found is None:
            raise KeyError("%r is not in the vocabulary (which has no unknown token)" % token)
        return found

    def to_tokens(self, ids: Union[int, Sequence[int]]) -> Union[str, List[str]]:
        """The token of an id, or the tokens of a list of ids."""
        if isinstance(ids, (int, np.integer)):
            return self.idx_to_token[int(ids)]
        return [self.idx_to_token[int(i)] for i in ids]




def build_vocab(captions: Iterable[Sequence[str]], min_count: int = 1, max_size: Optional[int] = None) -> "nlp.Vocab":
    """Vocabulary of the tokens seen at least ``min_count`` times (most frequent first, at most ``max_size``).

    Index 0 is ``<pad>``, then ``<unk>``, ``<s>``, ``</s>``.
    """
    import gluonnlp as nlp
    counter = collections.Counter(token for caption in captions for token in caption)
    vocab = nlp.Vocab(counter, max_size=max_size, min_freq=min_count, unknown_token=C.UNK_SYMBOL,
                      padding_token=C.PAD_SYMBOL, bos_token=C.BOS_SYMBOL, eos_token=C.EOS_SYMBOL,
                      reserved_tokens=None,
                      token_to_idx={C.PAD_SYMBOL: 0, C.UNK_SYMBOL: 1, C.BOS_SYMBOL: 2, C.EOS_SYMBOL: 3})
    check_condition(vocab[C.PAD_SYMBOL] == 0, "padding must be id 0")
    logger.info("vocabulary: %d types (%d tokens in the data, min count %d)", len(vocab), len(counter), min_count)
    return vocab


def save_vocab(vocab: Any, path: str) -> None:
    """Write ``vocab.trg.json`` atomically (a GluonNLP ``Vocab`` or a :class:`Vocabulary`: the same format)."""
    with atomic_open(path) as f:
        f.write(vocab.to_json())


def load_vocab(path: str) -> "nlp.Vocab":
    """Read a vocabulary written by :func:`save_vocab` as a GluonNLP ``Vocab`` (without GluonNLP:
    :meth:`Vocabulary.load`)."""
    import gluonnlp as nlp
    with open(path, encoding="utf-8") as f:
        return nlp.Vocab.from_json(f.read())


def ids_to_tokens(vocab: Any, ids: Sequence[int]) -> List[str]:
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


def never_generated(vocab: Any, allow_unk: bool = False) -> List[int]:
    """Ids of the words no caption contains: ``<s>``, ``<pad>`` and (unless ``allow_unk``) ``<unk>``; beam search
    and the sampler of self-critical training never write them."""
    return [vocab[C.BOS_SYMBOL], vocab[C.PAD_SYMBOL]] + ([] if allow_unk else [vocab[C.UNK_SYMBOL]])


def never_generated_bias(vocab: Any, value: float, allow_unk: bool = False) -> np.ndarray:
    """``(1, vocab)`` float32: ``value`` (a large negative score) at the :func:`never_generated` words and 0 at the
    others, to add to a row of scores so that a search or a sampler never picks those words."""
    bias = np.zeros((1, len(vocab)), dtype=np.float32)
    bias[0, never_generated(vocab, allow_unk)] = value
    return bias


def tokens_to_ids(vocab: Any, tokens: Sequence[str]) -> np.ndarray:
    """Tokens → int32 ids (unknown tokens → ``<unk>``)."""
    return np.array(vocab[list(tokens)], dtype=np.int32)
