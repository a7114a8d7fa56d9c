"""Resumption of ``imcap.train``: a run killed with SIGKILL and started again with the same command ends exactly
where an uninterrupted run ends (same metrics, same parameters); a changed setting is refused."""
import os
import signal
import subprocess
import time

import mxnet as mx
import numpy as np
import pytest

from test.common import requires_shared
from test.integration.conftest import REPO, cli_command, cli_env, read_lines, run_cli, train_args

pytestmark = requires_shared

RESUME_OPTIONS = ["--seed", "3", "--batch-size", "16", "--checkpoint-interval", "4", "--max-updates", "16",
                  "--decode-and-evaluate", "0", "--quiet"]
NUM_CHECKPOINTS = 4
# Columns that measure the machine, not the training.
TIMING_COLUMNS = {"time-elapsed", "samples-per-second"}


def metrics_columns(path: str):
    """Each metrics line as ``[checkpoint, {key: value}]``."""
    rows = []
    for line in read_lines(path):
        fields = line.split("\t")
        rows.append([int(fields[0]), dict(field.split("=", 1) for field in fields[1:])])
    return rows


def assert_same_metrics(expected_path: str, actual_path: str) -> None:
    expected, actual = metrics_columns(expected_path), metrics_columns(actual_path)
    assert [n for n, _ in actual] == [n for n, _ in expected] == list(range(1, NUM_CHECKPOINTS + 1))
    for (n, want), (_, got) in zip(expected, actual):
        assert sorted(got) == sorted(want), "checkpoint %d has other columns" % n
        for key in want:
            if key in TIMING_COLUMNS:
                continue
            try:
                a, b = float(want[key]), float(got[key])
            except ValueError:
                assert got[key] == want[key], (n, key)
                continue
            assert b == pytest.approx(a, rel=1e-5), "checkpoint %d, %s: %s != %s" % (n, key, got[key], want[key])


def line_count(path: str) -> int:
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def start_and_kill(args, model_dir: str, min_lines: int = 2, timeout: float = 180, wait_for: str = "metrics") -> int:
    """Start ``imcap.train ARGS``, wait for ``min_lines`` lines in the model dir's ``wait_for`` file and SIGKILL it;
    return its exit code."""
    with open(os.path.join(os.path.dirname(model_dir), "killed.stderr"), "wb") as err:
        proc = subprocess.Popen(cli_command("train", args), cwd=REPO, env=cli_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + timeout
            metrics = os.path.join(model_dir, wait_for)
            while line_count(metrics) < min_lines and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
    return proc.returncode


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("resume") / "A")
    run_cli("train", *train_args(small_data, model_dir, *RESUME_OPTIONS))
    assert line_count(os.path.join(model_dir, "metrics")) == NUM_CHECKPOINTS
    return model_dir


def test_killed_run_resumes_exactly(small_data, uninterrupted, tmp_path):
    model_dir = str(tmp_path / "B")
    args = train_args(small_data, model_dir, *RESUME_OPTIONS)
    for _ in range(3):  # the run may (rarely) finish between the poll and the kill: then try again
        returncode = start_and_kill(args, model_dir)
        if returncode == -signal.SIGKILL:
            break
        assert returncode == 0, "the run to be killed failed:\n" + open(str(tmp_path / "killed.stderr")).read()
        subprocess.run(["rm", "-rf", model_dir], check=True)
    assert returncode == -signal.SIGKILL, "could not kill the run before it finished"
    assert 2 <= line_count(os.path.join(model_dir, "metrics")) < NUM_CHECKPOINTS

    run_cli("train", *args)

    assert_same_metrics(os.path.join(uninterrupted, "metrics"), os.path.join(model_dir, "metrics"))
    for name in ["params.best"] + ["params.%05d" % n for n in range(1, NUM_CHECKPOINTS + 1)]:
        expected = mx.nd.load(os.path.join(uninterrupted, name))
        actual = mx.nd.load(os.path.join(model_dir, name))
        assert sorted(actual) == sorted(expected), name
        for key in expected:
            np.testing.assert_allclose(actual[key].asnumpy(), expected[key].asnumpy(), rtol=1e-5, atol=1e-7,
                                       err_msg="%s: %s" % (name, key))
    leftovers = [os.path.join(folder, name) for folder, _, names in os.walk(model_dir) for name in names
                 if name.endswith(".tmp")]
    assert leftovers == []


def test_changed_setting_is_refused_on_resume(small_data, uninterrupted):
    with open(os.path.join(uninterrupted, "metrics"), "rb") as f:
        metrics = f.read()
    args = train_args(small_data, uninterrupted, *RESUME_OPTIONS, "--max-updates", "20", "--rnn-num-hidden", "32")
    proc = run_cli("train", *args, expect=1)
    error = proc.stderr.decode("utf-8", "replace")
    assert error.startswith("Error: ") and "Traceback" not in error
    assert "--rnn-num-hidden" in error and "64" in error and "32" in error
    assert "max_updates" not in error  # may differ on resume
    with open(os.path.join(uninterrupted, "metrics"), "rb") as f:
        assert f.read() == metrics


def test_run_killed_before_its_first_checkpoint_starts_again(small_data, uninterrupted, tmp_path):
    model_dir = str(tmp_path / "C")
    args = train_args(small_data, model_dir, *RESUME_OPTIONS)
    returncode = start_and_kill(args, model_dir, min_lines=1, wait_for="args.yaml")
    assert returncode == -signal.SIGKILL
    assert line_count(os.path.join(model_dir, "metrics")) == 0

    run_cli("train", *args)  # the same command, no --overwrite-output needed

    assert_same_metrics(os.path.join(uninterrupted, "metrics"), os.path.join(model_dir, "metrics"))
