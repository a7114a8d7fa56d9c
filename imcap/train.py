"""Training: ``python -m imcap.train``, a bucketed seq2seq trainer over cached image features.

Builds the target vocabulary, buckets captions by length (GluonNLP's ``FixedBucketSampler``), trains with Adam
and gradient clipping, and every ``--checkpoint-interval`` updates evaluates validation perplexity (and, with
``--decode-and-evaluate N``, BLEU of beam-search captions of N validation images), writes ``params.NNNNN``,
``params.best``, a ``metrics`` line and the training state, and stops early when the optimized metric has not
improved for ``--max-num-checkpoint-not-improved`` checkpoints.

A run started again with the same command resumes from its last checkpoint: parameters, optimizer state, data
position, learning rate, early-stopping counters and random state (every checkpoint interval reseeds the random
generators with ``seed + checkpoint``, and every epoch's batch order depends only on ``seed`` and the epoch),
so a resumed run writes the same metrics as an uninterrupted one.

``--loss self-critical`` fine-tunes a model (``--params``) for CIDEr-D with self-critical sequence training
(Rennie et al. 2017): per image, several captions sampled from the model, each rewarded by its CIDEr-D
(:mod:`imcap.reward`) against the mean reward of the others (Luo 2020).

Option names follow Sockeye (Hieber et al. 2017, "Sockeye: A Toolkit for Neural Machine Translation").
"""
import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import arguments
from . import constants as C
from .beam_search import BeamSearch, best_captions
from .config import Config
from .convolution import ConvolutionalDecoderConfig
from .data import BucketBatcher, ImageBatcher, ParallelData
from .decoder import RNNDecoderConfig
from .encoder import EncoderConfig
from .features import FeatureStore, read_manifest
from .model import CaptionModel, ModelConfig
from .reward import CiderD
from .transformer import TransformerDecoderConfig
from .utils import (ImcapError, atomic_open, atomic_path, check_condition, read_lines, seed_everything,
                    setup_logging)
from .vocab import build_vocab, ids_to_tokens, load_vocab, never_generated, save_vocab

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
                      help="Width of the caption-length buckets (tokens).")

    model = parser.add_argument_group("Model")
    model.add_argument("--decoder", choices=C.DECODER_CHOICES, default=C.DECODER_RNN,
                       help="Decoder type: rnn (Show, Attend and Tell), transformer (Vaswani et al. 2017) or cnn "
                            "(ConvS2S, Gehring et al. 2017); see docs/decoders.md.")
    model.add_argument("--image-encoder-num-hidden", type=arguments.int_greater_or_equal(1), default=512,
                       help="Size of the projected image regions.")
    model.add_argument("--image-positional-embedding-type", choices=C.IMAGE_POSITIONAL_EMBEDDING_CHOICES,
                       default="none", help="Positional embedding added to the regions before their projection: "
                                            "learned, or fixed 2-D sinusoids of the row and column of a square grid.")
    model.add_argument("--image-encoder-dropout", type=arguments.float_greater_or_equal(0), default=0.0,
                       help="Dropout on the projected regions.")
    model.add_argument("--num-embed", type=arguments.int_greater_or_equal(1), default=256,
                       help="Target embedding size.")
    model.add_argument("--embed-dropout", type=arguments.float_greater_or_equal(0), default=0.1,
                       help="Dropout on target embeddings.")
    model.add_argument("--rnn-cell-type", choices=C.RNN_CELL_CHOICES, default="lstm", help="RNN cell.")
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
    train.add_argument("--learning-rate-warmup", type=arguments.int_greater_or_equal(0), default=0,
                       help="Raise the learning rate linearly from 0 over this many updates (0: no warm-up; "
                            "Transformers train more stably with one, Vaswani et al. 2017).")
    train.add_argument("--weight-decay", type=arguments.float_greater_or_equal(0), default=0.0,
                       help="L2 weight decay.")
    train.add_argument("--gradient-clipping-type", choices=["abs", "norm", "none"], default="norm",
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
    train.add_argument("--seed", type=int, default=13, help="Random seed.")
    train.add_argument("--kvstore", default="device", help="KVStore for several devices (device or local).")
    arguments.add_device_args(parser)
    arguments.add_logging_args(parser)


def option_defaults() -> Dict[str, object]:
    """The default of every trainer option, by ``args`` attribute name."""
    parser = argparse.ArgumentParser(add_help=False)
    add_training_args(parser)
    return {action.dest: parser.get_default(action.dest) for action in parser._actions}


def model_config_from_args(args: argparse.Namespace, vocab_size: int, regions: int, feature_dim: int,
                           manifest: Optional[Dict]) -> ModelConfig:
    """The :class:`ModelConfig` the options describe."""
    encoder = EncoderConfig(num_regions=regions, feature_dim=feature_dim, num_hidden=args.image_encoder_num_hidden,
                            positional_embedding=args.image_positional_embedding_type,
                            dropout=args.image_encoder_dropout)
    decoder: Config
    if args.decoder == C.DECODER_TRANSFORMER:
        check_condition(args.num_embed == args.transformer_model_size, "the transformer decoder needs --num-embed "
                        "== --transformer-model-size (%d != %d)" % (args.num_embed, args.transformer_model_size))
        decoder = TransformerDecoderConfig(num_layers=args.num_layers, model_size=args.transformer_model_size,
                                           attention_heads=args.transformer_attention_heads,
                                           feed_forward_num_hidden=args.transformer_feed_forward_num_hidden,
                                           dropout_attention=args.transformer_dropout_attention,
                                           dropout_act=args.transformer_dropout_act,
                                           dropout_prepost=args.transformer_dropout_prepost, num_embed=args.num_embed,
                                           encoder_num_hidden=args.image_encoder_num_hidden,
                                           max_seq_len=args.max_seq_len)
    elif args.decoder == C.DECODER_CNN:
        decoder = ConvolutionalDecoderConfig(num_layers=args.num_layers, num_hidden=args.cnn_num_hidden,
                                             kernel_width=args.cnn_kernel_width, num_embed=args.num_embed,
                                             output_num_hidden=args.output_num_hidden,
                                             encoder_num_hidden=args.image_encoder_num_hidden, dropout=args.cnn_dropout,
                                             max_seq_len=args.max_seq_len)
    else:
        decoder = RNNDecoderConfig(cell_type=args.rnn_cell_type, num_layers=args.num_layers,
                                   num_hidden=args.rnn_num_hidden, attention_type=args.rnn_attention_type,
                                   attention_num_hidden=args.rnn_attention_num_hidden,
                                   state_init=args.rnn_decoder_state_init,
                                   context_gating=not args.rnn_no_context_gating, num_embed=args.num_embed,
                                   output_num_hidden=args.output_num_hidden,
                                   encoder_num_hidden=args.image_encoder_num_hidden, dropout=args.rnn_dropout)
    return ModelConfig(vocab_size=vocab_size, encoder=encoder, decoder=decoder, decoder_name=args.decoder,
                       num_embed=args.num_embed, embed_dropout=args.embed_dropout, weight_tying=args.weight_tying,
                       feature_extraction=manifest)


def contexts(args: argparse.Namespace) -> List[mx.Context]:
    """Devices from ``--device-ids``/``--use-cpu`` (CPU contexts when no GPU is present)."""
    if args.use_cpu or mx.context.num_gpus() == 0:
        return [mx.cpu(i) for i in range(max(1, len(args.device_ids)))]
    ids: List[int] = []
    for d in args.device_ids:
        ids.extend(range(-d) if d < 0 else [d])
    return [mx.gpu(i) for i in ids]


def sequence_loss(logits, attention, target_out, label_smoothing: float, attention_weight: float):
    """Summed token cross-entropy (with label smoothing) and summed negative log-likelihood.

    :param logits: ``(batch, length, vocab)``.
    :param attention: ``(batch, length, regions)``.
    :param target_out: ``(batch, length)`` ids, 0 = padding (not counted).
    :return: ``(loss to minimize, nll)``, both scalars summed over tokens.
    """
    log_probs = mx.nd.log_softmax(logits, axis=-1)
    mask = target_out != 0
    nll = -mx.nd.pick(log_probs, target_out, axis=-1) * mask
    loss = nll
    if label_smoothing > 0:
        vocab = log_probs.shape[-1]
        ones = mx.nd.ones((vocab, 1), ctx=log_probs.context) / vocab
        mean = mx.nd.dot(log_probs, ones).reshape(nll.shape)  # a GEMM: MXNet's CPU mean is much slower
        loss = (1 - label_smoothing) * nll - label_smoothing * mean * mask
    loss = mx.nd.sum(loss)
    if attention_weight > 0:  # Xu et al. 2015, eq. 14: every region should get attention over the caption
        coverage = mx.nd.sum(attention * mx.nd.expand_dims(mask, axis=2), axis=1)   # (batch, regions)
        loss = loss + attention_weight * mx.nd.sum(mx.nd.square(1 - coverage))
    return loss, mx.nd.sum(nll)


class TrainingState:
    """Counters of a run, saved in ``training_state/state.json`` at every checkpoint."""

    FIELDS = ("updates", "epoch", "batch_in_epoch", "checkpoint", "samples", "best_metric", "best_checkpoint",
              "num_not_improved", "num_not_improved_lr", "learning_rate", "elapsed", "train_nll", "train_tokens",
              "train_reward", "train_sequences", "converged", "eval_seconds")

    def __init__(self, learning_rate: float) -> None:
        self.updates = self.epoch = self.batch_in_epoch = self.checkpoint = self.samples = 0
        self.best_metric: Optional[float] = None
        self.best_checkpoint = 0
        self.num_not_improved = self.num_not_improved_lr = 0
        self.learning_rate = learning_rate
        self.elapsed = 0.0
        self.train_nll = 0.0
        self.train_tokens = 0
        self.train_reward = 0.0   # self-critical training: summed CIDEr-D of the sampled captions ...
        self.train_sequences = 0  # ... and their number, since the last checkpoint
        self.converged = False
        self.eval_seconds = 0.0   # the longest checkpoint (evaluation and saving) so far, in seconds of wall-clock

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.FIELDS}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainingState":
        values = json.loads(text)
        state = cls(values["learning_rate"])
        for k in cls.FIELDS:
            if k in values:
                setattr(state, k, values[k])
        return state


def write_metrics(path: str, lines: List[Dict]) -> None:
    """Write the ``metrics`` file: ``CHECKPOINT\\tkey=value...`` per checkpoint, atomically."""
    with atomic_open(path) as f:
        for entry in lines:
            f.write("%d\t%s\n" % (entry["checkpoint"], "\t".join(
                "%s=%s" % (k, ("%.6f" % v if isinstance(v, float) else v))
                for k, v in entry.items() if k != "checkpoint")))


def read_metrics(path: str) -> List[Dict]:
    """Read a ``metrics`` file written by :func:`write_metrics`."""
    entries: List[Dict] = []
    if not os.path.isfile(path):
        return entries
    for line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        entry: Dict = {"checkpoint": int(fields[0])}
        for field in fields[1:]:
            key, value = field.split("=", 1)
            try:
                entry[key] = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                entry[key] = value
        entries.append(entry)
    return entries


class Trainer:
    """Runs one training, from scratch or resumed from ``args.output``."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = contexts(args)
        self.dir = args.output
        self.state_dir = os.path.join(self.dir, C.TRAINING_STATE_DIRNAME)
        self.resume = os.path.isfile(os.path.join(self.state_dir, C.TRAINING_STATE_NAME))
        self._prepare_dir()
        setup_logging(os.path.join(self.dir, C.LOG_NAME), quiet=args.quiet)
        logger.info("imcap.train %s", " ".join(sys.argv[1:]))
        logger.info("devices: %s%s", self.ctx, "; resuming from %s" % self.state_dir if self.resume else "")
        self._load_data()
        self._build_model()

    def _prepare_dir(self) -> None:
        """Resume, start afresh, or refuse: a dir with a training state resumes if the settings agree; a dir a run
        left before its first checkpoint (no state yet) starts again if the settings agree."""
        import yaml
        args = self.args
        args_path = os.path.join(self.dir, "args.yaml")
        if os.path.isdir(self.dir) and args.overwrite_output:
            shutil.rmtree(self.dir)
            self.resume = False
        if os.path.isfile(args_path):
            with open(args_path, encoding="utf-8") as f:
                previous = yaml.safe_load(f)
            now = vars(args)
            # an option added since the previous run started counts as having had its default
            defaults = option_defaults()
            differing = sorted(k for k in now if k not in C.ARGS_MAY_DIFFER_ON_RESUME
                               and previous.get(k, defaults.get(k)) != now[k])
            check_condition(not differing, "%s holds a training with other settings (%s); use --overwrite-output "
                            "or another --output" % (self.dir, ", ".join(
                                "--%s: %s → %s" % (k.replace("_", "-"), previous.get(k), now[k])
                                for k in differing)))
            if not self.resume:  # stopped before its first checkpoint: nothing to keep
                shutil.rmtree(self.dir)
        if self.resume:
            for folder in (self.dir, self.state_dir):  # temporary files of atomic writes cut short by a kill
                for name in os.listdir(folder):
                    if name.startswith(".") and name.endswith(".tmp"):
                        os.remove(os.path.join(folder, name))
        else:
            check_condition(not os.path.isdir(self.dir) or not os.listdir(self.dir),
                            "%s exists and is not an imcap model dir; use --overwrite-output or another --output"
                            % self.dir)
            os.makedirs(self.dir, exist_ok=True)
            with atomic_open(args_path) as f:
                yaml.safe_dump(vars(args), f, sort_keys=True)

    def _load_data(self) -> None:
        args = self.args
        start = time.time()
        train_store = FeatureStore(args.source, args.source_root, augmentations=args.source_augmentations)
        val_store = FeatureStore(args.validation_source, args.source_root)
        check_condition(train_store.shape == val_store.shape, "training features %s and validation features %s "
                        "differ in shape" % (train_store.shape, val_store.shape))
        logger.info("features: %d training images%s, %d validation images, (regions, dim) = %s, loaded in %.1f s",
                    train_store.features.shape[0],
                    " with views %s" % ", ".join(["original"] + train_store.augmentations)
                    if train_store.augmentations else "", val_store.features.shape[0], train_store.shape,
                    time.time() - start)
        vocab_path = os.path.join(self.dir, C.VOCAB_TRG_NAME)
        if self.resume:
            self.vocab = load_vocab(vocab_path)
        elif args.params is not None:
            params_vocab = os.path.join(os.path.dirname(os.path.abspath(args.params)), C.VOCAB_TRG_NAME)
            check_condition(os.path.isfile(params_vocab), "--params %s: no %s beside it (the vocabulary of those "
                            "parameters)" % (args.params, C.VOCAB_TRG_NAME))
            self.vocab = load_vocab(params_vocab)
            save_vocab(self.vocab, vocab_path)
        else:
            captions = (line.split() for line in read_lines(args.target))
            self.vocab = build_vocab(captions, min_count=args.word_min_count)
            save_vocab(self.vocab, vocab_path)
        self.train_data = ParallelData(train_store, [args.target], self.vocab, args.max_seq_len)
        self.val_data = ParallelData(val_store, args.validation_target, self.vocab, args.max_seq_len)
        self.self_critical = args.loss == C.LOSS_SELF_CRITICAL
        self.batcher: Any
        if self.self_critical:
            check_condition(len(self.ctx) == 1, "--loss self-critical runs on one device")
            self.batcher = ImageBatcher(self.train_data, max(1, args.batch_size // args.self_critical_samples),
                                        args.seed)
            self.reward = CiderD([[ids_to_tokens(self.vocab, ref) for ref in refs]
                                  for refs in self.batcher.references])
            # -1e9 for the words the policy never writes, 0 for the others: (1, vocab)
            blocked = np.zeros((1, len(self.vocab)), dtype=np.float32)
            blocked[0, never_generated(self.vocab)] = -1e9
            self.blocked = mx.nd.array(blocked, ctx=self.ctx[0])
            logger.info("self-critical training: %d images in %d batches per epoch, %d captions sampled per image; "
                        "validation: %d pairs", len(self.batcher.rows), len(self.batcher),
                        args.self_critical_samples, len(self.val_data))
        else:
            self.batcher = BucketBatcher(self.train_data, args.batch_size, args.bucket_width, args.seed)
            logger.info("training: %d pairs in %d batches per epoch (buckets %s); validation: %d pairs",
                        len(self.train_data), len(self.batcher), self.batcher.keys, len(self.val_data))
        self.val_batches = BucketBatcher(self.val_data, args.batch_size * 2, args.bucket_width, args.seed,
                                         shuffle=False).epoch_batches(0)
        self.val_references = [read_lines(p) for p in args.validation_target]
        # --decode-and-evaluate: the first n validation lines, their references, and CIDEr-D with their IDF
        n = args.decode_and_evaluate
        self.num_decoded = len(val_store.index) if n < 0 else min(n, len(val_store.index))
        self.decoded_references = [refs[:self.num_decoded] for refs in self.val_references]
        self.val_cider = CiderD([[refs[i].split() for refs in self.decoded_references]
                                 for i in range(self.num_decoded)]) if self.num_decoded > 0 else None
        # cache.json sits at the root the feature paths are relative to
        self.manifest = read_manifest(args.source_root if args.source_root is not None
                                      else os.path.dirname(os.path.abspath(args.source)))
        self.val_store = val_store

    def _build_model(self) -> None:
        args = self.args
        regions, dim = self.train_data.store.shape
        self.config = model_config_from_args(args, len(self.vocab), regions, dim, self.manifest)
        self.config.save(os.path.join(self.dir, C.CONFIG_NAME))
        seed_everything(args.seed)
        self.model = CaptionModel(self.config, prefix="model_")
        self.model.initialize(mx.init.Xavier(factor_type="avg", magnitude=2.34), ctx=self.ctx)
        if args.params is not None and not self.resume:
            try:
                self.model.load_parameters(args.params, ctx=self.ctx)
            except (AssertionError, mx.base.MXNetError) as e:
                raise ImcapError("--params %s does not fit the model the options describe: %s"
                                 % (args.params, str(e).splitlines()[0]))
            logger.info("parameters initialized from %s", args.params)
        self.model.hybridize()
        logger.info("model: %s decoder, %d parameters", self.config.decoder_name, self.model.num_parameters())
        self.state = TrainingState(args.initial_learning_rate)
        optimizer_params = {"learning_rate": args.initial_learning_rate, "wd": args.weight_decay}
        if args.gradient_clipping_type == "abs":
            optimizer_params["clip_gradient"] = args.gradient_clipping_threshold
        self.params = self.model.collect_params()
        self.trainer = gluon.Trainer(self.params, args.optimizer, optimizer_params,
                                     kvstore=args.kvstore if len(self.ctx) > 1 else None)
        self.metrics: List[Dict] = []
        if self.resume:
            self._load_state()

    # --- checkpoints and resumption -----------------------------------------------------------------------------

    def _load_state(self) -> None:
        with open(os.path.join(self.state_dir, C.TRAINING_STATE_NAME), encoding="utf-8") as f:
            self.state = TrainingState.from_json(f.read())
        self.model.load_parameters(os.path.join(self.dir, C.PARAMS_NAME % self.state.checkpoint), ctx=self.ctx)
        self.trainer.load_states(os.path.join(self.state_dir, C.TRAINER_STATES_NAME + ".%05d" % self.state.checkpoint))
        self.trainer.set_learning_rate(self.state.learning_rate)
        self.metrics = [m for m in read_metrics(os.path.join(self.dir, C.METRICS_NAME))
                        if m["checkpoint"] <= self.state.checkpoint]
        logger.info("resumed at checkpoint %d: %d updates, epoch %d, batch %d, learning rate %g",
                    self.state.checkpoint, self.state.updates, self.state.epoch, self.state.batch_in_epoch,
                    self.state.learning_rate)

    def _save_state(self) -> None:
        """Params, trainer states, metrics, then state.json last: a crash at any point leaves a resumable dir."""
        os.makedirs(self.state_dir, exist_ok=True)
        n = self.state.checkpoint
        trainer_path = os.path.join(self.state_dir, C.TRAINER_STATES_NAME + ".%05d" % n)
        with atomic_path(trainer_path) as tmp:
            self.trainer.save_states(tmp)
        write_metrics(os.path.join(self.dir, C.METRICS_NAME), self.metrics)
        with atomic_open(os.path.join(self.state_dir, C.TRAINING_STATE_NAME)) as f:
            f.write(self.state.to_json())
        for name in os.listdir(self.state_dir):
            if name.startswith(C.TRAINER_STATES_NAME + ".") and name != os.path.basename(trainer_path):
                os.remove(os.path.join(self.state_dir, name))
        if self.args.keep_last_params > 0:
            for old in range(1, n - self.args.keep_last_params + 1):
                path = os.path.join(self.dir, C.PARAMS_NAME % old)
                if os.path.isfile(path):
                    os.remove(path)

    def _save_params(self, name: str) -> None:
        with atomic_path(os.path.join(self.dir, name)) as tmp:
            self.model.save_parameters(tmp)

    # --- evaluation ---------------------------------------------------------------------------------------------

    def validation_perplexity(self) -> float:
        """Perplexity of the validation captions (teacher forcing, no dropout)."""
        nll, tokens = 0.0, 0
        for indices in self.val_batches:
            batch = self.val_data.make_batch(indices)
            ctx = self.ctx[0]
            logits, attention = self.model(mx.nd.array(batch.features, ctx=ctx), mx.nd.array(batch.target_in, ctx=ctx))
            _, batch_nll = sequence_loss(logits, attention, mx.nd.array(batch.target_out, ctx=ctx), 0.0, 0.0)
            nll += batch_nll.asscalar()
            tokens += batch.num_tokens
        return math.exp(nll / max(tokens, 1))

    def validation_decode(self) -> Dict[str, float]:
        """BLEU-4 and CIDEr-D of beam-search captions of the first ``--decode-and-evaluate`` validation lines:
        ``{"bleu-val": 0-100, "cider-val": 0-10}``."""
        from .evaluate import bleu_scores
        n = self.num_decoded
        search = BeamSearch([self.model], self.vocab, beam_size=self.args.decode_and_evaluate_beam_size,
                            max_output_length=self.args.max_seq_len, ctx=self.ctx[0])
        # an unreadable line (row -1) is decoded from row 0 only to keep the lines aligned with the references
        hypotheses = best_captions(search, self.vocab, self.val_store.features[np.maximum(self.val_store.index[:n], 0)],
                                   64)
        with atomic_open(os.path.join(self.dir, C.DECODE_OUT_NAME % self.state.checkpoint)) as f:
            f.write("".join(h + "\n" for h in hypotheses))
        assert self.val_cider is not None
        return {"bleu-val": bleu_scores(hypotheses, self.decoded_references)["bleu4"],
                "cider-val": self.val_cider.corpus_score([h.split() for h in hypotheses])}

    def checkpoint(self, train_start: float) -> None:
        """Evaluate, write params/metrics/state, update early stopping and the learning rate."""
        state, args = self.state, self.args
        state.checkpoint += 1
        eval_start = time.time()
        entry = {"checkpoint": state.checkpoint, "updates": state.updates, "epoch": state.epoch,
                 "learning-rate": state.learning_rate,
                 "perplexity-train": math.exp(state.train_nll / max(state.train_tokens, 1)),
                 "perplexity-val": self.validation_perplexity()}
        if self.self_critical:
            entry["cider-train"] = state.train_reward / max(state.train_sequences, 1)
        if args.decode_and_evaluate != 0:
            entry.update(self.validation_decode())
        state.elapsed += time.time() - train_start
        entry["time-elapsed"] = state.elapsed
        entry["samples-per-second"] = state.samples / max(state.elapsed, 1e-9)
        metric = entry[C.METRIC_COLUMN[args.optimized_metric]]
        improved = state.best_metric is None or (metric > state.best_metric if C.METRIC_MAXIMIZE[args.optimized_metric]
                                                 else metric < state.best_metric)
        self._save_params(C.PARAMS_NAME % state.checkpoint)
        if improved:
            state.best_metric, state.best_checkpoint = metric, state.checkpoint
            state.num_not_improved = state.num_not_improved_lr = 0
            self._save_params(C.PARAMS_BEST_NAME)
        else:
            state.num_not_improved += 1
            state.num_not_improved_lr += 1
            if 0 < args.learning_rate_reduce_num_not_improved <= state.num_not_improved_lr:
                state.learning_rate *= args.learning_rate_reduce_factor
                state.num_not_improved_lr = 0
                self.trainer.set_learning_rate(state.learning_rate)
                logger.info("learning rate reduced to %g", state.learning_rate)
        if 0 <= args.max_num_checkpoint_not_improved <= state.num_not_improved:
            state.converged = True
        self.metrics.append(entry)
        state.eval_seconds = max(state.eval_seconds, time.time() - eval_start)
        state.train_nll, state.train_tokens = 0.0, 0
        state.train_reward, state.train_sequences = 0.0, 0
        self._save_state()
        logger.info("checkpoint %d: updates %d, epoch %d, ppl train %.2f val %.2f%s%s%s, %.1f samples/s, eval %.1f s",
                    state.checkpoint, state.updates, state.epoch, entry["perplexity-train"], entry["perplexity-val"],
                    ", cider train %.3f" % entry["cider-train"] if "cider-train" in entry else "",
                    ", bleu val %.2f, cider val %.3f" % (entry["bleu-val"], entry["cider-val"])
                    if "bleu-val" in entry else "",
                    " (best)" if improved else " (not improved for %d)" % state.num_not_improved,
                    entry["samples-per-second"], time.time() - eval_start)

    # --- the loop -----------------------------------------------------------------------------------------------

    def _update(self, batch) -> int:
        """One cross-entropy update on ``batch`` (split over the devices); returns the number of captions."""
        args, ctx = self.args, self.ctx
        n = len(ctx)
        splits = [slice(i * len(batch) // n, (i + 1) * len(batch) // n) for i in range(n)]
        total_tokens = float(batch.num_tokens)
        with autograd.record():
            losses, nlls = [], []
            for c, part in zip(ctx, splits):
                # A batch smaller than the number of devices leaves some without rows: they run one row with
                # weight 0, so that every device has a fresh (zero) gradient for the kvstore to sum.
                weight = 1.0 if part.stop > part.start else 0.0
                part = part if weight else slice(0, 1)
                logits, attention = self.model(mx.nd.array(batch.features[part], ctx=c),
                                               mx.nd.array(batch.target_in[part], ctx=c))
                loss, nll = sequence_loss(logits, attention, mx.nd.array(batch.target_out[part], ctx=c),
                                          args.label_smoothing, args.doubly_stochastic_attention_weight)
                losses.append(loss * (weight / total_tokens))
                nlls.append(nll * weight)
        autograd.backward(losses)
        self._step_optimizer()
        self.state.train_nll += sum(x.asscalar() for x in nlls)
        self.state.train_tokens += batch.num_tokens
        return len(batch)

    def _step_optimizer(self) -> None:
        """Gradient clipping, the learning-rate warm-up, then one optimizer step on the recorded gradients."""
        args, ctx = self.args, self.ctx
        if args.gradient_clipping_type == "norm":
            grads = [p.grad(c) for p in self.params.values() if p.grad_req != "null" for c in ctx]
            if len(ctx) == 1:
                gluon.utils.clip_global_norm(grads, args.gradient_clipping_threshold, check_isfinite=False)
            else:
                self._clip_norm_multi_device()
        if self.state.updates < args.learning_rate_warmup:   # state.updates counts the updates done before this one
            self.trainer.set_learning_rate(self.state.learning_rate * (self.state.updates + 1)
                                           / args.learning_rate_warmup)
        elif args.learning_rate_warmup and self.state.updates == args.learning_rate_warmup:
            self.trainer.set_learning_rate(self.state.learning_rate)
        self.trainer.step(1)

    def _sample_captions(self, features: mx.nd.NDArray) -> np.ndarray:
        """Sample one caption per row of ``features (rows, regions, dim)`` from the model (no dropout), word by
        word from the softmax over the words other than ``<s>``, ``<pad>`` and ``<unk>``.

        :return: ``(rows, length)`` int32 word ids, each caption ended by ``</s>`` (unless cut at
            ``--max-seq-len``) and padded with 0 after it.
        """
        vocab, ctx = self.vocab, self.ctx[0]
        eos = vocab[C.EOS_SYMBOL]
        rows = features.shape[0]
        static, dynamic = self.model.encode(features)
        prev = mx.nd.full((rows,), vocab[C.BOS_SYMBOL], ctx=ctx, dtype=np.float32)
        finished = np.zeros(rows, dtype=bool)
        words = []
        for _ in range(self.args.max_seq_len):
            log_probs, _, dynamic = self.model.step(prev, static, dynamic)
            probs = mx.nd.softmax(mx.nd.broadcast_add(log_probs, self.blocked), axis=-1)
            drawn = mx.nd.random.multinomial(probs).asnumpy().astype(np.int32)
            drawn[finished] = 0
            words.append(drawn)
            finished |= drawn == eos
            if finished.all():
                break
            prev = mx.nd.array(drawn, ctx=ctx, dtype=np.float32)
        return np.stack(words, axis=1)

    def _update_self_critical(self, batch) -> int:
        """One self-critical update on a batch of images (Rennie et al. 2017): sample ``--self-critical-samples``
        captions per image, reward each with its CIDEr-D against the image's training references, and follow
        ``(reward - baseline) * grad log p(caption)``, the baseline of a caption being the mean reward of the
        other samples of its image (Luo 2020, "A Better Variant of Self-Critical Sequence Training"). The
        log-probabilities are those of the policy that sampled: no dropout, and a softmax over the words it may
        write (with the full softmax, pushing sampled words down would pile probability onto ``<pad>``, ``<s>``
        and ``<unk>``, which are never sampled and so never pushed down). Returns the number of sampled
        captions."""
        k, ctx = self.args.self_critical_samples, self.ctx[0]
        features = mx.nd.array(np.repeat(batch.features, k, axis=0), ctx=ctx)   # (images * k, regions, dim)
        images = np.repeat(batch.images, k)
        sampled = self._sample_captions(features)                              # (images * k, length)
        captions = [ids_to_tokens(self.vocab, row) for row in sampled]
        rewards = self.reward.scores(images.tolist(), captions).reshape(-1, k)         # (images, k)
        baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (k - 1)
        advantage = mx.nd.array((rewards - baseline).reshape(-1), ctx=ctx)     # (images * k,)
        target_in = np.concatenate([np.full((len(sampled), 1), self.vocab[C.BOS_SYMBOL], dtype=np.int32),
                                    sampled[:, :-1]], axis=1)
        target_out = mx.nd.array(sampled, ctx=ctx)
        with autograd.record(train_mode=False):
            logits, _ = self.model(features, mx.nd.array(target_in, ctx=ctx))
            mask = target_out != 0
            policy = mx.nd.log_softmax(mx.nd.broadcast_add(logits, mx.nd.expand_dims(self.blocked, 0)),
                                       axis=-1)
            token_log_probs = mx.nd.pick(policy, target_out, axis=-1) * mask
            loss = -mx.nd.sum(mx.nd.sum(token_log_probs, axis=1) * advantage) / len(sampled)
        loss.backward()
        self._step_optimizer()
        self.state.train_nll += -float(token_log_probs.sum().asscalar())
        self.state.train_tokens += int(mask.sum().asscalar())
        self.state.train_reward += float(rewards.sum())
        self.state.train_sequences += rewards.size
        return len(sampled)

    def _clip_norm_multi_device(self) -> None:
        """Clip the norm of the gradient summed over devices, identically on every device."""
        params = [p for p in self.params.values() if p.grad_req != "null"]
        total = 0.0
        for p in params:
            summed = sum(g.as_in_context(mx.cpu()) for g in p.list_grad())
            total += float((summed ** 2).sum().asscalar())
        norm = math.sqrt(total)
        if norm > self.args.gradient_clipping_threshold:
            scale = self.args.gradient_clipping_threshold / norm
            for p in params:
                for g in p.list_grad():
                    g *= scale

    def _should_stop(self) -> bool:
        args, state = self.args, self.state
        return (state.converged or (args.max_updates is not None and state.updates >= args.max_updates)
                or (args.max_num_epochs is not None and state.epoch >= args.max_num_epochs)
                or self._out_of_time(0.0))

    def _out_of_time(self, running: float) -> bool:
        """Whether ``running`` seconds since the last checkpoint exhaust ``--max-seconds``, with the longest
        checkpoint so far kept in reserve so that the last one still ends within the budget."""
        budget = self.args.max_seconds
        return budget is not None and self.state.elapsed + running + self.state.eval_seconds >= budget

    def fit(self) -> TrainingState:
        """Train until a stopping criterion holds; return the final state."""
        args, state = self.args, self.state
        if self._should_stop():
            logger.info("nothing to do: the training in %s has already stopped", self.dir)
            return state
        mx.random.seed(args.seed + state.checkpoint)
        np.random.seed(args.seed + state.checkpoint)
        start = time.time()
        while not self._should_stop():
            for batch in self.batcher.iter_epoch(state.epoch, state.batch_in_epoch):
                state.samples += self._update_self_critical(batch) if self.self_critical else self._update(batch)
                state.updates += 1
                state.batch_in_epoch += 1
                out_of_time = self._out_of_time(time.time() - start)
                if state.updates % args.checkpoint_interval == 0 or out_of_time or \
                        (args.max_updates is not None and state.updates >= args.max_updates):
                    self.checkpoint(start)
                    start = time.time()
                    mx.random.seed(args.seed + state.checkpoint)
                    np.random.seed(args.seed + state.checkpoint)
                    if self._should_stop():
                        break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                if args.max_num_epochs is not None and state.epoch >= args.max_num_epochs:
                    # the stop must leave a checkpoint of the final weights
                    if state.updates % args.checkpoint_interval != 0:
                        self.checkpoint(start)
                    break
        logger.info("training stopped after %d updates (%d epochs, %.0f s); best checkpoint %d (%s %.4f)",
                    state.updates, state.epoch, state.elapsed, state.best_checkpoint, args.optimized_metric,
                    state.best_metric if state.best_metric is not None else float("nan"))
        return state


def run_train(args: argparse.Namespace) -> TrainingState:
    """Train a model as ``args`` say (what the CLI and the tests call)."""
    check_condition(args.optimized_metric == C.METRIC_PERPLEXITY or args.decode_and_evaluate != 0,
                    "--optimized-metric %s needs --decode-and-evaluate" % args.optimized_metric)
    return Trainer(args).fit()


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
