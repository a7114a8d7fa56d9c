"""Checkpoint averaging: ``python -m imcap.average MODEL_DIR -n 4 --output MODEL_DIR/params.avg``.

Averages the parameters of the N best checkpoints of a model dir (by a metric of its ``metrics`` file) or of the
N last ones; the average usually decodes better than any single checkpoint (Junczys-Dowmunt et al. 2016;
Vaswani et al. 2017). After Sockeye's ``average.py``.
"""
import argparse
import logging
import os
from typing import Dict, List, Optional

import mxnet as mx

from . import arguments
from . import constants as C
from .metrics_file import read_metrics
from .utils import atomic_path, check_condition

logger = logging.getLogger("imcap.average")


def select_checkpoints(model_dir: str, n: int, strategy: str = "best",
                       metric: str = "perplexity-val") -> List[str]:
    """Paths of the ``n`` checkpoints to average: best by ``metric`` (lower is better for perplexity, higher for
    BLEU and CIDEr-D) or the ``n`` last. Checkpoints whose params file was deleted are skipped.

    :raises ImcapError: if the model dir has no usable checkpoint, or the metric is not in its metrics file.
    """
    metrics_path = os.path.join(model_dir, C.METRICS_NAME)
    entries = [e for e in (read_metrics(metrics_path) if os.path.isfile(metrics_path) else [])
               if os.path.isfile(os.path.join(model_dir, C.PARAMS_NAME % e["checkpoint"]))]
    check_condition(len(entries) > 0, "%s: no checkpoint with a params file and a metrics line" % model_dir)
    if strategy == "best":
        check_condition(all(metric in e for e in entries), "%s: metric '%s' is not in every metrics line"
                        % (model_dir, metric))
        check_condition(all(isinstance(e[metric], (int, float)) for e in entries), "%s: metric '%s' is not a "
                        "number in every metrics line" % (model_dir, metric))
        sign = 1.0 if metric.startswith("perplexity") else -1.0   # lower perplexity, higher BLEU / CIDEr-D is better
        entries = sorted(entries, key=lambda e: (sign * float(e[metric]), -int(e["checkpoint"])))
    else:
        entries = sorted(entries, key=lambda e: -int(e["checkpoint"]))
    chosen = sorted(e["checkpoint"] for e in entries[:n])
    return [os.path.join(model_dir, C.PARAMS_NAME % c) for c in chosen]


def average(paths: List[str]) -> Dict[str, mx.nd.NDArray]:
    """Element-wise mean of the parameter files ``paths`` (``mx.nd.load`` dicts with the same names).

    :raises ImcapError: if the files hold different parameters.
    """
    total: Dict[str, mx.nd.NDArray] = {}
    for path in paths:
        params = mx.nd.load(path)
        check_condition(not total or set(params) == set(total), "%s has other parameters than %s"
                        % (path, paths[0]))
        for k, v in params.items():
            total[k] = total[k] + v if k in total else v.copy()
    return {k: v / len(paths) for k, v in total.items()}


def run_average(args: argparse.Namespace) -> List[str]:
    """Write the average; return the averaged checkpoint paths."""
    paths = select_checkpoints(args.model, args.n, args.strategy, args.metric)
    logger.info("averaging %s", ", ".join(os.path.basename(p) for p in paths))
    averaged = average(paths)
    output = args.output or os.path.join(args.model, "params.avg")
    with atomic_path(output) as tmp:
        mx.nd.save(tmp, averaged)
    logger.info("wrote %s", output)
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line and average."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    parser.add_argument("model", help="Model directory.")
    parser.add_argument("-n", type=arguments.int_greater_or_equal(1), default=4, help="Checkpoints to average.")
    parser.add_argument("--strategy", choices=["best", "last"], default="best",
                        help="The n best checkpoints by --metric, or the n last.")
    parser.add_argument("--metric", default="perplexity-val",
                        help="Metrics-file column that ranks checkpoints (perplexity-val, bleu-val, ...).")
    parser.add_argument("--output", "-o", default=None, help="Output params file. Default: MODEL/params.avg.")
    arguments.add_logging_args(parser)
    arguments.cli_main(parser, run_average, argv)


if __name__ == "__main__":
    main()
