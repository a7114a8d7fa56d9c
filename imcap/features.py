"""The feature cache: one ``.npy`` file of shape ``(regions, channels)`` per image, and its manifest.

A cache directory (``--output-root`` of :mod:`imcap.extract_features`) holds

* ``cache.json``: encoder name, layer, input size (pixels), feature shape ``[regions, channels]`` and dtype;
* ``<image relative path>.npy`` for every image, written atomically, so that an interrupted extraction
  leaves only whole files and resumes where it stopped;
* ``<image relative path>.<view>.npy`` for the augmented views asked for with ``--augmentations`` (e.g.
  ``hflip``: the image mirrored), which training draws at random with ``--source-augmentations``;
* ``SPLIT.features`` lists, one feature path (relative to the cache directory) per line of ``SPLIT.images``.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import constants as C
from .utils import ImcapError, atomic_open, atomic_path, check_condition, read_lines

logger = logging.getLogger(__name__)


def feature_relpath(image_relpath: str, view: Optional[str] = None) -> str:
    """Cache-relative path of an image's features: the image path with ``.npy`` appended, or ``.VIEW.npy`` for
    an augmented view (one of :data:`imcap.constants.AUGMENTATION_CHOICES`)."""
    return image_relpath.lstrip("/") + ("." + view if view else "") + C.FEATURE_SUFFIX


def view_path(feature_path: str, view: str) -> str:
    """The features of an augmented view beside a feature file: ``a.jpg.npy`` → ``a.jpg.VIEW.npy``."""
    stem = feature_path[:-len(C.FEATURE_SUFFIX)] if feature_path.endswith(C.FEATURE_SUFFIX) else feature_path
    return stem + "." + view + C.FEATURE_SUFFIX


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


def resolve(path: str, root: Optional[str]) -> str:
    """``path`` joined to ``root`` unless it is absolute or ``root`` is ``None``."""
    return path if root is None or os.path.isabs(path) else os.path.join(root, path)


class FeatureStore:
    """The features of a list file, loaded once into one array: each unique file is read once.

    :param list_path: a ``SPLIT.features`` file, one feature path per line.
    :param source_root: root of relative paths; default: the list file's directory.
    :param dtype: dtype of the in-memory array (the cache's float16 by default keeps memory low).
    :param augmentations: augmented views to load too (``IMAGE.VIEW.npy`` beside each feature file, written
        by ``imcap.extract_features --augmentations``); :meth:`gather` picks among the original and these.

    ``features`` is ``(unique images, regions, channels)``; ``index[line]`` is the row of each line, or
    -1 where the file could not be read (a warning names the line). ``views`` is ``[features]`` followed by
    one array of the same shape per augmentation.

    :raises ImcapError: if no line could be read, files have different shapes, or an augmented view of a
        readable image is missing.
    """

    def __init__(self, list_path: str, source_root: Optional[str] = None, dtype: str = "float16",
                 augmentations: Sequence[str] = ()) -> None:
        self.list_path = list_path
        root = source_root if source_root is not None else os.path.dirname(os.path.abspath(list_path))
        lines = read_lines(list_path)
        rows: Dict[str, int] = {}
        arrays: List[List[np.ndarray]] = [[] for _ in range(1 + len(augmentations))]
        self.index = np.full(len(lines), -1, dtype=np.int64)
        self.paths = lines
        for number, line in enumerate(lines):
            key = line.strip()
            if key in rows:
                self.index[number] = rows[key]
                continue
            try:
                array = np.load(resolve(key, root))
            except (OSError, ValueError) as e:
                logger.warning("%s:%d: cannot read features '%s' (%s); skipped", list_path, number + 1, key, e)
                continue
            if arrays[0]:
                check_condition(array.shape == arrays[0][0].shape, "%s:%d: features %s have shape %s, not %s"
                                % (list_path, number + 1, key, array.shape, arrays[0][0].shape))
            views = [array]
            for view in augmentations:
                path = view_path(key, view)
                try:
                    views.append(np.load(resolve(path, root)))
                except (OSError, ValueError) as e:
                    raise ImcapError("%s:%d: cannot read the '%s' features %s (%s); extract them with "
                                     "imcap.extract_features --augmentations %s"
                                     % (list_path, number + 1, view, path,
                                        getattr(e, "strerror", None) or e, view)) from None
                check_condition(views[-1].shape == array.shape, "%s:%d: features %s have shape %s, not %s"
                                % (list_path, number + 1, path, views[-1].shape, array.shape))
            rows[key] = len(arrays[0])
            for stack, view_array in zip(arrays, views):
                stack.append(view_array)
            self.index[number] = rows[key]
        check_condition(len(arrays[0]) > 0, "%s: no feature file could be read" % list_path)
        self.augmentations = list(augmentations)
        self.views = [np.stack(stack).astype(dtype, copy=False) for stack in arrays]
        self.features = self.views[0]

    @property
    def shape(self) -> Tuple[int, int]:
        """``(regions, channels)`` of one image."""
        return tuple(self.features.shape[1:])  # type: ignore

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, rows: np.ndarray, views: Optional[np.ndarray] = None) -> np.ndarray:
        """The features of ``rows (n,)``, each in its view ``views (n,)`` (0: the original, ``1 + i``:
        ``augmentations[i]``; default: all originals), as float32 ``(n, regions, channels)``."""
        if views is None or len(self.views) == 1:
            return self.features[rows].astype(np.float32)
        out = np.empty((len(rows),) + self.features.shape[1:], dtype=np.float32)
        for number, array in enumerate(self.views):
            chosen = views == number
            out[chosen] = array[rows[chosen]]
        return out


def check_features_match(manifest: Optional[Dict], regions: int, channels: int, where: str) -> None:
    """Check that a cache's feature shape is the one a model was trained on."""
    if manifest is None:
        return
    shape = manifest.get("feature_shape")
    if shape and list(shape) != [regions, channels]:
        raise ImcapError("%s: features are %s but the model expects (%d, %d)" % (where, shape, regions, channels))
