"""What a training shows while it runs: a progress bar on the terminal from one checkpoint to the next (tqdm), and,
as Sockeye does, a log line every ``log_interval`` updates (in the model dir's ``log``, and on STDERR unless quiet).

Both give the updates done, samples/s, the running training perplexity (of the updates since the last
checkpoint) and the time left to the next checkpoint and to the end of the budget (``max_seconds`` or
``max_updates``), so that a slow run can be told from a hung one.
"""
import contextlib
import logging
import sys
import time
from typing import Any, Iterator, Optional

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .utils import perplexity

logger = logging.getLogger("imcap.training")


@contextlib.contextmanager
def console_logging_above_bar() -> Iterator[None]:
    """Within it, log lines that go to the terminal are written above the progress bar (tqdm's
    ``logging_redirect_tqdm``); when nothing logs to the terminal (``--quiet``), nothing is redirected (tqdm's helper
    would otherwise add a console handler of its own)."""
    console = any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stdout, sys.stderr)
                  for h in logging.root.handlers)
    with (logging_redirect_tqdm() if console else contextlib.nullcontext()):
        yield


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12.5 min"`` or ``"2.1 h"``."""
    if seconds < 90:
        return "%.0f s" % seconds
    return "%.1f min" % (seconds / 60) if seconds < 5400 else "%.1f h" % (seconds / 3600)


class TrainingProgress:
    """The bar and the periodic log lines of one :meth:`imcap.training.Trainer.fit`.

    :param config: the :class:`imcap.training.TrainerConfig` (``checkpoint_interval``, ``log_interval``,
        ``max_updates``, ``max_seconds``).
    :param bar: show the bar (on STDERR, and only when it is a terminal); the log lines are written either way.
    """

    def __init__(self, config: Any, bar: bool = True) -> None:
        self.config = config
        self.show_bar = bar
        self.bar: Optional[tqdm] = None
        self.interval_start = time.time()
        self.interval_updates = 0
        self.log_start = time.time()
        self.log_samples = 0

    def start_interval(self, state: Any) -> None:
        """A new bar up to the next checkpoint (at the start of a run and after every checkpoint)."""
        self.close()
        self.interval_start = self.log_start = time.time()
        self.interval_updates = self.log_samples = 0
        total = self._updates_to_checkpoint(state)
        self.bar = tqdm(total=total, unit="update", desc="checkpoint %d" % (state.checkpoint + 1), leave=False,
                        dynamic_ncols=True, disable=None if self.show_bar else True)

    def _updates_to_checkpoint(self, state: Any) -> int:
        interval = self.config.checkpoint_interval
        left = interval - state.updates % interval
        if self.config.max_updates is not None:
            left = min(left, max(self.config.max_updates - state.updates, 0))
        return left

    def _running_perplexity(self, state: Any) -> float:
        return perplexity(state.train_nll, state.train_tokens) if state.train_tokens else float("nan")

    def _time_left(self, state: Any, seconds_per_update: float) -> str:
        """Time to the next checkpoint, and to the end of the budget when there is one."""
        text = "next checkpoint in %s" % format_duration(self._updates_to_checkpoint(state) * seconds_per_update)
        ends = []
        if self.config.max_seconds is not None:
            ends.append(self.config.max_seconds - state.elapsed - (time.time() - self.interval_start))
        if self.config.max_updates is not None:
            ends.append((self.config.max_updates - state.updates) * seconds_per_update)
        if ends:
            text += ", end in %s" % format_duration(max(min(ends), 0.0))
        return text

    def update(self, state: Any, samples: int) -> None:
        """After each update: move the bar; every ``log_interval`` updates, log a line."""
        self.interval_updates += 1
        self.log_samples += samples
        seconds_per_update = (time.time() - self.interval_start) / self.interval_updates
        if self.bar is not None:
            self.bar.update(1)
            if not self.bar.disable and (self.interval_updates % 10 == 0 or self.interval_updates == 1):
                self.bar.set_postfix_str("ppl %.2f, %s" % (self._running_perplexity(state),
                                                           self._time_left(state, seconds_per_update)),
                                         refresh=False)
        if self.config.log_interval > 0 and state.updates % self.config.log_interval == 0:
            elapsed = max(time.time() - self.log_start, 1e-9)
            logger.info("updates %d, epoch %d: %.1f samples/s, ppl train %.2f, %s", state.updates, state.epoch,
                        self.log_samples / elapsed, self._running_perplexity(state),
                        self._time_left(state, seconds_per_update))
            self.log_start, self.log_samples = time.time(), 0

    def close(self) -> None:
        """Remove the bar (before a checkpoint's log lines and at the end)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
