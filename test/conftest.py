"""What every test run shares: under CI (``CI=true``, as ``.ci/run`` runs), a skip that is not listed below fails the
run, so a missing ``../shared``, browser or Java cannot turn the suite green by skipping what it was meant to test."""
import os
from typing import List

import pytest

# Skips that may happen in CI: the reason's start, and why it is no loss.
EXPECTED_SKIPS = {
    "writing a 10000x10000 JPEG took": "the huge-image test guards a slow disk; the decoding it tests runs elsewhere",
    "captioning a 10000x10000 image took more than": "the same guard against a slow machine",
}

_unexpected: List[str] = []


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set to ``true`` or ``1``, as ``.ci/run`` is run)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if not any(reason.startswith(expected) for expected in EXPECTED_SKIPS):
            _unexpected.append("%s: %s" % (report.nodeid, reason))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _unexpected and in_ci():
        terminalreporter.section("unexpected skips (CI=true fails on them)", red=True)
        for line in _unexpected:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected and in_ci() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
