"""Shared pytest fixtures. The Kafka broker fixtures live in ``kafka_fixtures.py``."""

from __future__ import annotations

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_kafka_tests(items)
