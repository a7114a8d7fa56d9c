"""The feature cache: one ``.npy`` file of shape ``(regions, channels)`` per image, and its manifest.

A cache directory (``--output-root`` of :mod:`imcap.extract_features`) holds

* ``cache.json``: encoder name, layer, input size (pixels), feature shape ``[regions, channels]`` and dtype;
* ``<image relative path>.npy`` for every image, written atomically, so that an interrupted extraction
  leaves only whole files and resumes where it stopped;
* ``<image relative path>.<view>.npy`` for the augmented views asked for with ``--augmentations`` (e.g.
  ``hflip``: the image mirrored), which training draws at random with ``--source-augmentations``;
* ``SPLIT.features`` lists, one feature path (relative to the cache directory) per line of ``SPLIT.images``.

:class:`FeatureStore` gives the features of a list to training: read lazily, each batch reading the files of its
images (:class:`LazyFeatures`), so that data larger than memory trains and a distributed worker reads only its
batches; or, with ``load_all_to_memory`` (``imcap.train --load-all-features-to-memory``, as Sockeye), loaded once.
A line whose file cannot be read (missing, no ``.npy``, truncated) is skipped with a warning naming it when the store
is made; so is one whose file holds NaN or infinite values, loaded, or read lazily when a batch first reads it.

:func:`region_grid` is the one rule of how an image's regions lie on the CNN's map (rows and columns, row-major), for
whoever shows or reports attention over them (:mod:`imcap.plots.attention`, :mod:`imcap.visualize`,
:mod:`imcap.serving.http_api`).
"""
import json
import logging
import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

import numpy as np

from . import constants as C
from .utils import ImcapError, atomic_open, atomic_path, check_condition, read_lines

logger = logging.getLogger(__name__)

CLASSES_SUFFIX = ".classes.npy"   # beside a feature file: the image's ImageNet class probabilities
NON_FINITE = "contain NaN or infinite values"   # why a feature file is skipped, in the warning naming its line


def region_grid(num_regions: int, known: Optional[Tuple[int, int]] = None) -> Optional[Tuple[int, int]]:
    """``(rows, columns)`` of the grid of ``num_regions`` regions (a CNN's ``H x W`` map flattened row-major, region
    ``i`` at row ``i // columns``, column ``i % columns``), or None when it is unknown.

    :param known: a grid known from elsewhere (a CNN tail's output map, ``--grid HxW``): the answer when it holds
        ``num_regions`` regions, None when it does not. Without it, the square of side ``sqrt(num_regions)`` when
        that is a whole number, else None.
    """
    if known is not None:
        rows, columns = int(known[0]), int(known[1])
        return (rows, columns) if rows * columns == num_regions else None
    side = math.isqrt(max(num_regions, 0))
    return (side, side) if num_regions > 0 and side * side == num_regions else None


def feature_relpath(image_relpath: str, view: Optional[str] = None) -> str:
    """Cache-relative path of an image's features: the image path with ``.npy`` appended, or ``.VIEW.npy`` for
    an augmented view (one of :data:`imcap.constants.AUGMENTATION_CHOICES`)."""
    return image_relpath.lstrip("/") + ("." + view if view else "") + C.FEATURE_SUFFIX


def view_path(feature_path: str, view: str) -> str:
    """The features of an augmented view beside a feature file: ``a.jpg.npy`` → ``a.jpg.VIEW.npy``."""
    stem = feature_path[:-len(C.FEATURE_SUFFIX)] if feature_path.endswith(C.FEATURE_SUFFIX) else feature_path
    return stem + "." + view + C.FEATURE_SUFFIX


def classes_path(feature_path: str) -> str:
    """The ImageNet class probabilities beside a feature file (:mod:`imcap.extract_features` writes them for
    EfficientNet-Lite): ``a.jpg.npy`` → ``a.jpg.classes.npy``."""
    stem = feature_path[:-len(C.FEATURE_SUFFIX)] if feature_path.endswith(C.FEATURE_SUFFIX) else feature_path
    return stem + CLASSES_SUFFIX


def save_classes(path: str, probabilities: np.ndarray) -> None:
    """Write one image's class probabilities ``(classes,)`` atomically, as float16."""
    save_feature(path, np.asarray(probabilities, dtype=np.float16).reshape(-1))


def load_classes(path: str) -> np.ndarray:
    """One image's class probabilities ``(classes,)`` float32.

    :raises ImcapError: naming the file if it is missing or not a 1-D ``.npy`` array.
    """
    check_condition(os.path.isfile(path), "%s: no class probabilities" % path)
    try:
        probabilities = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ImcapError("%s: not a class probability file (%s)" % (path, str(e).splitlines()[0] if str(e) else
                                                                    type(e).__name__))
    check_condition(isinstance(probabilities, np.ndarray) and probabilities.ndim == 1,
                    "%s: class probabilities must be one (classes,) array" % path)
    return probabilities.astype(np.float32)


def read_manifest(cache_dir: str) -> Optional[Dict]:
    """The cache's ``cache.json``, or ``None`` if there is none."""
    path = os.path.join(cache_dir, C.FEATURE_CACHE_MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_or_check_manifest(cache_dir: str, manifest: Dict) -> None:
    """Write ``cache.json``, or check that an existing one describes the same features.

    :raises ImcapError: if the cache holds features of another encoder, layer, input size or dtype.
    """
    existing = read_manifest(cache_dir)
    if existing is None:
        with atomic_open(os.path.join(cache_dir, C.FEATURE_CACHE_MANIFEST)) as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
        return
    differing = [k for k in manifest if existing.get(k) != manifest[k]]
    check_condition(not differing, "%s holds features of other settings (%s); use another --output-root"
                    % (os.path.join(cache_dir, C.FEATURE_CACHE_MANIFEST),
                       ", ".join("%s: cache %s, now %s" % (k, existing.get(k), manifest[k]) for k in differing)))


def save_feature(path: str, features: np.ndarray) -> None:
    """Write one image's ``(regions, channels)`` features atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features)


def all_finite(features: np.ndarray) -> np.ndarray:
    """Whether each item of ``features (n, ...)`` holds only finite values: bool ``(n,)``."""
    return np.isfinite(features).all(axis=tuple(range(1, features.ndim)))


def load_features(path: str, dtype: str) -> np.ndarray:
    """One ``.npy`` file's features, cast to ``dtype``.

    :raises OSError: if the file cannot be opened; ``ValueError`` (or ``EOFError``): if it is no ``.npy`` file or is
        cut short.
    """
    return np.load(path, allow_pickle=False).astype(dtype, copy=False)


def resolve(path: str, root: Optional[str]) -> str:
    """``path`` joined to ``root`` unless it is absolute or ``root`` is ``None``."""
    return path if root is None or os.path.isabs(path) else os.path.join(root, path)


class NpyHeader(NamedTuple):
    """What a ``.npy`` file's header says: the array's shape, dtype, order, and where its data starts (bytes)."""
    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int


def read_header(path: str) -> NpyHeader:
    """The header of a ``.npy`` file (its data is not read, but the file's size is checked against it).

    :raises OSError: if the file cannot be opened; ``ValueError``: if it is not a ``.npy`` file, or is shorter than
        its header says (a truncated file).
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(f))
        header = NpyHeader(tuple(shape), dtype, fortran_order, f.tell())
        size, expected = os.fstat(f.fileno()).st_size, header.offset + int(np.prod(shape)) * dtype.itemsize
    if size < expected:
        raise ValueError("%d bytes, not %d: a truncated file?" % (size, expected))
    return header


class LazyFeatures:
    """Features of a list of ``.npy`` files read from disk on each access, for data larger than memory: indexed like
    the ``(files, regions, channels)`` array the files would stack to (``lazy[rows]``, ``lazy[row]``,
    ``lazy[rows, 0, 0]``, slices), each access reads only the files of its rows (through the OS page cache), their
    data straight into the array returned (the headers were read once, here). The values are not checked here (NaN
    and infinities are :meth:`FeatureStore.read_batch`'s concern).

    :param paths: one file per row.
    :param headers: each file's :func:`read_header`; all of shape ``(regions, channels)``. The files must not change
        while they are in use.
    :param dtype: dtype of what an access returns (each file is cast to it, as :class:`FeatureStore` casts the
        loaded array, so that a lazy and a loaded store give the same values).
    :raises ImcapError: on access, if a file cannot be read or is shorter than its header says.
    """

    def __init__(self, paths: Sequence[str], headers: Sequence[NpyHeader], dtype: str) -> None:
        check_condition(len(paths) == len(headers) > 0, "LazyFeatures needs one header per path, and a path")
        self.paths = list(paths)
        self.headers = list(headers)
        self.shape = (len(self.paths),) + tuple(self.headers[0].shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.paths)

    def read_into(self, row: int, out: np.ndarray) -> None:
        """Read the features of ``row`` into ``out (regions, channels)`` (C-contiguous, of :attr:`dtype`)."""
        path, header = self.paths[row], self.headers[row]
        try:
            if header.fortran_order:
                out[...] = np.load(path, allow_pickle=False)
                return
            direct = header.dtype == self.dtype
            buffer = out if direct else np.empty(header.shape, dtype=header.dtype)
            with open(path, "rb") as f:
                f.seek(header.offset)
                read = f.readinto(buffer.data.cast("B"))
        except (OSError, ValueError) as e:
            raise ImcapError("cannot read features %s (%s)" % (path, getattr(e, "strerror", None) or e)) from None
        check_condition(read == buffer.nbytes, "features %s: %d bytes of data, not %d (a truncated file?)"
                        % (path, read, buffer.nbytes))
        if not direct:
            out[...] = buffer

    def __getitem__(self, key):
        """``self[rows]``, ``self[row]``, ``self[a:b]``, ``self[rows, ...]``: as numpy would index the stacked array,
        reading only the files of the rows asked for."""
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        rows = np.arange(len(self.paths))[key]
        out = np.empty(rows.shape + self.shape[1:], dtype=self.dtype)
        for i, row in enumerate(rows.reshape(-1)):
            self.read_into(int(row), out.reshape((-1,) + self.shape[1:])[i])
        return out[rest] if rows.ndim == 0 else out[(slice(None),) + rest]


class FeatureStore:
    """The features of a list file, read lazily from their files (default) or loaded once into memory.

    :param list_path: a ``SPLIT.features`` file, one feature path per line.
    :param source_root: root of relative paths; default: the list file's directory.
    :param dtype: dtype of the features returned (the cache's float16 by default keeps memory low).
    :param augmentations: augmented views to read too (``IMAGE.VIEW.npy`` beside each feature file, written
        by ``imcap.extract_features --augmentations``); :meth:`gather` picks among the original and these.
    :param load_all_to_memory: read every unique file once, here, into one array per view (Sockeye's
        ``--load-all-features-to-memory``); otherwise only the files' headers are read here and each access reads
        the files of its rows (:class:`LazyFeatures`), so memory holds only the batches in use.

    ``features`` is ``(unique images, regions, channels)`` (an array, or a :class:`LazyFeatures` indexed the same
    way); ``index[line]`` is the row of each line, or -1 where the file could not be read or holds NaN or infinite
    values (in any of its views; a warning names the line). ``views`` is ``[features]`` followed by one such array
    per augmentation. Both modes give the same values.

    Loaded, every file is checked for non-finite values here (after the cast to ``dtype``, which turns float32
    values beyond float16's range into infinities). Read lazily, a file is checked when a batch first reads it
    (:meth:`read_batch`): its row joins :attr:`non_finite_rows`, its lines get the warning then, and batches leave it
    out from then on.

    :raises ImcapError: if no line could be read, files have different shapes, or an augmented view of a
        readable image is missing.
    """

    def __init__(self, list_path: str, source_root: Optional[str] = None, dtype: str = "float16",
                 augmentations: Sequence[str] = (), load_all_to_memory: bool = False) -> None:
        self.list_path = list_path
        self.load_all_to_memory = load_all_to_memory
        self.dtype = dtype
        self.root = source_root if source_root is not None else os.path.dirname(os.path.abspath(list_path))
        self.augmentations = list(augmentations)
        lines = read_lines(list_path)
        rows: Dict[str, int] = {}
        skipped: Dict[str, str] = {}   # a line's text → why its features are skipped (each file is read once)
        # per view, one entry per unique usable file: its array (loaded) or its path and header (lazy)
        stacks: List[List] = [[] for _ in range(1 + len(self.augmentations))]
        self._shape: Optional[Tuple[int, ...]] = None
        self.index = np.full(len(lines), -1, dtype=np.int64)
        self.paths = lines
        #: rows found to hold NaN or infinite values by :meth:`read_batch` (read lazily), left out of batches
        self.non_finite_rows: Set[int] = set()
        for number, line in enumerate(lines):
            key = line.strip()
            if key in rows:
                self.index[number] = rows[key]
                continue
            if key not in skipped:
                views = self._open_views(key, number)
                if isinstance(views, str):
                    skipped[key] = views
                else:
                    rows[key] = len(stacks[0])
                    for stack, item in zip(stacks, views):
                        stack.append(item)
                    self.index[number] = rows[key]
                    continue
            logger.warning("%s:%d: %s; skipped", list_path, number + 1, skipped[key])
        check_condition(len(stacks[0]) > 0, "%s: no feature file could be read" % list_path)
        self.views: List = [np.stack(stack).astype(dtype, copy=False) if load_all_to_memory
                            else LazyFeatures([p for p, _ in stack], [h for _, h in stack], dtype)
                            for stack in stacks]
        self.features = self.views[0]

    def _open(self, path: str) -> Tuple[object, Tuple[int, ...], bool]:
        """One file of the store: its item (loaded: its array, cast to :attr:`dtype`; lazy: ``(path, header)``), its
        shape, and whether it holds only finite values (lazy: not known yet, ``True``).

        :raises OSError, ValueError, EOFError: if the file cannot be read (see :func:`load_features`,
            :func:`read_header`).
        """
        if self.load_all_to_memory:
            array = load_features(path, self.dtype)
            return array, array.shape, bool(np.isfinite(array).all())
        header = read_header(path)
        return (path, header), header.shape, True

    def _open_views(self, key: str, number: int) -> Union[List[object], str]:
        """The items of line ``number`` (0-based; its text ``key``), one per view (see :meth:`_open`); or, if the
        line is to be skipped (its original cannot be read, or a file holds NaN or infinite values), the reason.

        :raises ImcapError: if a file's shape is not that of the others, or an augmented view of a readable original
            cannot be read.
        """
        items = []
        for view in [None, *self.augmentations]:
            name = key if view is None else view_path(key, view)
            path = resolve(name, self.root)
            try:
                item, shape, finite = self._open(path)
            except (OSError, ValueError, EOFError) as e:
                if view is None:
                    return "cannot read features '%s' (%s)" % (key, e)
                raise ImcapError("%s:%d: cannot read the '%s' features %s (%s); extract them with "
                                 "imcap.extract_features --augmentations %s"
                                 % (self.list_path, number + 1, view, name, getattr(e, "strerror", None) or e,
                                    view)) from None
            self._shape = self._shape or shape
            check_condition(shape == self._shape, "%s:%d: features %s have shape %s, not %s"
                            % (self.list_path, number + 1, name, shape, self._shape))
            if not finite:
                return "features '%s' %s" % (name, NON_FINITE)
            items.append(item)
        return items

    @property
    def shape(self) -> Tuple[int, int]:
        """``(regions, channels)`` of one image."""
        return tuple(self.features.shape[1:])  # type: ignore

    def __len__(self) -> int:
        return len(self.index)

    def read_batch(self, rows: np.ndarray, views: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The features of ``rows (n,)``, each in its view ``views (n,)`` (0: the original, ``1 + i``:
        ``augmentations[i]``; default: all originals), and which of them are usable.

        Read lazily, only the files of ``rows`` are read (but those of :attr:`non_finite_rows`), and each is checked
        for NaN and infinite values (``np.isfinite`` on the array read): a row found to hold any joins
        :attr:`non_finite_rows`, and every line of it gets a warning naming the list file, the line and the file.
        Loaded, the files were checked when the store was made.

        :return: ``features`` float32 ``(n, regions, channels)`` (zeros where unusable) and ``usable`` bool ``(n,)``.
        :raises ImcapError: if a file cannot be read or is shorter than its header says (read lazily).
        """
        rows = np.asarray(rows, dtype=np.int64)
        views = (np.zeros(len(rows), dtype=np.int64) if views is None or len(self.views) == 1
                 else np.asarray(views, dtype=np.int64))
        usable = np.ones(len(rows), dtype=bool)
        if self.non_finite_rows:
            usable &= ~np.isin(rows, list(self.non_finite_rows))
        out = self._read(rows, views, usable)
        if not self.load_all_to_memory:
            finite = all_finite(out)
            for i in np.flatnonzero(~finite):
                self._skip_non_finite(int(rows[i]), int(views[i]))
                out[i] = 0
            usable &= finite
        return out, usable

    def _read(self, rows: np.ndarray, views: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """The features of ``rows (n,)`` in their ``views (n,)`` as float32 ``(n, regions, channels)``, zeros where
        not ``usable (n,)`` (those files are not read)."""
        if usable.all() and not views.any():
            return self.features[rows].astype(np.float32)
        out = np.zeros((len(rows),) + tuple(self.shape), dtype=np.float32)
        for number, array in enumerate(self.views):
            chosen = usable & (views == number)
            if chosen.any():
                out[chosen] = array[rows[chosen]]
        return out

    def _skip_non_finite(self, row: int, view: int) -> None:
        """Leave ``row`` out of the batches from now on, with a warning for each of its lines naming the file of
        ``view`` that holds non-finite values (the first time only)."""
        if row in self.non_finite_rows:
            return
        self.non_finite_rows.add(row)
        for number in np.flatnonzero(self.index == row):
            key = self.paths[number].strip()
            name = key if view == 0 else view_path(key, self.augmentations[view - 1])
            logger.warning("%s:%d: features '%s' %s; skipped", self.list_path, number + 1, name, NON_FINITE)

    def gather(self, rows: np.ndarray, views: Optional[np.ndarray] = None) -> np.ndarray:
        """The features of ``rows (n,)``, each in its view ``views (n,)``, as float32 ``(n, regions, channels)``:
        :meth:`read_batch`'s features (zeros for a row that holds NaN or infinite values); lazily read, only the
        files of ``rows`` are read.

        :raises ImcapError: if a file cannot be read or is shorter than its header says (read lazily).
        """
        return self.read_batch(rows, views)[0]


def check_features_match(manifest: Optional[Dict], regions: int, channels: int, where: str) -> None:
    """Check that a cache's feature shape is the one a model was trained on."""
    if manifest is None:
        return
    shape = manifest.get("feature_shape")
    if shape and list(shape) != [regions, channels]:
        raise ImcapError("%s: features are %s but the model expects (%d, %d)" % (where, shape, regions, channels))
