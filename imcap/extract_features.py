"""Offline feature extraction: ``python -m imcap.extract_features``.

Every image of an image list goes once through a pretrained CNN cut at ``--image-encoder-layer``; its
``(regions, channels)`` feature map is cached under ``--output-root`` (float16 by default) and a
``SPLIT.features`` list parallel to the image list is written. Images are decoded by a pool of worker
threads (PIL releases the GIL while decoding) while the network runs on the previous batch. A re-run
skips every image whose features exist, so an interrupted extraction resumes where it stopped.
``--augmentations hflip`` also caches each image's mirrored view (``IMAGE.hflip.npy``) for training with
``imcap.train --source-augmentations`` and test-time augmentation in ``imcap.captioner``. The network runs on the
device of ``--device-ids``/``--use-cpu`` (:mod:`imcap.devices`: the first GPU if there is one, else the CPU).

``--shard I/N`` splits the work over N processes or machines: shard I (0-based, as MXNet's ``part_index`` of
``num_parts`` and the kvstore's ``rank``) computes image ``i`` of the unique image list (all inputs, in order) when
``i % N == I``. The feature lists are written only once the cache holds every image's features: by the shard run
that finds it complete at its end (the last to finish, on a shared filesystem), or by a run without ``--shard``
after the shards' files were copied together, which then computes nothing else. An image's features and class
probabilities do not depend on the batch it was computed in (the classifier runs image by image on the host,
:class:`imcap.vision.classifier.HostClassifier`), so on one machine type the cache is the same byte for byte however it
was sharded; across CPU types it is within the bounds docs/scaling.md states.

After Sockeye 1.x's ``image_captioning/extract_features.py`` (same option names).
"""
import argparse
import concurrent.futures
import logging
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from . import arguments
from . import constants as C
from .features import classes_path, feature_relpath, read_manifest, save_classes, save_feature, write_or_check_manifest
from .utils import ImcapError, atomic_open, check_condition, read_lines

logger = logging.getLogger("imcap.extract_features")


def add_extraction_args(parser: argparse.ArgumentParser) -> None:
    """Options of the extractor (inputs, outputs, batching)."""
    group = parser.add_argument_group("Data")
    group.add_argument("--input", "-i", required=True, nargs="+", type=arguments.regular_file,
                       help="Image list(s), one image path per line (relative to --image-root), e.g. train.images.")
    group.add_argument("--image-root", default=os.path.join(arguments.DEFAULT_FLICKR8K, "images"),
                       help="Root of the relative image paths.")
    group.add_argument("--output-root", "-r", required=True,
                       help="Cache directory: one .npy per image plus cache.json.")
    group.add_argument("--output", "-o", nargs="+", default=None,
                       help="Feature list(s) to write, parallel to --input. Default: OUTPUT_ROOT/NAME.features for "
                            "each input NAME.images.")
    group.add_argument("--batch-size", "-b", type=arguments.int_greater_or_equal(1), default=32,
                       help="Images per forward pass.")
    group.add_argument("--decoding-workers", type=arguments.int_greater_or_equal(1), default=2,
                       help="Threads decoding JPEGs in parallel with the network.")
    group.add_argument("--feature-dtype", choices=C.FEATURE_DTYPES, default="float16",
                       help="Storage type of the cached features.")
    group.add_argument("--shard", type=shard_spec, default=None, metavar="I/N",
                       help="Compute only shard I of N (0-based: 0/2 and 1/2 split the images in two, image i of the "
                            "unique image list going to shard i %% N), e.g. one shard per machine or process over "
                            "the same --output-root. The feature lists are written by the run that finds every "
                            "image cached (the last shard to finish, or a final run without --shard, e.g. after "
                            "copying the shards' caches together). Default: all images.")
    group.add_argument("--augmentations", nargs="+", default=[], choices=C.AUGMENTATION_CHOICES,
                       help="Also cache the features of these augmented views of every image, as IMAGE.VIEW.npy "
                            "(hflip: mirrored left to right), for imcap.train --source-augmentations. The feature "
                            "lists still name the originals.")
    group.add_argument("--no-class-probabilities", action="store_true",
                       help="Do not cache the ImageNet class probabilities of EfficientNet-Lite's classifier beside "
                            "each original image's features (IMAGE.classes.npy, float16, from the same forward pass; "
                            "imcap.captioner --guide-with-classifier reads them). Other encoders cache none. An "
                            "image cached without them is computed again when they are wanted.")


def shard_spec(value: str) -> Tuple[int, int]:
    """``"I/N"`` → ``(I, N)``, shard ``I`` (0-based) of ``N``.

    :raises argparse.ArgumentTypeError: unless ``N >= 1`` and ``0 <= I < N`` are integers.
    """
    index, _, count = value.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not I/N (shard I of N, e.g. 0/2 and 1/2)" % value) from None
    if shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError("'%s': shard I of N needs N >= 1 and 0 <= I < N (shards are 0-based: "
                                         "0/N ... N-1/N)" % value)
    return shard


def shard_of(image_paths: Sequence[str], index: int, count: int) -> List[str]:
    """The images of shard ``index`` of ``count``: every ``count``-th image from number ``index`` on."""
    return list(image_paths[index::count])


def uncached(image_paths: Sequence[str], output_root: str, augmentations: Sequence[str] = (),
             classes: bool = False) -> List[Tuple[str, Optional[str]]]:
    """The ``(image, view)`` pairs (view ``None``: the original) of ``image_paths`` with no feature file in the
    cache ``output_root``, in order; with ``classes``, also the originals without their class probabilities."""
    views: List[Optional[str]] = [None, *augmentations]

    def cached(p: str, v: Optional[str]) -> bool:
        path = os.path.join(output_root, feature_relpath(p, v))
        return os.path.isfile(path) and (v is not None or not classes or os.path.isfile(classes_path(path)))
    return [(p, v) for p in image_paths for v in views if not cached(p, v)]


def default_output(input_path: str, output_root: str) -> str:
    """``OUTPUT_ROOT/NAME.features`` for ``.../NAME.images``."""
    base = os.path.basename(input_path)
    base = base[:-len(".images")] if base.endswith(".images") else base
    return os.path.join(output_root, base + ".features")


def extract(encoder, image_paths: List[str], image_root: str, output_root: str, batch_size: int = 32,
            workers: int = 2, dtype: str = "float16", progress: bool = True,
            augmentations: Sequence[str] = ()) -> Dict[str, str]:
    """Compute and cache the features of every image of ``image_paths`` (and of each of its ``augmentations``
    views, see :func:`imcap.vision.images.augment`) not yet in the cache; with an encoder that has its classifier
    (``has_classifier``), also each original's ImageNet class probabilities from the same forward pass, beside its
    features (:func:`imcap.features.classes_path`).

    :param encoder: an :class:`imcap.vision.image_encoder.ImageEncoder`.
    :param image_paths: unique image paths relative to ``image_root``.
    :return: image path → reason, for the images that could not be read (their features are not written).
    :raises ImcapError: if a feature file cannot be written (the files written before it stay).
    """
    from .vision.images import augment, load_image
    from .vision.image_encoder import to_regions
    num_items = len(image_paths) * (1 + len(augmentations))
    classify = bool(getattr(encoder, "has_classifier", False))
    todo = uncached(image_paths, output_root, augmentations, classify)
    logger.info("%d images%s, %d already cached, %d to compute", len(image_paths),
                " x %d views" % (1 + len(augmentations)) if augmentations else "", num_items - len(todo), len(todo))
    failed: Dict[str, str] = {}
    if not todo:
        return failed
    size = encoder.input_size

    def decode(item: Tuple[str, Optional[str]]):
        """An image's network input (3, H, W) float32, decoded, augmented and normalized in a pool thread."""
        try:
            return encoder.normalize(augment(load_image(os.path.join(image_root, item[0]), size), item[1])[None])[0], ""
        except ImcapError as e:
            return None, str(e)

    def save(items: List[Tuple[str, Optional[str]]], regions: np.ndarray, classes: Optional[np.ndarray]) -> None:
        """Write the features ``(batch, regions, channels)`` of a batch's readable ``items`` and, for the originals,
        their class probabilities ``(batch, classes)`` if given (in the writer thread)."""
        for number, ((p, v), feature) in enumerate(zip(items, regions)):
            path = os.path.join(output_root, feature_relpath(p, v))
            try:
                save_feature(path, feature.astype(dtype))
                if classes is not None and v is None:
                    save_classes(classes_path(path), classes[number])
            except OSError as e:
                raise ImcapError("%s: cannot write the features (%s)" % (path, e.strerror or e)) from e

    # The main thread only runs the network: the pool decodes and normalizes the next batch meanwhile, and one
    # writer thread saves the previous batch's features (at most one batch waits to be written).
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    start, done = time.time(), 0
    writing: Optional[concurrent.futures.Future] = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer, \
            tqdm(total=len(todo), unit="img", disable=not progress, desc="extract") as bar:
        pending = [pool.submit(decode, p) for p in batches[0]]
        for number, batch in enumerate(batches):
            decoded = [f.result() for f in pending]
            if number + 1 < len(batches):  # decode the next batch while the network runs on this one
                pending = [pool.submit(decode, p) for p in batches[number + 1]]
            good = [(p, img) for p, (img, _) in zip(batch, decoded) if img is not None]
            for (p, _), (img, reason) in zip(batch, decoded):
                if img is None:
                    failed[p] = reason
            if good:
                inputs = np.stack([img for _, img in good])
                if len(good) < batch_size:  # keep one static shape for the fused graph
                    inputs = np.concatenate([inputs, np.zeros((batch_size - len(good),) + inputs.shape[1:],
                                                              dtype=inputs.dtype)])
                if classify:
                    regions, classes = encoder.encode_with_classes(inputs, normalized=True)
                    regions, classes = regions[:len(good)], classes[:len(good)]
                else:
                    regions, classes = to_regions(encoder.forward(inputs, normalized=True)[:len(good)]), None
                if writing is not None:
                    writing.result()   # raises what the writer raised (e.g. a full disk)
                writing = writer.submit(save, [p for p, _ in good], regions, classes)
            done += len(batch)
            bar.update(len(batch))
        if writing is not None:
            writing.result()
    elapsed = time.time() - start
    logger.info("computed %d %s in %.1f s (%.1f images/s)", done, "views" if augmentations else "images", elapsed,
                done / max(elapsed, 1e-9))
    return failed


def run_extract_features(args: argparse.Namespace) -> None:
    """Extract features for every ``--input`` list and write the parallel ``--output`` lists."""
    from .devices import get_context
    from .vision.image_encoder import ImageEncoder
    outputs = args.output or [default_output(p, args.output_root) for p in args.input]
    check_condition(len(outputs) == len(args.input), "--output needs one file per --input (%d != %d)"
                    % (len(outputs), len(args.input)))
    os.makedirs(args.output_root, exist_ok=True)
    encoder = ImageEncoder(args.image_encoder, args.image_encoder_model_path, args.image_encoder_layer,
                           args.source_image_size, fuse=not args.image_encoder_no_fusion,
                           ctx=get_context(args.device_ids, args.use_cpu),
                           classify=not args.no_class_probabilities and args.image_encoder in C.EFFICIENTNET_LITE)
    lists = [read_lines(p) for p in args.input]
    unique = list(dict.fromkeys(line.strip() for lines in lists for line in lines if line.strip()))
    check_condition(len(unique) > 0, "no image paths in %s" % ", ".join(args.input))
    # A blank batch tells the feature shape (the manifest check then refuses to mix settings) and builds the fused
    # graph at the batch size it will run at: built for one image, the batches after ran 5-10% slower.
    probe = encoder.encode(np.zeros((args.batch_size,) + tuple(encoder.input_size) + (3,), dtype=np.uint8))[:1]
    manifest = dict(encoder.describe(), feature_shape=list(probe.shape[1:]), dtype=args.feature_dtype)
    if read_manifest(args.output_root) is None:
        manifest.update(weights_location(encoder))
    write_or_check_manifest(args.output_root, manifest)
    logger.info("encoder %s cut at '%s', input %dx%d, features (regions, channels) = %s, stored as %s",
                encoder.name, encoder.layer, encoder.input_size[0], encoder.input_size[1],
                tuple(probe.shape[1:]), args.feature_dtype)
    mine = unique if args.shard is None else shard_of(unique, *args.shard)
    if args.shard is not None:
        logger.info("shard %d/%d: %d of the %d images", args.shard[0], args.shard[1], len(mine), len(unique))
    failed = extract(encoder, mine, args.image_root, args.output_root, args.batch_size, args.decoding_workers,
                     args.feature_dtype, progress=not args.quiet, augmentations=args.augmentations)
    if args.shard is not None:
        missing = uncached(unique, args.output_root, args.augmentations, encoder.has_classifier)
        for path, reason in failed.items():
            logger.warning("%s: %s", path, reason)
        if missing:
            logger.info("shard %d/%d done; %d images%s have no features yet (other shards%s): the feature lists are "
                        "written by the run that finds the cache complete (the last shard, or a run without --shard)",
                        args.shard[0], args.shard[1], len({p for p, _ in missing}),
                        " or views" if args.augmentations else "", ", or unreadable" if failed else "")
            return
        logger.info("shard %d/%d: the cache is complete; writing the feature lists", args.shard[0], args.shard[1])
    write_feature_lists(args.input, outputs, lists, failed)
    if failed:
        logger.warning("%d of %d images could not be read; their feature files are missing", len(failed), len(unique))


def weights_location(encoder) -> Dict[str, str]:
    """What a new cache's manifest records of where a model-zoo encoder's weights are: ``{"model_file": absolute
    path}``, where ``imcap.train --image-encoder-fine-tune`` loads the CNN tail's initial weights from (and the
    captioner the CNN's); ``{}`` for the other encoders, whose weights are looked up by name in the shared models
    folder. Only the run that creates the manifest records it, and later runs do not compare it (the shards of one
    cache may read the weights at other paths on other machines; caches made before it was recorded stay valid)."""
    from .vision.zoo import is_zoo_encoder
    if encoder.model_path and is_zoo_encoder(encoder.name):
        return {"model_file": os.path.abspath(encoder.model_path)}
    return {}


def write_feature_lists(inputs: Sequence[str], outputs: Sequence[str], lists: Sequence[List[str]],
                        failed: Dict[str, str]) -> None:
    """Write each ``outputs[k]``: the cache-relative feature path of every line of ``inputs[k]`` (read as
    ``lists[k]``); a warning names each empty line and each image of ``failed`` (image → reason)."""
    for input_path, output_path, lines in zip(inputs, outputs, lists):
        with atomic_open(output_path) as out:
            for number, line in enumerate(lines):
                path = line.strip()
                if not path:
                    logger.warning("%s:%d: empty line", input_path, number + 1)
                elif path in failed:
                    logger.warning("%s:%d: %s: %s", input_path, number + 1, path, failed[path])
                out.write(feature_relpath(path) + "\n")
        logger.info("wrote %s (%d lines)", output_path, len(lines))


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and run the extraction."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    add_extraction_args(parser)
    arguments.add_image_encoder_args(parser)
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)
    arguments.cli_main(parser, run_extract_features, argv)


if __name__ == "__main__":
    main()
