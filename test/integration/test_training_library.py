"""Training as a library: a :class:`imcap.training.Trainer` built from a :class:`TrainerConfig` and ready objects
(features, vocabulary, data, model, devices), no command line at all, on the real Flickr8k subset. It trains,
writes a model dir the captioner loads, resumes exactly, and does what ``imcap.train`` does with the same
settings."""
import os

import mxnet as mx
import numpy as np
import pytest

from imcap import constants as C
from imcap.data import ParallelData
from imcap.features import FeatureStore, read_manifest
from imcap.metrics_file import read_metrics
from imcap.model import ModelConfig, load_model
from imcap.rnn import RNNDecoderConfig
from imcap.encoder import EncoderConfig
from imcap.training import Trainer, TrainerConfig, build_model
from imcap.utils import read_lines
from imcap.vocab import build_vocab
from test.common import requires_shared
from test.integration.conftest import NUM_REFERENCES, parse_training_args, train_args

pytestmark = requires_shared

SETTINGS = dict(batch_size=16, checkpoint_interval=3, max_updates=6, decode_and_evaluate=4, seed=3)
# The same run through the command line (train_args adds conftest.TINY_MODEL, which model_config() mirrors).
CLI_OPTIONS = ["--batch-size", "16", "--checkpoint-interval", "3", "--max-updates", "6", "--decode-and-evaluate", "4",
               "--seed", "3", "--quiet"]
TIMING = {"time-elapsed", "samples-per-second"}


def model_config(vocab_size: int, manifest) -> ModelConfig:
    """conftest.TINY_MODEL as a config: an LSTM of 64 with MLP attention, 32-dimensional embeddings."""
    return ModelConfig(vocab_size=vocab_size, encoder=EncoderConfig(num_regions=49, feature_dim=1280, num_hidden=64),
                       decoder=RNNDecoderConfig(num_hidden=64, attention_num_hidden=64, num_embed=32,
                                                output_num_hidden=32, encoder_num_hidden=64),
                       num_embed=32, feature_extraction=manifest)


def library_trainer(small_data, output: str, **settings) -> Trainer:
    """A Trainer of the subset built from objects: the val split with all its references, the tiny model."""
    data, cache = small_data.data, small_data.cache
    train_store = FeatureStore(os.path.join(data, "train.features"), cache)
    val_store = FeatureStore(os.path.join(data, "val.features"), cache)
    train_captions = os.path.join(data, "train.captions")
    val_captions = [os.path.join(data, "val.captions.%d" % k) for k in range(NUM_REFERENCES)]
    vocab = build_vocab((line.split() for line in read_lines(train_captions)), min_count=1)
    config = TrainerConfig(**{**SETTINGS, **settings})
    contexts = [mx.cpu()]
    model = build_model(model_config(len(vocab), read_manifest(cache)), contexts, config.seed)
    return Trainer(config, model=model, vocab=vocab,
                   train_data=ParallelData(train_store, [train_captions], vocab, config.max_seq_len),
                   validation_data=ParallelData(val_store, val_captions, vocab, config.max_seq_len),
                   validation_references=[read_lines(p) for p in val_captions], output_dir=output, contexts=contexts)


def params_of(trainer: Trainer):
    return {name: p.data().asnumpy() for name, p in trainer.model._collect_params_with_prefix().items()}


def assert_same_run(a: Trainer, b: Trainer) -> None:
    """The same ``metrics`` files (but the timing columns) and the same final parameters."""
    metrics_a, metrics_b = (read_metrics(os.path.join(t.dir, C.METRICS_NAME)) for t in (a, b))
    assert [m["checkpoint"] for m in metrics_a] == [m["checkpoint"] for m in metrics_b] == [1, 2]
    for x, y in zip(metrics_a, metrics_b):
        assert sorted(x) == sorted(y)
        for key in set(x) - TIMING:
            assert y[key] == pytest.approx(x[key], rel=1e-5), (x["checkpoint"], key)
    params_a, params_b = params_of(a), params_of(b)
    assert sorted(params_a) == sorted(params_b)
    for name in params_a:
        np.testing.assert_allclose(params_b[name], params_a[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def library_run(small_data, tmp_path_factory):
    """6 updates, checkpoints every 3, of a Trainer built without a command line (which sets up no logging):
    the trainer after fit() and its initial parameters."""
    output = str(tmp_path_factory.mktemp("library") / "model")
    trainer = library_trainer(small_data, output)
    initial = params_of(trainer)
    trainer.fit()
    return trainer, initial


def test_trainer_from_objects_trains_and_writes_a_model_dir(library_run):
    trainer, initial = library_run
    state = trainer.state
    assert (state.updates, state.checkpoint) == (6, 2) and not trainer.resume
    assert [m["updates"] for m in trainer.metrics] == [3, 6]
    for entry in trainer.metrics:
        assert entry["perplexity-val"] > 1.0 and 0.0 <= entry["bleu-val"] <= 100.0 and entry["cider-val"] >= 0.0
    assert trainer.metrics[1]["perplexity-train"] < trainer.metrics[0]["perplexity-train"]
    moved = max(np.abs(trainer.model._collect_params_with_prefix()[name].data().asnumpy() - value).max()
                for name, value in initial.items())
    assert moved > 1e-3
    for name in ("config.yaml", "vocab.trg.json", "params.best", "params.00001", "params.00002", "metrics",
                 "decode.output.00002", os.path.join("training_state", "state.json")):
        assert os.path.isfile(os.path.join(trainer.dir, name)), name
    assert not os.path.exists(os.path.join(trainer.dir, "args.yaml"))   # the command line's, not the library's
    model, vocab = load_model(trainer.dir)   # what the captioner loads
    assert model.config == trainer.model.config and vocab.idx_to_token == trainer.vocab.idx_to_token


def test_library_trainer_resumes_exactly(small_data, library_run, tmp_path):
    whole, _ = library_run
    output = str(tmp_path / "model")
    library_trainer(small_data, output, max_updates=3).fit()
    resumed = library_trainer(small_data, output)   # max_updates 6: resumes from the checkpoint after update 3
    assert resumed.resume and resumed.state.updates == 3
    resumed.fit()
    assert_same_run(whole, resumed)


def test_library_trainer_does_what_the_command_line_does(small_data, library_run, tmp_path, restore_logging):
    import imcap.train
    library, _ = library_run
    cli = imcap.train.build_trainer(parse_training_args(train_args(small_data, str(tmp_path / "cli"), *CLI_OPTIONS)))
    assert cli.config == library.config and cli.model.config == library.model.config
    cli.fit()
    assert_same_run(library, cli)


def test_a_captioner_takes_the_trained_model_from_memory(library_run, small_data):
    """Captioner([trainer.model], vocab=trainer.vocab): the model fresh from fit() captions without a reload, as its
    last checkpoint loaded from disk does."""
    from imcap.inference import CaptionInput, Captioner
    from imcap.utils import ImcapError
    trainer, _ = library_run
    features = FeatureStore(os.path.join(small_data.data, "test.features"), small_data.cache, load_all_to_memory=True)
    inputs = [CaptionInput(features=features.features[i].astype(np.float32)) for i in range(4)]
    in_memory = Captioner([trainer.model], vocab=trainer.vocab, beam_size=3).caption(inputs)
    from_disk = Captioner(trainer.dir, "params.%05d" % trainer.state.checkpoint, beam_size=3).caption(inputs)
    assert [r.tokens for r in in_memory] == [r.tokens for r in from_disk]
    assert [r.score for r in in_memory] == pytest.approx([r.score for r in from_disk], rel=1e-5)
    assert all(r.tokens for r in in_memory)
    with pytest.raises(ImcapError, match="models in memory need their vocab"):
        Captioner([trainer.model])
    with pytest.raises(ImcapError, match="vocab is given with models in memory, not with model dirs"):
        Captioner(trainer.dir, vocab=trainer.vocab)
