"""Prepare a captioning data set: annotations in, parallel image/caption files per split out.

``python -m imcap.prepare_data --output DIR`` reads a data set's own annotations and writes, per split,
files that the rest of imcap reads (see docs/architecture.md):

* training splits (``--train-splits``, default ``train``): ``SPLIT.images`` and ``SPLIT.captions``, one
  (image, caption) pair per line, so an image with five captions is on five consecutive lines;
* every other split (evaluation splits, e.g. ``val`` and ``test``): ``SPLIT.images`` with one line per
  image, ``SPLIT.captions.0`` ... ``SPLIT.captions.{K-1}`` with the K references of each image on the
  same line, and ``SPLIT.all.images``/``SPLIT.all.captions`` in the one-pair-per-line form (for the
  validation perplexity).

Captions are split into tokens by ``--tokenizer`` (:mod:`imcap.tokenizer`; default ``words``: lower-cased, stripped
of punctuation, :func:`imcap.tokenizer.tokenize`, which constraint phrases go through too) and joined with single
spaces; ``tokenizer.json`` (and a SentencePiece model, ``tokenizer.model``) in ``--output`` records the tokenizer,
which ``imcap.train`` copies into the model dir. Training files hold the model's tokens (SentencePiece pieces);
reference files hold what captions are scored on: the words (the pieces decoded), jieba's words or the characters.
Image paths are written relative, exactly as the annotations give them.

Supported annotation formats (``--format``):

* ``flickr``: Flickr8k (Hodosh, Young and Hockenmaier 2013, "Framing Image Description as a Ranking
  Task: Data, Models and Evaluation Metrics", JAIR 47) as ``captions.tsv`` (``<image>\\t<caption>``) or
  the original ``Flickr8k.token.txt`` (``<image>#<n>\\t<caption>``), with one split file per split;
* ``karpathy``: the ``dataset_*.json`` files with the splits of Karpathy and Fei-Fei (2015), "Deep
  Visual-Semantic Alignments for Generating Image Descriptions", CVPR;
* ``coco``: MS COCO ``captions_*.json`` (Chen et al. 2015, "Microsoft COCO Captions: Data Collection
  and Evaluation Server", arXiv:1504.00325), one file per split.
"""
import argparse
import collections
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import arguments
from .arguments import DEFAULT_FLICKR8K
from .tokenizer import CHOICES as TOKENIZER_CHOICES, SENTENCEPIECE, WORDS, Tokenizer, make_tokenizer, \
    train_sentencepiece
from .utils import ImcapError, atomic_open, check_condition, read_lines

logger = logging.getLogger(__name__)

FORMAT_FLICKR = "flickr"
FORMAT_KARPATHY = "karpathy"
FORMAT_COCO = "coco"
FORMATS = [FORMAT_FLICKR, FORMAT_KARPATHY, FORMAT_COCO]

SPLIT_TRAIN = "train"
SPLIT_RESTVAL = "restval"
SPLIT_VAL = "val"
SPLIT_TEST = "test"
# Order in which known split names are listed; other names follow in order of appearance.
CANONICAL_SPLIT_ORDER = [SPLIT_TRAIN, SPLIT_RESTVAL, SPLIT_VAL, SPLIT_TEST]

# Split files looked for beside the Flickr captions file: ours first, then the original Flickr8k names.
FLICKR_DEFAULT_SPLIT_FILES = collections.OrderedDict([
    (SPLIT_TRAIN, ["train.txt", "Flickr_8k.trainImages.txt"]),
    (SPLIT_VAL, ["val.txt", "Flickr_8k.devImages.txt"]),
    (SPLIT_TEST, ["test.txt", "Flickr_8k.testImages.txt"]),
])

IMAGES_SUFFIX = ".images"
CAPTIONS_SUFFIX = ".captions"
ALL_SUFFIX = ".all"

# One image and its raw captions; a data set maps each split to its images in a stable order.
ImageCaptions = Tuple[str, List[str]]
Dataset = Dict[str, List[ImageCaptions]]

_FLICKR_TOKEN_ID = re.compile(r"^(.*)#(\d+)$")


def _new_dataset(split_names: Sequence[str]) -> Dataset:
    """An empty data set with the given split names in canonical order (known names first)."""
    names = [name for name in CANONICAL_SPLIT_ORDER if name in split_names]
    names += [name for name in split_names if name not in names]
    return collections.OrderedDict((name, []) for name in names)


def _check_image_path(path: str, where: str) -> None:
    """Image paths go on one line of a text file: they must be non-empty and free of line breaks."""
    check_condition(path.strip() != "", "%s: empty image name" % where)
    check_condition("\n" not in path and "\r" not in path, "%s: image name contains a line break: %r"
                    % (where, path))


def parse_split_assignments(values: Optional[Sequence[str]], option: str) -> List[Tuple[str, str]]:
    """Parse ``NAME=PATH`` values of a command-line option into (name, path) pairs, in the given order.

    :raises ImcapError: if a value has no ``=`` or an empty name or path.
    """
    pairs = []
    for value in values or []:
        name, sep, path = value.partition("=")
        check_condition(sep == "=" and name.strip() != "" and path.strip() != "",
                        "%s: expected SPLIT=PATH, got %r" % (option, value))
        pairs.append((name.strip(), path))
    return pairs


def read_flickr_captions(path: str) -> Dict[str, List[str]]:
    """Read Flickr captions, ``<image>\\t<caption>`` (``captions.tsv``) or ``<image>#<n>\\t<caption>``
    (``Flickr8k.token.txt``), into image -> captions in file order. Blank lines are skipped.

    :raises ImcapError: naming file and line for a line without a tab, without an image name or without a caption
        (and for a file that is not UTF-8).
    """
    captions: Dict[str, List[str]] = collections.OrderedDict()
    for number, line in enumerate(read_lines(path), 1):
        if number == 1:
            line = line.lstrip("\ufeff")
        if line.strip() == "":
            continue
        image, sep, caption = line.partition("\t")
        where = "%s:%d" % (path, number)
        check_condition(sep == "\t", "%s: malformed line, expected '<image>\\t<caption>' but found no tab: %r"
                        % (where, line[:80]))
        image = image.strip()
        match = _FLICKR_TOKEN_ID.match(image)
        if match is not None:
            image = match.group(1)
        _check_image_path(image, where)
        check_condition(caption.strip() != "", "%s: empty caption of %s (every line needs its caption text)"
                        % (where, image))
        captions.setdefault(image, []).append(caption)
    return captions


def default_flickr_split_files(captions_path: str) -> List[Tuple[str, str]]:
    """The split files beside ``captions_path``: ``train.txt``/``val.txt``/``test.txt`` or, failing that,
    the original ``Flickr_8k.{train,dev,test}Images.txt``; the first candidate when none exists (so the
    error names the expected file)."""
    directory = os.path.dirname(os.path.abspath(captions_path))
    pairs = []
    for split, candidates in FLICKR_DEFAULT_SPLIT_FILES.items():
        paths = [os.path.join(directory, name) for name in candidates]
        existing = [p for p in paths if os.path.isfile(p)]
        pairs.append((split, existing[0] if existing else paths[0]))
    return pairs


def read_flickr(captions_path: str, split_files: Optional[Sequence[Tuple[str, str]]] = None) -> Dataset:
    """Read a Flickr8k-style data set (Hodosh et al. 2013).

    :param captions_path: ``captions.tsv`` or ``Flickr8k.token.txt`` (see :func:`read_flickr_captions`).
    :param split_files: (split, path) pairs, each file listing one image name per line; default
        :func:`default_flickr_split_files`. Splits keep the given order, images the order of their file.
    :return: split -> [(image, [raw captions in file order])].
    :raises ImcapError: for a malformed captions line, a split named twice, or an image listed in a split
        file without captions (naming the split file and line).
    """
    captions = read_flickr_captions(captions_path)
    if split_files is None:
        split_files = default_flickr_split_files(captions_path)
    names = [name for name, _ in split_files]
    duplicates = sorted(set(name for name in names if names.count(name) > 1))
    check_condition(not duplicates, "split given twice: %s" % ", ".join(duplicates))
    dataset: Dataset = collections.OrderedDict()
    used = set()
    for split, path in split_files:
        images: List[ImageCaptions] = []
        seen = set()
        duplicate_count = 0
        for number, line in enumerate(read_lines(path), 1):
            image = line.lstrip("\ufeff").strip() if number == 1 else line.strip()
            if image == "":
                continue
            if image in seen:
                duplicate_count += 1
                continue
            check_condition(image in captions, "%s:%d: image %s has no captions in %s"
                            % (path, number, image, captions_path))
            seen.add(image)
            images.append((image, list(captions[image])))
        if duplicate_count:
            logger.warning("%s: %d duplicate image lines skipped", path, duplicate_count)
        used |= seen
        dataset[split] = images
    unused = sum(1 for image in captions if image not in used)
    if unused:
        logger.info("%d of %d captioned images in %s are in no split", unused, len(captions), captions_path)
    return dataset


def _load_json(path: str) -> Any:
    """Load a JSON file. :raises ImcapError: if it is missing or not valid JSON."""
    check_condition(os.path.isfile(path), "%s: no such file" % path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImcapError("%s: not valid JSON (%s)" % (path, e))


def read_karpathy(path: str, restval_to_train: bool = True) -> Dataset:
    """Read a Karpathy & Fei-Fei (2015) ``dataset_{flickr8k,flickr30k,coco}.json``.

    Each image's path is ``filepath/filename`` (just ``filename`` without ``filepath``); its captions are
    the ``raw`` sentences (``tokens`` joined by spaces when ``raw`` is missing), in file order. Images keep
    file order within their split.

    :param restval_to_train: put ``restval`` images into ``train`` (the usual setting); otherwise keep a
        separate ``restval`` split.
    :raises ImcapError: if the file is not of this form, or an image has no sentences.
    """
    data = _load_json(path)
    check_condition(isinstance(data, dict) and isinstance(data.get("images"), list),
                    "%s: expected a JSON object with an 'images' list (Karpathy dataset_*.json)" % path)
    entries: List[Tuple[str, ImageCaptions]] = []
    for index, entry in enumerate(data["images"]):
        where = "%s: images[%d]" % (path, index)
        check_condition(isinstance(entry, dict), "%s: not an object" % where)
        for key in ("filename", "split", "sentences"):
            check_condition(key in entry, "%s: missing '%s'" % (where, key))
        filename = str(entry["filename"])
        image = os.path.join(str(entry["filepath"]), filename) if entry.get("filepath") else filename
        _check_image_path(image, where)
        split = str(entry["split"])
        check_condition(split != "", "%s (%s): empty split" % (where, image))
        if split == SPLIT_RESTVAL and restval_to_train:
            split = SPLIT_TRAIN
        sentences = entry["sentences"]
        check_condition(isinstance(sentences, list) and len(sentences) > 0, "%s (%s): no sentences" % (where, image))
        captions = []
        for number, sentence in enumerate(sentences):
            check_condition(isinstance(sentence, dict) and ("raw" in sentence or "tokens" in sentence),
                            "%s (%s): sentences[%d] has neither 'raw' nor 'tokens'" % (where, image, number))
            if "raw" in sentence:
                captions.append(str(sentence["raw"]))
            else:
                captions.append(" ".join(str(token) for token in sentence["tokens"]))
        entries.append((split, (image, captions)))
    dataset = _new_dataset(list(collections.OrderedDict.fromkeys(split for split, _ in entries)))
    for split, item in entries:
        dataset[split].append(item)
    return dataset


def read_coco(split_files: Sequence[Tuple[str, str]]) -> Dataset:
    """Read MS COCO caption annotations (Chen et al. 2015), ``captions_*.json``, one or more per split.

    Images keep the order of each file's ``images`` list, captions the order of its ``annotations``;
    several files for one split are appended in the given order. Image paths are the ``file_name``s.

    :param split_files: (split, path) pairs, e.g. ``[("train", "captions_train2014.json"), ...]``.
    :raises ImcapError: if a file is not of this form, an annotation names an unknown image, or an image
        has no caption.
    """
    dataset = _new_dataset([name for name, _ in split_files])
    for split, path in split_files:
        data = _load_json(path)
        check_condition(isinstance(data, dict) and isinstance(data.get("images"), list)
                        and isinstance(data.get("annotations"), list),
                        "%s: expected a JSON object with 'images' and 'annotations' lists (COCO captions_*.json)"
                        % path)
        captions: Dict[Any, List[str]] = collections.OrderedDict()
        names: Dict[Any, str] = {}
        for index, image in enumerate(data["images"]):
            where = "%s: images[%d]" % (path, index)
            check_condition(isinstance(image, dict) and "id" in image and "file_name" in image,
                            "%s: expected an object with 'id' and 'file_name'" % where)
            check_condition(image["id"] not in names, "%s: image id %s given twice" % (where, image["id"]))
            name = str(image["file_name"])
            _check_image_path(name, where)
            names[image["id"]] = name
            captions[image["id"]] = []
        for index, annotation in enumerate(data["annotations"]):
            where = "%s: annotations[%d]" % (path, index)
            check_condition(isinstance(annotation, dict) and "image_id" in annotation and "caption" in annotation,
                            "%s: expected an object with 'image_id' and 'caption'" % where)
            check_condition(annotation["image_id"] in captions,
                            "%s: unknown image_id %s" % (where, annotation["image_id"]))
            captions[annotation["image_id"]].append(str(annotation["caption"]))
        for image_id, image_captions in captions.items():
            check_condition(len(image_captions) > 0, "%s: image %s (%s) has no captions"
                            % (path, image_id, names[image_id]))
            dataset[split].append((names[image_id], image_captions))
    return dataset


@dataclass
class SplitSummary:
    """What was written for one split.

    :ivar images: number of distinct images.
    :ivar captions: number of captions kept (non-empty ones for training splits; all original references,
        without padding, for evaluation splits).
    :ivar references: K, the number of reference files (0 for training splits).
    :ivar vocabulary_size: number of distinct tokens in the split's captions.
    :ivar mean_tokens: mean caption length in tokens.
    :ivar files: the paths written.
    """
    split: str
    training: bool
    images: int = 0
    captions: int = 0
    references: int = 0
    vocabulary_size: int = 0
    mean_tokens: float = 0.0
    files: List[str] = field(default_factory=list)


def _write_lines(path: str, lines: Sequence[str]) -> None:
    """Write ``lines`` (one per line) to ``path`` atomically."""
    with atomic_open(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")


def _pair_lines(images: Sequence[Tuple[str, List[List[str]]]]) -> Tuple[List[str], List[str], int]:
    """One (image, caption) line pair per non-empty tokenized caption; also the number of empty ones skipped."""
    image_lines, caption_lines, skipped = [], [], 0
    for image, captions in images:
        for tokens in captions:
            if not tokens:
                skipped += 1
                continue
            image_lines.append(image)
            caption_lines.append(" ".join(tokens))
    return image_lines, caption_lines, skipped


def write_split(output: str, split: str, images: Sequence[ImageCaptions], training: bool,
                tokenizer: Optional[Tokenizer] = None) -> SplitSummary:
    """Tokenize (``tokenizer``, default ``words``) and write one split into directory ``output`` (see the module
    docstring for the files).

    Training splits skip captions that tokenize to nothing; evaluation splits keep them as empty reference
    lines, and an image with fewer than K references repeats its last one.
    """
    tokenizer = tokenizer or make_tokenizer(WORDS)
    tokenized = [(image, [tokenizer.tokenize(caption) for caption in captions]) for image, captions in images]
    prefix = os.path.join(output, split)
    summary = SplitSummary(split=split, training=training, images=len(tokenized))
    kept = [tokens for _, captions in tokenized for tokens in captions if tokens or not training]

    image_lines, caption_lines, skipped = _pair_lines(tokenized)
    if skipped and training:
        logger.warning("%s: %d captions are empty after tokenization; skipped", split, skipped)
    elif skipped:
        logger.warning("%s: %d references are empty after tokenization; kept as empty reference lines, left out "
                       "of %s%s%s", split, skipped, split, ALL_SUFFIX, CAPTIONS_SUFFIX)
    if training:
        paths = [prefix + IMAGES_SUFFIX, prefix + CAPTIONS_SUFFIX]
        _write_lines(paths[0], image_lines)
        _write_lines(paths[1], caption_lines)
        summary.files.extend(paths)
    else:
        num_refs = max((len(captions) for _, captions in tokenized), default=0)
        padded = sum(1 for _, captions in tokenized if len(captions) < num_refs)
        if padded:
            logger.warning("%s: %d of %d images have fewer than %d references; their last reference is repeated",
                           split, padded, len(tokenized), num_refs)
        path = prefix + IMAGES_SUFFIX
        _write_lines(path, [image for image, _ in tokenized])
        summary.files.append(path)
        for k in range(num_refs):
            path = "%s%s.%d" % (prefix, CAPTIONS_SUFFIX, k)
            _write_lines(path, [tokenizer.scoring_text(captions[min(k, len(captions) - 1)])
                                for _, captions in tokenized])
            summary.files.append(path)
        stale = "%s%s.%d" % (prefix, CAPTIONS_SUFFIX, num_refs)
        if os.path.exists(stale):
            logger.warning("%s: %s is left from an earlier run; this split has only %d references",
                           split, stale, num_refs)
        paths = [prefix + ALL_SUFFIX + IMAGES_SUFFIX, prefix + ALL_SUFFIX + CAPTIONS_SUFFIX]
        _write_lines(paths[0], image_lines)
        _write_lines(paths[1], caption_lines)
        summary.files.extend(paths)
        summary.references = num_refs

    summary.captions = len(kept)
    summary.vocabulary_size = len(set(token for tokens in kept for token in tokens))
    summary.mean_tokens = sum(len(tokens) for tokens in kept) / len(kept) if kept else 0.0
    logger.info("%s (%s): %d images, %d captions%s, vocabulary %d, %.2f tokens per caption", split,
                "training" if training else "evaluation", summary.images, summary.captions,
                "" if training else " (%d references per image)" % summary.references,
                summary.vocabulary_size, summary.mean_tokens)
    return summary


def read_dataset(args: argparse.Namespace) -> Dataset:
    """Read the data set that ``args`` select (``--format`` and its input options).

    :raises ImcapError: if an option of another format is given or a required input is missing.
    """
    fmt = args.format
    check_condition(fmt == FORMAT_FLICKR or args.splits is None, "--splits is only used with --format flickr")
    check_condition(fmt == FORMAT_KARPATHY or args.karpathy_json is None,
                    "--karpathy-json is only used with --format karpathy")
    check_condition(fmt == FORMAT_COCO or args.coco is None, "--coco is only used with --format coco")
    if fmt == FORMAT_FLICKR:
        split_files = parse_split_assignments(args.splits, "--splits") if args.splits is not None else None
        return read_flickr(args.captions, split_files)
    if fmt == FORMAT_KARPATHY:
        check_condition(args.karpathy_json is not None, "--format karpathy needs --karpathy-json PATH")
        return read_karpathy(args.karpathy_json, restval_to_train=args.restval_to_train)
    check_condition(args.coco is not None, "--format coco needs --coco SPLIT=PATH ...")
    return read_coco(parse_split_assignments(args.coco, "--coco"))


def run_prepare_data(args: argparse.Namespace) -> Dict[str, SplitSummary]:
    """Read the annotations, keep the first ``--max-images-per-split`` images per split and write the files
    of every split into ``--output``.

    :return: split -> what was written.
    :raises ImcapError: for unreadable or inconsistent annotations or options.
    """
    dataset = read_dataset(args)
    train_splits = list(args.train_splits)
    missing = [split for split in train_splits if split not in dataset]
    if missing:
        logger.warning("--train-splits: no split %s in the data (splits: %s)", ", ".join(missing),
                       ", ".join(dataset) or "none")
    os.makedirs(args.output, exist_ok=True)
    if args.max_images_per_split is not None:
        dataset = collections.OrderedDict((split, images[:args.max_images_per_split])
                                          for split, images in dataset.items())
    tokenizer = build_tokenizer(args, [caption for split in train_splits for _, captions in dataset.get(split, [])
                                       for caption in captions])
    summaries: Dict[str, SplitSummary] = collections.OrderedDict()
    for split, images in dataset.items():
        if not images:
            logger.warning("%s: no images; nothing written", split)
            continue
        summaries[split] = write_split(args.output, split, images, split in train_splits, tokenizer)
    check_condition(len(summaries) > 0, "no images in any split; nothing written")
    return summaries


def build_tokenizer(args: argparse.Namespace, training_captions: Sequence[str]) -> Tokenizer:
    """The ``--tokenizer`` of ``args`` (a SentencePiece model trained on ``training_captions``), saved in
    ``--output``.

    :raises ImcapError: if SentencePiece cannot train a model of ``--vocab-size`` pieces on the captions, or
        ``--vocab-size`` is given for another tokenizer.
    """
    language = args.language
    if args.tokenizer == SENTENCEPIECE:
        check_condition(args.vocab_size is not None, "--tokenizer sentencepiece needs --vocab-size (e.g. 2000)")
        tokenizer: Tokenizer = train_sentencepiece(training_captions, args.output, args.vocab_size,
                                                   args.sentencepiece_model_type, language or "en")
        logger.info("SentencePiece (%s) trained on %d captions: %d pieces", args.sentencepiece_model_type,
                    len(training_captions), args.vocab_size)
        return tokenizer
    check_condition(args.vocab_size is None, "--vocab-size is for --tokenizer sentencepiece")
    tokenizer = make_tokenizer(args.tokenizer, language)
    tokenizer.save(args.output)
    return tokenizer


def add_prepare_data_args(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m imcap.prepare_data``."""
    group = parser.add_argument_group("Input")
    group.add_argument("--format", choices=FORMATS, default=FORMAT_FLICKR,
                       help="Annotation format: flickr (captions.tsv or Flickr8k.token.txt plus split files), "
                            "karpathy (dataset_*.json), coco (captions_*.json, one per split).")
    group.add_argument("--captions", metavar="PATH", default=os.path.join(DEFAULT_FLICKR8K, "captions.tsv"),
                       help="flickr: captions file, '<image>\\t<caption>' or '<image>#<n>\\t<caption>' lines.")
    group.add_argument("--splits", nargs="+", default=None, metavar="SPLIT=PATH",
                       help="flickr: split files, one image name per line, e.g. train=train.txt val=val.txt "
                            "test=test.txt. If not given: train.txt, val.txt and test.txt (or the original "
                            "Flickr_8k.{train,dev,test}Images.txt) beside --captions.")
    group.add_argument("--karpathy-json", default=None, metavar="PATH",
                       help="karpathy: the dataset_*.json file of Karpathy & Fei-Fei (2015).")
    group.add_argument("--restval-to-train", action=argparse.BooleanOptionalAction, default=True,
                       help="karpathy: put the 'restval' images into the train split (otherwise they form a "
                            "split 'restval' of their own).")
    group.add_argument("--coco", nargs="+", default=None, metavar="SPLIT=PATH",
                       help="coco: caption files per split, e.g. train=captions_train2014.json "
                            "val=captions_val2014.json; files given for the same split are appended.")
    group.add_argument("--max-images-per-split", type=arguments.int_greater_or_equal(1), default=None, metavar="N",
                       help="Keep only the first N images of each split (for quick runs); None keeps all.")

    group = parser.add_argument_group("Output")
    group.add_argument("--output", "-o", required=True, metavar="DIR",
                       help="Required. Directory (created) for the SPLIT.images/SPLIT.captions[.K] files.")
    group.add_argument("--train-splits", nargs="+", default=[SPLIT_TRAIN], metavar="SPLIT",
                       help="Splits written one (image, caption) pair per line; every other split is an "
                            "evaluation split: one image per line with reference files SPLIT.captions.0 ... "
                            "plus SPLIT.all.images/SPLIT.all.captions.")
    group = parser.add_argument_group("Tokenizer")
    group.add_argument("--tokenizer", choices=TOKENIZER_CHOICES, default=WORDS,
                       help="How captions become tokens (imcap.tokenizer): words (lower-cased words, punctuation "
                            "removed), none (split on whitespace only: pre-segmented text such as subword-nmt's "
                            "'constr@@ aint' keeps its pieces), sentencepiece (a SentencePiece model trained on the "
                            "training captions, --vocab-size pieces), jieba (Chinese words), chars (one token per "
                            "character). Recorded in OUTPUT/tokenizer.json; the model dir keeps it.")
    group.add_argument("--vocab-size", type=arguments.int_greater_or_equal(8), default=None,
                       help="sentencepiece: the pieces of its model.")
    group.add_argument("--sentencepiece-model-type", choices=["bpe", "unigram"], default="bpe",
                       help="sentencepiece: BPE or unigram language model segmentation.")
    group.add_argument("--language", default=None,
                       help="The captions' language (ISO 639-1): default zh for jieba and chars, en otherwise. The "
                            "guide's class words and METEOR are English only.")
    arguments.add_logging_args(parser)


def create_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m imcap.prepare_data``."""
    parser = arguments.new_parser(__doc__.split("\n")[0])
    add_prepare_data_args(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Command-line entry point: parse ``argv`` (default ``sys.argv``), set up logging and run."""
    arguments.cli_main(create_parser(), run_prepare_data, argv)


if __name__ == "__main__":
    main()
