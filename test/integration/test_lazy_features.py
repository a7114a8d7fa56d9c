"""Lazily read features train the same model as features loaded into memory: the session's pipeline model (trained
with imcap.train's default, lazy reading) and the same training with ``--load-all-features-to-memory`` write the
same ``metrics`` (perplexities, validation BLEU and CIDEr-D) and the same parameters."""
import os

from test.integration.conftest import PIPELINE_TRAIN_OPTIONS, read_lines, run_cli, train_args

TIMING_COLUMNS = ("time-elapsed", "samples-per-second")


def metric_values(model_dir):
    """Per checkpoint line of ``metrics``, its ``key=value`` fields but the timings."""
    rows = []
    for line in read_lines(os.path.join(model_dir, "metrics")):
        fields = line.split("\t")
        rows.append([fields[0]] + [f for f in fields[1:] if f.split("=", 1)[0] not in TIMING_COLUMNS])
    return rows


def test_lazy_and_loaded_training_write_the_same_metrics(small_data, model, tmp_path):
    assert "--load-all-features-to-memory" not in model.args
    loaded_dir = str(tmp_path / "loaded")
    run_cli("train", *train_args(small_data, loaded_dir, *PIPELINE_TRAIN_OPTIONS), "--load-all-features-to-memory")
    lazy, loaded = metric_values(model.dir), metric_values(loaded_dir)
    assert len(lazy) == 3 and any(f.startswith("cider-val=") for f in lazy[0])
    assert lazy == loaded
    with open(os.path.join(model.dir, "params.best"), "rb") as a, \
            open(os.path.join(loaded_dir, "params.best"), "rb") as b:
        assert a.read() == b.read()
    assert any("loaded into memory" in line for line in read_lines(os.path.join(loaded_dir, "log")))
    assert any("checked (read lazily)" in line for line in read_lines(os.path.join(model.dir, "log")))
