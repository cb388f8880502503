"""The contract's JSON Schemas (docs/schemas/): valid schemas, and the inputs we ship and generate
conform to them (records the service emits are validated where the tests read them)."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from contract_schemas import KINDS, SCHEMAS, validate, validator

from stream_monitor.kafka.produce import synthetic_events

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


@pytest.mark.parametrize("kind", KINDS)
def test_every_record_type_has_a_valid_schema(kind: str) -> None:
    assert (SCHEMAS / f"{kind}.schema.json").is_file()
    validator(kind)


@pytest.mark.parametrize(("kind", "name"), [("prediction", "bikes_predictions"), ("label", "bikes_labels")])
def test_shipped_examples_conform(kind: str, name: str) -> None:
    with gzip.open(EXAMPLES / f"{name}.jsonl.gz", "rb") as f:
        for line in f:
            validate(kind, orjson.loads(line))


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_generated_events_conform(task: str) -> None:
    for role, event in synthetic_events("m", ["x", "y"], ["c"], task, count=500, drift_after=250):
        validate("prediction" if role == "predictions" else "label", event)


def test_the_schemas_reject_what_the_contract_rejects() -> None:
    good = {"event_id": "e", "model_id": "m", "ts": "2025-01-01T00:00:00Z", "features": {}, "prediction": 0.5}
    validate("prediction", good)
    for bad in (
        {**good, "ts": "2025-01-01T00:00:00"},  # no offset
        {**good, "features": {"x": [1]}},
        {**good, "event_id": "e" * 257},
        {k: v for k, v in good.items() if k != "prediction"},
    ):
        with pytest.raises(AssertionError):
            validate("prediction", bad)
    with pytest.raises(AssertionError):
        validate(
            "dead_letter",
            {"reason": "nonsense", "source_topic": "t", "source_partition": "0", "source_offset": "1"},
        )
