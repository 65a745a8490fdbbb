"""CI's skip policy (tests/skip_policy.py, loaded by hack/test.sh): a skip fails the run unless its reason is
expected on this machine; pytest alone would report it as one letter among the dots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SAMPLE = '''
import pytest

pytest.importorskip("no_such_module_anywhere", reason="an optional library is missing")


def test_never_collected():
    pass
'''
SAMPLE_RUNTIME = '''
import pytest


def test_passes():
    pass


@pytest.mark.skipif(True, reason="no IPv6 loopback here")
def test_skipped():
    pass
'''


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_collection_skip.py").write_text(SAMPLE)
    (tmp_path / "test_runtime_skip.py").write_text(SAMPLE_RUNTIME)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "skip_policy",
                           "--rootdir", str(tmp_path), str(tmp_path), *args],
                          env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=False, cwd=tmp_path)


def test_skips_not_allowed_fail_the_run_and_are_named(tmp_path):
    proc = run_pytest(tmp_path, "--allow-skip", "no IPv6 loopback here")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "skips not expected on this machine" in proc.stdout
    assert "test_collection_skip.py: an optional library is missing" in proc.stdout
    assert "test_runtime_skip.py::test_skipped" not in proc.stdout.split("skips not expected")[1]


def test_a_run_whose_every_skip_is_allowed_passes_and_still_prints_them(tmp_path):
    proc = run_pytest(tmp_path, "--allow-skip", "no IPv6 loopback here",
                      "--allow-skip", "an optional library is missing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SKIPPED" in proc.stdout and "no IPv6 loopback here" in proc.stdout
