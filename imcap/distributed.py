"""Distributed training on MXNet's parameter server: the kvstore of ps-lite built into the mxnet wheel
(``mx.kv.create("dist_sync")``), as Sockeye used it, and what the trainer needs on top of it.

A job is a scheduler, one or more servers and ``W`` workers (``python -m imcap.launch`` starts them and sets the
``DMLC_*`` variables each reads). Every worker runs the same training command; this module gives a worker

- its place in the job (:class:`WorkerGroup`: the kvstore, ``rank`` as MXNet assigns it, ``num_workers``),
- the batch sharding rule (:func:`shard_batches`): worker ``r`` takes batches ``r, r + W, r + 2W, ...`` of every
  epoch's batch list and the ragged tail of ``len % W`` batches is dropped, so that every worker does the same number
  of updates per epoch (a ``dist_sync`` push waits for every worker's: unequal counts would deadlock),
- agreement: :meth:`WorkerGroup.broadcast` (a JSON value from rank 0 to every worker) and :meth:`WorkerGroup.sum`
  (a small vector summed over the workers, ``dist_sync`` only).

A single-process training uses :data:`LOCAL`, the group of one worker, so the trainer has one code path.
"""
import functools
import json
import os
import sys
from typing import Any, List, Optional, Sequence

import mxnet as mx
import numpy as np

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
