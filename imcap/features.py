"""The feature cache: one ``.npy`` file of shape ``(regions, channels)`` per image, and its manifest.

A cache directory (``--output-root`` of :mod:`imcap.extract_features`) holds

* ``cache.json``: encoder name, layer, input size (pixels), feature shape ``[regions, channels]`` and dtype;
* ``<image relative path>.npy`` for every image, written atomically, so that an interrupted extraction
  leaves only whole files and resumes where it stopped;
* ``SPLIT.features`` lists, one feature path (relative to the cache directory) per line of ``SPLIT.images``.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import constants as C
from .utils import ImcapError, atomic_open, atomic_path, check_condition, read_lines

logger = logging.getLogger(__name__)


def feature_relpath(image_relpath: str) -> str:
    """Cache-relative path of an image's features: the image path with ``.npy`` appended."""
    return image_relpath.lstrip("/") + C.FEATURE_SUFFIX


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

    ``features`` is ``(unique images, regions, channels)``; ``index[line]`` is the row of each line, or
    -1 where the file could not be read (a warning names the line).

    :raises ImcapError: if no line could be read, or files have different shapes.
    """

    def __init__(self, list_path: str, source_root: Optional[str] = None, dtype: str = "float16") -> None:
        self.list_path = list_path
        root = source_root if source_root is not None else os.path.dirname(os.path.abspath(list_path))
        lines = read_lines(list_path)
        rows: Dict[str, int] = {}
        arrays: List[np.ndarray] = []
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
            if arrays:
                check_condition(array.shape == arrays[0].shape, "%s:%d: features %s have shape %s, not %s"
                                % (list_path, number + 1, key, array.shape, arrays[0].shape))
            rows[key] = len(arrays)
            arrays.append(array)
            self.index[number] = rows[key]
        check_condition(len(arrays) > 0, "%s: no feature file could be read" % list_path)
        self.features = np.stack(arrays).astype(dtype, copy=False)

    @property
    def shape(self) -> Tuple[int, int]:
        """``(regions, channels)`` of one image."""
        return tuple(self.features.shape[1:])  # type: ignore

    def __len__(self) -> int:
        return len(self.index)


def check_features_match(manifest: Optional[Dict], regions: int, channels: int, where: str) -> None:
    """Check that a cache's feature shape is the one a model was trained on."""
    if manifest is None:
        return
    shape = manifest.get("feature_shape")
    if shape and list(shape) != [regions, channels]:
        raise ImcapError("%s: features are %s but the model expects (%d, %d)" % (where, shape, regions, channels))
