"""ONNX export: ``python -m imcap.export --models MODEL_DIR --output OUT [--checkpoint params.avg] [--force]``.

Writes ``OUT``, a self-contained exported model (:mod:`imcap.export.package`): the ``encode`` and ``step`` graphs of
the checkpoint (every decoder: RNN family, Transformer, convolutional; a fine-tuned EfficientNet-Lite tail inside
``encode``), the image encoder the model's features were made with (EfficientNet-Lite, with its ImageNet classifier
for the guide), the vocabulary, the tokenizer, a copy of ``config.yaml`` and ``export.json``. ``python -m
imcap.captioner --backend onnxruntime --models OUT`` and ``python -m imcap.serve --backend onnxruntime --models OUT``
caption with it on ONNX Runtime, without MXNet.
"""
import argparse
from typing import List, Optional

from .. import arguments
from .. import constants as C


def add_export_args(parser: argparse.ArgumentParser) -> None:
    """Options of the exporter."""
    parser.add_argument("--models", "-m", required=True, help="The model dir to export.")
    parser.add_argument("--output", "-o", required=True, help="The exported dir to write (whole or not at all).")
    parser.add_argument("--checkpoint", "-c", default=C.PARAMS_BEST_NAME,
                        help="The params file of the model dir to export (e.g. params.avg, params.00012).")
    parser.add_argument("--force", action="store_true", help="Replace an existing --output.")
    parser.add_argument("--no-image-encoder", action="store_true",
                        help="Leave the image encoder out: the export then captions cached features only.")
    parser.add_argument("--image-encoder-model-path", default=None,
                        help="The image encoder's weight file (.npz). Default: the one the model's features were made "
                             "with, in the shared models folder ($IMCAP_SHARED/models).")
    arguments.add_logging_args(parser)


def run_export(args: argparse.Namespace) -> None:
    """Export the model dir."""
    from .package import export_model_dir
    export_model_dir(args.models, args.output, args.checkpoint, force=args.force,
                     image_encoder=not args.no_image_encoder, image_encoder_model_path=args.image_encoder_model_path)


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and export."""
    parser = arguments.new_parser((__doc__ or "").splitlines()[0])
    parser.prog = "python -m imcap.export"
    add_export_args(parser)
    arguments.cli_main(parser, run_export, argv)


if __name__ == "__main__":
    main()
