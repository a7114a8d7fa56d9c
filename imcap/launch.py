"""Launcher of a distributed training: ``python -m imcap.launch -n WORKERS [-s SERVERS] [--hostfile FILE] -- COMMAND``.

It starts a job of MXNet's parameter server (ps-lite, built into the mxnet wheel): one scheduler, ``SERVERS`` servers
and ``WORKERS`` workers, each with the ``DMLC_*`` variables ps-lite reads (``DMLC_ROLE``, ``DMLC_PS_ROOT_URI``,
``DMLC_PS_ROOT_PORT``, ``DMLC_NUM_SERVER``, ``DMLC_NUM_WORKER``, ``DMLC_NODE_HOST``). The workers run ``COMMAND``
(e.g. ``python -m imcap.train ... --kvstore dist_sync``); the scheduler and the servers run ``python -c "import imcap,
mxnet"`` with the same interpreter: importing mxnet with ``DMLC_ROLE=server|scheduler`` runs the server loop and exits
when the workers are done (``mxnet/kvstore/kvstore_server.py``), and importing imcap first sets ``OMP_NUM_THREADS``.

Without ``--hostfile`` every process runs on this machine, on 127.0.0.1 at a free port, and each gets
``OMP_NUM_THREADS = cores // WORKERS`` (at least 1) unless the variable is set. With ``--hostfile`` (one host per
line, ``#`` comments), the scheduler runs on the first host, servers and workers round robin over the hosts, each
started as MXNet's ``tools/launch.py`` does: ``ssh HOST 'cd DIR && env DMLC_...=... COMMAND'`` (``DIR``: ``--workdir``,
default the current directory, which must hold the same checkout and data paths on every host).

Every output line of a process is written to STDOUT prefixed with its role: ``[scheduler]``, ``[server I]``,
``[worker R]``. Servers are numbered in launch order. A worker's rank is assigned by ps-lite's scheduler when the
job has formed, so a worker's lines are prefixed ``[worker @I]`` (``I``: its launch order) until it announces its
rank (:data:`imcap.constants.RANK_ANNOUNCEMENT`), ``[worker R]`` after. The launcher's own lines (the PIDs it
started, who failed) start with ``imcap.launch:`` on STDERR.

When any process exits with a non-zero code (a killed one included), a signal (SIGINT, SIGTERM) arrives or
``--timeout`` passes, every process group is sent SIGTERM, then SIGKILL after ``--kill-timeout`` seconds, and the
launcher exits non-zero with one line naming who failed. When every worker has exited 0, the servers and the
scheduler (which then end by themselves) are waited for, stopped if they do not, and the launcher exits 0.
"""
import argparse
import dataclasses
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Dict, List, Optional, Sequence

from . import arguments
from . import constants as C
from .utils import ImcapError, check_condition, read_lines, run_main

ROLE_SCHEDULER, ROLE_SERVER, ROLE_WORKER = "scheduler", "server", "worker"
POLL_SECONDS = 0.1


@dataclasses.dataclass
class ProcessSpec:
    """One process of a job: its ``role``, ``index`` (launch order within the role), ``host`` (``None``: this
    machine), the ``env`` variables it gets on top of the launcher's environment, and its ``command``."""
    role: str
    index: int
    host: Optional[str]
    env: Dict[str, str]
    command: List[str]

    @property
    def label(self) -> str:
        """``scheduler``, ``server I`` or ``worker @I`` (launch order; the rank replaces it once known)."""
        return {ROLE_SCHEDULER: "scheduler", ROLE_SERVER: "server %d" % self.index}.get(
            self.role, "worker @%d" % self.index)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may still take it before the job does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_hostfile(path: str) -> List[str]:
    """The hosts of ``path``: one per line (``HOST`` or ``USER@HOST``); blank lines and ``#`` comments skipped.

    :raises ImcapError: if the file is missing, a line holds more than a host, or there is no host.
    """
    hosts = []
    for number, line in enumerate(read_lines(path), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        check_condition(len(text.split()) == 1, "%s line %d: expected one host, got '%s'" % (path, number, text))
        hosts.append(text)
    check_condition(len(hosts) > 0, "%s: no host" % path)
    return hosts


def server_command(command: Sequence[str]) -> List[str]:
    """The command of the scheduler and the servers: ``PYTHON -c "import imcap, mxnet"``, with the workers'
    interpreter when ``command`` starts with one (``python``, ``/path/python3``), else this one."""
    python = command[0] if command and os.path.basename(command[0]).startswith("python") else sys.executable
    return [python, "-c", "import imcap, mxnet"]


def plan_job(command: Sequence[str], num_workers: int, num_servers: int = 1, hosts: Optional[Sequence[str]] = None,
             port: Optional[int] = None, environ: Optional[Dict[str, str]] = None) -> List[ProcessSpec]:
    """The processes of a job: the scheduler, ``num_servers`` servers, then ``num_workers`` workers running
    ``command``, with their ``DMLC_*`` variables.

    :param hosts: ``None``: every process on 127.0.0.1, with ``OMP_NUM_THREADS`` = cores // workers unless
        ``environ`` sets it; else the scheduler on ``hosts[0]`` and servers and workers round robin over ``hosts``
        (``OMP_NUM_THREADS`` passed on only if ``environ`` sets it).
    :param port: the scheduler's port (default: a free one on 127.0.0.1; with hosts, 9091 as MXNet's launcher).
    :param environ: the launcher's environment (default ``os.environ``).
    :raises ImcapError: on fewer than one worker or server, or an empty command.
    """
    check_condition(num_workers >= 1 and num_servers >= 1, "a job needs at least one worker and one server, not %d "
                    "and %d" % (num_workers, num_servers))
    check_condition(len(command) > 0, "no command for the workers (imcap.launch -n N -- COMMAND ...)")
    environ = dict(os.environ if environ is None else environ)
    local = not hosts
    root = "127.0.0.1" if local else hosts[0]  # type: ignore[index]
    if port is None:
        port = free_port() if local else 9091
    common = {"DMLC_PS_ROOT_URI": root, "DMLC_PS_ROOT_PORT": str(port), "DMLC_NUM_SERVER": str(num_servers),
              "DMLC_NUM_WORKER": str(num_workers)}
    if "OMP_NUM_THREADS" in environ:
        common["OMP_NUM_THREADS"] = environ["OMP_NUM_THREADS"]
    elif local:
        common["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // num_workers))
    specs = []
    roles = [(ROLE_SCHEDULER, 0)] + [(ROLE_SERVER, i) for i in range(num_servers)] + \
        [(ROLE_WORKER, i) for i in range(num_workers)]
    for role, index in roles:
        host = None if local else (hosts[0] if role == ROLE_SCHEDULER else hosts[index % len(hosts)])  # type: ignore
        env = dict(common, DMLC_ROLE=role, DMLC_NODE_HOST="127.0.0.1" if host is None else host.split("@")[-1])
        specs.append(ProcessSpec(role, index, host, env,
                                 list(command) if role == ROLE_WORKER else server_command(command)))
    return specs


def ssh_command(spec: ProcessSpec, workdir: str) -> List[str]:
    """The local command that runs ``spec`` on its host: ``ssh -tt HOST 'cd DIR && env K=V ... COMMAND'`` (``-tt``:
    the remote process gets a terminal, so it is hung up when the ssh process is killed)."""
    assert spec.host is not None
    remote = "cd %s && env %s %s" % (shlex.quote(workdir),
                                     " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(spec.env.items())),
                                     " ".join(shlex.quote(word) for word in spec.command))
    return ["ssh", "-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", spec.host, remote]


class Job:
    """The running processes of a list of :class:`ProcessSpec`, supervised as the module docstring says.

    :param specs: the processes (e.g. of :func:`plan_job`).
    :param workdir: the directory of the remote processes (``ssh``) and of the local ones.
    :param output: where the prefixed lines of the processes go (default STDOUT).
    :param kill_timeout: seconds between SIGTERM and SIGKILL when stopping processes.
    :param timeout: stop the job as failed after this many seconds (None: no limit).
    """

    def __init__(self, specs: Sequence[ProcessSpec], workdir: Optional[str] = None, output: Optional[IO] = None,
                 kill_timeout: float = 10.0, timeout: Optional[float] = None) -> None:
        self.specs = list(specs)
        self.workdir = workdir or os.getcwd()
        self.output = output or sys.stdout
        self.kill_timeout = kill_timeout
        self.timeout = timeout
        self.procs: List[subprocess.Popen] = []
        self.labels: List[str] = []
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._signal: Optional[int] = None

    def _say(self, message: str) -> None:
        with self._lock:
            sys.stderr.write("imcap.launch: %s\n" % message)
            sys.stderr.flush()

    def _read(self, i: int) -> None:
        """Copy process ``i``'s lines to the output, prefixed with its label (relabelled when a worker announces
        its rank)."""
        stream = self.procs[i].stdout
        assert stream is not None
        pattern = re.compile(C.RANK_ANNOUNCEMENT_PATTERN)
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            match = pattern.match(line) if self.specs[i].role == ROLE_WORKER else None
            if match:
                self.labels[i] = "worker %s" % match.group(1)
                self._say("worker @%d (pid %d) is rank %s" % (self.specs[i].index, self.procs[i].pid, match.group(1)))
            with self._lock:
                self.output.write("[%s] %s\n" % (self.labels[i], line))
                self.output.flush()
        stream.close()

    def start(self) -> None:
        """Start every process in its own process group, with a thread reading its output.

        :raises ImcapError: if a command cannot be started (the processes started before are left to :meth:`stop`).
        """
        for spec in self.specs:
            command = spec.command if spec.host is None else ssh_command(spec, self.workdir)
            env = dict(os.environ, **spec.env) if spec.host is None else dict(os.environ)
            try:
                proc = subprocess.Popen(command, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise ImcapError("cannot start %s (%s): %s" % (spec.label, " ".join(command[:3]), e))
            self.procs.append(proc)
            self.labels.append(spec.label)
            self._say("started %s (pid %d)%s" % (spec.label, proc.pid, " on %s" % spec.host if spec.host else ""))
            thread = threading.Thread(target=self._read, args=(len(self.procs) - 1,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _alive(self) -> List[int]:
        return [i for i, p in enumerate(self.procs) if p.poll() is None]

    def stop(self) -> None:
        """SIGTERM every process group still running, SIGKILL those left after ``kill_timeout`` seconds, and wait
        for them and their output."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for i in self._alive():
                try:
                    os.killpg(self.procs[i].pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + self.kill_timeout
            while self._alive() and time.time() < deadline:
                time.sleep(POLL_SECONDS)
            if not self._alive():
                break
        for proc in self.procs:
            try:
                proc.wait(timeout=self.kill_timeout)
            except subprocess.TimeoutExpired:
                pass
        for thread in self._threads:
            thread.join(timeout=self.kill_timeout)

    def _on_signal(self, signum: int, frame) -> None:  # type: ignore[no-untyped-def]
        self._signal = signum

    def _failure(self) -> Optional[str]:
        """Why the job failed (a process exited with a non-zero code), or ``None`` while it runs well (or has
        succeeded). A server or the scheduler exiting 0 is no failure: they do so once every worker has finalized
        its kvstore, which may be a moment before the workers' processes end."""
        for i, proc in enumerate(self.procs):
            code = proc.poll()
            if code is not None and code != 0:
                return "%s (pid %d) exited with code %d" % (self.labels[i], proc.pid, code)
        return None

    def run(self) -> int:
        """Start the job, supervise it until it ends, and return the exit code: 0 when every worker exited 0, else
        the failed process's code (1 if that was 0 or a signal; 128 + N when the launcher got signal N)."""
        handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        start = time.time()
        try:
            self.start()
            while True:
                failure = self._failure()
                if self._signal is not None:
                    failure = "got signal %d" % self._signal
                elif self.timeout is not None and time.time() - start > self.timeout:
                    failure = "timed out after %.0f s" % self.timeout
                if failure is not None:
                    alive = [self.labels[i] for i in self._alive()]
                    self.stop()
                    self._say("%s; stopped %s" % (failure, ", ".join(alive) if alive else "nothing (all had ended)"))
                    if self._signal is not None:
                        return 128 + self._signal
                    codes = [p.returncode for p in self.procs if p.returncode not in (None, 0)]
                    return next((c for c in codes if c > 0), 1)
                if all(p.poll() == 0 for s, p in zip(self.specs, self.procs) if s.role == ROLE_WORKER):
                    deadline = time.time() + self.kill_timeout   # the servers and the scheduler end by themselves
                    while self._alive() and time.time() < deadline and self._signal is None:
                        time.sleep(POLL_SECONDS)
                    left = [self.labels[i] for i in self._alive()]
                    self.stop()
                    if left:
                        self._say("the workers are done; stopped %s" % ", ".join(left))
                    return 0
                time.sleep(POLL_SECONDS)
        finally:
            self.stop()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def launch_arg_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m imcap.launch``."""
    parser = arguments.new_parser(__doc__.splitlines()[0])
    parser.add_argument("--num-workers", "-n", required=True, type=arguments.int_greater_or_equal(1),
                        help="Workers, each running COMMAND.")
    parser.add_argument("--num-servers", "-s", type=arguments.int_greater_or_equal(1), default=1,
                        help="Parameter servers (the gradients' keys are spread over them).")
    parser.add_argument("--hostfile", "-H", type=arguments.regular_file, default=None,
                        help="Hosts to start the processes on over ssh, one per line. Default: all on this machine.")
    parser.add_argument("--port", type=arguments.int_greater_or_equal(1), default=None,
                        help="The scheduler's port. Default: a free port on 127.0.0.1 (9091 with --hostfile).")
    parser.add_argument("--workdir", default=None,
                        help="Directory the processes start in (on every host). Default: the current directory.")
    parser.add_argument("--timeout", type=arguments.float_greater_or_equal(0), default=None,
                        help="Stop the job as failed after this many seconds. Default: no limit.")
    parser.add_argument("--kill-timeout", type=arguments.float_greater_or_equal(0), default=10.0,
                        help="Seconds between SIGTERM and SIGKILL when stopping the processes.")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="The workers' command, after --, e.g. -- python -m imcap.train ... --kvstore dist_sync")
    return parser


def worker_command(args: argparse.Namespace) -> List[str]:
    """The workers' command of the parsed options: the words after ``--``."""
    return args.command[1:] if args.command[:1] == ["--"] else args.command


def run_launch(args: argparse.Namespace) -> int:
    """Plan and run the job ``args`` describe; return its exit code.

    :raises ImcapError: on a bad hostfile or no command.
    """
    hosts = read_hostfile(args.hostfile) if args.hostfile else None
    specs = plan_job(worker_command(args), args.num_workers, args.num_servers, hosts, args.port)
    return Job(specs, args.workdir, kill_timeout=args.kill_timeout, timeout=args.timeout).run()


def main(argv: Optional[List[str]] = None) -> None:
    """Parse the command line, run the job, exit with its code."""
    args = launch_arg_parser().parse_args(argv)
    code: List[int] = []
    run_main(lambda a: code.append(run_launch(a)), args)
    sys.exit(code[0] if code else 1)


if __name__ == "__main__":
    main()
