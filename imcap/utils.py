"""Small helpers used everywhere: user errors, atomic file writes, logging and seeding."""
import contextlib
import logging
import math
import io
import os
import random
import subprocess
import sys
import tempfile
from typing import IO, Iterator, Optional

import numpy as np

logger = logging.getLogger(__name__)


class ImcapError(Exception):
    """A user-facing error: bad input, a bad option or an inconsistent file. Its message is one line."""


def check_condition(condition: bool, message: str) -> None:
    """Raise :class:`ImcapError` with ``message`` unless ``condition`` holds (use instead of assert)."""
    if not condition:
        raise ImcapError(message)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path`` atomically.

    A crash while writing leaves the old ``path`` (or none) in place, never a half-written file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO]:
    """Open ``path`` for writing through :func:`atomic_path`; text files are UTF-8."""
    with atomic_path(path) as tmp:
        if "b" in mode:
            encoding = None
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


LOG_DATE_FORMAT = "%Y-%m-%d:%H:%M:%S"  # the time stamp of every log line, e.g. [2026-11-21:16:55:45 INFO ...]


def setup_logging(log_file: Optional[str] = None, quiet: bool = False) -> None:
    """Log to STDERR (unless ``quiet``) and, if given, append to ``log_file``."""
    handlers: list = []
    if not quiet:
        handlers.append(logging.StreamHandler(sys.stderr))
    if log_file is not None:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, handlers=handlers or [logging.NullHandler()], force=True,
                        format="[%(asctime)s %(levelname)s %(name)s] %(message)s", datefmt=LOG_DATE_FORMAT)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and MXNet's random generators."""
    import mxnet as mx
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def seed_checkpoint_interval(seed: int, checkpoint: int) -> None:
    """Seed the random generators for the updates after checkpoint number ``checkpoint`` (0: the first updates of a
    run): :func:`seed_everything` with ``seed + checkpoint``. The trainer calls it at the start of training and
    after every checkpoint, so that the random draws (dropout, sampling) of each checkpoint interval depend on the
    run's seed and the checkpoint only, and a resumed run draws what the uninterrupted one drew."""
    seed_everything(seed + checkpoint)


def read_lines(path: str) -> list:
    """Read a UTF-8 text file into a list of lines without their line ends (``\\n`` or ``\\r\\n``).

    :raises ImcapError: if the file does not exist or is not valid UTF-8 (naming the first bad line).
    """
    check_condition(os.path.isfile(path), "%s: no such file" % path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ImcapError("%s line %d: not valid UTF-8 (%s); save the file as UTF-8 (e.g. iconv -f GBK -t UTF-8)"
                         % (path, line, e.reason))
    return [line.rstrip("\n").rstrip("\r") for line in io.StringIO(text, newline=None)]


# The modules of the MXNet framework that imcap's runtime install (no MXNet; exported models on ONNX Runtime) lacks
FRAMEWORK_MODULES = ("mxnet", "gluonnlp", "onnx")


def missing_framework_message(error: BaseException) -> Optional[str]:
    """The one-line error of a tool that needs a missing framework module (``error``: a ``ModuleNotFoundError`` for
    one of :data:`FRAMEWORK_MODULES`), or None for any other error."""
    name = getattr(error, "name", None) or ""
    if not isinstance(error, ModuleNotFoundError) or name.split(".")[0] not in FRAMEWORK_MODULES:
        return None
    return ("Error: this needs %s, which this Python (%s) does not have: the MXNet framework installs with bash "
            "scripts/install.sh (.venv); an install without it captions and serves exported models (python -m "
            "imcap.captioner or imcap.serve --backend onnxruntime)\n" % (name.split(".")[0], sys.executable))


def run_main(run, args) -> None:
    """Run a CLI's ``run_<tool>(args)``; an :class:`ImcapError`, or a module of the MXNet framework missing from
    this install (:func:`missing_framework_message`), becomes a one-line message and exit 1; a closed STDOUT
    (``| head``) ends it with exit 1 and no traceback."""
    try:
        run(args)
    except BrokenPipeError:
        # the reader of STDOUT went away (``captioner < images | head``): stop quietly, as Unix tools do; STDOUT goes
        # to /dev/null so that Python's own flush at exit does not raise again (the Python docs' recipe for SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except ImcapError as e:
        sys.stderr.write("Error: %s\n" % e)
        sys.exit(1)
    except ModuleNotFoundError as e:
        message = missing_framework_message(e)
        if message is None:
            raise
        sys.stderr.write(message)
        sys.exit(1)


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Stop a child by its process id: SIGTERM, then SIGKILL if it has not ended after ``timeout`` seconds; waits for
    it (a server of the tests or benchmarks: never a process found by name)."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def perplexity(nll: float, tokens: int) -> float:
    """``exp`` of the mean negative log-likelihood ``nll / tokens`` (nats; 1 for no tokens), ``inf`` where it
    overflows a float and NaN for a NaN ``nll``."""
    mean = nll / max(tokens, 1)
    return math.exp(mean) if mean < 700 or math.isnan(mean) else math.inf
