"""test/conftest.py: under CI=true a skip that is not expected fails the run (a missing ../shared must not pass
silently); an expected one does not, and outside CI skips stay skips."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SKIPPING = '''
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_skips():
    pytest.skip("%s")
'''


def run_pytest(tmp_path, reason, ci):
    """pytest on a file with one passing and one skipped test, with this project's conftest as a plugin."""
    path = tmp_path / "test_example.py"
    path.write_text(SKIPPING % reason)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "test.conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(path)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ci", [True, False])
def test_an_unexpected_skip_fails_only_in_ci(tmp_path, ci):
    proc = run_pytest(tmp_path, "../shared is not beside the checkout", ci)
    assert "1 passed, 1 skipped" in proc.stdout
    if ci:
        assert proc.returncode == 1, proc.stdout
        assert "unexpected skips (CI=true fails on them)" in proc.stdout
        assert "test_example.py::test_skips: ../shared is not beside the checkout" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout
        assert "unexpected skips" not in proc.stdout


def test_an_expected_skip_passes_in_ci(tmp_path):
    proc = run_pytest(tmp_path, "writing a 10000x10000 JPEG took 12 s", ci=True)
    assert proc.returncode == 0, proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout and "unexpected skips" not in proc.stdout
