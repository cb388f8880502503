"""Shared pytest fixtures. The Kafka broker fixtures live in ``kafka_fixtures.py``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kafka_fixtures import (  # noqa: F401  (fixtures are found by name)
    consumer_factory,
    group_id,
    kafka_admin,
    kafka_bootstrap,
    kafka_broker,
    mark_kafka_tests,
    producer_factory,
    topic_factory,
)

if TYPE_CHECKING:
    from service_fixtures import ServiceProcess


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_kafka_tests(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI every dependency is installed and the broker is running: a skip there is a failure.

    This is the net under the rule that a skipped Kafka test in CI fails the run; it holds for the
    promtool, Prometheus and Chromium tests too.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (not allowed): {reason}"


_SKIPPED_UNDER_CI: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report: pytest.CollectReport) -> None:
    """The same for a whole module skipped at collection (``pytest.importorskip`` at the top)."""
    if os.environ.get("CI") and report.skipped:
        report.outcome = "failed"
        _SKIPPED_UNDER_CI.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A module failed at collection does not always count as a failed test: fail the session.
    if _SKIPPED_UNDER_CI and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def services() -> Iterator[Callable[..., ServiceProcess]]:
    """Start ``stream-monitor run`` subprocesses; every one still running is stopped at teardown."""
    from service_fixtures import ServiceProcess

    started: list[ServiceProcess] = []

    def start(config: Path, port: int, log: Path, env: dict[str, str] | None = None) -> ServiceProcess:
        svc = ServiceProcess(config, port, log, env).start()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()
