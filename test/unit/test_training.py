"""The pieces of training that need no data: TrainerConfig, the losses, the self-critical baseline, per-checkpoint
seeding, and the mapping of imcap.train's options onto TrainerConfig."""
import dataclasses
import os

import mxnet as mx
import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.loss import policy_gradient_loss
from imcap.self_critical import gumbel_max_sample, leave_one_out_baseline
from imcap.train import option_defaults, trainer_config_from_args
from imcap.training import TrainerConfig, TrainingState
from imcap.utils import ImcapError, seed_checkpoint_interval
from test.unit.decoding_checks import parse_training_args


def test_trainer_config_defaults_are_the_command_line_defaults():
    defaults = option_defaults()
    for field in dataclasses.fields(TrainerConfig):
        assert field.name in defaults, field.name
        assert getattr(TrainerConfig(), field.name) == defaults[field.name], field.name


def test_trainer_config_from_args(tmp_path):
    args = parse_training_args(tmp_path, "--batch-size", "8", "--loss", "self-critical", "--max-seconds", "60",
                               "--optimized-metric", "cider", "--decode-and-evaluate", "-1", "--seed", "4")
    config = trainer_config_from_args(args)
    assert (config.batch_size, config.loss, config.max_seconds, config.optimized_metric) == \
        (8, C.LOSS_SELF_CRITICAL, 60, C.METRIC_CIDER)
    assert config.self_critical and config.decode_and_evaluate == -1 and config.seed == 4
    assert TrainerConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("settings, message", [
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(checkpoint_interval=0), "checkpoint_interval must be >= 1"),
    (dict(label_smoothing=-0.1), "label_smoothing must be >= 0"),
    (dict(self_critical_samples=1), "self_critical_samples must be >= 2"),
    (dict(loss="mse"), "loss must be one of"),
    (dict(gradient_clipping_type="value"), "gradient_clipping_type must be one of"),
    (dict(optimized_metric="bleu"), "optimized_metric bleu needs decode_and_evaluate"),
])
def test_trainer_config_refuses_bad_settings(settings, message):
    with pytest.raises(ImcapError, match=message):
        TrainerConfig(**settings)


def test_trainer_config_accepts_bleu_with_decoding():
    assert TrainerConfig(optimized_metric="bleu", decode_and_evaluate=5).optimized_metric == "bleu"


def test_training_state_round_trips():
    state = TrainingState(0.5)
    state.updates, state.best_metric, state.converged = 7, 12.5, True
    again = TrainingState.from_json(state.to_json())
    assert {k: getattr(again, k) for k in TrainingState.FIELDS} == {k: getattr(state, k) for k in TrainingState.FIELDS}


def test_leave_one_out_baseline():
    rewards = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    np.testing.assert_allclose(leave_one_out_baseline(rewards), [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]])
    with pytest.raises(ImcapError, match="at least 2 samples"):
        leave_one_out_baseline(np.ones((2, 1)))


def test_gumbel_max_sampling_follows_the_softmax():
    """Draws from softmax(logits), never a blocked word (-1e9) nor an index past the row, even where the softmax's
    float32 sum falls short of 1 (the case in which mx.nd.random.multinomial returned an index == vocabulary size
    and stopped a self-critical run)."""
    mx.random.seed(3)
    probabilities = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = np.log(np.maximum(probabilities, 1e-30))[None].repeat(40000, axis=0)
    logits[:, 4] = -1e9
    drawn = gumbel_max_sample(mx.nd.array(logits)).asnumpy().astype(int)
    assert drawn.min() >= 0 and drawn.max() <= 3
    np.testing.assert_allclose(np.bincount(drawn, minlength=5) / len(drawn), probabilities, atol=0.01)
    # many rows of near-uniform logits over a large vocabulary: every index drawn stays inside it
    wide = gumbel_max_sample(mx.nd.random.normal(scale=1e-3, shape=(2000, 2539))).asnumpy()
    assert wide.min() >= 0 and wide.max() < 2539 and len(np.unique(wide)) > 1000


def test_policy_gradient_loss():
    """-mean_i advantage_i * sum_t log p(w_it) under the softmax without the blocked words; padding not counted."""
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    sampled = np.array([[4, 3, 0], [2, 4, 3]], dtype=np.float32)
    advantage = np.array([1.5, -0.5], dtype=np.float32)
    blocked = np.zeros((1, 5), dtype=np.float32)
    blocked[0, :2] = -1e9  # <pad>, <unk> never written
    loss, nll = policy_gradient_loss(*[mx.nd.array(x) for x in (logits, sampled, advantage, blocked)])
    allowed = logits[..., 2:]
    log_probs = allowed - np.log(np.exp(allowed).sum(axis=-1, keepdims=True))
    token = np.array([[log_probs[i, t, int(w) - 2] if w else 0.0 for t, w in enumerate(row)]
                      for i, row in enumerate(sampled)])
    assert loss.asscalar() == pytest.approx(-(token.sum(axis=1) * advantage).mean(), rel=1e-5)
    assert nll.asscalar() == pytest.approx(-token.sum(), rel=1e-5)


def test_seed_checkpoint_interval_gives_the_streams_of_seed_plus_checkpoint():
    """The per-checkpoint reseeding draws what ``mx.random.seed(seed + n); np.random.seed(seed + n)`` drew (the
    streams of the model dirs written before it was one helper)."""
    mx.random.seed(13 + 2)
    np.random.seed(13 + 2)
    expected = mx.nd.random.uniform(shape=(5,)).asnumpy(), np.random.rand(5)
    seed_checkpoint_interval(13, 2)
    drawn = mx.nd.random.uniform(shape=(5,)).asnumpy(), np.random.rand(5)
    for a, b in zip(expected, drawn):
        np.testing.assert_array_equal(a, b)


def test_training_module_reads_no_command_line():
    with open(os.path.join(os.path.dirname(imcap.__file__), "training.py"), encoding="utf-8") as f:
        source = f.read()
    assert "argparse" not in source and "args." not in source
