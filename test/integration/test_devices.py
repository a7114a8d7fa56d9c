"""Data parallelism of ``imcap.training.Trainer``: the same updates on one CPU context and on two CPU contexts (the
batch split between them, gradients summed by the kvstore) give the same parameters."""
import os

import mxnet as mx
import numpy as np
import pytest

import imcap.train
from imcap.devices import get_contexts
from test.common import requires_shared
from test.integration.conftest import parse_training_args as parse, train_args

pytestmark = requires_shared

NO_NOISE = ["--rnn-dropout", "0", "--embed-dropout", "0", "--label-smoothing", "0"]
MAX_UPDATES = 3


def train(small_data, output, optimizer, device_ids):
    """Train ``MAX_UPDATES`` updates; return the trainer, the initial and the final parameters (on every
    context)."""
    args = parse(train_args(small_data, output, "--seed", "5", "--batch-size", "16", "--optimizer", optimizer,
                            "--initial-learning-rate", "0.001" if optimizer == "adam" else "0.5",
                            "--max-updates", str(MAX_UPDATES), "--checkpoint-interval", str(MAX_UPDATES), "--quiet",
                            "--use-cpu", "--device-ids", *[str(i) for i in device_ids], *NO_NOISE))
    assert get_contexts(args.device_ids, args.use_cpu) == [mx.cpu(i) for i in range(len(device_ids))]
    trainer = imcap.train.build_trainer(args)
    params = trainer.model.collect_params()
    initial = {name: p.data(trainer.ctx[0]).asnumpy().copy() for name, p in params.items()}
    trainer.fit()
    final = {name: [d.asnumpy() for d in p.list_data()] for name, p in params.items()}
    return trainer, initial, final


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_two_devices_train_like_one(small_data, tmp_path, restore_logging, optimizer):
    one, initial_one, final_one = train(small_data, str(tmp_path / "one"), optimizer, [0])
    two, initial_two, final_two = train(small_data, str(tmp_path / "two"), optimizer, [0, 1])
    assert len(two.ctx) == 2
    # a batch smaller than the number of devices leaves a device without rows: that case is covered
    sizes = [len(b) for b in two.batcher.epoch_batches(0)[:MAX_UPDATES]]
    assert min(sizes) < len(two.ctx), "no batch of one caption among the first updates: %s" % sizes
    assert one.state.updates == two.state.updates == MAX_UPDATES
    assert sorted(final_one) == sorted(final_two)
    moved = 0.0
    for name in final_one:
        np.testing.assert_array_equal(initial_one[name], initial_two[name], err_msg=name)  # same initialization
        assert len(final_two[name]) == 2
        np.testing.assert_array_equal(final_two[name][0], final_two[name][1], err_msg=name)  # copies in sync
        a, b = final_one[name][0], final_two[name][0]
        scale = max(np.abs(a).max(), 1e-3)
        assert np.abs(a - b).max() <= 1e-4 * scale, "%s differs by %g (scale %g)" % (name, np.abs(a - b).max(), scale)
        moved = max(moved, np.abs(a - initial_one[name]).max() / scale)
        if optimizer == "sgd":  # its update is proportional to the gradient: compare the updates themselves
            update = a - initial_one[name]
            assert np.abs(update - (b - initial_one[name])).max() <= 1e-3 * max(np.abs(update).max(), 1e-6), name
    assert moved > 1e-2  # the updates changed the parameters far beyond the tolerance
    # the checkpoint's metrics count every caption once (the placeholder row of an idle device not at all)
    m_one, m_two = one.metrics[-1], two.metrics[-1]
    for key in ("perplexity-train", "perplexity-val"):
        assert m_two[key] == pytest.approx(m_one[key], rel=1e-5), key
    for name in ("params.00001", "params.best"):
        saved_one = mx.nd.load(os.path.join(str(tmp_path / "one"), name))
        saved_two = mx.nd.load(os.path.join(str(tmp_path / "two"), name))
        for key in saved_one:
            a, b = saved_one[key].asnumpy(), saved_two[key].asnumpy()
            assert np.abs(a - b).max() <= 1e-4 * max(np.abs(a).max(), 1e-3), key
