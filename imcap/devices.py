"""Devices: one rule for every tool (``--device-ids``/``--use-cpu``, as Sockeye's ``utils.determine_context``).

``--device-ids -1`` (the default) means the first GPU where there is one, else the CPU; ``-N`` means the first N
GPUs; non-negative ids name GPUs. Without a GPU (or with ``--use-cpu``) there are as many CPU contexts as ids given
(several CPU contexts exercise data parallelism on one machine).
"""
from typing import List, Sequence

import mxnet as mx


def get_contexts(device_ids: Sequence[int] = (-1,), use_cpu: bool = False) -> List[mx.Context]:
    """The MXNet contexts that ``device_ids`` and ``use_cpu`` name (see the module docstring)."""
    if use_cpu or mx.context.num_gpus() == 0:
        return [mx.cpu(i) for i in range(max(1, len(device_ids)))]
    ids: List[int] = []
    for d in device_ids:
        ids.extend(range(-d) if d < 0 else [d])
    return [mx.gpu(i) for i in ids]


def get_context(device_ids: Sequence[int] = (-1,), use_cpu: bool = False) -> mx.Context:
    """The first of :func:`get_contexts` (for the tools that run on one device: captioning, extraction)."""
    return get_contexts(device_ids, use_cpu)[0]
