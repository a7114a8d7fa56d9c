"""Distributed training on MXNet's parameter server: the kvstore of ps-lite built into the mxnet wheel
(``mx.kv.create("dist_sync")``), as Sockeye used it, and what the trainer needs on top of it.

A job is a scheduler, one or more servers and ``W`` workers (``python -m imcap.launch`` starts them and sets the
``DMLC_*`` variables each reads). Every worker runs the same training command; this module gives a worker

- its place in the job (:class:`WorkerGroup`: the kvstore, ``rank`` as MXNet assigns it, ``num_workers``),
- the batch sharding rule (:func:`shard_batches`): worker ``r`` takes batches ``r, r + W, r + 2W, ...`` of every
  epoch's batch list and the ragged tail of ``len % W`` batches is dropped, so that every worker does the same number
  of updates per epoch (a ``dist_sync`` push waits for every worker's: unequal counts would deadlock),
- agreement: :meth:`WorkerGroup.broadcast` (a JSON value from rank 0 to every worker) and :meth:`WorkerGroup.sum`
  (a small vector summed over the workers, ``dist_sync`` only),
- its updates (:class:`DistributedUpdates`): the kvstore's keys initialized before the first push, the gradients
  summed by the servers and clipped, the update applied, the seconds spent in the kvstore counted.

A single-process training uses :data:`LOCAL`, the group of one worker, so the trainer has one code path.
"""
import functools
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon

from . import constants as C
from .data import BucketBatcher, ImageBatcher
from .utils import ImcapError, check_condition


def is_distributed(kvstore: str) -> bool:
    """Whether ``kvstore`` names one of MXNet's parameter-server kvstores (``dist_sync``, ``dist_device_sync``,
    ``dist_async``)."""
    return kvstore.startswith("dist")


def check_kvstore_name(kvstore: str) -> None:
    """:raises ImcapError: unless ``kvstore`` is ``device``, ``local`` or one of :data:`C.DIST_KVSTORE_CHOICES`."""
    check_condition(kvstore in C.KVSTORE_CHOICES, "kvstore must be one of %s, not %r"
                    % (", ".join(C.KVSTORE_CHOICES), kvstore))


@functools.lru_cache(maxsize=None)
def create_kvstore(kvstore: str) -> mx.kv.KVStore:
    """The process's one distributed kvstore of type ``kvstore`` (ps-lite starts once per process, so every caller
    gets the same object). Blocks until the scheduler has registered every server and worker of the job, then
    writes :data:`C.RANK_ANNOUNCEMENT` to STDERR (``imcap.launch`` labels the worker's lines with that rank).

    :raises ImcapError: if ``kvstore`` is not a dist kvstore, or the process is no worker of a job (``DMLC_ROLE``
        is not ``worker``: start it with ``python -m imcap.launch``).
    """
    check_condition(is_distributed(kvstore), "%s is not a distributed kvstore" % kvstore)
    check_kvstore_name(kvstore)
    missing = [name for name in C.DMLC_WORKER_VARIABLES if not os.environ.get(name)]
    check_condition(not missing and os.environ.get("DMLC_ROLE") == "worker",
                    "--kvstore %s runs as a worker of a parameter-server job (DMLC_ROLE=worker and %s set): start "
                    "it with python -m imcap.launch -n WORKERS -- python -m imcap.train ..."
                    % (kvstore, ", ".join(C.DMLC_WORKER_VARIABLES[1:])))
    kv = mx.kv.create(kvstore)
    sys.stderr.write(C.RANK_ANNOUNCEMENT % (kv.rank, kv.num_workers) + "\n")
    sys.stderr.flush()
    return kv


def shard_batches(batches: Sequence[Any], rank: int, num_workers: int) -> List[Any]:
    """Worker ``rank``'s batches of an epoch: ``batches[rank], batches[rank + W], ...`` of the first
    ``len(batches) // W * W`` (the ragged tail is dropped; it changes every epoch since the order does), so every
    worker gets ``len(batches) // W`` batches.

    :raises ImcapError: if there are fewer batches than workers.
    """
    check_condition(0 <= rank < num_workers, "rank %d is not one of %d workers" % (rank, num_workers))
    usable = len(batches) // num_workers * num_workers
    check_condition(usable > 0, "an epoch has %d batches, fewer than the %d workers; use a smaller --batch-size"
                    % (len(batches), num_workers))
    return list(batches[rank:usable:num_workers])


class _Sharded:
    """A batcher whose epochs are one worker's shard (:func:`shard_batches`) of the batcher's own epochs."""
    rank: int
    num_workers: int

    def epoch_batches(self, epoch: int):  # type: ignore[no-untyped-def]
        return shard_batches(super().epoch_batches(epoch), self.rank, self.num_workers)  # type: ignore[misc]

    def __len__(self) -> int:
        return super().__len__() // self.num_workers  # type: ignore[misc]


class ShardedBucketBatcher(_Sharded, BucketBatcher):
    """:class:`imcap.data.BucketBatcher` of worker ``rank`` of ``num_workers``: each epoch its shard of the
    batches (the views of augmented features are drawn per ``(seed, epoch)`` for all pairs, as without sharding)."""

    def __init__(self, *args: Any, rank: int, num_workers: int, **kwargs: Any) -> None:
        self.rank, self.num_workers = rank, num_workers
        super().__init__(*args, **kwargs)


class ShardedImageBatcher(_Sharded, ImageBatcher):
    """:class:`imcap.data.ImageBatcher` (self-critical training) of worker ``rank`` of ``num_workers``."""

    def __init__(self, *args: Any, rank: int, num_workers: int, **kwargs: Any) -> None:
        self.rank, self.num_workers = rank, num_workers
        super().__init__(*args, **kwargs)


class WorkerGroup:
    """This process's place among the workers of a training.

    :param kvstore_name: a dist kvstore name (the process must be a worker of a job, see :func:`create_kvstore`),
        or ``None`` for a single process (:data:`LOCAL`).

    Attributes: ``kvstore`` (the ``mx.kv.KVStore``, ``None`` for one process), ``rank`` (0 .. ``num_workers - 1``,
    assigned by ps-lite's scheduler, not by launch order), ``num_workers``, ``synchronous`` (``dist_sync`` and
    ``dist_device_sync``: every update sums every worker's gradients; ``dist_async``: the servers apply each
    worker's push as it comes).
    """

    def __init__(self, kvstore_name: Optional[str] = None) -> None:
        self.name = kvstore_name
        self.kvstore = create_kvstore(kvstore_name) if kvstore_name is not None else None
        self.rank = self.kvstore.rank if self.kvstore is not None else 0
        self.num_workers = self.kvstore.num_workers if self.kvstore is not None else 1
        self.synchronous = kvstore_name is None or "async" not in kvstore_name
        self._next_key = C.DIST_RESERVED_KEY
        self._sum_key: Optional[int] = None

    @property
    def distributed(self) -> bool:
        """Whether there is a parameter-server job (even of one worker)."""
        return self.kvstore is not None

    @property
    def writes_files(self) -> bool:
        """Rank 0 alone writes the model dir."""
        return self.rank == 0

    def _new_key(self) -> int:
        # every worker makes the same calls in the same order, so the reserved keys agree without communication
        key = self._next_key
        self._next_key += 1
        return key

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (anything JSON can carry) on every worker: rank 0 initializes a new reserved key with
        the value's UTF-8 JSON bytes, ps-lite's init ends with a barrier of all workers, then every worker pulls it.
        Every worker must call it at the same point (it is a barrier); the value of other ranks is ignored.

        :raises ImcapError: if the JSON of rank 0's value is longer than :data:`C.DIST_BROADCAST_BYTES`.
        """
        if self.kvstore is None:
            return value
        size = C.DIST_BROADCAST_BYTES
        buffer = np.zeros(size + 1, dtype=np.float32)     # [length, byte, byte, ...]: float32 holds 0-255 exactly
        if self.rank == 0:
            data = json.dumps(value).encode("utf-8")
            check_condition(len(data) <= size, "a broadcast of %d bytes exceeds %d" % (len(data), size))
            buffer[0] = len(data)
            buffer[1:1 + len(data)] = np.frombuffer(data, dtype=np.uint8)
        out = mx.nd.zeros(buffer.shape)
        self.kvstore.broadcast(self._new_key(), mx.nd.array(buffer), out=out)
        received = out.asnumpy()
        length = int(received[0])
        return json.loads(received[1:1 + length].astype(np.uint8).tobytes().decode("utf-8"))

    def sum(self, values: Sequence[float]) -> np.ndarray:
        """``values (n,)`` summed over the workers (float32), through one reserved key pushed and pulled by every
        worker (the servers sum the pushes of a ``dist_sync`` round); the same call on every worker, each time with
        the same ``n``.

        :raises ImcapError: under ``dist_async`` (its servers apply the optimizer to every push; nothing is summed).
        """
        array = np.asarray(values, dtype=np.float32)
        if self.kvstore is None:
            return array
        check_condition(self.synchronous, "%s sums no values over the workers" % self.name)
        if self._sum_key is None:
            self._sum_key = self._new_key()
            self.kvstore.init(self._sum_key, mx.nd.zeros(array.shape))
        data = mx.nd.array(array)
        self.kvstore.pushpull(self._sum_key, data, out=data)
        return data.asnumpy()


#: the group of one worker: a training in one process
LOCAL = WorkerGroup(None)


@functools.lru_cache(maxsize=None)
def worker_group(kvstore: str) -> WorkerGroup:
    """The :class:`WorkerGroup` of a training with ``kvstore``: a job's for a dist kvstore (one per process: its
    reserved keys are counted in it), :data:`LOCAL` else.

    :raises ImcapError: as :func:`create_kvstore`, or on an unknown kvstore name.
    """
    check_kvstore_name(kvstore)
    if not is_distributed(kvstore):
        return LOCAL
    try:
        return WorkerGroup(kvstore)
    except mx.base.MXNetError as e:
        raise ImcapError("kvstore %s: %s" % (kvstore, str(e).splitlines()[0]))


def make_trainer(workers: WorkerGroup, params: Any, optimizer: str, optimizer_params: Dict[str, Any], kvstore: str,
                 num_devices: int) -> gluon.Trainer:
    """The ``gluon.Trainer`` of a worker: on a dist kvstore synchronous workers let the servers only sum, and each
    applies the same update to the same parameters (clipping the summed gradient); asynchronous ones let the servers
    update (gluon allows nothing else). Without one, ``kvstore`` (``device``, ``local``) sums the gradients of the
    process's devices, if it has several."""
    if workers.distributed:
        return gluon.Trainer(params, optimizer, optimizer_params, kvstore=workers.kvstore,
                             update_on_kvstore=not workers.synchronous)
    return gluon.Trainer(params, optimizer, optimizer_params, kvstore=kvstore if num_devices > 1 else None)


class DistributedUpdates:
    """The updates of one worker of a dist kvstore, made with ``trainer`` (:func:`make_trainer`) on ``params``
    (``gluon.ParameterDict``) on the devices ``ctx``.

    :attr bytes_per_update: the bytes of gradients a worker pushes to the servers per update (as many are pulled).
    :attr seconds: the seconds spent in the kvstore's push and pull since the caller last reset it.
    """

    def __init__(self, workers: WorkerGroup, trainer: gluon.Trainer, params: Any, ctx: Sequence[mx.Context]) -> None:
        self.workers, self.trainer, self.ctx = workers, trainer, list(ctx)
        self.params = [p for p in params.values() if p.grad_req != "null"]
        self.bytes_per_update = 4 * sum(p.data(self.ctx[0]).size for p in self.params)
        self.seconds = 0.0

    def init_kvstore(self) -> None:
        """Initialize the dist kvstore's keys with the parameters (rank 0's values, pulled by every worker) and wait
        for the pulls, before any gradient is pushed. MXNet 1.9.1's ``gluon.Trainer`` does it lazily inside the
        first ``allreduce_grads``/``step``, queueing each key's init-and-pull just before that key's first gradient
        pushpull; the engine may send the push first, and when every worker's push reaches the servers before a
        worker's pull, that worker pulls the summed gradient as the parameter (seen as the word embedding of rank 0
        holding a gradient after update 1, in 2 runs of 10 alike). Resumed runs call it too, after the checkpoint's
        parameters are loaded.

        :raises ImcapError: if a parameter's shape is still unknown.
        """
        trainer = self.trainer
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        check_condition(not trainer._params_to_init, "parameters of unknown shape: %s"
                        % [p.name for p in trainer._params_to_init])
        mx.nd.waitall()

    def step(self, clip_norm: Optional[float], before_update: Callable[[], None]) -> None:
        """One update. Synchronous: the servers sum the gradients of the ``W`` workers (each the mean over its own
        batch's tokens), every device of every worker then holds that sum; its global norm is clipped to ``W x
        clip_norm`` (None: no clipping), ``before_update`` runs (e.g. the learning-rate warm-up), and every worker
        applies the update of the mean ``sum / W`` (``rescale_grad = 1 / W``) to its copy of the (identical)
        parameters. Asynchronous: the worker pushes its gradients and pulls the servers' updated parameters
        (``gluon.Trainer.step``)."""
        mx.nd.waitall()   # the backward pass is done: the time below is the kvstore's
        start = time.time()
        if not self.workers.synchronous:
            self.trainer.step(1)
            mx.nd.waitall()
            self.seconds += time.time() - start
            return
        self.trainer.allreduce_grads()
        mx.nd.waitall()
        self.seconds += time.time() - start
        if clip_norm is not None:
            self._clip(clip_norm * self.workers.num_workers)
        before_update()
        self.trainer.update(self.workers.num_workers)

    def _clip(self, threshold: float) -> None:
        """Clip the global norm of the summed gradient, identically on every device."""
        norm = gluon.utils.clip_global_norm([p.grad(self.ctx[0]) for p in self.params], threshold,
                                            check_isfinite=False)
        if len(self.ctx) > 1 and norm > threshold:
            for p in self.params:
                for g in p.list_grad()[1:]:
                    g *= threshold / norm
