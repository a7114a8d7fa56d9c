"""Training as a library: a :class:`Trainer` built from a :class:`TrainerConfig` and ready objects (the model, its
vocabulary, the training and validation data, the devices and the model dir), whose :meth:`Trainer.fit` trains.

The trainer buckets the captions by length (:class:`imcap.data.BucketBatcher`), updates with any MXNet optimizer,
gradient clipping and a learning-rate warm-up, and every ``checkpoint_interval`` updates evaluates validation
perplexity (and, with ``decode_and_evaluate``, BLEU-4 and CIDEr-D of beam-search captions), writes ``params.NNNNN``,
``params.best``, a ``metrics`` line and the training state, reduces the learning rate on a plateau and stops early
when the optimized metric has not improved for ``max_num_checkpoint_not_improved`` checkpoints. With
``loss="self-critical"`` the updates are those of self-critical sequence training (:mod:`imcap.self_critical`).

A training that diverges stops with an :class:`imcap.utils.ImcapError` at the first update whose loss is NaN or
infinite (checked before the optimizer applies it), or at a checkpoint whose parameters or perplexities are, without
writing that checkpoint: the model dir keeps its last good one, consistent (params, ``metrics``, training state), and
a run resumes from it. Feature files with NaN or infinite values never reach the model: the data leave their pairs out
with a warning (:mod:`imcap.data`).

A trainer whose model dir holds a training state resumes from its last checkpoint: parameters, optimizer state, data
position, learning rate, early-stopping counters and random state (every checkpoint interval reseeds the random
generators with ``seed + checkpoint``, and every epoch's batch order depends only on ``seed`` and the epoch), so a
resumed run writes the same metrics as an uninterrupted one.

``python -m imcap.train`` (:mod:`imcap.train`) parses the command line, prepares the model dir and calls this
module; this module reads no command line.
"""
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gluonnlp as nlp
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import constants as C
from .beam_search import BeamSearch, best_captions
from .config import Config
from .data import BucketBatcher, ImageBatcher, ParallelData
from .distributed import (DistributedUpdates, ShardedBucketBatcher, ShardedImageBatcher, check_kvstore_name,
                          make_trainer, worker_group)
from .loss import sequence_loss
from .metrics_file import read_metrics, write_metrics
from .model import CaptionModel, ModelConfig, load_params, save_params
from .progress import TrainingProgress, console_logging_above_bar
from .reward import CiderD
from .self_critical import SelfCritical
from .utils import (ImcapError, atomic_open, atomic_path, check_condition, perplexity, seed_checkpoint_interval,
                    seed_everything)
from .tokenizer import WORDS, Tokenizer, make_tokenizer
from .vocab import load_vocab, save_vocab

logger = logging.getLogger(__name__)

GRADIENT_CLIPPING_CHOICES = ["abs", "norm", "none"]


@dataclasses.dataclass
class TrainerConfig(Config):
    """Every setting of a training (the defaults are those of ``python -m imcap.train``).

    :raises ImcapError: on a setting out of its range or not among its choices (at construction).
    """
    batch_size: int = 64
    """Captions per update, over all devices (with ``loss="self-critical"``: sampled captions, so a batch holds
    ``batch_size // self_critical_samples`` images)."""
    bucket_width: int = 3
    """Width of the caption-length buckets (tokens)."""
    max_seq_len: int = 40
    """The longest caption sampled by self-critical training or decoded for validation (tokens, ``</s>``
    included); the data's captions should be cut to it too (:class:`imcap.data.ParallelData`)."""
    optimizer: str = "adam"
    """Name of an MXNet optimizer (``adam``, ``sgd``, ...)."""
    initial_learning_rate: float = 0.001
    """Learning rate at the start (after the warm-up), >= 0."""
    learning_rate_warmup: int = 0
    """Raise the learning rate linearly from 0 over this many updates (0: no warm-up)."""
    weight_decay: float = 0.0
    """L2 weight decay (the optimizer's ``wd``), >= 0."""
    gradient_clipping_type: str = "norm"
    """``norm``: clip the global gradient norm (over all devices); ``abs``: clip each gradient value; ``none``."""
    gradient_clipping_threshold: float = 5.0
    """The clipping threshold (a norm or an absolute value), >= 0."""
    loss: str = C.LOSS_CROSS_ENTROPY
    """``cross-entropy`` (teacher forcing on the reference captions) or ``self-critical`` (REINFORCE with the
    CIDEr-D of sampled captions, Rennie et al. 2017; one device)."""
    self_critical_samples: int = 5
    """Captions sampled per image by self-critical training (>= 2)."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy (the share of the target probability spread over the vocabulary, 0-1;
    Szegedy et al. 2016)."""
    doubly_stochastic_attention_weight: float = 0.0
    """Weight of the attention penalty ``sum_r (1 - sum_t a_tr)^2`` (Xu et al. 2015, eq. 14), >= 0."""
    checkpoint_interval: int = 1000
    """Updates between checkpoints (>= 1)."""
    optimized_metric: str = C.METRIC_PERPLEXITY
    """The metric that picks ``params.best`` and drives early stopping and the learning-rate reduction:
    ``perplexity`` (validation), ``bleu`` or ``cider`` (both need ``decode_and_evaluate``)."""
    max_num_checkpoint_not_improved: int = 8
    """Stop after this many checkpoints without improvement (-1: never)."""
    learning_rate_reduce_factor: float = 0.5
    """Multiply the learning rate by this after ``learning_rate_reduce_num_not_improved`` checkpoints without
    improvement."""
    learning_rate_reduce_num_not_improved: int = 3
    """See ``learning_rate_reduce_factor`` (-1 or 0: never reduce)."""
    max_updates: Optional[int] = None
    """Stop after this many updates (None: no limit)."""
    max_num_epochs: Optional[int] = None
    """Stop after this many epochs (None: no limit)."""
    max_seconds: Optional[float] = None
    """Budget of wall-clock seconds for training and validation, summed over resumes (None: no limit): training
    stops with a last checkpoint early enough that the longest checkpoint so far still fits."""
    decode_and_evaluate: int = 0
    """At each checkpoint, caption this many validation images with beam search and compute BLEU-4 and CIDEr-D
    (-1: all; 0: none)."""
    decode_and_evaluate_beam_size: int = 3
    """Beam size of ``decode_and_evaluate`` (>= 1)."""
    keep_last_params: int = -1
    """Keep only the last this many ``params.NNNNN`` files (-1: all)."""
    log_interval: int = 50
    """Log a line (updates, samples/s, running training perplexity, time left) every this many updates (0: never)."""
    seed: int = 13
    """Random seed of the batch order, the augmented views, dropout and sampling."""
    kvstore: str = "device"
    """MXNet kvstore: ``device`` or ``local`` sum the gradients of several devices of the process; ``dist_sync``,
    ``dist_device_sync`` and ``dist_async`` train on every worker of a parameter-server job (:mod:`imcap.distributed`,
    started by ``python -m imcap.launch``; see docs/scaling.md). ``dist_async`` updates on the servers, so it takes
    gradient clipping by value or none, no warm-up and no learning-rate reduction."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "bucket_width", "checkpoint_interval", "decode_and_evaluate_beam_size"):
            check_condition(getattr(self, name) >= 1, "%s must be >= 1, not %s" % (name, getattr(self, name)))
        for name in ("initial_learning_rate", "weight_decay", "gradient_clipping_threshold", "label_smoothing",
                     "doubly_stochastic_attention_weight", "learning_rate_warmup"):
            check_condition(getattr(self, name) >= 0, "%s must be >= 0, not %s" % (name, getattr(self, name)))
        check_condition(self.log_interval >= 0, "log_interval must be >= 0, not %s" % self.log_interval)
        check_condition(self.max_seq_len >= 2, "max_seq_len must be >= 2, not %s" % self.max_seq_len)
        check_condition(self.self_critical_samples >= 2, "self_critical_samples must be >= 2, not %s"
                        % self.self_critical_samples)
        for name, choices in (("loss", C.LOSS_CHOICES), ("optimized_metric", C.METRIC_CHOICES),
                              ("gradient_clipping_type", GRADIENT_CLIPPING_CHOICES)):
            check_condition(getattr(self, name) in choices, "%s must be one of %s, not %r"
                            % (name, ", ".join(choices), getattr(self, name)))
        check_condition(self.optimized_metric == C.METRIC_PERPLEXITY or self.decode_and_evaluate != 0,
                        "optimized_metric %s needs decode_and_evaluate" % self.optimized_metric)
        check_kvstore_name(self.kvstore)
        if self.kvstore == C.KVSTORE_DIST_ASYNC:
            # the servers apply each push with the optimizer the workers sent them at the start: no global norm
            # (there is no sum to take it of) and no later change of the learning rate reaches them
            check_condition(self.gradient_clipping_type != "norm", "kvstore dist_async clips no global gradient "
                            "norm (the servers apply each worker's gradient alone): use gradient_clipping_type abs "
                            "or none")
            check_condition(self.learning_rate_warmup == 0 and self.learning_rate_reduce_num_not_improved <= 0,
                            "kvstore dist_async keeps the servers' learning rate fixed: set learning_rate_warmup 0 "
                            "and learning_rate_reduce_num_not_improved -1")

    @property
    def self_critical(self) -> bool:
        """Whether the updates are self-critical ones."""
        return self.loss == C.LOSS_SELF_CRITICAL


class TrainingState:
    """Counters of a run, saved in ``training_state/state.json`` at every checkpoint."""

    FIELDS = ("updates", "epoch", "batch_in_epoch", "checkpoint", "samples", "best_metric", "best_checkpoint",
              "num_not_improved", "num_not_improved_lr", "learning_rate", "elapsed", "train_nll", "train_tokens",
              "train_reward", "train_sequences", "converged", "eval_seconds", "interval_seconds", "num_workers")

    def __init__(self, learning_rate: float) -> None:
        self.updates = self.epoch = self.batch_in_epoch = self.checkpoint = self.samples = 0
        self.best_metric: Optional[float] = None
        self.best_checkpoint = 0
        self.num_not_improved = self.num_not_improved_lr = 0
        self.learning_rate = learning_rate
        self.elapsed = 0.0        # seconds of wall-clock time of training and validation, summed over resumes
        self.train_nll = 0.0      # summed negative log-likelihood (nats) of the training tokens ...
        self.train_tokens = 0     # ... and their number, since the last checkpoint
        self.train_reward = 0.0   # self-critical training: summed CIDEr-D of the sampled captions ...
        self.train_sequences = 0  # ... and their number, since the last checkpoint
        self.converged = False
        self.eval_seconds = 0.0   # the longest checkpoint (evaluation and saving) so far, in seconds of wall-clock
        self.interval_seconds = 0.0   # the longest checkpoint interval (updates and checkpoint) so far, in seconds
        self.num_workers = 1      # workers of the run (imcap.distributed); batch_in_epoch counts a worker's batches

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "TrainingState":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainingState":
        """The state of :meth:`to_dict`'s ``values`` (fields missing in an older state keep their defaults)."""
        state = cls(values["learning_rate"])
        for k in cls.FIELDS:
            if k in values:
                setattr(state, k, values[k])
        return state


def has_training_state(output_dir: str) -> bool:
    """Whether the model dir ``output_dir`` holds the training state of a checkpoint (a :class:`Trainer` on it
    resumes)."""
    return os.path.isfile(os.path.join(output_dir, C.TRAINING_STATE_DIRNAME, C.TRAINING_STATE_NAME))


def build_model(config: ModelConfig, contexts: Sequence[mx.Context], seed: int) -> CaptionModel:
    """A model of ``config`` ready for a :class:`Trainer`: built after :func:`imcap.utils.seed_everything` ``(seed)``,
    Xavier-initialized on ``contexts`` (the same parameters for the same seed) and hybridized. To start from a
    trained model's parameters instead (as self-critical training does), load them with
    :func:`imcap.model.load_params` ``(model, "MODEL/params.best", contexts)``.

    :raises ImcapError: if ``config`` describes no valid model (e.g. weight tying with mismatching sizes).
    """
    seed_everything(seed)
    model = CaptionModel(config, prefix="model_")
    model.initialize(mx.init.Xavier(factor_type="avg", magnitude=2.34), ctx=list(contexts))
    model.hybridize()
    return model


class Trainer:
    """Runs one training into the model dir ``output_dir``, from scratch or resumed from its training state.

    :param config: the training settings.
    :param model: the model to train, initialized on ``contexts`` (e.g. by :func:`build_model`); when the model dir
        holds a training state, the parameters of its last checkpoint replace the model's.
    :param vocab: the model's target vocabulary (written to the model dir as ``vocab.trg.json``; a resumed model
        dir must hold the same one).
    :param train_data: the training pairs (:class:`imcap.data.ParallelData`; captions cut to ``max_seq_len``).
    :param validation_data: the validation pairs (every reference of every image), for perplexity.
    :param validation_references: per reference set, one caption (whitespace-joined tokens) per line of the
        validation feature list (e.g. the lines of ``val.captions.0`` .. ``val.captions.4``), for BLEU and CIDEr-D.
    :param output_dir: the model dir; created if missing.
    :param contexts: the devices; each batch is split over them and their gradients summed by ``config.kvstore``.
    :param progress_bar: show a progress bar from one checkpoint to the next on STDERR when it is a terminal
        (:mod:`imcap.progress`; the log lines every ``config.log_interval`` updates are written either way).
    :param tokenizer: the captions' tokenizer (:mod:`imcap.tokenizer`; default ``words``), saved into the model dir;
        validation captions are scored as its :meth:`~imcap.tokenizer.Tokenizer.scoring_text`.
    :raises ImcapError: if the objects do not fit together (vocabulary size, feature shape, references, devices,
        a resumed dir's vocabulary) or the model is not initialized on ``contexts``.

    Attributes for inspection: ``state`` (:class:`TrainingState`), ``metrics`` (one dict per checkpoint, as in
    the ``metrics`` file), ``resume``, ``batcher`` (the training batches), ``trainer`` (the ``gluon.Trainer``).
    """

    def __init__(self, config: TrainerConfig, *, model: CaptionModel, vocab: nlp.Vocab, train_data: ParallelData,
                 validation_data: ParallelData, validation_references: Sequence[Sequence[str]], output_dir: str,
                 contexts: Sequence[mx.Context], progress_bar: bool = True,
                 tokenizer: Optional[Tokenizer] = None) -> None:
        self.config = config
        self.tokenizer = tokenizer or make_tokenizer(WORDS)
        self.progress_bar = progress_bar
        self.model = model
        self.vocab = vocab
        self.ctx = list(contexts)
        self.dir = output_dir
        self.state_dir = os.path.join(output_dir, C.TRAINING_STATE_DIRNAME)
        #: this process among the workers (imcap.distributed.LOCAL: the only one); rank 0 alone writes files
        self.workers = worker_group(config.kvstore)
        self.resume = self.workers.broadcast(has_training_state(output_dir))
        self.train_data, self.val_data = train_data, validation_data
        self.val_store = validation_data.store
        self._check_fit(validation_references)
        logger.info("model: %s decoder, %d parameters", model.config.decoder_name, model.num_parameters())
        self._save_model_files()
        self._make_batches(validation_references)
        self.state = TrainingState(config.initial_learning_rate)
        self.state.num_workers = self.workers.num_workers
        optimizer_params = {"learning_rate": config.initial_learning_rate, "wd": config.weight_decay}
        if config.gradient_clipping_type == "abs":
            optimizer_params["clip_gradient"] = config.gradient_clipping_threshold
        self.params = self.model.collect_params()
        self.trainer = make_trainer(self.workers, self.params, config.optimizer, optimizer_params, config.kvstore,
                                    len(self.ctx))
        #: a worker's updates on a dist kvstore (None without one)
        self.distributed = (DistributedUpdates(self.workers, self.trainer, self.params, self.ctx)
                            if self.workers.distributed else None)
        self.metrics: List[Dict[str, Any]] = []
        if self.resume:
            self._load_state()
        self._samples_agreed, self._updates_agreed = self.state.samples, self.state.updates
        if self.distributed is not None:
            self.distributed.init_kvstore()
            logger.info("kvstore %s: worker rank %d of %d; per update a worker pushes %.2f MB of gradients and "
                        "pulls %.2f MB", config.kvstore, self.workers.rank, self.workers.num_workers,
                        self.distributed.bytes_per_update / 1e6, self.distributed.bytes_per_update / 1e6)

    def _check_fit(self, validation_references: Sequence[Sequence[str]]) -> None:
        """Raise :class:`ImcapError` unless the model, vocabulary, data and devices fit together."""
        model_config = self.model.config
        check_condition(len(self.ctx) > 0, "no device to train on")
        check_condition(not self.config.self_critical or len(self.ctx) == 1, "self-critical training runs on one "
                        "device, not %d" % len(self.ctx))
        check_condition(len(self.vocab) == model_config.vocab_size, "the vocabulary has %d words, the model %d"
                        % (len(self.vocab), model_config.vocab_size))
        shape = self.model.feature_shape  # a CNN tail's input (the cached layer) when the model has one
        for name, data in (("training", self.train_data), ("validation", self.val_data)):
            check_condition(tuple(data.store.shape) == shape, "%s features have (regions, dim) = %s, the model %s"
                            % (name, tuple(data.store.shape), shape))
        check_condition(len(validation_references) > 0, "no validation references")
        for refs in validation_references:
            check_condition(len(refs) == len(self.val_store.index), "a validation reference set has %d captions, "
                            "the validation features %d lines" % (len(refs), len(self.val_store.index)))
        for param in self.model.collect_params().values():
            try:
                param_ctx = param.list_ctx()
            except RuntimeError:
                raise ImcapError("the model is not initialized (parameter %s); see imcap.training.build_model"
                                 % param.name)
            check_condition(set(param_ctx) == set(self.ctx), "parameter %s is on %s, the trainer's devices are %s"
                            % (param.name, param_ctx, self.ctx))

    def _save_model_files(self) -> None:
        """Write ``config.yaml`` and (unless resuming) ``vocab.trg.json``; a resumed dir must hold ``vocab``. Workers
        of rank > 0 write nothing."""
        vocab_path = os.path.join(self.dir, C.VOCAB_TRG_NAME)
        if self.resume:
            check_condition(os.path.isfile(vocab_path) and
                            load_vocab(vocab_path).idx_to_token == self.vocab.idx_to_token,
                            "%s holds a training with another vocabulary than the one given" % self.dir)
        if not self.workers.writes_files:
            return
        os.makedirs(self.dir, exist_ok=True)
        if not self.resume:
            save_vocab(self.vocab, vocab_path)
            self.tokenizer.copy_to(self.dir)
        self.model.config.save(os.path.join(self.dir, C.CONFIG_NAME))

    def _make_batches(self, validation_references: Sequence[Sequence[str]]) -> None:
        """The training batcher (and the self-critical sampler), the validation batches, and the validation lines
        decoded by ``decode_and_evaluate`` with their references and CIDEr-D scorer."""
        config = self.config
        self.batcher: Any
        self.self_critical: Optional[SelfCritical] = None
        # a worker of several takes its shard of every epoch (imcap.distributed.shard_batches)
        rank, workers = self.workers.rank, self.workers.num_workers
        if config.self_critical:
            images = max(1, config.batch_size // config.self_critical_samples)
            self.batcher = (ShardedImageBatcher(self.train_data, images, config.seed, rank=rank, num_workers=workers)
                            if workers > 1 else ImageBatcher(self.train_data, images, config.seed))
            self.self_critical = SelfCritical(self.model, self.vocab, self.batcher.references,
                                              config.self_critical_samples, config.max_seq_len, self.ctx[0])
            logger.info("self-critical training: %d images in %d batches per epoch, %d captions sampled per image; "
                        "validation: %d pairs", len(self.batcher.rows), len(self.batcher),
                        config.self_critical_samples, len(self.val_data))
        else:
            self.batcher = (ShardedBucketBatcher(self.train_data, config.batch_size, config.bucket_width, config.seed,
                                                 rank=rank, num_workers=workers) if workers > 1 else
                            BucketBatcher(self.train_data, config.batch_size, config.bucket_width, config.seed))
            logger.info("training: %d pairs in %d batches per epoch%s (buckets %s); validation: %d pairs",
                        len(self.train_data), len(self.batcher), " per worker" if workers > 1 else "",
                        self.batcher.keys, len(self.val_data))
        self.val_batches = BucketBatcher(self.val_data, config.batch_size * 2, config.bucket_width, config.seed,
                                         shuffle=False).epoch_batches(0)
        self.val_references = [list(refs) for refs in validation_references]
        # decode_and_evaluate: the first n validation lines, their references, and CIDEr-D with their IDF
        n, lines = config.decode_and_evaluate, len(self.val_store.index)
        self.num_decoded = lines if n < 0 else min(n, lines)
        self.decoded_references = [refs[:self.num_decoded] for refs in self.val_references]
        self.val_cider = CiderD([[refs[i].split() for refs in self.decoded_references]
                                 for i in range(self.num_decoded)]) if self.num_decoded > 0 else None

    # --- checkpoints and resumption -----------------------------------------------------------------------------

    def _load_state(self) -> None:
        with open(os.path.join(self.state_dir, C.TRAINING_STATE_NAME), encoding="utf-8") as f:
            self.state = TrainingState.from_json(f.read())
        check_condition(self.state.num_workers == self.workers.num_workers, "%s holds a training of %d workers; "
                        "resume it with as many (imcap.launch -n %d), not %d" % (
                            self.dir, self.state.num_workers, self.state.num_workers, self.workers.num_workers))
        load_params(self.model, os.path.join(self.dir, C.PARAMS_NAME % self.state.checkpoint), ctx=self.ctx)
        self.trainer.set_learning_rate(self.state.learning_rate)   # before dist_async sends the optimizer off
        if self.workers.synchronous:
            self.trainer.load_states(os.path.join(self.state_dir,
                                                  C.TRAINER_STATES_NAME + ".%05d" % self.state.checkpoint))
            self.trainer.set_learning_rate(self.state.learning_rate)
        else:
            logger.warning("kvstore %s: the optimizer state lived on the servers and was not saved; it starts afresh",
                           self.config.kvstore)
        metrics_path = os.path.join(self.dir, C.METRICS_NAME)
        self.metrics = [m for m in (read_metrics(metrics_path) if os.path.isfile(metrics_path) else [])
                        if int(m["checkpoint"]) <= self.state.checkpoint]
        logger.info("resumed at checkpoint %d: %d updates, epoch %d, batch %d, learning rate %g",
                    self.state.checkpoint, self.state.updates, self.state.epoch, self.state.batch_in_epoch,
                    self.state.learning_rate)

    def _save_state(self) -> None:
        """Trainer states, metrics, then state.json last: a crash at any point leaves a resumable dir (the params
        are written before)."""
        os.makedirs(self.state_dir, exist_ok=True)
        n = self.state.checkpoint
        trainer_path = os.path.join(self.state_dir, C.TRAINER_STATES_NAME + ".%05d" % n)
        if self.workers.synchronous:   # dist_async: the optimizer state is on the servers, out of reach
            with atomic_path(trainer_path) as tmp:
                self.trainer.save_states(tmp)
        write_metrics(os.path.join(self.dir, C.METRICS_NAME), self.metrics)
        with atomic_open(os.path.join(self.state_dir, C.TRAINING_STATE_NAME)) as f:
            f.write(self.state.to_json())
        for name in os.listdir(self.state_dir):
            if name.startswith(C.TRAINER_STATES_NAME + ".") and name != os.path.basename(trainer_path):
                os.remove(os.path.join(self.state_dir, name))
        if self.config.keep_last_params > 0:
            for old in range(1, n - self.config.keep_last_params + 1):
                path = os.path.join(self.dir, C.PARAMS_NAME % old)
                if os.path.isfile(path):
                    os.remove(path)

    def _check_checkpoint(self) -> Tuple[float, float]:
        """Check the parameters, then compute and check the training and validation perplexities of the checkpoint
        to be written, before anything of it is written.

        :return: ``(perplexity-train, perplexity-val)``.
        :raises ImcapError: if a parameter or a perplexity is NaN or infinite: the training diverged (an update whose
            loss was finite can still leave non-finite parameters).
        """
        what = "checkpoint %d (update %d)" % (self.state.checkpoint + 1, self.state.updates)
        for name, param in self.params.items():
            if not np.isfinite(param.data(self.ctx[0]).asnumpy()).all():
                raise self._diverged("%s: parameter %s holds NaN or infinite values" % (what, name))
        train, val = perplexity(self.state.train_nll, self.state.train_tokens), self.validation_perplexity()
        for name, value in (("training", train), ("validation", val)):
            if not math.isfinite(value):
                raise self._diverged("%s: the %s perplexity is %s" % (what, name, value))
        return train, val

    def _save_params(self, name: str) -> None:
        save_params(self.model, os.path.join(self.dir, name))

    # --- evaluation ---------------------------------------------------------------------------------------------

    def validation_perplexity(self) -> float:
        """Perplexity of the validation captions (teacher forcing, no dropout): ``exp`` of the mean token nll (inf
        if that overflows, NaN if the model gives NaN)."""
        nll, tokens = 0.0, 0
        for indices in self.val_batches:
            batch = self.val_data.make_batch(indices)
            if len(batch) == 0:   # its features held NaN or infinite values (the data warned)
                continue
            ctx = self.ctx[0]
            logits, attention = self.model(mx.nd.array(batch.features, ctx=ctx), mx.nd.array(batch.target_in, ctx=ctx))
            _, batch_nll = sequence_loss(logits, attention, mx.nd.array(batch.target_out, ctx=ctx), 0.0, 0.0)
            nll += batch_nll.asscalar()
            tokens += batch.num_tokens
        return perplexity(nll, tokens)

    def validation_decode(self) -> Dict[str, float]:
        """BLEU-4 and CIDEr-D of beam-search captions of the first ``decode_and_evaluate`` validation lines
        (written to ``decode.output.NNNNN``): ``{"bleu-val": 0-100, "cider-val": 0-10}``."""
        from .scoring import bleu_scores
        n = self.num_decoded
        search = BeamSearch([self.model], self.vocab, beam_size=self.config.decode_and_evaluate_beam_size,
                            max_output_length=self.config.max_seq_len, ctx=self.ctx[0])
        # an unreadable line (row -1) is decoded from row 0, one with non-finite features from zeros (read lazily),
        # only to keep the lines aligned with the references
        rows = np.maximum(self.val_store.index[:n], 0)
        hypotheses = [self.tokenizer.scoring_text(caption.split()) for start in range(0, n, 64)
                      for caption in best_captions(search, self.vocab, self.val_store.gather(rows[start:start + 64]),
                                                   64)]
        with atomic_open(os.path.join(self.dir, C.DECODE_OUT_NAME % self.state.checkpoint)) as f:
            f.write("".join(h + "\n" for h in hypotheses))
        assert self.val_cider is not None
        return {"bleu-val": bleu_scores(hypotheses, self.decoded_references)["bleu4"],
                "cider-val": self.val_cider.corpus_score([h.split() for h in hypotheses])}

    def checkpoint(self, train_start: float) -> None:
        """Evaluate, write params/metrics/state, update early stopping and the learning rate. Under a dist kvstore
        the training statistics of the interval are summed over the workers first (``dist_async``: rank 0's own,
        its samples times the workers), rank 0 alone evaluates and writes, and every worker then takes the state
        that rank 0's decisions left (learning rate, best checkpoint, convergence, time used).

        :param train_start: the ``time.time()`` at which the updates since the last checkpoint started.
        """
        self._sum_training_statistics()
        if self.workers.writes_files:
            self._evaluate_and_save(train_start)
        self._agree_on_state()

    def _sum_training_statistics(self) -> None:
        """The training nll, tokens, rewards and samples of the interval, of all workers (dist kvstores)."""
        state, workers = self.state, self.workers
        if workers.num_workers == 1:
            return
        new_samples = state.samples - self._samples_agreed
        if workers.synchronous:
            totals = workers.sum([state.train_nll, state.train_tokens, state.train_reward, state.train_sequences,
                                  new_samples])
            state.train_nll, state.train_reward = float(totals[0]), float(totals[2])
            state.train_tokens, state.train_sequences, new_samples = int(totals[1]), int(totals[3]), int(totals[4])
        else:
            new_samples *= workers.num_workers
        state.samples = self._samples_agreed + new_samples

    def _agree_on_state(self) -> None:
        """Every worker takes rank 0's state after a checkpoint (and its learning rate)."""
        if not self.workers.distributed:
            return
        values = self.workers.broadcast(self.state.to_dict() if self.workers.rank == 0 else None)
        if self.workers.rank != 0:
            learning_rate = self.state.learning_rate
            for k in TrainingState.FIELDS:   # in place: the training loop holds the object
                setattr(self.state, k, values[k])
            if self.state.learning_rate != learning_rate:
                self.trainer.set_learning_rate(self.state.learning_rate)
        self._samples_agreed, self._updates_agreed = self.state.samples, self.state.updates

    def _evaluate_and_save(self, train_start: float) -> None:
        """:meth:`checkpoint` of the worker that writes the model dir."""
        state, config = self.state, self.config
        eval_start = time.time()
        perplexities = self._check_checkpoint()
        state.checkpoint += 1
        entry = {"checkpoint": state.checkpoint, "updates": state.updates, "epoch": state.epoch,
                 "learning-rate": state.learning_rate, "perplexity-train": perplexities[0],
                 "perplexity-val": perplexities[1]}
        if self.distributed is not None:
            entry["kvstore-seconds-per-update"] = (self.distributed.seconds
                                                   / max(state.updates - self._updates_agreed, 1))
            self.distributed.seconds = 0.0
        if config.self_critical:
            entry["cider-train"] = state.train_reward / max(state.train_sequences, 1)
        if config.decode_and_evaluate != 0:
            entry.update(self.validation_decode())
        state.elapsed += time.time() - train_start
        entry["time-elapsed"] = state.elapsed
        entry["samples-per-second"] = state.samples / max(state.elapsed, 1e-9)
        metric = entry[C.METRIC_COLUMN[config.optimized_metric]]
        improved = state.best_metric is None or (metric > state.best_metric
                                                 if C.METRIC_MAXIMIZE[config.optimized_metric]
                                                 else metric < state.best_metric)
        self._save_params(C.PARAMS_NAME % state.checkpoint)
        if improved:
            state.best_metric, state.best_checkpoint = metric, state.checkpoint
            state.num_not_improved = state.num_not_improved_lr = 0
            self._save_params(C.PARAMS_BEST_NAME)
        else:
            state.num_not_improved += 1
            state.num_not_improved_lr += 1
            if 0 < config.learning_rate_reduce_num_not_improved <= state.num_not_improved_lr:
                state.learning_rate *= config.learning_rate_reduce_factor
                state.num_not_improved_lr = 0
                self.trainer.set_learning_rate(state.learning_rate)
                logger.info("learning rate reduced to %g", state.learning_rate)
        if 0 <= config.max_num_checkpoint_not_improved <= state.num_not_improved:
            state.converged = True
        self.metrics.append(entry)
        state.eval_seconds = max(state.eval_seconds, time.time() - eval_start)
        state.interval_seconds = max(state.interval_seconds, time.time() - train_start)
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
        config, ctx = self.config, self.ctx
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
                                          config.label_smoothing, config.doubly_stochastic_attention_weight)
                losses.append(loss * (weight / total_tokens))
                nlls.append(nll * weight)
        autograd.backward(losses)
        nll = sum(x.asscalar() for x in nlls)   # waits for the forward pass only; the backward goes on
        self._check_update(sum(x.asscalar() for x in losses), nll)
        self._step_optimizer()
        self.state.train_nll += nll
        self.state.train_tokens += batch.num_tokens
        return len(batch)

    def _update_self_critical(self, batch) -> int:
        """One self-critical update on a batch of images (:meth:`SelfCritical.forward_backward`, then the optimizer
        step); returns the number of sampled captions."""
        assert self.self_critical is not None
        stats = self.self_critical.forward_backward(batch)
        self._check_update(stats.nll, stats.nll)
        self._step_optimizer()
        self.state.train_nll += stats.nll
        self.state.train_tokens += stats.tokens
        self.state.train_reward += stats.reward
        self.state.train_sequences += stats.captions
        return stats.captions

    def _check_update(self, loss: float, nll: float) -> None:
        """Check the loss and the negative log-likelihood of the update being made, before the optimizer applies it.

        :raises ImcapError: if either is NaN or infinite: the training diverged (:meth:`_diverged`).
        """
        if not (math.isfinite(loss) and math.isfinite(nll)):
            raise self._diverged("update %d: the training loss is %s (negative log-likelihood %s)"
                                 % (self.state.updates + 1, loss, nll))

    def _diverged(self, what: str) -> ImcapError:
        """The error that stops a diverged training: ``what`` happened, nothing of it was saved, and what the model dir
        holds."""
        if not self.state.checkpoint:
            return ImcapError("%s: the training diverged and stopped; %s holds no checkpoint yet; try a lower learning "
                              "rate or gradient clipping threshold" % (what, self.dir))
        return ImcapError("%s: the training diverged and stopped without saving it; %s keeps checkpoint %d, from which "
                          "a run resumes; a lower learning rate or gradient clipping threshold needs a new model dir "
                          "(which can start from %s)" % (what, self.dir, self.state.checkpoint,
                                                         os.path.join(self.dir, C.PARAMS_BEST_NAME)))

    def _step_optimizer(self) -> None:
        """Gradient clipping, the learning-rate warm-up, then one optimizer step on the recorded gradients."""
        config, ctx = self.config, self.ctx
        if self.distributed is not None:
            self.distributed.step(config.gradient_clipping_threshold if config.gradient_clipping_type == "norm"
                                  else None, self._set_warmup_learning_rate)
            return
        if config.gradient_clipping_type == "norm":
            grads = [p.grad(c) for p in self.params.values() if p.grad_req != "null" for c in ctx]
            if len(ctx) == 1:
                gluon.utils.clip_global_norm(grads, config.gradient_clipping_threshold, check_isfinite=False)
            else:
                self._clip_norm_multi_device()
        self._set_warmup_learning_rate()
        self.trainer.step(1)

    def _set_warmup_learning_rate(self) -> None:
        """The learning rate of the next update during the warm-up (and the full one right after it)."""
        config = self.config
        if self.state.updates < config.learning_rate_warmup:   # state.updates counts the updates done before this one
            self.trainer.set_learning_rate(self.state.learning_rate * (self.state.updates + 1)
                                           / config.learning_rate_warmup)
        elif config.learning_rate_warmup and self.state.updates == config.learning_rate_warmup:
            self.trainer.set_learning_rate(self.state.learning_rate)

    def _clip_norm_multi_device(self) -> None:
        """Clip the norm of the gradient summed over devices, identically on every device."""
        params = [p for p in self.params.values() if p.grad_req != "null"]
        total = 0.0
        for p in params:
            summed = sum(g.as_in_context(mx.cpu()) for g in p.list_grad())
            total += float((summed ** 2).sum().asscalar())
        norm = math.sqrt(total)
        if norm > self.config.gradient_clipping_threshold:
            scale = self.config.gradient_clipping_threshold / norm
            for p in params:
                for g in p.list_grad():
                    g *= scale

    def _skip_empty_batch(self) -> None:
        """Pass over a batch the data left without pairs: no update, the data position moves on.

        :raises ImcapError: under a dist kvstore, whose workers must make every update together.
        """
        check_condition(not self.workers.distributed, "batch %d of epoch %d has no pair left (their features contain "
                        "NaN or infinite values; see the warnings): a dist kvstore cannot skip it; remove those lines "
                        "from the training data" % (self.state.batch_in_epoch, self.state.epoch))
        logger.warning("batch %d of epoch %d skipped: no pair left", self.state.batch_in_epoch, self.state.epoch)
        self.state.batch_in_epoch += 1

    def _should_stop(self) -> bool:
        config, state = self.config, self.state
        return (state.converged or (config.max_updates is not None and state.updates >= config.max_updates)
                or (config.max_num_epochs is not None and state.epoch >= config.max_num_epochs)
                or self._out_of_time(0.0))

    def _out_of_time(self, running: float) -> bool:
        """Whether ``running`` seconds since the last checkpoint exhaust ``max_seconds``, with the longest
        checkpoint so far kept in reserve so that the last one still ends within the budget. Under a dist kvstore
        the workers must stop together, so the budget is checked at checkpoints only, on the state rank 0 broadcast:
        out of time when one more interval as long as the longest so far (its checkpoint included) would not fit
        (``running`` is ignored)."""
        budget, state = self.config.max_seconds, self.state
        if budget is None:
            return False
        if self.workers.distributed:
            return state.elapsed + state.interval_seconds >= budget
        return state.elapsed + running + state.eval_seconds >= budget

    def _fit(self, progress: TrainingProgress) -> None:
        """The loop of :meth:`fit`: epochs of updates, a checkpoint every ``checkpoint_interval`` updates and at
        every stop."""
        config, state = self.config, self.state
        seed = config.seed + self.workers.rank * C.RANK_SEED_STRIDE   # workers draw other dropout masks and samples
        seed_checkpoint_interval(seed, state.checkpoint)
        start = time.time()
        progress.start_interval(state)
        while not self._should_stop():
            for batch in self.batcher.iter_epoch(state.epoch, state.batch_in_epoch):
                if len(batch) == 0:   # every pair's features held NaN or infinite values (the data warned)
                    self._skip_empty_batch()
                    continue
                samples = self._update_self_critical(batch) if config.self_critical else self._update(batch)
                state.samples += samples
                state.updates += 1
                state.batch_in_epoch += 1
                progress.update(state, samples)
                out_of_time = not self.workers.distributed and self._out_of_time(time.time() - start)
                if state.updates % config.checkpoint_interval == 0 or out_of_time or \
                        (config.max_updates is not None and state.updates >= config.max_updates):
                    progress.close()
                    self.checkpoint(start)
                    start = time.time()
                    seed_checkpoint_interval(seed, state.checkpoint)
                    if self._should_stop():
                        break
                    progress.start_interval(state)
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
                if config.max_num_epochs is not None and state.epoch >= config.max_num_epochs:
                    # the stop must leave a checkpoint of the final weights
                    progress.close()
                    if state.updates % config.checkpoint_interval != 0:
                        self.checkpoint(start)
                    break
        progress.close()

    def fit(self) -> TrainingState:
        """Train until a stopping criterion holds (convergence, ``max_updates``, ``max_num_epochs``,
        ``max_seconds``), checkpointing on the way; return the final state. A model dir whose training has
        already stopped is left as it is.

        :raises ImcapError: if the training diverges (:meth:`_check_update`, :meth:`_check_checkpoint`): the model
            dir then holds its last good checkpoint, from which a run resumes; if a feature file cannot be read (read
            lazily); or, under a dist kvstore, if a batch is left without any pair.
        """
        config, state = self.config, self.state
        if self._should_stop():
            logger.info("nothing to do: the training in %s has already stopped", self.dir)
            return state
        progress = TrainingProgress(config, self.progress_bar)
        with console_logging_above_bar():
            try:
                self._fit(progress)
            finally:
                progress.close()
        logger.info("training stopped after %d updates (%d epochs, %.0f s); best checkpoint %d (%s %.4f)",
                    state.updates, state.epoch, state.elapsed, state.best_checkpoint, config.optimized_metric,
                    state.best_metric if state.best_metric is not None else float("nan"))
        return state
