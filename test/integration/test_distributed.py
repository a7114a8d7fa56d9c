"""Distributed training on loopback, end to end: ``imcap.launch -n 2 -s 1 -- imcap.train --kvstore dist_sync`` (a
scheduler, a server and two workers of MXNet's parameter server) against the same updates in one process; a killed
worker ends the job with no process left, and the same command resumes; self-critical training under dist_sync."""
import json
import os
import signal
import subprocess
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from imcap.utils import ImcapError

from test.common import requires_shared
from test.integration.conftest import cli_command, cli_env, read_lines, run_cli, train_args, REPO

pytestmark = requires_shared

WORKERS = 2
UPDATES = 20
# no dropout: the one-process reference draws other masks than the workers
DIST_OPTIONS = ["--batch-size", "8", "--checkpoint-interval", "5", "--max-updates", str(UPDATES), "--embed-dropout",
                "0", "--rnn-dropout", "0", "--use-cpu", "--kvstore", "dist_sync", "--quiet"]


def launch_args(small_data, output, *extra):
    return (["-n", str(WORKERS), "-s", "1", "--kill-timeout", "5", "--timeout", "240", "--"]
            + cli_command("train", train_args(small_data, output, *DIST_OPTIONS, *extra)))


@pytest.fixture(scope="module")
def dist_model(small_data, tmp_path_factory):
    """A tiny model trained by 2 workers and 1 server for 20 updates (checkpoints every 5)."""
    output = str(tmp_path_factory.mktemp("dist") / "model")
    proc = run_cli("launch", *launch_args(small_data, output), timeout=300)
    return output, proc


def reference_params(small_data, model_dir):
    """The parameters after the same 20 updates in this process: per update, the next two batches of the epoch's
    order (the two workers' shards), one on ``cpu(0)`` and one on ``cpu(1)``, each loss divided by its own token
    count, the gradients summed by the local kvstore and halved, the global norm clipped to 5, one Adam step."""
    from imcap.data import BucketBatcher, ParallelData
    from imcap.features import FeatureStore
    from imcap.loss import sequence_loss
    from imcap.model import ModelConfig
    from imcap.training import build_model
    from imcap.vocab import load_vocab
    ctx = [mx.cpu(0), mx.cpu(1)]
    vocab = load_vocab(os.path.join(model_dir, "vocab.trg.json"))
    data = ParallelData(FeatureStore(os.path.join(small_data.data, "train.features"), small_data.cache),
                        [os.path.join(small_data.data, "train.captions")], vocab, 40)
    batcher = BucketBatcher(data, 8, 3, 13)
    model = build_model(ModelConfig.load(os.path.join(model_dir, "config.yaml")), ctx, 13)
    params = model.collect_params()
    trainer = gluon.Trainer(params, "adam", {"learning_rate": 0.001, "wd": 0.0}, kvstore="local",
                            update_on_kvstore=False)
    pairs = []
    epoch = 0
    while len(pairs) < UPDATES:
        batches = list(batcher.iter_epoch(epoch))
        pairs += [(batches[i], batches[i + 1]) for i in range(0, len(batches) - 1, WORKERS)]
        epoch += 1
    for pair in pairs[:UPDATES]:
        with autograd.record():
            losses = []
            for c, batch in zip(ctx, pair):
                logits, attention = model(mx.nd.array(batch.features, ctx=c), mx.nd.array(batch.target_in, ctx=c))
                loss, _ = sequence_loss(logits, attention, mx.nd.array(batch.target_out, ctx=c), 0.1, 0.0)
                losses.append(loss / batch.num_tokens)
        autograd.backward(losses)
        trainer.allreduce_grads()
        grads = [p.list_grad() for p in params.values() if p.grad_req != "null"]
        for copies in grads:
            for g in copies:
                g /= WORKERS
        norm = gluon.utils.clip_global_norm([copies[0] for copies in grads], 5.0, check_isfinite=False)
        if norm > 5.0:
            for copies in grads:
                copies[1] *= 5.0 / norm
        trainer.update(1)
    return {name: p.data(ctx[0]).asnumpy() for name, p in model._collect_params_with_prefix().items()}


def saved_params(path):
    return {name: array.asnumpy() for name, array in mx.nd.load(path).items()}


def assert_same_params(actual, expected, rtol):
    assert sorted(actual) == sorted(expected)
    for name in expected:
        delta = np.abs(actual[name] - expected[name])
        difference = np.linalg.norm(delta) / max(np.linalg.norm(expected[name]), 1e-12)
        # the message tells a few elements moved by Adam's sign-like steps (about lr per update) from a spread
        assert difference <= rtol, "%s differs by %g (relative): max %g, %d of %d elements differ by more than 1e-6" \
            % (name, difference, delta.max(), int((delta > 1e-6).sum()), delta.size)


def test_two_workers_match_one_process(small_data, dist_model, restore_logging):
    output, proc = dist_model
    log = proc.stdout.decode("utf-8", "replace")
    assert "[worker 0]" in log and "[worker 1]" in log
    metrics = read_lines(os.path.join(output, "metrics"))
    assert [line.split("\t")[0] for line in metrics] == ["1", "2", "3", "4"]
    assert "updates=%d" % UPDATES in metrics[-1] and "kvstore-seconds-per-update=" in metrics[-1]
    final = saved_params(os.path.join(output, "params.00004"))
    assert_same_params(final, reference_params(small_data, output), 1e-5)
    # the parameters moved: the equality is not that of untrained parameters
    first = saved_params(os.path.join(output, "params.00001"))
    assert max(np.linalg.norm(first[k] - final[k]) / max(np.linalg.norm(final[k]), 1e-12) for k in final) > 1e-3


def pids_of(launcher_log):
    """The PIDs the launcher started, by label (``worker @0``, ``server 0``, ``scheduler``)."""
    pids = {}
    for line in read_lines(launcher_log):
        if line.startswith("imcap.launch: started "):
            label, rest = line[len("imcap.launch: started "):].split(" (pid ")
            pids[label] = int(rest.split(")")[0])
    return pids


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_killed_worker_stops_the_job_and_the_same_command_resumes(small_data, dist_model, tmp_path):
    output = str(tmp_path / "model")
    # the checkpoints decode validation images (rank 0 only): slower, so the kill lands mid-training, and the
    # parameters stay those of the uninterrupted run
    command = cli_command("launch", launch_args(small_data, output, "--decode-and-evaluate", "8"))
    state = os.path.join(output, "training_state", "state.json")
    launcher_log = str(tmp_path / "launcher.err")
    with open(launcher_log, "wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not os.path.isfile(state) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert os.path.isfile(state), "no checkpoint; launcher:\n" + open(launcher_log).read()
        pids = pids_of(launcher_log)
        assert sorted(pids) == ["scheduler", "server 0", "worker @0", "worker @1"]
        os.kill(pids["worker @1"], signal.SIGKILL)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = open(launcher_log).read()
    assert code != 0, text
    assert "exited with code -9" in text
    assert not [label for label, pid in pids.items() if alive(pid)], text
    with open(state, encoding="utf-8") as f:
        checkpoint = json.load(f)["checkpoint"]
    assert 1 <= checkpoint < 4, "the job ended before the kill: %s" % text
    # the same command resumes from the last checkpoint and ends where the uninterrupted run ended
    run_cli("launch", *command[3:], timeout=300)
    with open(os.path.join(output, "log"), encoding="utf-8") as f:
        assert "resumed at checkpoint %d" % checkpoint in f.read()
    assert [line.split("\t")[0] for line in read_lines(os.path.join(output, "metrics"))] == ["1", "2", "3", "4"]
    assert_same_params(saved_params(os.path.join(output, "params.00004")),
                       saved_params(os.path.join(dist_model[0], "params.00004")), 1e-6)


def test_self_critical_under_dist_sync(small_data, dist_model, tmp_path):
    output = str(tmp_path / "scst")
    run_cli("launch", *launch_args(small_data, output, "--loss", "self-critical", "--params",
                                   os.path.join(dist_model[0], "params.best"), "--self-critical-samples", "2",
                                   "--max-updates", "4", "--checkpoint-interval", "4"), timeout=300)
    metrics = read_lines(os.path.join(output, "metrics"))
    assert len(metrics) == 1 and "cider-train=" in metrics[0] and "updates=4" in metrics[0]


def test_shards_are_disjoint_equal_and_cover_all_but_the_tail(small_data):
    from imcap.data import BucketBatcher, ParallelData
    from imcap.distributed import ShardedBucketBatcher, shard_batches
    from imcap.features import FeatureStore
    from imcap.vocab import build_vocab
    captions = os.path.join(small_data.data, "train.captions")
    vocab = build_vocab((line.split() for line in read_lines(captions)), min_count=1)
    data = ParallelData(FeatureStore(os.path.join(small_data.data, "train.features"), small_data.cache), [captions],
                        vocab, 40)
    whole = BucketBatcher(data, 8, 3, 13)
    for workers in (2, 3):
        shards = [ShardedBucketBatcher(data, 8, 3, 13, rank=r, num_workers=workers) for r in range(workers)]
        for epoch in (0, 1):
            batches = whole.epoch_batches(epoch)
            usable = len(batches) // workers * workers
            mine = [shard.epoch_batches(epoch) for shard in shards]
            assert [len(m) for m in mine] == [len(batches) // workers] * workers == [len(s) for s in shards]
            assert sorted(i for m in mine for b in m for i in b) == sorted(i for b in batches[:usable] for i in b)
            assert mine[1] == batches[1:usable:workers]
            # the batches a worker trains on are the whole run's, features and padding included
            for got, expected in zip(shards[1].iter_epoch(epoch), list(whole.iter_epoch(epoch))[1:usable:workers]):
                assert np.array_equal(got.features, expected.features)
                assert np.array_equal(got.target_in, expected.target_in)
    with pytest.raises(ImcapError, match="fewer than the 4 workers"):
        shard_batches([[0], [1], [2]], 0, 4)


def test_dist_async_refuses_what_it_cannot_do():
    from imcap.training import TrainerConfig
    with pytest.raises(ImcapError, match="clips no global gradient norm"):
        TrainerConfig(kvstore="dist_async")
    with pytest.raises(ImcapError, match="learning rate fixed"):
        TrainerConfig(kvstore="dist_async", gradient_clipping_type="abs")
    TrainerConfig(kvstore="dist_async", gradient_clipping_type="abs", learning_rate_reduce_num_not_improved=-1)
    with pytest.raises(ImcapError, match="kvstore must be one of"):
        TrainerConfig(kvstore="dist")


def test_a_dist_kvstore_outside_a_job_is_a_clear_error(small_data, tmp_path):
    proc = run_cli("train", *train_args(small_data, str(tmp_path / "model"), "--kvstore", "dist_sync"), expect=1)
    assert "start it with python -m imcap.launch" in proc.stderr.decode("utf-8")
