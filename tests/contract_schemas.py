"""The contract's JSON Schemas (docs/schemas/) as validators for the tests.

Every record a test sees the service emit (triggers, dead-letter headers) or feed it (predictions,
labels) goes through :func:`validate`; a record that breaks its schema fails the test that saw it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
KINDS = ("prediction", "label", "trigger", "dead_letter", "model_version_changed")


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = orjson.loads(path.read_bytes())
        resource = Resource.from_contents(schema)
        resources += [(schema["$id"], resource), (path.name, resource)]
    return Registry().with_resources(resources)


@cache
def validator(kind: str) -> Draft202012Validator:
    schema = orjson.loads((SCHEMAS / f"{kind}.schema.json").read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=_registry())


def validate(kind: str, record: Any) -> None:
    """Raise AssertionError naming every violation of ``kind``'s schema by ``record``."""
    errors = sorted(validator(kind).iter_errors(record), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise AssertionError(f"{kind} record breaks docs/schemas/{kind}.schema.json:\n" + "\n".join(lines))


def validate_dead_letter_headers(headers: list[tuple[str, bytes | None]] | None) -> None:
    validate(
        "dead_letter", {name: (value or b"").decode("utf-8", "replace") for name, value in headers or []}
    )


def check_one_truth(trigger: dict[str, Any]) -> None:
    """Fields of a trigger that must not contradict each other (docs/contract.md)."""
    rec = trigger["recommendation"]
    outlook = rec.get("labels")
    if outlook is not None and "enough_new_labels" in rec:
        assert rec["enough_new_labels"] == outlook["enough"], rec
        assert outlook["new_labels"] == rec["new_labels_since_last_trigger"], rec
    if rec["action"] == "retrain":
        assert rec.get("enough_new_labels") is True, rec
    if trigger["kind"] == "integrity":
        assert rec["action"] == "investigate", rec
