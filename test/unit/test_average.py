"""Checkpoint averaging picks the right checkpoints and averages element-wise."""
import os

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401
from imcap import constants as C
from imcap.average import average, main, select_checkpoints
from imcap.metrics_file import write_metrics
from imcap.utils import ImcapError


@pytest.fixture
def model_dir(tmp_path):
    """Four checkpoints whose only parameter is filled with the checkpoint number."""
    perplexities = {1: 30.0, 2: 20.0, 3: 25.0, 4: 22.0}
    bleus = {1: 10.0, 2: 14.0, 3: 15.0, 4: 12.0}
    for n in perplexities:
        mx.nd.save(str(tmp_path / (C.PARAMS_NAME % n)), {"w": mx.nd.full((2, 3), n), "b": mx.nd.full((3,), -n)})
    write_metrics(str(tmp_path / C.METRICS_NAME),
                  [{"checkpoint": n, "updates": 10 * n, "perplexity-val": perplexities[n], "bleu-val": bleus[n]}
                   for n in perplexities])
    return str(tmp_path)


def names(paths):
    return [os.path.basename(p) for p in paths]


def test_best_by_perplexity_lowest_first(model_dir):
    assert names(select_checkpoints(model_dir, 2)) == ["params.00002", "params.00004"]


def test_best_by_bleu_highest_first(model_dir):
    assert names(select_checkpoints(model_dir, 2, metric="bleu-val")) == ["params.00002", "params.00003"]


def test_last(model_dir):
    assert names(select_checkpoints(model_dir, 3, strategy="last")) == ["params.00002", "params.00003",
                                                                         "params.00004"]


def test_deleted_checkpoints_are_skipped(model_dir):
    os.remove(os.path.join(model_dir, "params.00002"))
    assert names(select_checkpoints(model_dir, 2)) == ["params.00003", "params.00004"]


def test_average_is_elementwise_mean(model_dir):
    averaged = average(select_checkpoints(model_dir, 2))
    np.testing.assert_allclose(averaged["w"].asnumpy(), np.full((2, 3), 3.0))
    np.testing.assert_allclose(averaged["b"].asnumpy(), np.full((3,), -3.0))


def test_cli_writes_params_avg(model_dir):
    main([model_dir, "-n", "4", "--quiet"])
    averaged = mx.nd.load(os.path.join(model_dir, "params.avg"))
    np.testing.assert_allclose(averaged["w"].asnumpy(), np.full((2, 3), 2.5))


def test_unknown_metric_and_empty_dir_are_errors(model_dir, tmp_path_factory):
    with pytest.raises(ImcapError, match="metric 'cider-val'"):
        select_checkpoints(model_dir, 2, metric="cider-val")
    with pytest.raises(ImcapError, match="no checkpoint"):
        select_checkpoints(str(tmp_path_factory.mktemp("empty")), 2)
