"""Command-line argument groups and typed validators, shared by every imcap CLI (after Sockeye)."""
import argparse
import os
from typing import Any, Callable, List, Optional

from . import constants as C
from .paths import DEFAULT_FLICKR8K, DEFAULT_MODELS  # noqa: F401  (the tools' defaults)
from .search_options import SearchOptions


def regular_file(value: str) -> str:
    """An existing file."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError("not a file: %s" % value)
    return value


def regular_folder(value: str) -> str:
    """An existing directory."""
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError("not a directory: %s" % value)
    return value


def int_greater_or_equal(threshold: int) -> Callable[[str], int]:
    """An integer ``>= threshold``."""
    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError("not an integer: %s" % value)
        if number < threshold:
            raise argparse.ArgumentTypeError("must be >= %d: %s" % (threshold, value))
        return number
    return check


def float_greater_or_equal(threshold: float) -> Callable[[str], float]:
    """A float ``>= threshold``."""
    def check(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %s" % value)
        if number < threshold:
            raise argparse.ArgumentTypeError("must be >= %g: %s" % (threshold, value))
        return number
    return check


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help text that ends with the default of each option."""


def new_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose help shows defaults."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """``--device-ids``/``--use-cpu`` as in Sockeye."""
    group = parser.add_argument_group("Device")
    group.add_argument("--device-ids", type=int, nargs="+", default=[-1],
                       help="GPU ids to use; -N means N free GPUs. With --use-cpu, the number of CPU contexts "
                            "to use is the number of ids given.")
    group.add_argument("--use-cpu", action="store_true", help="Use the CPU even if GPUs are present.")


def add_backend_arg(group: Any, what: str) -> None:
    """``--backend {mxnet,onnxruntime}``, shared by the captioner and the server (``what``: what ONNX Runtime does
    not run yet)."""
    group.add_argument("--backend", choices=C.BACKEND_CHOICES, default=C.BACKEND_MXNET,
                       help="The runtime: mxnet (--models are model dirs) or onnxruntime (--models are exported dirs "
                            "that python -m imcap.export writes; no MXNet is loaded). %s" % what)


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """``--quiet``."""
    parser.add_argument("--quiet", action="store_true", help="Log nothing to STDERR but errors.")


def add_search_args(group: argparse._ArgumentGroup, nbest_help: str) -> None:
    """The search options shared by the captioner and the server (``nbest_help`` says where the n-best goes):
    the fields of :class:`imcap.search_options.SearchOptions`, with its defaults (its checks run when the options
    are read, :func:`imcap.search_options.search_options_from_args`)."""
    defaults = SearchOptions()
    group.add_argument("--beam-size", "-b", type=int_greater_or_equal(1), default=defaults.beam_size,
                       help="Beam size.")
    group.add_argument("--max-output-length", type=int_greater_or_equal(1), default=defaults.max_output_length,
                       help="Most words per caption (</s> included).")
    group.add_argument("--length-penalty-alpha", type=float_greater_or_equal(0.0),
                       default=defaults.length_penalty_alpha, help="GNMT length penalty alpha (0: none).")
    group.add_argument("--length-penalty-beta", type=float_greater_or_equal(0.0), default=defaults.length_penalty_beta,
                       help="GNMT length penalty beta.")
    group.add_argument("--allow-unk", action="store_true", default=defaults.allow_unk,
                       help="Let captions contain <unk>.")
    group.add_argument("--no-repeat-ngram-size", type=int_greater_or_equal(0), default=defaults.no_repeat_ngram_size,
                       help="No caption repeats an n-gram of this many words: a word that would is blocked in its "
                            "hypothesis (fairseq's option; 3 stops 'a white shirt and a white shirt'). 0: off; 1 is "
                            "refused.")
    group.add_argument("--nbest-size", type=int_greater_or_equal(1), default=defaults.nbest_size, help=nbest_help)
    group.add_argument("--diverse-beam-groups", type=int_greater_or_equal(1), default=defaults.diverse_beam_groups,
                       metavar="G",
                       help="Diverse beam search (Vijayakumar et al. 2018): split the beam into this many groups, "
                            "each penalized for the words the groups before it chose at the same step, so that the "
                            "n-best (--nbest-size, each group's best first) differ. Must divide --beam-size; 1: off. "
                            "Not with required phrases.")
    group.add_argument("--diverse-beam-strength", type=float_greater_or_equal(0.0),
                       default=defaults.diverse_beam_strength,
                       help="Diverse beam search's penalty per earlier group's choice of the same word (Hamming "
                            "diversity, log-probability units).")
    group.add_argument("--sample", action="store_true", default=defaults.sample,
                       help="Draw the captions at random from the models' distribution, word by word, instead of "
                            "beam search: --nbest-size independent samples per image (not bounded by --beam-size, "
                            "which is unused), best first; reproducible with --seed. Not with required phrases "
                            "(--json-input constraints, --guide-with-classifier; avoided ones are kept) nor "
                            "--diverse-beam-groups.")
    group.add_argument("--sampling-temperature", type=float, default=defaults.sampling_temperature, metavar="T",
                       help="With --sample: divide the log-probabilities by this (> 0): below 1 sharper, above 1 "
                            "flatter.")
    group.add_argument("--sampling-top-k", type=int, default=defaults.sampling_top_k, metavar="K",
                       help="With --sample: draw among each step's K likeliest words only (0: all).")
    group.add_argument("--sampling-top-p", type=float, default=defaults.sampling_top_p, metavar="P",
                       help="With --sample: draw among the fewest likeliest words whose probability reaches P (nucleus "
                            "sampling; in (0, 1], 1: off).")
    group.add_argument("--seed", type=int, default=defaults.seed, metavar="S",
                       help="With --sample: the seed of the draws; an image's captions depend on it and the image's "
                            "input line only (the same at any --batch-size).")


def add_image_encoder_args(parser: argparse.ArgumentParser, from_model: bool = False) -> None:
    """Options that select the pretrained CNN and the layer it is cut at (shared by extraction and captioning).

    :param from_model: every default is ``None``, meaning the model's own settings (the captioner reads them from
        the model's ``config.yaml``), instead of the encoder's defaults.
    """
    model_default = " Default: the model's own (its config.yaml feature_extraction)." if from_model else ""
    group = parser.add_argument_group("Image encoder")
    group.add_argument("--image-encoder", default=None if from_model else C.ENCODER_EFFICIENTNET_LITE0,
                       help="CNN: efficientnet_lite0, efficientnet_lite2 (weights from --image-encoder-model-path or "
                            "%s/NAME.npz), any Gluon model-zoo name (e.g. resnet50_v1, weights from "
                            "--image-encoder-model-path FILE.params), or 'symbol' for an MXNet symbolic checkpoint "
                            "(--image-encoder-model-path PREFIX, epoch 0 unless PREFIX-NNNN.params names another)."
                            % DEFAULT_MODELS + model_default)
    group.add_argument("--image-encoder-model-path", default=None,
                       help="Weights of the encoder: .npz (EfficientNet-Lite), .params (model zoo) or a "
                            "symbolic checkpoint PREFIX (PREFIX-symbol.json + PREFIX-NNNN.params)." + model_default)
    group.add_argument("--image-encoder-layer", default=None,
                       help="Layer to cut the CNN at; its output (channels, H, W) becomes H*W regions. "
                            "EfficientNet-Lite: stem, blocks.N, head (default), pool, logits. Model zoo: index "
                            "into 'features' (default: the last conv layer). Symbol: internal name, e.g. "
                            "stage4_unit3_relu (the _output suffix is optional)." + model_default)
    group.add_argument("--source-image-size", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
                       help="Images are resized to this size (pixels). Default: the encoder's own (224 for "
                            "efficientnet_lite0 and model-zoo nets, 260 for efficientnet_lite2)."
                            + (" With a model: the size its features were made at." if from_model else ""))
    group.add_argument("--image-encoder-no-fusion", action="store_true",
                       help="Do not fuse the graph with MXNet's MKLDNN backend (plain hybridize).")


def cli_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any],
             argv: Optional[List[str]] = None) -> None:
    """What every tool's ``main()`` does: parse ``argv``, set up logging (``--quiet``) and call ``run(args)``; a
    user error ends the program with a one-line message and exit code 1."""
    from .utils import run_main, setup_logging
    args = parser.parse_args(argv)
    setup_logging(quiet=getattr(args, "quiet", False))
    run_main(run, args)


def add_guide_args(parser: argparse.ArgumentParser) -> None:
    """The options of guided captioning (:mod:`imcap.guide`), shared by the captioner and the server."""
    guide = parser.add_argument_group("Guided captioning (Anderson et al. 2017)")
    guide.add_argument("--guide-with-classifier", action="store_true",
                       help="Guide each caption by the CNN's ImageNet classifier: the words of its top classes "
                            "(mapped by --guide-class-words) become constraints, each met by any one of its class's "
                            "words. The probabilities come from the CNN's forward pass (--extract-image-features) "
                            "or from IMAGE.classes.npy beside cached features (imcap.extract_features writes them). "
                            "JSON output says which classes guided.")
    guide.add_argument("--guide-top-k", type=int_greater_or_equal(0), default=C.DEFAULT_GUIDE_TOP_K,
                       help="The most classes that are hard constraints of one caption (the most probable first); "
                            "0: none (soft guidance and guidance against only).")
    guide.add_argument("--guide-min-probability", type=float, default=C.DEFAULT_GUIDE_MIN_PROBABILITY,
                       help="The least probability of a class that is a hard constraint.")
    guide.add_argument("--guide-soft-weight", type=float, default=0.0,
                       help="Soft guidance (Hendricks et al. 2016's late fusion): each word of the mapping gains this "
                            "weight times its classes' summed probability on its log-probability, at each step until "
                            "the caption has it. 0: off.")
    guide.add_argument("--guide-against", type=float, default=0.0,
                       help="Guidance against: hold back (avoid) the animal words whose classes have together less "
                            "than this share of the top class's probability (a 'dog' when the classifier sees a bear "
                            "at 0.97 and no dog). People words are never held back. In [0, 1]; 0: off.")
    guide.add_argument("--guide-class-words", type=regular_file, default=None,
                       help="The class -> caption words mapping (INDEX<TAB>NAME<TAB>word|word..., - for none). "
                            "Default: imcap's reviewed mapping of the 1000 ImageNet classes.")
    guide.add_argument("--guide-expand-vocabulary", action="store_true",
                       help="Add the mapping's words that the model lacks, scored as the words of the same class "
                            "it knows (their stand-ins), and written only where a guide asks for them.")
