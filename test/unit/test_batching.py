"""imcap.serving.batching on a stand-in captioner: requests that arrive together share one search per option set, a batch
never exceeds its size, the wait is counted from the oldest request, a failing search fails only its requests,
each option set's derived captioner is made once and reused while cached, and the limits and the queue bound hold."""
import inspect
import threading
import time
from concurrent.futures import wait

import numpy as np
import pytest

from imcap.serving import batching
from imcap.serving.batching import BatchingCaptioner, QueueFullError, SearchLimits, SearchOptions
from imcap.inference import CaptionInput, CaptionResult, Captioner
from imcap.utils import ImcapError


class FakeCaptioner:
    """Stands in for :class:`imcap.inference.Captioner`: :meth:`with_search_options` derives a
    :class:`DerivedCaptioner` (recorded in ``derived``) as the real one does; each batch a derived one captions is
    recorded in ``batches`` (its options and sources) and ``searched_by`` (which derived captioner); an input is
    captioned with its ``source``."""

    def __init__(self, seconds=0.0, fail_on=None):
        self.batches = []
        self.searched_by = []
        self.derived = []
        self.seconds = seconds
        self.fail_on = fail_on
        self.encoder_made = False

    def get_image_encoder(self):
        self.encoder_made = True

    def with_search_options(self, batch_size=None, options=None, keep_attention=None, **settings):
        # a call the real Captioner.with_search_options takes
        inspect.signature(Captioner.with_search_options).bind(self, batch_size=batch_size, options=options,
                                                              keep_attention=keep_attention, **settings)
        derived = DerivedCaptioner(self, (options or SearchOptions()).replace(**settings), batch_size, keep_attention,
                                   encoder_made_before=self.encoder_made)
        self.derived.append(derived)
        return derived

    def caption(self, items, options, derived=None):
        self.batches.append((options, [item.source for item in items]))
        self.searched_by.append(derived)
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in [item.source for item in items]:
            raise RuntimeError("search failed")
        return [CaptionResult(i + 1, [item.source, str(options.beam_size)], -1.0) for i, item in enumerate(items)]


class DerivedCaptioner:
    def __init__(self, parent, options, batch_size, keep_attention, encoder_made_before):
        self.parent, self.options, self.batch_size, self.keep_attention = parent, options, batch_size, keep_attention
        self.encoder_made_before = encoder_made_before

    def caption(self, items):
        return self.parent.caption(items, self.options, derived=self)


def item(name):
    return CaptionInput(features=np.zeros((4, 8), dtype=np.float32), source=name)


@pytest.fixture
def fake():
    return FakeCaptioner(seconds=0.05)


def make(fake, **kwargs):
    service = BatchingCaptioner(fake, SearchOptions(), SearchLimits(max_beam_size=8), **kwargs)
    return service.start()


def test_requests_that_arrive_together_share_one_search_per_option_set(fake):
    service = make(fake, max_batch_size=16, max_wait_ms=300)
    try:
        beam3 = SearchOptions(beam_size=3)
        futures = [service.submit(item("a%d" % i)) for i in range(5)]
        futures += [service.submit(item("b%d" % i), beam3) for i in range(3)]
        futures.append(service.submit(item("a5"), SearchOptions()))  # equal options: the same group
        done = [f.result(10) for f in futures]
    finally:
        service.close()
    assert fake.encoder_made
    assert [(options.beam_size, sources) for options, sources in fake.batches] == [
        (5, ["a0", "a1", "a2", "a3", "a4", "a5"]), (3, ["b0", "b1", "b2"])]
    assert [d.result.tokens[0] for d in done] == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "a5"]
    assert [d.batch_size for d in done] == [6] * 5 + [3] * 3 + [6]
    assert service.stats.searches == 2 and service.stats.images == 9 and service.stats.largest_batch == 6
    assert service.queued == 0


def test_each_option_set_gets_one_derived_captioner_reused_until_least_recently_used():
    fake = FakeCaptioner()
    service = make(fake, max_batch_size=4, max_wait_ms=0)

    def search(options, name):
        """Caption one input alone; the derived captioner that searched it."""
        assert service.caption(item(name), options, timeout=10).result.tokens[0] == name
        return fake.searched_by[-1]

    try:
        default = search(SearchOptions(), "a")
        assert search(SearchOptions(), "b") is default                 # equal options: the same captioner
        beam3 = search(SearchOptions(beam_size=3), "c")
        assert beam3 is not default and search(SearchOptions(beam_size=3), "d") is beam3
        assert fake.derived == [default, beam3]                        # each made once
        # derived from the served captioner: the CNN made first (shared), a batch's size, the attention, the options
        for derived, options in ((default, SearchOptions()), (beam3, SearchOptions(beam_size=3))):
            assert derived.parent is fake and derived.encoder_made_before
            assert derived.options == options and derived.batch_size == 4 and derived.keep_attention is True
        # the cache holds MAX_CACHED_SEARCHES option sets and drops the least recently used one, not the oldest
        assert search(SearchOptions(), "e") is default                 # default is now more recent than beam3
        others = [SearchOptions(max_output_length=40 + n) for n in range(batching.MAX_CACHED_SEARCHES - 1)]
        made = [search(options, "f%d" % n) for n, options in enumerate(others)]
        assert len(set(map(id, made))) == len(others) and len(fake.derived) == batching.MAX_CACHED_SEARCHES + 1
        assert search(SearchOptions(), "g") is default                 # still cached
        again = search(SearchOptions(beam_size=3), "h")                # evicted: made anew
        assert again is not beam3 and again.options == beam3.options
        assert len(fake.derived) == batching.MAX_CACHED_SEARCHES + 2
        assert search(others[-1], "i") is made[-1]                     # the most recent ones stay ...
        assert search(others[0], "j") is not made[0]                   # ... the least recent made room for beam3
    finally:
        service.close()
    assert [options for options, _ in fake.batches] == [d.options for d in fake.searched_by]


def test_batches_stay_within_their_size_and_queued_requests_join_the_next(fake):
    service = make(fake, max_batch_size=4, max_wait_ms=0)
    try:
        futures = [service.submit(item(str(i))) for i in range(10)]
        wait(futures, 10)
    finally:
        service.close()
    sizes = [len(sources) for _, sources in fake.batches]
    assert max(sizes) <= 4 and sum(sizes) == 10
    assert len(sizes) < 10  # those queued while a search ran joined the next one without waiting
    assert sorted(s for _, sources in fake.batches for s in sources) == sorted(str(i) for i in range(10))


def test_a_lone_request_waits_at_most_max_wait(fake):
    service = make(fake, max_batch_size=32, max_wait_ms=100)
    try:
        start = time.monotonic()
        done = service.caption(item("x"), timeout=10)
        elapsed = time.monotonic() - start
    finally:
        service.close()
    assert 0.09 <= done.wait_seconds < 0.5 and elapsed < 1.0
    assert done.batch_size == 1


def test_a_failing_search_fails_its_requests_and_the_worker_goes_on():
    fake = FakeCaptioner(fail_on="bad")
    service = make(fake, max_batch_size=8, max_wait_ms=100)
    try:
        failed = [service.submit(item("bad")), service.submit(item("ok"))]
        for future in failed:
            with pytest.raises(RuntimeError, match="search failed"):
                future.result(10)
        assert service.caption(item("next"), timeout=10).result.tokens[0] == "next"
    finally:
        service.close()
    assert service.stats.failed_searches == 1 and service.stats.searches == 1


def test_limits_queue_bound_and_close():
    fake = FakeCaptioner(seconds=0.3)
    service = make(fake, max_batch_size=1, max_wait_ms=0, max_queue_size=2)
    try:
        for options, message in ((SearchOptions(beam_size=9), "beam_size must be between 1 and 8"),
                                 (SearchOptions(max_output_length=101), "max_output_length must be between 1 and"),
                                 (SearchOptions(length_penalty_alpha=10.5), "length_penalty_alpha must be between"),
                                 (SearchOptions(sample=True, nbest_size=9), "nbest_size must be between 1 and 8")):
            with pytest.raises(ImcapError, match=message):   # within SearchOptions' ranges, above the server's limits
                service.submit(item("x"), options)
        first, second = service.submit(item("1")), service.submit(item("2"))
        with pytest.raises(QueueFullError, match="2 requests are waiting"):
            service.submit(item("3"))
        first.result(10)
    finally:
        service.close()
    assert second.done()  # finished, or failed by close()
    with pytest.raises(ImcapError, match="not running"):
        service.submit(item("late"))


def test_submit_is_thread_safe(fake):
    service = make(fake, max_batch_size=8, max_wait_ms=20)
    results = {}

    def client(k):
        results[k] = service.caption(item("t%d" % k), timeout=20).result.tokens[0]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        service.close()
    assert results == {k: "t%d" % k for k in range(24)}
    assert service.stats.images == 24 and service.stats.searches < 24


def test_bad_settings_are_refused(fake):
    with pytest.raises(ImcapError, match="max_batch_size"):
        BatchingCaptioner(fake, max_batch_size=0)
    with pytest.raises(ImcapError, match="max_wait_ms"):
        BatchingCaptioner(fake, max_wait_ms=-1)
    with pytest.raises(ImcapError, match="beam_size must be between 1 and 4"):
        BatchingCaptioner(fake, SearchOptions(beam_size=5), SearchLimits(max_beam_size=4))
