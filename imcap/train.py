"""Training: ``python -m imcap.train``, a bucketed seq2seq trainer over cached image features.

The command line of :mod:`imcap.training`: it checks the options, prepares the model dir (resume, overwrite or
refuse), sets up the model dir's ``log``, loads the features and captions, builds (or, resuming or with
``--params``, loads) the target vocabulary, builds the model the options describe, and trains it with a
:class:`imcap.training.Trainer`. The trainer buckets captions by length (GluonNLP's ``FixedBucketSampler``), trains
with Adam and gradient clipping, and every ``--checkpoint-interval`` updates evaluates validation perplexity (and,
with ``--decode-and-evaluate N``, BLEU of beam-search captions of N validation images), writes ``params.NNNNN``,
``params.best``, a ``metrics`` line and the training state, and stops early when the optimized metric has not
improved for ``--max-num-checkpoint-not-improved`` checkpoints.

A run started again with the same command resumes from its last checkpoint, so a resumed run writes the same
metrics as an uninterrupted one; the options of a model dir's run are kept in its ``args.yaml``, and a run with
other options (but those of ``constants.ARGS_MAY_DIFFER_ON_RESUME``) is refused. Feature files that cannot be read
or contain NaN or infinite values are skipped with a warning naming their line; a training that diverges (a loss, a
parameter or a perplexity turns NaN or infinite) ends with one ``Error:`` line and exit code 1, the model dir left at
its last good checkpoint, from which the same command resumes.

``--loss self-critical`` fine-tunes a model (``--params``) for CIDEr-D with self-critical sequence training
(Rennie et al. 2017): per image, several captions sampled from the model, each rewarded by its CIDEr-D
(:mod:`imcap.reward`) against the mean reward of the others (Luo 2020).

Option names follow Sockeye (Hieber et al. 2017, "Sockeye: A Toolkit for Neural Machine Translation").
"""
import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

import gluonnlp as nlp

from . import arguments
from . import constants as C
from .data import ParallelData
from .decoder import decoder_config_from_options, decoder_names
from .devices import get_contexts
from .distributed import worker_group
from .encoder import EncoderConfig
from .vision.tail import EncoderTailConfig, set_learning_rate_multiplier
from .features import FeatureStore, read_manifest
from .model import CaptionModel, ModelConfig, load_params
from .training import (GRADIENT_CLIPPING_CHOICES, Trainer, TrainerConfig, TrainingState, build_model,
                       has_training_state)
from .tokenizer import SENTENCEPIECE, Tokenizer, load_tokenizer
from .utils import ImcapError, atomic_open, check_condition, read_lines, setup_logging
from .vocab import build_vocab, load_vocab

logger = logging.getLogger("imcap.train")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Every option of the trainer, in Sockeye's groups and names."""
    data = parser.add_argument_group("Data")
    data.add_argument("--source", "-s", required=True, type=arguments.regular_file,
                      help="Training features list (SPLIT.features from imcap.extract_features).")
    data.add_argument("--target", "-t", required=True, type=arguments.regular_file,
                      help="Training captions, parallel to --source.")
    data.add_argument("--validation-source", "-vs", required=True, type=arguments.regular_file,
                      help="Validation features list.")
    data.add_argument("--validation-target", "-vt", required=True, nargs="+", type=arguments.regular_file,
                      help="Validation captions, each file parallel to --validation-source (several files: all "
                           "references; perplexity uses every pair, BLEU every reference).")
    data.add_argument("--source-root", default=None,
                      help="Root of relative feature paths. Default: the directory of each list file.")
    data.add_argument("--source-augmentations", nargs="+", default=[], choices=C.AUGMENTATION_CHOICES,
                      help="Augmented views of the training images (cached by imcap.extract_features "
                           "--augmentations): every epoch, each caption is paired with its image's original features "
                           "or one of these views, uniformly at random. Default: the originals only.")
    data.add_argument("--load-all-features-to-memory", action="store_true",
                      help="Read every training and validation feature file once at the start and keep them in "
                           "memory (49 x 1280 float16 regions: 125 kB per image). Default: read lazily, each batch "
                           "reads the files of its images (through the OS page cache), so that data larger than "
                           "memory trains; see docs/benchmarks.md for its cost.")
    data.add_argument("--output", "-o", required=True, help="Model directory.")
    data.add_argument("--overwrite-output", action="store_true",
                      help="Delete an existing model directory instead of resuming from it.")
    data.add_argument("--params", "-p", default=None, type=arguments.regular_file,
                      help="Initialize the parameters from this params file of a trained model (e.g. "
                           "MODEL/params.best), whose vocabulary (MODEL/vocab.trg.json) is used too; the model "
                           "options must describe the same model. The usual start of --loss self-critical.")
    data.add_argument("--word-min-count", type=arguments.int_greater_or_equal(1), default=5,
                      help="Words seen fewer times in the training captions become <unk>.")
    data.add_argument("--max-seq-len", type=arguments.int_greater_or_equal(2), default=40,
                      help="Captions are cut to this many tokens (</s> included).")
    data.add_argument("--bucket-width", type=arguments.int_greater_or_equal(1), default=3,
                      help="Width of the caption-length buckets (tokens): buckets of W, 2W, ... tokens up to the "
                           "longest caption.")

    model = parser.add_argument_group("Model")
    model.add_argument("--decoder", choices=decoder_names(), default=C.DECODER_RNN,
                       help="Decoder type: rnn (Show, Attend and Tell), transformer (Vaswani et al. 2017) or cnn "
                            "(ConvS2S, Gehring et al. 2017); see docs/decoders.md.")
    model.add_argument("--image-encoder-num-hidden", type=arguments.int_greater_or_equal(1), default=512,
                       help="Size of the projected image regions.")
    model.add_argument("--image-positional-embedding-type", choices=C.IMAGE_POSITIONAL_EMBEDDING_CHOICES,
                       default="none", help="Positional embedding added to the regions before their projection: "
                                            "learned, or fixed 2-D sinusoids of the row and column of a square grid.")
    model.add_argument("--image-encoder-dropout", type=arguments.float_greater_or_equal(0), default=0.0,
                       help="Dropout on the projected regions.")
    model.add_argument("--image-encoder-fine-tune", action="store_true",
                       help="Partial fine-tuning: put the rest of the pretrained CNN after the layer the features "
                            "were cached at (their cache.json says which, e.g. blocks.14: EfficientNet-Lite0's last "
                            "block and head) into the model and train it with the decoder, at "
                            "--image-encoder-learning-rate. Needs features extracted inside the CNN "
                            "(imcap.extract_features --image-encoder-layer blocks.N of EfficientNet-Lite, or K of a "
                            "model-zoo net's features); see docs/finetuning.md.")
    model.add_argument("--image-encoder-train-batchnorm", action="store_true",
                       help="With --image-encoder-fine-tune: BatchNorm of the fine-tuned layers uses batch statistics "
                            "and updates its moving ones. Default: the pretrained moving statistics are used and kept.")
    model.add_argument("--num-embed", type=arguments.int_greater_or_equal(1), default=256,
                       help="Target embedding size.")
    model.add_argument("--embed-dropout", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Dropout on target embeddings.")
    model.add_argument("--rnn-cell-type", choices=C.RNN_CELL_CHOICES, default=C.RNN_CELL_LSTM,
                       help="RNN cell: lstm, gru or rnn (vanilla Elman RNN, tanh). With --rnn-attention-type none "
                            "(Show and Tell) the layers run as MXNet's fused RNN operator over the whole caption.")
    model.add_argument("--rnn-num-hidden", type=arguments.int_greater_or_equal(1), default=512,
                       help="RNN state size.")
    model.add_argument("--num-layers", type=arguments.int_greater_or_equal(1), default=1,
                       help="Decoder layers (RNN, Transformer or convolution layers).")
    model.add_argument("--rnn-attention-type", choices=C.ATT_CHOICES, default=C.ATT_MLP,
                       help="Attention over the regions: mlp (Bahdanau), dot (Luong, scaled), bilinear (Luong's "
                            "'general'), coverage (mlp that also sees the attention each region had so far; Tu et "
                            "al. 2016) or none (Show and Tell, Vinyals et al. 2015: the pooled image is the first "
                            "input; the reported attention is uniform). See docs/decoders.md.")
    model.add_argument("--rnn-attention-num-hidden", type=arguments.int_greater_or_equal(1), default=512,
                       help="Hidden size of the mlp and coverage attentions.")
    model.add_argument("--rnn-decoder-state-init", choices=C.STATE_INIT_CHOICES, default=C.STATE_INIT_AVG,
                       help="Initial RNN state: from the mean region (avg), from the last (bottom-right) region "
                            "(last; weak for images, kept for Sockeye parity) or zero.")
    model.add_argument("--rnn-no-context-gating", action="store_true",
                       help="Do not gate the attention context (Xu et al. 2015, sec. 4.2.1; no effect with "
                            "--rnn-attention-type none).")
    model.add_argument("--rnn-dropout", type=arguments.float_greater_or_equal(0), default=0.3,
                       help="Dropout on RNN outputs and the deep output layer.")
    model.add_argument("--transformer-model-size", type=arguments.int_greater_or_equal(1), default=256,
                       help="Transformer layer size (d_model); must equal --num-embed.")
    model.add_argument("--transformer-attention-heads", type=arguments.int_greater_or_equal(1), default=8,
                       help="Heads of the Transformer attentions.")
    model.add_argument("--transformer-feed-forward-num-hidden", type=arguments.int_greater_or_equal(1), default=1024,
                       help="Hidden size of the Transformer feed-forward networks.")
    model.add_argument("--transformer-dropout-attention", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Dropout on the Transformer attention weights.")
    model.add_argument("--transformer-dropout-act", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Dropout on the Transformer feed-forward hidden layer (after the ReLU).")
    model.add_argument("--transformer-dropout-prepost", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Dropout on the Transformer sublayer outputs (before the residual sum) and on the "
                            "embedded target.")
    model.add_argument("--cnn-kernel-width", type=arguments.int_greater_or_equal(2), default=3,
                       help="Width of the causal convolutions of the cnn decoder.")
    model.add_argument("--cnn-num-hidden", type=arguments.int_greater_or_equal(1), default=512,
                       help="Channels of the convolutions of the cnn decoder.")
    model.add_argument("--cnn-dropout", type=arguments.float_greater_or_equal(0), default=0.2,
                       help="Dropout of the cnn decoder (embedded target, convolution inputs, output).")
    model.add_argument("--output-num-hidden", type=arguments.int_greater_or_equal(1), default=256,
                       help="Size of the decoder output of rnn (deep output layer) and cnn (the Transformer's "
                            "is --transformer-model-size).")
    model.add_argument("--weight-tying", action="store_true",
                       help="Share target embedding and output layer (needs --num-embed == the decoder output size: "
                            "--output-num-hidden for rnn and cnn, --transformer-model-size for transformer).")

    train = parser.add_argument_group("Training")
    train.add_argument("--batch-size", "-b", type=arguments.int_greater_or_equal(1), default=64,
                       help="Captions per update (over all devices).")
    train.add_argument("--optimizer", default="adam", help="MXNet optimizer.")
    train.add_argument("--initial-learning-rate", type=arguments.float_greater_or_equal(0), default=0.001,
                       help="Initial learning rate.")
    train.add_argument("--image-encoder-learning-rate", type=arguments.float_greater_or_equal(0), default=0.0001,
                       help="Learning rate of the CNN layers of --image-encoder-fine-tune (warm-up and reductions "
                            "scale it as --initial-learning-rate; 0: run them frozen).")
    train.add_argument("--learning-rate-warmup", type=arguments.int_greater_or_equal(0), default=0,
                       help="Raise the learning rate linearly from 0 over this many updates (0: no warm-up; "
                            "Transformers train more stably with one, Vaswani et al. 2017).")
    train.add_argument("--weight-decay", type=arguments.float_greater_or_equal(0), default=0.0,
                       help="L2 weight decay.")
    train.add_argument("--gradient-clipping-type", choices=GRADIENT_CLIPPING_CHOICES, default="norm",
                       help="Clip each gradient value (abs) or the global gradient norm (norm).")
    train.add_argument("--gradient-clipping-threshold", type=arguments.float_greater_or_equal(0), default=5.0,
                       help="Clipping threshold.")
    train.add_argument("--loss", choices=C.LOSS_CHOICES, default=C.LOSS_CROSS_ENTROPY,
                       help="cross-entropy: teacher forcing on the reference captions. self-critical: REINFORCE "
                            "with the CIDEr-D of sampled captions as the reward and the mean reward of the other "
                            "samples of the same image as the baseline (Rennie et al. 2017; Luo 2020), usually "
                            "from a cross-entropy model (--params); one device.")
    train.add_argument("--self-critical-samples", type=arguments.int_greater_or_equal(2), default=5,
                       help="Captions sampled per image by --loss self-critical (--batch-size counts the sampled "
                            "captions, so a batch holds batch-size / samples images).")
    train.add_argument("--label-smoothing", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Label smoothing of the cross-entropy (Szegedy et al. 2016).")
    train.add_argument("--doubly-stochastic-attention-weight", type=arguments.float_greater_or_equal(0),
                       default=0.0, help="Weight of the penalty sum_r (1 - sum_t a_tr)^2 of Xu et al. 2015 (eq. 14).")
    train.add_argument("--checkpoint-interval", type=arguments.int_greater_or_equal(1), default=1000,
                       help="Updates between checkpoints.")
    train.add_argument("--optimized-metric", choices=C.METRIC_CHOICES, default=C.METRIC_PERPLEXITY,
                       help="Metric that picks params.best and drives early stopping (bleu and cider need "
                            "--decode-and-evaluate).")
    train.add_argument("--max-num-checkpoint-not-improved", type=int, default=8,
                       help="Stop after this many checkpoints without improvement (-1: never).")
    train.add_argument("--learning-rate-reduce-factor", type=float, default=0.5,
                       help="Multiply the learning rate by this after --learning-rate-reduce-num-not-improved "
                            "checkpoints without improvement.")
    train.add_argument("--learning-rate-reduce-num-not-improved", type=int, default=3,
                       help="See --learning-rate-reduce-factor (-1: never reduce).")
    train.add_argument("--max-updates", type=int, default=None, help="Stop after this many updates.")
    train.add_argument("--max-num-epochs", type=int, default=None, help="Stop after this many epochs.")
    train.add_argument("--max-seconds", type=int, default=None,
                       help="Stop (with a last checkpoint) so that training and validation take at most this "
                            "long (seconds of wall-clock time, summed over resumes; the longest checkpoint so far is "
                            "kept in reserve for the last one, so only a budget shorter than the first checkpoint "
                            "is overrun). Loading data and building the model before the first update is not "
                            "counted.")
    train.add_argument("--decode-and-evaluate", type=int, default=0,
                       help="At each checkpoint, caption this many validation images and compute BLEU and "
                            "CIDEr-D (-1: all; 0: none).")
    train.add_argument("--decode-and-evaluate-beam-size", type=arguments.int_greater_or_equal(1), default=3,
                       help="Beam size of --decode-and-evaluate.")
    train.add_argument("--keep-last-params", type=int, default=-1,
                       help="Keep only this many params.NNNNN files (-1: all).")
    train.add_argument("--log-interval", type=arguments.int_greater_or_equal(0), default=50,
                       help="Log a line (updates, samples/s, running training perplexity, time left to the next "
                            "checkpoint and to --max-seconds/--max-updates) every this many updates, in the model "
                            "dir's log and on STDERR (0: never). Between checkpoints a progress bar shows the same "
                            "on a terminal, unless --quiet.")
    train.add_argument("--seed", type=int, default=13, help="Random seed.")
    train.add_argument("--kvstore", default="device", choices=C.KVSTORE_CHOICES,
                       help="KVStore: device or local sum the gradients of several --device-ids; dist_sync, "
                            "dist_device_sync or dist_async train on every worker of a parameter-server job started "
                            "by python -m imcap.launch (each worker takes its shard of every epoch's batches, rank 0 "
                            "validates and writes the model dir; see docs/scaling.md).")
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)


def option_defaults() -> Dict[str, object]:
    """The default of every trainer option, by ``args`` attribute name."""
    parser = argparse.ArgumentParser(add_help=False)
    add_training_args(parser)
    return {action.dest: parser.get_default(action.dest) for action in parser._actions}


def model_config_from_args(args: argparse.Namespace, vocab_size: int, regions: int, feature_dim: int,
                           manifest: Optional[Dict]) -> ModelConfig:
    """The :class:`ModelConfig` the options describe (with ``--image-encoder-fine-tune``, a CNN tail that continues
    the features ``manifest`` describes, and an encoder over the tail's output).

    :raises ImcapError: if the features cannot be fine-tuned (see :meth:`EncoderTailConfig.from_manifest`).
    """
    tail = None
    if args.image_encoder_fine_tune:
        tail = EncoderTailConfig.from_manifest(manifest, "--source %s" % args.source,
                                               train_batchnorm=args.image_encoder_train_batchnorm)
        check_condition(list(tail.input_shape) == [regions, feature_dim], "--source %s: features have (regions, dim) "
                        "= (%d, %d), their cache.json says %s" % (args.source, regions, feature_dim, tail.input_shape))
        regions, feature_dim = tail.output_shape
    encoder = EncoderConfig(num_regions=regions, feature_dim=feature_dim, num_hidden=args.image_encoder_num_hidden,
                            positional_embedding=args.image_positional_embedding_type,
                            dropout=args.image_encoder_dropout)
    decoder = decoder_config_from_options(args.decoder, args)
    return ModelConfig(vocab_size=vocab_size, encoder=encoder, decoder=decoder, decoder_name=args.decoder,
                       num_embed=args.num_embed, embed_dropout=args.embed_dropout, weight_tying=args.weight_tying,
                       feature_extraction=manifest, encoder_tail=tail)


def trainer_config_from_args(args: argparse.Namespace) -> TrainerConfig:
    """The :class:`TrainerConfig` the options describe: each of its fields is the option of the same name.

    :raises ImcapError: on settings the trainer refuses.
    """
    return TrainerConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(TrainerConfig)})


def check_options(args: argparse.Namespace) -> None:
    """The checks of option combinations that argparse cannot make, before anything is written.

    :raises ImcapError: on options that do not go together.
    """
    check_condition(args.optimized_metric == C.METRIC_PERPLEXITY or args.decode_and_evaluate != 0,
                    "--optimized-metric %s needs --decode-and-evaluate" % args.optimized_metric)
    check_condition(args.loss != C.LOSS_SELF_CRITICAL or len(get_contexts(args.device_ids, args.use_cpu)) == 1,
                    "--loss self-critical runs on one device")
    check_condition(args.image_encoder_fine_tune or not args.image_encoder_train_batchnorm,
                    "--image-encoder-train-batchnorm needs --image-encoder-fine-tune")
    check_condition(not args.image_encoder_train_batchnorm or args.image_encoder_learning_rate > 0,
                    "--image-encoder-train-batchnorm needs --image-encoder-learning-rate > 0 (MXNet updates the "
                    "moving statistics in the backward pass, which a frozen CNN tail skips)")
    check_condition(not args.image_encoder_fine_tune or args.initial_learning_rate > 0
                    or args.image_encoder_learning_rate == 0, "--image-encoder-learning-rate is a multiple of "
                    "--initial-learning-rate for the optimizer, which must then be > 0")


def prepare_model_dir(args: argparse.Namespace) -> bool:
    """Resume, start afresh, or refuse: a dir with a training state resumes if the settings agree (those of
    ``C.ARGS_MAY_DIFFER_ON_RESUME`` may differ; an option added since the dir's run started counts as having had its
    default); a dir a run left before its first checkpoint (no state yet) starts again if the settings agree;
    ``--overwrite-output`` deletes the dir first. A fresh dir gets the options as ``args.yaml``.

    :return: whether the training resumes.
    :raises ImcapError: if the dir holds a training with other settings, or is not an imcap model dir.
    """
    import yaml
    output = args.output
    resume = has_training_state(output)
    args_path = os.path.join(output, C.ARGS_NAME)
    if os.path.isdir(output) and args.overwrite_output:
        shutil.rmtree(output)
        resume = False
    if os.path.isfile(args_path):
        with open(args_path, encoding="utf-8") as f:
            previous = yaml.safe_load(f)
        now = vars(args)
        defaults = option_defaults()
        differing = sorted(k for k in now if k not in C.ARGS_MAY_DIFFER_ON_RESUME
                           and previous.get(k, defaults.get(k)) != now[k])
        check_condition(not differing, "%s holds a training with other settings (%s); use --overwrite-output "
                        "or another --output" % (output, ", ".join(
                            "--%s: %s → %s" % (k.replace("_", "-"), previous.get(k), now[k]) for k in differing)))
        if not resume:  # stopped before its first checkpoint: nothing to keep
            shutil.rmtree(output)
    if resume:
        for folder in (output, os.path.join(output, C.TRAINING_STATE_DIRNAME)):
            for name in os.listdir(folder):  # temporary files of atomic writes cut short by a kill
                if name.startswith(".") and name.endswith(".tmp"):
                    os.remove(os.path.join(folder, name))
    else:
        check_condition(not os.path.isdir(output) or not os.listdir(output),
                        "%s exists and is not an imcap model dir; use --overwrite-output or another --output" % output)
        os.makedirs(output, exist_ok=True)
        with atomic_open(args_path) as f:
            yaml.safe_dump(vars(args), f, sort_keys=True)
    return resume


def load_vocabulary(args: argparse.Namespace, resume: bool, tokenizer: Tokenizer) -> nlp.Vocab:
    """The target vocabulary: the model dir's when resuming, that of the ``--params`` model, or built from the
    training captions (``--word-min-count``; with a SentencePiece tokenizer every piece the captions use: rare words
    are written as pieces, not as ``<unk>``).

    :raises ImcapError: if ``--params`` has no vocabulary beside it.
    """
    if resume:
        return load_vocab(os.path.join(args.output, C.VOCAB_TRG_NAME))
    if args.params is not None:
        params_vocab = os.path.join(os.path.dirname(os.path.abspath(args.params)), C.VOCAB_TRG_NAME)
        check_condition(os.path.isfile(params_vocab), "--params %s: no %s beside it (the vocabulary of those "
                        "parameters)" % (args.params, C.VOCAB_TRG_NAME))
        return load_vocab(params_vocab)
    min_count = 1 if tokenizer.name == SENTENCEPIECE else args.word_min_count
    return build_vocab((line.split() for line in read_lines(args.target)), min_count=min_count)


def prepare_encoder_tail(args: argparse.Namespace, model: CaptionModel, resume: bool) -> None:
    """Check that the validation features, and the model of ``--params`` or of the resumed model dir, go with the
    model's CNN tail (``--image-encoder-fine-tune``), and set the tail's learning rate
    (``--image-encoder-learning-rate``, as a multiple of ``--initial-learning-rate``).

    :raises ImcapError: if they do not.
    """
    tail = model.config.encoder_tail
    assert model.encoder_tail is not None and tail is not None
    tail.check_features(read_manifest(args.source_root if args.source_root is not None
                                      else os.path.dirname(os.path.abspath(args.validation_source))),
                        "--validation-source %s" % args.validation_source)
    others = [(os.path.join(args.output, C.CONFIG_NAME), args.output)] if resume else []
    if args.params is not None and not resume:
        others.append((os.path.join(os.path.dirname(os.path.abspath(args.params)), C.CONFIG_NAME), args.params))
    for path, what in others:
        if os.path.isfile(path):
            other = ModelConfig.load(path).encoder_tail
            check_condition(other is not None and (other.encoder, other.layer) == (tail.encoder, tail.layer),
                            "%s: its model %s, the features continue %s cut at %s" % (
                                what, "has no CNN tail" if other is None else "continues %s cut at %s"
                                % (other.encoder, other.layer), tail.encoder, tail.layer))
    multiplier = args.image_encoder_learning_rate / args.initial_learning_rate if args.initial_learning_rate else 0.0
    set_learning_rate_multiplier(model.encoder_tail, multiplier)
    logger.info("CNN tail: %s after %s, (regions, dim) %s → %s, learning rate %g (x%g)%s", tail.encoder, tail.layer,
                tuple(tail.input_shape), tuple(tail.output_shape), args.image_encoder_learning_rate, multiplier,
                ", BatchNorm trained" if tail.train_batchnorm else ", BatchNorm statistics frozen")


def build_trainer(args: argparse.Namespace) -> Trainer:
    """Everything of ``imcap.train`` but the training itself: check the options, prepare the model dir and its
    ``log``, load the data and the vocabulary, build the model (from ``--params`` unless resuming) and the
    :class:`Trainer` (which resumes from the model dir's training state if there is one).

    :raises ImcapError: on bad options, an unusable model dir or data, or ``--params`` of another model.
    """
    check_options(args)
    config = trainer_config_from_args(args)
    ctx = get_contexts(args.device_ids, args.use_cpu)
    # a dist kvstore: rank 0 alone prepares and logs into the model dir, the other workers wait for it, then read
    workers = worker_group(args.kvstore)
    resume = workers.broadcast(prepare_model_dir(args) if workers.writes_files else None)
    setup_logging(os.path.join(args.output, C.LOG_NAME) if workers.writes_files else None, quiet=args.quiet)
    logger.info("imcap.train %s", " ".join(sys.argv[1:]))
    logger.info("devices: %s%s", ctx, "; resuming from %s" % os.path.join(args.output, C.TRAINING_STATE_DIRNAME)
                if resume else "")
    start = time.time()
    train_store = FeatureStore(args.source, args.source_root, augmentations=args.source_augmentations,
                               load_all_to_memory=args.load_all_features_to_memory)
    val_store = FeatureStore(args.validation_source, args.source_root,
                             load_all_to_memory=args.load_all_features_to_memory)
    check_condition(train_store.shape == val_store.shape, "training features %s and validation features %s "
                    "differ in shape" % (train_store.shape, val_store.shape))
    logger.info("features: %d training images%s, %d validation images, (regions, dim) = %s, %s in %.1f s",
                train_store.features.shape[0],
                " with views %s" % ", ".join(["original"] + train_store.augmentations)
                if train_store.augmentations else "", val_store.features.shape[0], train_store.shape,
                "loaded into memory" if args.load_all_features_to_memory else "checked (read lazily)",
                time.time() - start)
    tokenizer = load_tokenizer(os.path.dirname(os.path.abspath(args.target)))   # prepare_data's, beside the captions
    vocab = load_vocabulary(args, resume, tokenizer)
    tokenizer.check_vocabulary(vocab.idx_to_token, "the vocabulary of %s" % args.target)
    logger.info("tokenizer: %s (%s), vocabulary: %d tokens", tokenizer.name, tokenizer.language, len(vocab))
    train_data = ParallelData(train_store, [args.target], vocab, args.max_seq_len)
    val_data = ParallelData(val_store, args.validation_target, vocab, args.max_seq_len,
                            tokenizer.tokenize if tokenizer.name == SENTENCEPIECE else str.split)
    # cache.json sits at the root the feature paths are relative to
    manifest = read_manifest(args.source_root if args.source_root is not None
                             else os.path.dirname(os.path.abspath(args.source)))
    regions, dim = train_store.shape
    model = build_model(model_config_from_args(args, len(vocab), regions, dim, manifest), ctx, args.seed)
    if model.encoder_tail is not None:
        prepare_encoder_tail(args, model, resume)
    if args.params is not None and not resume:
        try:
            load_params(model, args.params, ctx)
        except ImcapError as e:
            raise ImcapError("--params %s (the model options must describe the model of those parameters)" % e)
        logger.info("parameters initialized from %s", args.params)
    return Trainer(config, model=model, vocab=vocab, train_data=train_data, validation_data=val_data,
                   validation_references=[read_lines(p) for p in args.validation_target], output_dir=args.output,
                   contexts=ctx, progress_bar=not args.quiet, tokenizer=tokenizer)


def run_train(args: argparse.Namespace) -> TrainingState:
    """Train a model as ``args`` say (what the CLI and the tests call): :func:`build_trainer`, then
    :meth:`Trainer.fit`.

    :raises ImcapError: on bad options, data or model dir (:func:`build_trainer`), or if the training diverges
        (:meth:`Trainer.fit`; the model dir keeps its last good checkpoint).
    """
    return build_trainer(args).fit()


def training_arg_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m imcap.train``."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    add_training_args(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and train."""
    arguments.cli_main(training_arg_parser(), run_train, argv)


if __name__ == "__main__":
    main()
