"""Tokenizers: how captions become the model's tokens and tokens become text again.

:func:`tokenize` is imcap's word tokenizer (the ``words`` tokenizer, the default): captions
(:mod:`imcap.prepare_data`) and constraint phrases (:mod:`imcap.phrases`) are split into words by the same function,
so a phrase matches the words a caption is made of. A dataset may choose another (``prepare_data --tokenizer``):

- ``words``: lower-cased words, every other character a separator (:func:`tokenize`); English and other languages
  written with spaces.
- ``none``: already tokenized text split on whitespace only, as Sockeye reads its inputs: subword-nmt's ``constr@@
  aint`` stays two pieces, written back as they are (or joined with ``join_subwords``).
- ``sentencepiece``: a SentencePiece model (Kudo & Richardson 2018; BPE or unigram) trained on the training captions
  after the ``words`` normalization, so that rare words become pieces rather than ``<unk>``; its model file is saved
  beside the data and copied into the model dir.
- ``jieba``: Chinese word segmentation by jieba (as Li et al. 2016 segmented Flickr8k-CN), punctuation dropped.
- ``chars``: one token per character (Chinese without a segmenter), punctuation and spaces dropped.

A :class:`Tokenizer` says how to write tokens back as text (:meth:`Tokenizer.detokenize`: pieces joined, no spaces
between Chinese characters) and records itself in ``tokenizer.json`` (:meth:`Tokenizer.save`, :func:`load_tokenizer`)
in the data dir and then the model dir, where the captioner, the server and the library read it.
"""
import json
import os
import re
import shutil
import unicodedata
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .utils import ImcapError, atomic_open, check_condition

#: The tokenizer record of a data dir or model dir.
TOKENIZER_FILE = "tokenizer.json"
#: The SentencePiece model beside it (``sentencepiece`` tokenizer).
SENTENCEPIECE_FILE = "tokenizer.model"
WORDS, NONE, SENTENCEPIECE, JIEBA, CHARS = "words", "none", "sentencepiece", "jieba", "chars"
CHOICES = (WORDS, NONE, SENTENCEPIECE, JIEBA, CHARS)
#: The language each tokenizer assumes unless told (``prepare_data --language``).
DEFAULT_LANGUAGE = {WORDS: "en", NONE: "en", SENTENCEPIECE: "en", JIEBA: "zh", CHARS: "zh"}
SUBWORD_JOINER = "@@"
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")


def tokenize(text: str) -> List[str]:
    """Lower-case ``text``, turn every character that is not a letter, digit or whitespace into a space
    and split on whitespace.

    Unicode aware: letters and digits are what :meth:`str.isalnum` accepts, after NFC normalization (so a
    letter with a combining accent stays one letter).

    >>> tokenize("A man's red T-shirt, 2 dogs .")
    ['a', 'man', 's', 'red', 't', 'shirt', '2', 'dogs']
    >>> tokenize("Ein Mädchen im Café !")
    ['ein', 'mädchen', 'im', 'café']
    >>> tokenize(" . ")
    []
    """
    text = unicodedata.normalize("NFC", text).lower()
    return "".join(c if c.isalnum() or c.isspace() else " " for c in text).split()


def _jieba() -> Any:
    """The jieba module, quiet (it logs its dictionary loading on STDERR)."""
    import logging
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # jieba imports pkg_resources, deprecated
        import jieba
    jieba.setLogLevel(logging.WARNING)
    return jieba


#: ``evaluate --tokenize`` choices: how hypotheses and references are segmented before scoring.
SCORING_CHOICES = ("none", "zh", "char", "jieba")


def segment_for_scoring(text: str, scheme: str) -> str:
    """``text`` segmented for scoring, tokens joined by spaces: ``none`` as given; ``zh`` sacrebleu's Chinese
    tokenizer (each Chinese character a token, other text as words), ``char`` every character, ``jieba`` jieba's
    words (Li et al. 2016's segmentation of Flickr8k-CN). The last three first join the text's tokens as Chinese is
    written (:func:`join_cjk`), so that a segmented reference and a plain caption are segmented alike.

    :raises ImcapError: for an unknown scheme.
    """
    check_condition(scheme in SCORING_CHOICES, "unknown scoring tokenization %r (choices: %s)"
                    % (scheme, ", ".join(SCORING_CHOICES)))
    if scheme == "none":
        return text
    joined = join_cjk(text.split())
    if scheme == "zh":
        from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh
        return " ".join(TokenizerZh()(joined).split())
    if scheme == "char":
        return " ".join(c for c in joined if not c.isspace())
    return " ".join(w for w in _jieba().lcut(joined) if w.strip())


def join_cjk(tokens: Sequence[str]) -> str:
    """Tokens as text: no space where either side is a Chinese (CJK) character, one space elsewhere.

    >>> join_cjk(["两只", "狗", "在", "T", "shirt", "上"])
    '两只狗在T shirt上'
    """
    text = ""
    for token in tokens:
        if text and not (_CJK.match(text[-1]) or _CJK.match(token[0])):
            text += " "
        text += token
    return text


def join_subwords(text: str, joiner: str = SUBWORD_JOINER) -> str:
    """subword-nmt's pieces joined: ``"constr@@ aint"`` -> ``"constraint"``."""
    return re.sub(r"%s( |$)" % re.escape(joiner), "", text)


def _drop_punctuation(text: str) -> str:
    """``text`` NFC-normalized and lower-cased, every character that is not a letter, digit or space removed."""
    text = unicodedata.normalize("NFC", text).lower()
    return "".join(c for c in text if c.isalnum() or c.isspace())


class Tokenizer:
    """Turns caption text into the model's tokens and back.

    :param name: one of :data:`CHOICES`.
    :param language: the captions' language (ISO 639-1, ``en``, ``zh``): the guide's class words and METEOR are
        English only.
    """

    def __init__(self, name: str, language: str) -> None:
        check_condition(name in CHOICES, "unknown tokenizer %r (choices: %s)" % (name, ", ".join(CHOICES)))
        self.name, self.language = name, language

    def tokenize(self, text: str) -> List[str]:
        """The tokens of one caption or phrase (empty for text without any)."""
        if self.name == NONE:
            return text.split()
        if self.name == JIEBA:
            return [w for w in _jieba().lcut(_drop_punctuation(text)) if w.strip()]
        if self.name == CHARS:
            return [c for c in _drop_punctuation(text) if not c.isspace()]
        return tokenize(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """The text of tokens: words joined by spaces, Chinese without spaces (``jieba``, ``chars``); ``none``
        keeps the tokens as they are, joined by spaces."""
        if self.name in (JIEBA, CHARS):
            return join_cjk(tokens)
        return " ".join(tokens)

    def scoring_text(self, tokens: Sequence[str]) -> str:
        """How reference files hold a caption and how the training scores its validation captions: the words
        (``sentencepiece``: the pieces decoded), jieba's words or the characters, joined by spaces."""
        return " ".join(tokens)

    def check_vocabulary(self, tokens: Sequence[str], where: str) -> None:
        """Check that a vocabulary's ``tokens`` are ones this tokenizer writes (a SentencePiece model: its pieces);
        ``where`` names the vocabulary's file in the error. Other tokenizers write any word: nothing to check.

        :raises ImcapError: if they are not.
        """

    def to_dict(self) -> Dict[str, Any]:
        return {"tokenizer": self.name, "language": self.language}

    def save(self, folder: str) -> None:
        """Write ``tokenizer.json`` into ``folder`` (atomically)."""
        os.makedirs(folder, exist_ok=True)
        with atomic_open(os.path.join(folder, TOKENIZER_FILE)) as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
            f.write("\n")

    def copy_to(self, folder: str) -> None:
        """Save the tokenizer into another folder (a model dir): its record and its files."""
        self.save(folder)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model over the ``words`` normalization of the text (lower-cased, punctuation removed).

    :param model_file: the ``.model`` file (:func:`train_sentencepiece` writes one).
    :raises ImcapError: if the file is missing or not a SentencePiece model.
    """

    def __init__(self, model_file: str, language: str = "en") -> None:
        super().__init__(SENTENCEPIECE, language)
        import sentencepiece as spm
        check_condition(os.path.isfile(model_file), "%s: no such SentencePiece model" % model_file)
        self.model_file = model_file
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.Load(model_file)
        except (OSError, RuntimeError) as e:
            raise ImcapError("%s: not a SentencePiece model (%s)" % (model_file, str(e).splitlines()[0]))

    def tokenize(self, text: str) -> List[str]:
        words = tokenize(text)
        return list(self.processor.EncodeAsPieces(" ".join(words))) if words else []

    def detokenize(self, tokens: Sequence[str]) -> str:
        return self.processor.DecodePieces(list(tokens))

    def scoring_text(self, tokens: Sequence[str]) -> str:
        """The pieces decoded: words; for Chinese, jieba's words of the decoded text."""
        text = self.detokenize(tokens)
        return segment_for_scoring(text, "jieba") if self.language == "zh" else text

    def check_vocabulary(self, tokens: Sequence[str], where: str) -> None:
        """Every token of ``tokens`` but the special ones (``<pad>``, ``<unk>``, ``<s>``, ``</s>``) is a piece of the
        SentencePiece model: the vocabulary and the model were made together.

        :raises ImcapError: naming both files and the first foreign tokens, if not.
        """
        pieces = set(self.pieces())
        foreign = [t for t in tokens if t not in pieces and not (t.startswith("<") and t.endswith(">"))]
        check_condition(not foreign, "%s: %d of its tokens are no piece of the SentencePiece model %s (e.g. %s): the "
                        "vocabulary and the model come from different runs of prepare_data" % (
                            where, len(foreign), self.model_file, ", ".join(repr(t) for t in foreign[:3])))

    def pieces(self) -> List[str]:
        """Every piece of the model, by id."""
        return [self.processor.IdToPiece(i) for i in range(self.processor.GetPieceSize())]

    def copy_to(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, SENTENCEPIECE_FILE)
        if os.path.abspath(target) != os.path.abspath(self.model_file):
            temporary = target + ".tmp"
            shutil.copyfile(self.model_file, temporary)
            os.replace(temporary, target)
        self.save(folder)


def train_sentencepiece(captions: Iterable[str], folder: str, vocab_size: int, model_type: str = "bpe",
                        language: str = "en") -> SentencePieceTokenizer:
    """Train a SentencePiece model on captions (after the ``words`` normalization) and save it in ``folder`` as
    :data:`SENTENCEPIECE_FILE` with its ``tokenizer.json``.

    :param vocab_size: the pieces of the model (its own ``<unk>``, ``<s>``, ``</s>`` included).
    :param model_type: ``bpe`` or ``unigram``.
    :raises ImcapError: if there are no captions, ``model_type`` is unknown or SentencePiece refuses the size (more
        pieces than the captions allow).
    """
    import sentencepiece as spm
    check_condition(model_type in ("bpe", "unigram"), "unknown SentencePiece model type %r (bpe, unigram)"
                    % model_type)
    lines = [" ".join(words) for words in (tokenize(c) for c in captions) if words]
    check_condition(bool(lines), "no captions to train a SentencePiece model on")
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, ".tokenizer.training")
    try:
        spm.SentencePieceTrainer.Train(sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=vocab_size,
                                       model_type=model_type, character_coverage=1.0, minloglevel=2)
    except (OSError, RuntimeError) as e:
        raise ImcapError("SentencePiece could not train a model of %d pieces: %s"
                         % (vocab_size, str(e).splitlines()[0]))
    os.replace(prefix + ".model", os.path.join(folder, SENTENCEPIECE_FILE))
    if os.path.exists(prefix + ".vocab"):
        os.remove(prefix + ".vocab")
    tokenizer = SentencePieceTokenizer(os.path.join(folder, SENTENCEPIECE_FILE), language)
    tokenizer.save(folder)
    return tokenizer


def make_tokenizer(name: str, language: Optional[str] = None) -> Tokenizer:
    """A tokenizer that needs no training (every choice but ``sentencepiece``).

    :raises ImcapError: for an unknown name, or ``sentencepiece`` (see :func:`train_sentencepiece`).
    """
    check_condition(name != SENTENCEPIECE, "a sentencepiece tokenizer is trained (train_sentencepiece) or loaded")
    check_condition(name in CHOICES, "unknown tokenizer %r (choices: %s)" % (name, ", ".join(CHOICES)))
    return Tokenizer(name, language or DEFAULT_LANGUAGE[name])


def load_tokenizer(folder: str) -> Tokenizer:
    """The tokenizer recorded in a data dir or model dir; ``words`` (English) if it records none (data and models
    made before tokenizers were recorded).

    :raises ImcapError: naming the file if the record is not valid, names an unknown tokenizer, or its SentencePiece
        model is missing or broken.
    """
    path = os.path.join(folder, TOKENIZER_FILE)
    if not os.path.isfile(path):
        return Tokenizer(WORDS, "en")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ImcapError("%s: not a tokenizer record (%s)" % (path, e))
    check_condition(isinstance(record, dict) and record.get("tokenizer") in CHOICES,
                    "%s: 'tokenizer' must be one of %s" % (path, ", ".join(CHOICES)))
    language = str(record.get("language") or DEFAULT_LANGUAGE[record["tokenizer"]])
    if record["tokenizer"] == SENTENCEPIECE:
        return SentencePieceTokenizer(os.path.join(folder, SENTENCEPIECE_FILE), language)
    return Tokenizer(record["tokenizer"], language)


__all__ = ["CHARS", "CHOICES", "JIEBA", "NONE", "SCORING_CHOICES", "SENTENCEPIECE", "SENTENCEPIECE_FILE", "SentencePieceTokenizer",
           "TOKENIZER_FILE", "Tokenizer", "WORDS", "join_cjk", "join_subwords", "load_tokenizer", "make_tokenizer",
           "segment_for_scoring", "tokenize", "train_sentencepiece"]
