"""Serving: ``python -m imcap.serve --models DIR [DIR ...] [--host 127.0.0.1] [--port 8080]``.

One process: a web page (Gradio) at ``/`` and a JSON API (``POST /v1/caption``, ``GET /v1/health``,
``GET /v1/model``, :mod:`imcap.serving.http_api`) over one :class:`imcap.inference.Captioner`. One worker thread owns the
models; requests that arrive together are captioned in one batched beam search (:mod:`imcap.serving.batching`,
``--max-batch-size``, ``--max-wait-ms``). The search options below are the defaults of a request, which may change
them within ``--max-beam-size`` and ``--max-output-length-limit``. Uploads are bounded (``--max-upload-mb``,
``--max-image-pixels``) and sniffed (:mod:`imcap.serving.uploads`); no request names a server-side file. Binds 127.0.0.1
unless ``--host`` says otherwise.
"""
import argparse
import logging
import os
import shutil
import signal
import tempfile
from typing import Any, List, Optional

from . import arguments
from . import constants as C
from .paths import DEFAULT_CHECK_IMAGES, DEFAULT_FLICKR8K

logger = logging.getLogger("imcap.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Options of the server."""
    group = parser.add_argument_group("Model")
    group.add_argument("--models", "-m", required=True, nargs="+", help="Model directories (several: an ensemble).")
    group.add_argument("--checkpoints", "-c", nargs="+", default=None,
                       help="Params file per model (e.g. params.best, params.avg). Default: params.best. Not with "
                            "--backend onnxruntime (an exported dir holds one).")
    arguments.add_backend_arg(group, "With onnxruntime, each export must hold its image encoder (python -m "
                                     "imcap.export writes it unless --no-image-encoder); the image encoder options "
                                     "and --guide-expand-vocabulary need mxnet.")
    group.add_argument("--test-time-augmentations", nargs="+", default=[], choices=C.AUGMENTATION_CHOICES,
                       help="Every model also decodes these views of each image (hflip: mirrored).")
    server = parser.add_argument_group("Server")
    server.add_argument("--host", default=DEFAULT_HOST, help="Address to bind (0.0.0.0: every interface).")
    server.add_argument("--port", type=arguments.int_greater_or_equal(0), default=DEFAULT_PORT,
                        help="TCP port (0: any free port, which uvicorn logs unless --quiet).")
    server.add_argument("--no-page", action="store_true", help="Serve the JSON API only, without the web page.")
    server.add_argument("--examples", nargs="*", default=None,
                        help="Example images of the page. Default: the photos of %s and the first 4 Flickr8k test "
                             "images under %s." % (DEFAULT_CHECK_IMAGES, DEFAULT_FLICKR8K))
    search = parser.add_argument_group("Search (the defaults of a request)")
    arguments.add_search_args(search, "Hypotheses returned per image (at most --beam-size; with --sample, "
                                      "the samples).")
    arguments.add_guide_args(parser)
    batching = parser.add_argument_group("Batching and limits")
    batching.add_argument("--max-batch-size", type=arguments.int_greater_or_equal(1), default=32,
                          help="Most requests captioned in one beam search.")
    batching.add_argument("--max-wait-ms", type=arguments.float_greater_or_equal(0.0), default=10.0,
                          help="Milliseconds the worker waits, after the oldest waiting request arrived, for others "
                               "to join its batch.")
    batching.add_argument("--max-queue-size", type=arguments.int_greater_or_equal(1), default=1024,
                          help="Most requests waiting; beyond, requests get 503.")
    batching.add_argument("--request-timeout", type=arguments.float_greater_or_equal(1.0), default=120.0,
                          help="Seconds a request waits for its caption before a 503.")
    batching.add_argument("--max-upload-mb", type=arguments.float_greater_or_equal(0.001), default=10.0,
                          help="Largest upload in MB (2^20 bytes); larger ones get 413.")
    batching.add_argument("--max-image-pixels", type=arguments.int_greater_or_equal(1), default=40_000_000,
                          help="Largest image, width x height pixels (decompression bombs); larger ones get 413.")
    batching.add_argument("--max-beam-size", type=arguments.int_greater_or_equal(1), default=20,
                          help="Largest beam_size (and nbest_size) a request may ask for.")
    batching.add_argument("--max-output-length-limit", type=arguments.int_greater_or_equal(1), default=100,
                          help="Largest max_output_length a request may ask for.")
    arguments.add_image_encoder_args(parser, from_model=True)
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)


def build_app(args: argparse.Namespace) -> Any:
    """The FastAPI app of ``args`` (API, and page unless ``--no-page``) and its started caption queue, as
    ``(app, service)``.

    :raises ImcapError: if a model dir or the CNN cannot be loaded, or an option is out of range.
    """
    from .serving.batching import BatchingCaptioner, SearchLimits
    from .serving.http_api import create_app, describe_models
    from .inference import Captioner
    from .search_options import search_options_from_args
    from .serving.uploads import UploadLimits
    from .utils import check_condition
    backend = getattr(args, "backend", C.BACKEND_MXNET)
    context = None
    if backend == C.BACKEND_MXNET:   # the onnxruntime backend imports no MXNet
        from .devices import get_context
        context = get_context(args.device_ids, args.use_cpu)
    check_condition(args.sample or args.nbest_size <= args.beam_size,
                    "--nbest-size (%d) must be at most --beam-size (%d)" % (args.nbest_size, args.beam_size))
    defaults = search_options_from_args(args)
    captioner = Captioner(args.models, args.checkpoints, search=defaults, batch_size=args.max_batch_size,
                          keep_attention=True, test_time_augmentations=args.test_time_augmentations,
                          extract_image_features=True, image_encoder=args.image_encoder,
                          image_encoder_model_path=args.image_encoder_model_path,
                          image_encoder_layer=args.image_encoder_layer, source_image_size=args.source_image_size,
                          image_encoder_no_fusion=args.image_encoder_no_fusion,
                          context=context, backend=backend,
                          guide_with_classifier=args.guide_with_classifier, guide_top_k=args.guide_top_k,
                          guide_min_probability=args.guide_min_probability, guide_class_words=args.guide_class_words,
                          guide_expand_vocabulary=args.guide_expand_vocabulary)
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_image_pixels)
    service = BatchingCaptioner(captioner, defaults, SearchLimits(args.max_beam_size, args.max_output_length_limit),
                                max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                                max_queue_size=args.max_queue_size).start()
    info = describe_models(captioner, args.models, args.checkpoints)
    app = create_app(service, info, limits, request_timeout=args.request_timeout)
    if not args.no_page:
        from .plots.attention import render_attention
        from .serving.web_page import CaptionPage, build_page, example_images, model_summary, mount_page
        examples = args.examples if args.examples is not None else example_images(
            DEFAULT_CHECK_IMAGES, DEFAULT_FLICKR8K)
        page = CaptionPage(service, limits, draw_attention=render_attention, timeout=args.request_timeout)
        blocks = build_page(page, [e for e in examples if os.path.isfile(e)], title="imcap",
                            description=model_summary(info))
        app = mount_page(app, blocks, limits)
    return app, service


def private_cache_dir() -> str:
    """A new private directory for Gradio's uploads (in memory, under /dev/shm, where there is one)."""
    parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="imcap-serve-", dir=parent)


def _exit(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def run_serve(args: argparse.Namespace) -> None:
    """Load the models, serve until interrupted (SIGINT, SIGTERM), then stop the worker and remove the cache."""
    import uvicorn
    cache = None
    if not args.no_page and not os.environ.get("GRADIO_TEMP_DIR"):
        cache = os.environ["GRADIO_TEMP_DIR"] = private_cache_dir()
    # uvicorn shuts down on SIGTERM, then raises it again: let that end the process through the finally below
    previous = signal.signal(signal.SIGTERM, _exit)
    service = None
    try:
        app, service = build_app(args)
        logger.info("Serving %s on http://%s:%d/ (API under /v1/)", ", ".join(args.models), args.host, args.port)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info",
                    access_log=not args.quiet)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if service is not None:
            service.close()
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
        logger.info("Stopped")


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and serve."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    add_serve_args(parser)
    arguments.cli_main(parser, run_serve, argv)


if __name__ == "__main__":
    main()
