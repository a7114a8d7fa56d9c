"""Training data: cached image features paired with captions, bucketed by caption length.

Batches are drawn with GluonNLP's ``FixedBucketSampler`` (Khomenko et al. 2016-style length buckets) so that
each batch pads to its bucket's length; the order of every epoch is a function of ``(seed, epoch)``, which
makes a resumed run see the same batches as an uninterrupted one. Each batch is made (its features gathered, read
from their files when the store reads lazily) by a thread while the previous batch trains.

A pair whose features cannot be read or hold NaN or infinite values is left out, with a warning naming its line: when
the data are made, or, for NaN and infinities in features read lazily, from the first batch that reads the file on
(that batch included, so a batch can be smaller than the batch size, even empty: ``len(batch) == 0``).
"""
import concurrent.futures
import logging
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, TypeVar

import gluonnlp as nlp
import numpy as np

from . import constants as C
from .features import FeatureStore
from .utils import check_condition, read_lines
from .vocab import tokens_to_ids

logger = logging.getLogger(__name__)


T = TypeVar("T")
R = TypeVar("R")


def prefetched(make: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``make(item)`` of each item in order, the next one made by a worker thread while the caller uses the current
    one (reading a batch's feature files overlaps the training step: file reads and numpy copies release the GIL).
    An exception of ``make`` is raised where its result would have been yielded."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="imcap-batches") as pool:
        pending = None
        for item in items:
            future = pool.submit(make, item)
            if pending is not None:
                yield pending.result()
            pending = future
        if pending is not None:
            yield pending.result()


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the batch order of ``epoch``: a function of the run's seed and the epoch only."""
    return (seed * 1000003 + epoch) % (2 ** 32)


def epoch_views(store: FeatureStore, seed: int, epoch: int, size: int) -> Optional[np.ndarray]:
    """Which view of its image each of ``size`` items shows in ``epoch`` (0: the original, ``1 + i``: the store's
    ``augmentations[i]``, uniformly at random), a function of ``(seed, epoch)`` only so that a resumed epoch
    draws the same views; ``None`` when the store has no augmented views."""
    if len(store.views) == 1:
        return None
    return np.random.RandomState((epoch_seed(seed, epoch) + 7919) % (2 ** 32)).randint(len(store.views), size=size)


class Batch:
    """One batch: ``features (batch, regions, dim)`` float32, ``target_in``/``target_out (batch, length)``
    int32 (``<s> w1 .. wn`` and ``w1 .. wn </s>`` padded with 0) and the number of target tokens."""

    def __init__(self, features: np.ndarray, target_in: np.ndarray, target_out: np.ndarray) -> None:
        self.features = features
        self.target_in = target_in
        self.target_out = target_out
        self.num_tokens = int((target_out != 0).sum())

    def __len__(self) -> int:
        return self.target_in.shape[0]

    def select(self, keep: np.ndarray) -> "Batch":
        """The batch of the rows where ``keep (batch,)`` (bool) is true, padded to the same length."""
        return Batch(self.features[keep], self.target_in[keep], self.target_out[keep])


class ParallelData:
    """Feature rows paired with tokenized captions.

    :param store: the features of a ``.features`` list.
    :param caption_files: caption files each parallel to the list (several: e.g. all references of a
        validation set, each paired with the same images).
    :param vocab: target vocabulary.
    :param max_seq_len: captions longer than this (tokens, ``</s>`` included) are cut.
    :param tokenize: splits a line into tokens (default: on whitespace; validation references of a SentencePiece
        model hold words, which its tokenizer turns into pieces).
    :raises ImcapError: if a caption file's length differs from the feature list's.
    """

    def __init__(self, store: FeatureStore, caption_files: Sequence[str], vocab: nlp.Vocab, max_seq_len: int,
                 tokenize: Callable[[str], List[str]] = str.split) -> None:
        self.store = store
        rows, captions = [], []
        skipped = truncated = 0
        for path in caption_files:
            lines = read_lines(path)
            check_condition(len(lines) == len(store), "%s has %d lines, but %s has %d"
                            % (path, len(lines), store.list_path, len(store)))
            for number, (row, line) in enumerate(zip(store.index, lines)):
                tokens = tokenize(line)
                if row < 0 or not tokens:
                    skipped += 1
                    continue
                if len(tokens) + 1 > max_seq_len:
                    tokens = tokens[:max_seq_len - 1]
                    truncated += 1
                rows.append(row)
                captions.append(tokens_to_ids(vocab, tokens))
        check_condition(len(rows) > 0, "no usable (features, caption) pairs in %s" % ", ".join(caption_files))
        if skipped:
            logger.warning("%d pairs skipped (unreadable or non-finite features, or empty captions)", skipped)
        if truncated:
            logger.info("%d captions cut to --max-seq-len %d", truncated, max_seq_len)
        self.rows = np.array(rows, dtype=np.int64)
        self.captions = captions
        self.lengths = np.array([len(c) + 1 for c in captions], dtype=np.int64)
        self.bos, self.eos = vocab[C.BOS_SYMBOL], vocab[C.EOS_SYMBOL]

    def __len__(self) -> int:
        return len(self.rows)

    def make_batch(self, indices: Sequence[int], length: Optional[int] = None,
                   views: Optional[np.ndarray] = None) -> Batch:
        """Pad the captions of ``indices`` to ``length`` (default: the longest) and gather their features, each
        pair's in its view ``views (len(indices),)`` (default: the originals; see :meth:`FeatureStore.read_batch`).
        Pairs whose features turn out to hold NaN or infinite values (read lazily; the store warns) are left out.

        :raises ImcapError: if a feature file cannot be read (read lazily).
        """
        length = length or int(self.lengths[list(indices)].max())
        target_in = np.zeros((len(indices), length), dtype=np.int32)
        target_out = np.zeros((len(indices), length), dtype=np.int32)
        for i, index in enumerate(indices):
            caption = self.captions[index][:length - 1]
            target_in[i, 0] = self.bos
            target_in[i, 1:len(caption) + 1] = caption
            target_out[i, :len(caption)] = caption
            target_out[i, len(caption)] = self.eos
        features, usable = self.store.read_batch(self.rows[list(indices)], views)
        batch = Batch(features, target_in, target_out)
        return batch if usable.all() else batch.select(usable)


def bucket_keys(max_len: int, width: int) -> List[int]:
    """The lengths of the buckets as Sockeye's ``define_buckets`` makes them: ``width, 2 * width, ...`` up to
    ``max_len``, which is the last (a caption of length ``n`` is padded to the first key ``>= n``, by fewer than
    ``width`` tokens).

    :raises ValueError: if ``width < 1`` or ``max_len < 1``.
    """
    if width < 1 or max_len < 1:
        raise ValueError("buckets need a width and a maximum length of at least 1, not %d and %d" % (width, max_len))
    return sorted({min(key, max_len) for key in range(width, max_len + width, width)})


class BucketBatcher:
    """Length-bucketed batches of a :class:`ParallelData`, reproducible per ``(seed, epoch)``.

    :param batch_size: captions per batch.
    :param bucket_width: width of the length buckets (tokens).
    """

    def __init__(self, data: ParallelData, batch_size: int, bucket_width: int, seed: int, shuffle: bool = True) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        keys = bucket_keys(int(data.lengths.max()), bucket_width)
        #: the bucket lengths that hold captions (a caption goes to the first key >= its length), ascending
        self.keys: List[int] = sorted({keys[int(np.searchsorted(keys, n))] for n in np.unique(data.lengths)})
        self._num_batches = len(self._sampler())

    def _sampler(self) -> nlp.data.FixedBucketSampler:
        """A new GluonNLP sampler over the buckets :attr:`keys`: it shuffles its own lists in place as it is
        iterated, so every epoch starts from a new one, which makes the epoch's order depend on its seed only."""
        return nlp.data.FixedBucketSampler(self.data.lengths.tolist(), batch_size=self.batch_size, num_buckets=None,
                                           bucket_keys=self.keys, shuffle=self.shuffle, ratio=0.0)

    def __len__(self) -> int:
        return self._num_batches

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """The batches (lists of pair indices) of ``epoch``, the same every time for the same seed and epoch."""
        sampler = self._sampler()
        state = np.random.get_state()
        np.random.seed(epoch_seed(self.seed, epoch))
        try:
            return [list(b) for b in sampler]
        finally:
            np.random.set_state(state)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from batch number ``start`` on, each padded to its bucket's length; with augmented
        views, each pair shows the view :func:`epoch_views` draws for it. Pairs whose features turn out to hold NaN
        or infinite values are left out (:meth:`ParallelData.make_batch`).

        :raises ImcapError: if a feature file cannot be read (read lazily), when its batch is reached.
        """
        views = epoch_views(self.data.store, self.seed, epoch, len(self.data)) if self.shuffle else None

        def make(indices: List[int]) -> Batch:
            length = int(self.data.lengths[indices].max())
            bucket = next(k for k in self.keys if k >= length)
            return self.data.make_batch(indices, bucket, None if views is None else views[indices])

        return prefetched(make, self.epoch_batches(epoch)[start:])


class ImageBatch:
    """A batch of images for self-critical training: ``features (images, regions, dim)`` float32 and the images'
    numbers ``(images,)`` in :attr:`ImageBatcher.references` (images whose features hold NaN or infinite values
    left out, see :meth:`ImageBatcher.iter_epoch`)."""

    def __init__(self, features: np.ndarray, images: np.ndarray) -> None:
        self.features = features
        self.images = images

    def __len__(self) -> int:
        return len(self.images)


class ImageBatcher:
    """Batches of the distinct images of a :class:`ParallelData`, each image with all its captions as references,
    shuffled per ``(seed, epoch)`` like :class:`BucketBatcher`.

    :param batch_size: images per batch.
    """

    def __init__(self, data: ParallelData, batch_size: int, seed: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.rows, inverse = np.unique(data.rows, return_inverse=True)
        #: per image, its captions (word ids, without <s> and </s>)
        self.references: List[List[List[int]]] = [[] for _ in self.rows]
        for pair, image in enumerate(inverse):
            self.references[image].append(data.captions[pair])

    def __len__(self) -> int:
        return (len(self.rows) + self.batch_size - 1) // self.batch_size

    def epoch_batches(self, epoch: int) -> List[np.ndarray]:
        """The batches (arrays of image numbers) of ``epoch``, the same every time for the same seed and epoch."""
        order = np.random.RandomState(epoch_seed(self.seed, epoch)).permutation(len(self.rows))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[ImageBatch]:
        """Batches of ``epoch`` from batch number ``start`` on; with augmented views, each image shows the view
        :func:`epoch_views` draws for it. Images whose features turn out to hold NaN or infinite values (read
        lazily; the store warns) are left out.

        :raises ImcapError: if a feature file cannot be read (read lazily), when its batch is reached.
        """
        views = epoch_views(self.data.store, self.seed, epoch, len(self.rows))

        def make(images: np.ndarray) -> ImageBatch:
            features, usable = self.data.store.read_batch(self.rows[images], None if views is None else views[images])
            return ImageBatch(features, images) if usable.all() else ImageBatch(features[usable], images[usable])

        return prefetched(make, self.epoch_batches(epoch)[start:])
