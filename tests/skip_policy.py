"""A pytest plugin for CI (hack/test.sh loads it with ``-p skip_policy``): a skipped test fails the run unless its
reason is one the caller expects on this machine (``--allow-skip REASON``, the exact text); ``-rs`` prints them all.

A skip hides a check. On a machine hack/setup.sh prepared nothing should be skipped, so a new skip fails the run
until hack/test.sh says why this machine cannot run that test.
"""

from __future__ import annotations

import pytest


class SkipPolicy:
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = set(allowed)
        self.unexpected: list[str] = []

    def _check(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
        if reason not in self.allowed:
            self.unexpected.append(f"{report.nodeid}: {reason}")

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._check(report)  # a module-level importorskip skips the whole file at collection

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._check(report)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.unexpected:
            terminalreporter.section("skips not expected on this machine (--allow-skip in hack/test.sh)", red=True)
            for line in self.unexpected:
                terminalreporter.line(line)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--allow-skip", action="append", default=[], metavar="REASON",
                     help="a skip reason expected on this machine (exact text); any other skip fails the run")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(config.getoption("allow_skip")), "virtops-skip-policy")
