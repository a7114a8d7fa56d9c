"""Dynamic batching of caption requests: one worker thread owns the models, and the requests that arrive together
are captioned in one batched beam search.

A server (:mod:`imcap.serving.http_api`, :mod:`imcap.serving.web_page`) calls :meth:`BatchingCaptioner.submit` from any thread with
one :class:`imcap.inference.CaptionInput` and its :class:`SearchOptions`, and gets a
:class:`concurrent.futures.Future` of its :class:`Captioned` (the :class:`imcap.inference.CaptionResult` and how it
was batched). Once free, the worker takes the oldest waiting request, then every request already waiting or
arriving within ``max_wait_ms``, up to ``max_batch_size``. (Waiting after the previous batch, rather than from the
oldest request's arrival, lets the clients of that batch join the next: a steady load of N clients is then searched
N at a time, not in two alternating halves; requests still being decoded inside :meth:`BatchingCaptioner.preparing`
extend the wait, up to ``max_preparing_wait_ms``.) It groups them by their options and runs :meth:`imcap.inference.Captioner.caption` once per
group, each group through a Captioner that shares the loaded models and CNN and has its own
:class:`imcap.beam_search.BeamSearch` (cached per option set).

    service = BatchingCaptioner(Captioner(["model"], extract_image_features=True, keep_attention=True))
    service.start()
    print(service.submit(CaptionInput(data=jpeg_bytes), SearchOptions(beam_size=3)).result().result.caption)
    service.close()
"""
import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

from ..inference import CaptionInput, CaptionResult, Captioner
from ..search_options import SearchOptions  # noqa: F401  (part of this module's interface: submit's options)
from ..utils import ImcapError, check_condition

logger = logging.getLogger(__name__)

MAX_CACHED_SEARCHES = 32  # option sets whose beam search is kept (the least recently used one goes first)
PREPARING_POLL = 0.002    # seconds between looks at the count of requests being prepared


@dataclass(frozen=True)
class SearchLimits:
    """What a request may ask for, against requests that would hold the worker for long.

    :param max_beam_size: largest ``beam_size`` and ``nbest_size`` (the samples of ``sample``).
    :param max_output_length: largest ``max_output_length``, in words.
    """
    max_beam_size: int = 20
    max_output_length: int = 100

    def check(self, options: SearchOptions) -> None:
        """Check ``options`` (whose ranges :class:`SearchOptions` checked when it was made) against these limits.

        :raises ImcapError: naming the first option above its limit.
        """
        check_condition(options.beam_size <= self.max_beam_size,
                        "beam_size must be between 1 and %d, got %s" % (self.max_beam_size, options.beam_size))
        check_condition(options.nbest_size <= self.max_beam_size,   # with sample, not bounded by beam_size
                        "nbest_size must be between 1 and %d, got %s" % (self.max_beam_size, options.nbest_size))
        check_condition(options.max_output_length <= self.max_output_length,
                        "max_output_length must be between 1 and %d, got %s"
                        % (self.max_output_length, options.max_output_length))
        for name in ("length_penalty_alpha", "length_penalty_beta"):
            value = getattr(options, name)
            check_condition(value <= 10.0, "%s must be between 0 and 10, got %s" % (name, value))


class QueueFullError(ImcapError):
    """The worker has more requests waiting than the queue holds: try again later."""


@dataclass
class Captioned:
    """The outcome of one request.

    :param result: its caption (or ``error``), as :meth:`imcap.inference.Captioner.caption` returns it.
    :param batch_size: how many requests shared its beam search (itself included).
    :param wait_seconds: from :meth:`BatchingCaptioner.submit` to the start of its search.
    :param search_seconds: how long its batch took (CNN and beam search).
    """
    result: CaptionResult
    batch_size: int
    wait_seconds: float
    search_seconds: float


@dataclass
class _Request:
    item: CaptionInput
    options: SearchOptions
    future: "Future[Captioned]"
    arrival: float  # time.monotonic() of submit


@dataclass
class BatchStats:
    """What the worker has done since it started.

    :param searches: calls of :meth:`imcap.inference.Captioner.caption` (one batched beam search each).
    :param images: requests captioned.
    :param largest_batch: most requests in one search.
    :param failed_searches: searches that raised (their requests got the exception).
    """
    searches: int = 0
    images: int = 0
    largest_batch: int = 0
    failed_searches: int = 0


def with_search_options(captioner: Captioner, options: SearchOptions, batch_size: int) -> Captioner:
    """A Captioner that shares ``captioner``'s models, vocabulary, avoid list and CNN and searches with ``options``,
    ``batch_size`` images at a time, always keeping the attention (:meth:`Captioner.with_search_options`; the
    worker creates the CNN before it derives any, so that they all share it)."""
    return captioner.with_search_options(batch_size=batch_size, options=options, keep_attention=True)


class BatchingCaptioner:
    """A request queue in front of one :class:`imcap.inference.Captioner`, served by one worker thread.

    :param captioner: the loaded models (with ``extract_image_features`` if requests give image paths; a server
        gives bytes or decoded images). Only the worker thread uses it once :meth:`start` is called.
    :param defaults: the options of a request that gives none.
    :param limits: what a request may ask for (:meth:`submit` checks).
    :param max_batch_size: most requests in one beam search.
    :param max_wait_ms: how long the worker, once it has taken the oldest waiting request, waits for more to join
        its batch (milliseconds; 0: only those already queued). A request waits at most this long plus the batch
        before it.
    :param max_queue_size: most requests waiting; :meth:`submit` raises :class:`QueueFullError` beyond.
    :param max_preparing_wait_ms: how much longer than ``max_wait_ms`` the worker waits while requests are being
        prepared (decoded) inside :meth:`preparing`: they are on their way (milliseconds).
    :raises ImcapError: if a size is below 1, a wait is negative or ``defaults`` break ``limits``.
    """

    def __init__(self, captioner: Captioner, defaults: Optional[SearchOptions] = None,
                 limits: Optional[SearchLimits] = None, max_batch_size: int = 32, max_wait_ms: float = 10.0,
                 max_queue_size: int = 1024, max_preparing_wait_ms: float = 100.0) -> None:
        check_condition(max_batch_size >= 1, "max_batch_size must be >= 1, got %s" % max_batch_size)
        check_condition(max_wait_ms >= 0, "max_wait_ms must be >= 0, got %s" % max_wait_ms)
        check_condition(max_preparing_wait_ms >= 0, "max_preparing_wait_ms must be >= 0, got %s"
                        % max_preparing_wait_ms)
        check_condition(max_queue_size >= 1, "max_queue_size must be >= 1, got %s" % max_queue_size)
        self.captioner = captioner
        self.defaults = defaults or SearchOptions()
        self.limits = limits or SearchLimits()
        self.limits.check(self.defaults)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_preparing_wait = max_preparing_wait_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.stats = BatchStats()
        self._queue: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self._searches: "collections.OrderedDict[SearchOptions, Captioner]" = collections.OrderedDict()
        self._thread: Optional[threading.Thread] = None
        self._closing = threading.Event()
        self._lock = threading.Lock()  # guards stats and the pending and preparing counts
        self._pending = 0
        self._preparing = 0

    def start(self) -> "BatchingCaptioner":
        """Create the CNN (shared by every option set) and start the worker thread.

        :raises ImcapError: if the CNN cannot be created.
        """
        self.captioner.get_image_encoder()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="imcap-caption-worker", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return self._thread is not None and self._thread.is_alive() and not self._closing.is_set()

    @property
    def queued(self) -> int:
        """Requests submitted and not finished yet."""
        return self._pending

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request being prepared (its image decoded) before :meth:`submit`: while any is, the worker waits
        up to ``max_preparing_wait_ms`` longer for it to join the batch it is collecting."""
        with self._lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._lock:
                self._preparing -= 1

    def submit(self, item: CaptionInput, options: Optional[SearchOptions] = None) -> "Future[Captioned]":
        """Queue one input; thread-safe.

        :return: the future of its :class:`Captioned` (an input that cannot be read gets a result with ``error``,
            as from :meth:`imcap.inference.Captioner.caption`; a search that raises sets the future's exception).
        :raises ImcapError: if ``options`` break the limits, ask for soft guidance or guidance against of a captioner
            that is not guided, or the worker does not run.
        :raises QueueFullError: if ``max_queue_size`` requests are waiting.
        """
        options = options or self.defaults
        self.limits.check(options)
        check_condition(getattr(self.captioner, "guide", None) is not None or not options.guided_softly,
                        "guide_soft_weight and guide_against need a server started with --guide-with-classifier")
        check_condition(self.alive, "the caption worker is not running")
        future: "Future[Captioned]" = Future()
        with self._lock:
            if self._pending >= self.max_queue_size:
                raise QueueFullError("%d requests are waiting: try again later" % self._pending)
            self._pending += 1
        future.add_done_callback(self._finished)
        self._queue.put(_Request(item, options, future, time.monotonic()))
        return future

    def caption(self, item: CaptionInput, options: Optional[SearchOptions] = None,
                timeout: Optional[float] = None) -> Captioned:
        """:meth:`submit` and wait for the outcome (at most ``timeout`` seconds).

        :raises concurrent.futures.TimeoutError: after ``timeout`` seconds.
        """
        return self.submit(item, options).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch it runs; requests still queued fail with an ImcapError."""
        self._closing.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None and not request.future.done():
                request.future.set_exception(ImcapError("the server is shutting down"))

    def _finished(self, _future: "Future[Captioned]") -> None:
        with self._lock:
            self._pending -= 1

    def _run(self) -> None:
        while not self._closing.is_set():
            batch = self._next_batch()
            groups: "collections.OrderedDict[SearchOptions, List[_Request]]" = collections.OrderedDict()
            for request in batch:
                groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                self._search(options, requests)

    def _next_batch(self) -> List[_Request]:
        """The oldest request and those queued or arriving within ``max_wait`` of when the worker takes it (or, while
        requests are being prepared, within ``max_wait + max_preparing_wait``), up to ``max_batch_size`` (empty when
        closing)."""
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch_size:
            end = deadline + (self.max_preparing_wait if self._preparing else 0.0)
            remaining = end - time.monotonic()
            try:
                if remaining <= 0:
                    request = self._queue.get_nowait()
                else:  # in slices: a request starting to be prepared extends the wait without a signal
                    request = self._queue.get(timeout=min(remaining, PREPARING_POLL))
            except queue.Empty:
                if remaining <= 0:
                    break
                continue
            if request is None:  # closing: finish this batch first
                self._closing.set()
                break
            batch.append(request)
        return batch

    def _search(self, options: SearchOptions, requests: List[_Request]) -> None:
        """One batched search of ``requests``, which share ``options``; fills their futures."""
        requests = [r for r in requests if r.future.set_running_or_notify_cancel()]
        if not requests:
            return
        start = time.monotonic()
        try:
            results = self._captioner_for(options).caption([r.item for r in requests])
        except Exception as e:  # noqa: BLE001 - the worker must survive whatever one batch raises
            logger.exception("A search of %d images failed", len(requests))
            with self._lock:
                self.stats.failed_searches += 1
            for request in requests:
                request.future.set_exception(e)
            return
        with self._lock:
            self.stats.searches += 1
            self.stats.images += len(requests)
            self.stats.largest_batch = max(self.stats.largest_batch, len(requests))
        seconds = time.monotonic() - start
        for request, result in zip(requests, results):
            request.future.set_result(Captioned(result, len(requests), start - request.arrival, seconds))

    def _captioner_for(self, options: SearchOptions) -> Captioner:
        """The Captioner of ``options`` (shared models, its own beam search), created on first use and cached."""
        derived = self._searches.get(options)
        if derived is None:
            derived = with_search_options(self.captioner, options, self.max_batch_size)
            self._searches[options] = derived
            while len(self._searches) > MAX_CACHED_SEARCHES:
                self._searches.popitem(last=False)
        else:
            self._searches.move_to_end(options)
        return derived

    def describe(self) -> Dict[str, Any]:
        """The queue's settings and counters (JSON-ready)."""
        with self._lock:
            stats = dataclasses.asdict(self.stats)
        return dict(stats, queued=self._pending, preparing=self._preparing, max_batch_size=self.max_batch_size,
                    max_wait_ms=self.max_wait * 1000.0, max_queue_size=self.max_queue_size)


