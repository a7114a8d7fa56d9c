"""imcap.launch: the processes of a job and their DMLC variables, the ssh command lines of --hostfile (not run: no
ssh here), and the supervision (prefixed lines, rank relabelling, a failure stops everything) on small Python
processes standing in for the scheduler, the servers and the workers."""
import io
import os
import shlex
import subprocess
import sys
import time

import pytest

from imcap import constants as C
from imcap.launch import (Job, ProcessSpec, launch_arg_parser, plan_job, read_hostfile, server_command, ssh_command,
                          worker_command)
from imcap.utils import ImcapError, stop_process

TRAIN = ["python", "-m", "imcap.train", "--kvstore", "dist_sync"]


def test_local_job_has_every_role_on_loopback():
    specs = plan_job(TRAIN, 2, 1, port=9555, environ={})
    assert [(s.role, s.index) for s in specs] == [("scheduler", 0), ("server", 0), ("worker", 0), ("worker", 1)]
    for spec in specs:
        assert spec.host is None
        assert spec.env["DMLC_ROLE"] == spec.role
        assert spec.env["DMLC_PS_ROOT_URI"] == spec.env["DMLC_NODE_HOST"] == "127.0.0.1"
        assert (spec.env["DMLC_PS_ROOT_PORT"], spec.env["DMLC_NUM_SERVER"], spec.env["DMLC_NUM_WORKER"]) == \
            ("9555", "1", "2")
        assert spec.env["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert specs[2].command == TRAIN and specs[0].command == ["python", "-c", "import imcap, mxnet"]
    assert [s.label for s in specs] == ["scheduler", "server 0", "worker @0", "worker @1"]


def test_local_job_keeps_a_given_thread_count_and_picks_a_free_port():
    specs = plan_job(TRAIN, 3, 2, environ={"OMP_NUM_THREADS": "4"})
    assert {s.env["OMP_NUM_THREADS"] for s in specs} == {"4"}
    port = int(specs[0].env["DMLC_PS_ROOT_PORT"])
    assert 0 < port < 65536 and {s.env["DMLC_PS_ROOT_PORT"] for s in specs} == {str(port)}


def test_server_command_uses_the_workers_interpreter():
    assert server_command(["/opt/py/bin/python3", "-m", "imcap.train"])[0] == "/opt/py/bin/python3"
    assert server_command(["./train.sh"])[0] == sys.executable


def test_hosts_round_robin_and_ssh_command_lines(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the machines\nnode1\n\nalice@node2  # a comment\n", encoding="utf-8")
    hosts = read_hostfile(str(hostfile))
    assert hosts == ["node1", "alice@node2"]
    specs = plan_job(TRAIN, 3, 2, hosts, environ={})
    assert [(s.role, s.host) for s in specs] == [("scheduler", "node1"), ("server", "node1"), ("server", "alice@node2"),
                                                  ("worker", "node1"), ("worker", "alice@node2"), ("worker", "node1")]
    assert {s.env["DMLC_PS_ROOT_URI"] for s in specs} == {"node1"} and specs[0].env["DMLC_PS_ROOT_PORT"] == "9091"
    assert specs[4].env["DMLC_NODE_HOST"] == "node2"
    assert all("OMP_NUM_THREADS" not in s.env for s in specs)   # the remote machines' cores are not known here
    line = ssh_command(specs[4], "/work/my checkout")
    assert line[:2] == ["ssh", "-tt"] and line[-2] == "alice@node2"
    remote = shlex.split(line[-1])
    assert remote[:4] == ["cd", "/work/my checkout", "&&", "env"]
    assigned = dict(word.split("=", 1) for word in remote[4:4 + len(specs[4].env)])
    assert assigned == specs[4].env
    assert remote[4 + len(specs[4].env):] == TRAIN


def test_bad_hostfiles_and_jobs_are_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(ImcapError, match="no host"):
        read_hostfile(str(empty))
    two = tmp_path / "two"
    two.write_text("node1 node2\n", encoding="utf-8")
    with pytest.raises(ImcapError, match="two line 1: expected one host"):
        read_hostfile(str(two))
    with pytest.raises(ImcapError, match="no command"):
        plan_job([], 2)
    with pytest.raises(ImcapError, match="at least one worker"):
        plan_job(TRAIN, 0)


def test_the_command_follows_the_double_dash():
    args = launch_arg_parser().parse_args(["-n", "2", "--"] + TRAIN)
    assert (args.num_workers, args.num_servers, worker_command(args)) == (2, 1, TRAIN)


def python(code):
    return [sys.executable, "-c", code]


def job(worker_codes, server_code="import time; time.sleep(60)"):
    """A job of stand-in processes: a scheduler and a server running ``server_code``, a worker per code."""
    specs = [ProcessSpec("scheduler", 0, None, {}, python(server_code)),
             ProcessSpec("server", 0, None, {}, python(server_code))]
    specs += [ProcessSpec("worker", i, None, {}, python(code)) for i, code in enumerate(worker_codes)]
    output = io.StringIO()
    return Job(specs, output=output, kill_timeout=2), output


def test_a_failing_worker_stops_every_process(capfd):
    failing, output = job(["import time; time.sleep(60)", "import sys, time; print('bad'); time.sleep(0.3); "
                                                          "sys.exit(3)"])
    start = time.time()
    assert failing.run() == 3
    assert time.time() - start < 10
    assert all(p.poll() is not None for p in failing.procs)
    assert "[worker @1] bad" in output.getvalue()
    err = capfd.readouterr().err
    assert "worker @1 (pid %d) exited with code 3; stopped scheduler, server 0, worker @0" % failing.procs[3].pid in err


def test_a_server_that_dies_fails_the_job(capfd):
    dying, _ = job(["import time; time.sleep(60)"], server_code="import os, signal; os.kill(os.getpid(), 9)")
    assert dying.run() == 1
    assert all(p.poll() is not None for p in dying.procs)
    assert "scheduler (pid %d) exited with code -9" % dying.procs[0].pid in capfd.readouterr().err


def test_servers_that_end_before_the_workers_are_no_failure():
    done, _ = job(["import time; time.sleep(0.5)"], server_code="pass")
    assert done.run() == 0


def test_workers_done_stop_the_servers_and_lines_carry_the_rank(capfd):
    announce = "print(%r, flush=True); print('training', flush=True)"
    done, output = job([announce % (C.RANK_ANNOUNCEMENT % (1, 2)), announce % (C.RANK_ANNOUNCEMENT % (0, 2))])
    assert done.run() == 0
    assert all(p.poll() is not None for p in done.procs)
    lines = output.getvalue().splitlines()
    assert "[worker 1] training" in lines and "[worker 0] training" in lines
    assert "the workers are done; stopped scheduler, server 0" in capfd.readouterr().err


def test_a_command_that_cannot_start_stops_the_others():
    specs = [ProcessSpec("scheduler", 0, None, {}, python("import time; time.sleep(60)")),
             ProcessSpec("worker", 0, None, {}, ["/nonexistent/python"])]
    broken = Job(specs, output=io.StringIO(), kill_timeout=2)
    with pytest.raises(ImcapError, match="cannot start worker @0"):
        broken.run()
    assert broken.procs[0].poll() is not None


def test_stop_process_kills_a_child_that_ignores_sigterm():
    code = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
           "time.sleep(60)"
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline() == b"ready\n"
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = time.time()
    stop_process(polite, timeout=5)
    stop_process(stubborn, timeout=1)
    assert polite.returncode == -15 and stubborn.returncode == -9
    assert time.time() - start < 10
    stubborn.stdout.close()
