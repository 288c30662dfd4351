"""Conformance matrix plumbing: assertion rewriting for the scenario module, and the report.

With `MH_CONFORMANCE_REPORT=<path>` set, the outcome of every scenario x provider test of this run
is written to that path as Markdown (`report.render`) when the session ends.
"""

from __future__ import annotations

import os
import time

import pytest

pytest.register_assert_rewrite(
    "conformance.scenarios", "conformance.responses", "conformance.published"
)  # before import: readable failures

_results: dict[tuple[str, str], tuple[str, str]] = {}  # (scenario, provider) -> (status, detail)
_started = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "scenario" not in params or "provider" not in params:
        return
    key = (params["scenario"], params["provider"])
    if report.when == "call" or report.failed or report.skipped:
        _results[key] = _status(report)


def _status(report) -> tuple[str, str]:
    if report.skipped and hasattr(report, "wasxfail"):
        return "xfail", report.wasxfail  # a KNOWN_BUGS entry that still fails (a fixed one fails strict)
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "gap", reason.removeprefix("Skipped: ").removeprefix("gap: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = (crash.message if crash else str(report.longrepr)).splitlines()[0][:200]
        if text.startswith("[XPASS(strict)]"):
            text = "passes now: remove it from KNOWN_BUGS (" + text.removeprefix("[XPASS(strict)]").strip() + ")"
        return "fail", text
    return "pass", ""


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("MH_CONFORMANCE_REPORT")
    if not path or not _results:
        return
    from .report import render

    with open(path, "w", encoding="utf-8") as out:
        out.write(render(_results, time.monotonic() - _started))
