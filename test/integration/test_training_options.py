"""Training options checked on the updates themselves, with a Trainer in the test process on the real subset."""
import mxnet as mx
import numpy as np
import pytest

import imcap.train
from imcap.utils import ImcapError
from test.common import requires_shared
from test.integration.conftest import parse_training_args, train_args

pytestmark = requires_shared

NO_NOISE = ["--rnn-dropout", "0", "--embed-dropout", "0", "--label-smoothing", "0"]


def sgd_updates(small_data, output, updates, *extra):
    """Run ``updates`` plain SGD updates (learning rate 0.5); return the trainer and the parameter changes."""
    args = parse_training_args(train_args(small_data, output, "--seed", "5", "--batch-size", "16", "--optimizer", "sgd",
                                          "--initial-learning-rate", "0.5", "--max-updates", str(updates),
                                          "--checkpoint-interval", "100", "--gradient-clipping-type", "none",
                                          "--quiet", *NO_NOISE, *extra))
    trainer = imcap.train.Trainer(args)
    params = trainer.model.collect_params()
    initial = {name: p.data().asnumpy().copy() for name, p in params.items()}
    trainer.fit()
    return trainer, {name: p.data().asnumpy() - initial[name] for name, p in params.items()}


def test_learning_rate_warmup_scales_the_first_updates(small_data, tmp_path, restore_logging):
    # SGD without momentum moves by lr * gradient: the first of 4 warm-up updates is a quarter of a plain one
    _, plain = sgd_updates(small_data, str(tmp_path / "plain"), 1)
    _, warm = sgd_updates(small_data, str(tmp_path / "warm"), 1, "--learning-rate-warmup", "4")
    largest = max(np.abs(u).max() for u in plain.values())
    assert largest > 1e-3
    for name in plain:
        np.testing.assert_allclose(warm[name], plain[name] / 4, rtol=1e-4, atol=1e-6 * largest, err_msg=name)
    # after the warm-up, the learning rate is the schedule's again
    trainer, _ = sgd_updates(small_data, str(tmp_path / "after"), 5, "--learning-rate-warmup", "4")
    assert trainer.trainer.learning_rate == pytest.approx(0.5)
    assert trainer.state.learning_rate == pytest.approx(0.5)


def test_self_critical_training_raises_the_reward_of_its_samples(small_data, tmp_path, restore_logging):
    """On the 20 training images of the subset, self-critical updates (from a cross-entropy start, --params) make
    the sampled captions score a much higher CIDEr-D against those images' references."""
    start = str(tmp_path / "start")
    imcap.train.Trainer(parse_training_args(train_args(
        small_data, start, "--seed", "3", "--batch-size", "20", "--max-updates", "60", "--checkpoint-interval", "60",
        "--quiet"))).fit()
    args = parse_training_args(train_args(
        small_data, str(tmp_path / "scst"), "--seed", "3", "--params", start + "/params.best", "--loss",
        "self-critical", "--batch-size", "40", "--initial-learning-rate", "0.001", "--max-updates", "180",
        "--checkpoint-interval", "60", "--quiet"))
    trainer = imcap.train.Trainer(args)
    assert len(trainer.batcher.rows) == 20 and len(trainer.batcher) == 3   # 8 images (40 samples) per batch
    reference = mx.nd.load(start + "/params.best")   # saved under the structural names of save_parameters
    for name, param in trainer.model._collect_params_with_prefix().items():
        np.testing.assert_array_equal(param.data().asnumpy(), reference[name].asnumpy(), err_msg=name)
    trainer.fit()
    rewards = [m["cider-train"] for m in trainer.metrics]
    # mean reward of the samples of each 60 updates (measured: 0.050, 0.067, 0.086)
    assert len(rewards) == 3 and rewards[0] < rewards[1] < rewards[2] and rewards[2] > 1.4 * rewards[0], rewards


def test_params_of_another_model_are_refused(small_data, tmp_path, restore_logging):
    start = str(tmp_path / "start")
    imcap.train.Trainer(parse_training_args(train_args(
        small_data, start, "--max-updates", "1", "--checkpoint-interval", "1", "--quiet"))).fit()
    args = parse_training_args(train_args(small_data, str(tmp_path / "other"), "--params", start + "/params.best",
                                          "--rnn-num-hidden", "32", "--quiet"))
    with pytest.raises(ImcapError, match="does not fit the model"):
        imcap.train.Trainer(args)
