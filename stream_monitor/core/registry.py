"""The reference registry's record: a published reference profile for one model version, as bytes.

``stream-monitor reference publish`` writes one record per (model, version) to a compacted topic;
every member reads the whole topic (kafka/registry.py). This module is the format, pure: the key
is ``["<model id>", "<version>"]`` as JSON (no separator a model id or version could contain), the
value a JSON header line and the profile's JSON compressed with zlib::

    {"format": 1, "model_id": ..., "model_version": ..., "digest": ..., "published_at": ...,
     "encoding": "zlib", "bytes": <uncompressed length>}\\n<zlib bytes>

A record is input like any other: :func:`decode_record` refuses (``RegistryRecordError`` with a
reason from :data:`REJECT_REASONS`) one whose key and header disagree, whose body does not inflate
to the stated length (bounded: a zip bomb is refused before it is inflated), is not a profile, or
does not fit the model's schema (:func:`reference_problem`). A null value is a tombstone: the
version's reference is withdrawn.

>>> from stream_monitor.core.reference import NumericProfile
>>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
>>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
>>> profile = ReferenceProfile(1, "m", numeric={"x": NumericProfile.from_values(np.arange(9.0))})
>>> key, value = registry_key("m", "2"), encode_record(profile, "m", "2", published_at=0.0)
>>> entry = decode_record(key, value, {"m": schema})
>>> entry.model_id, entry.model_version, entry.profile.digest() == profile.digest()
('m', '2', True)
>>> decode_record(registry_key("m", "3"), value, {"m": schema})
Traceback (most recent call last):
...
stream_monitor.core.registry.RegistryRecordError: bad_record: key names m/3, the record m/2
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import orjson

from stream_monitor.core.events import MODEL_VERSION
from stream_monitor.core.reference import CategoricalProfile, NumericProfile, ReferenceProfile
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.errors import StreamMonitorError

RECORD_FORMAT = 1
#: A reference larger than this when inflated is refused (before inflating it all); a model's own
#: bound is lower (:func:`max_profile_bytes`).
MAX_PROFILE_BYTES = 256 * 1024 * 1024
#: Why a registry record was refused (a bounded label of ``stream_monitor_reference_records_total``;
#: signature problems come from kafka/signing.py).
REJECT_REASONS = ("bad_record", "schema_mismatch", "unknown_model")


class RegistryRecordError(StreamMonitorError):
    """A registry record that is not a reference this service can use; ``reason`` is bounded."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class RegistryEntry:
    """One record of the registry: a model version's reference, or its withdrawal (``profile`` None)."""

    model_id: str
    model_version: str
    profile: ReferenceProfile | None
    published_at: float | None = None
    digest: str | None = None


def registry_key(model_id: str, version: str) -> bytes:
    return orjson.dumps([model_id, version])


def parse_key(key: bytes | None) -> tuple[str, str]:
    """``(model id, version)`` of a registry key; :class:`RegistryRecordError` for anything else."""
    try:
        parsed = orjson.loads(key or b"")
    except orjson.JSONDecodeError:
        parsed = None
    if not (
        isinstance(parsed, list)
        and len(parsed) == 2
        and all(isinstance(part, str) for part in parsed)
        and MODEL_VERSION.fullmatch(parsed[1])
    ):
        raise RegistryRecordError("bad_record", f"key {bytes(key or b'')[:80]!r} is not [model id, version]")
    return parsed[0], parsed[1]


def encode_record(profile: ReferenceProfile, model_id: str, version: str, *, published_at: float) -> bytes:
    """The record value of ``profile`` published for ``model_id`` version ``version``."""
    if MODEL_VERSION.fullmatch(version) is None:
        raise ValueError(f"version {version!r} is not a model version name (see the contract)")
    body = profile.to_json()
    header = {
        "format": RECORD_FORMAT,
        "model_id": model_id,
        "model_version": version,
        "digest": profile.digest(),
        "published_at": published_at,
        "encoding": "zlib",
        "bytes": len(body),
    }
    return orjson.dumps(header) + b"\n" + zlib.compress(body, 6)


def max_profile_bytes(schema: ModelSchema, detectors: DetectorSettings) -> int:
    """The most JSON a profile of ``schema`` built with ``detectors`` can take (generously: 40 bytes
    per sampled number, 256 per category), so a record is refused before it inflates beyond it.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> max_profile_bytes(ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),)), DetectorSettings())
    475584
    """
    columns = len(schema.numeric_names) + 1  # and the prediction's score
    numeric = detectors.reference_sample * 40 + detectors.bins * 80 + 1024
    categorical = (detectors.top_k + 1) * 256 + 1024
    total = columns * numeric + (len(schema.categorical_names) + 1) * categorical + 64 * 1024
    return min(MAX_PROFILE_BYTES, total)


def decode_record(
    key: bytes | None,
    value: bytes | None,
    schemas: Mapping[str, ModelSchema],
    detectors: Mapping[str, DetectorSettings] | None = None,
) -> RegistryEntry:
    """Read one registry record (see the module docstring); a null value is a withdrawal.
    ``detectors`` (by model) bound the profile's bins, categories and sample as the model builds them."""
    model_id, version = parse_key(key)
    schema = schemas.get(model_id)
    if schema is None:
        raise RegistryRecordError("unknown_model", f"model {model_id!r} is not configured")
    if value is None:
        return RegistryEntry(model_id, version, None)
    head, newline, body = bytes(value).partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        header = None
    if not newline or not isinstance(header, dict) or header.get("format") != RECORD_FORMAT:
        raise RegistryRecordError("bad_record", f"{model_id}/{version}: not a registry record of format 1")
    if header.get("model_id") != model_id or header.get("model_version") != version:
        raise RegistryRecordError(
            "bad_record",
            f"key names {model_id}/{version}, the record "
            f"{header.get('model_id')}/{header.get('model_version')}",
        )
    size = header.get("bytes")
    limits = (detectors or {}).get(model_id) or DetectorSettings()
    cap = max_profile_bytes(schema, limits)
    if header.get("encoding") != "zlib" or type(size) is not int or not 0 < size <= cap:
        raise RegistryRecordError(
            "bad_record", f"{model_id}/{version}: bad encoding, or a size beyond {cap} bytes, in the header"
        )
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(body, size + 1)  # never more than stated (+1 to see an overflow)
    except zlib.error as exc:
        raise RegistryRecordError(
            "bad_record", f"{model_id}/{version}: body does not inflate ({exc})"
        ) from None
    if len(raw) != size or not inflater.eof:
        raise RegistryRecordError("bad_record", f"{model_id}/{version}: body is not the stated {size} bytes")
    try:
        profile = ReferenceProfile.from_json(raw)
    except StreamMonitorError as exc:
        raise RegistryRecordError("bad_record", f"{model_id}/{version}: {exc}") from None
    if profile.digest() != header.get("digest"):
        raise RegistryRecordError("bad_record", f"{model_id}/{version}: digest does not match the profile")
    problem = reference_problem(schema, profile, limits)
    if problem is not None:
        raise RegistryRecordError("schema_mismatch", f"{model_id}/{version}: {problem}")
    published = header.get("published_at")
    return RegistryEntry(
        model_id,
        version,
        profile,
        float(published) if isinstance(published, int | float) else None,
        profile.digest(),
    )


def reference_problem(
    schema: ModelSchema, profile: ReferenceProfile, detectors: DetectorSettings | None = None
) -> str | None:
    """Why ``profile`` cannot be the reference of ``schema``'s model, or ``None`` when it can: every
    feature profiled, finite, and no larger than the model's ``detectors`` build it (bins, categories,
    sample) — a profile of two million bins would cost memory and blind the detectors.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> schema = ModelSchema("m", "regression", (FeatureSpec("x", "numeric"),))
    >>> reference_problem(schema, ReferenceProfile(1, "m"))
    "numeric feature 'x' has no profile"
    """
    d = detectors or DetectorSettings()
    if profile.model_id != schema.model_id:
        return f"a profile of model {profile.model_id!r}"
    columns: list[tuple[str, NumericProfile | CategoricalProfile | None, type]] = [
        *((f"numeric feature {n!r}", profile.numeric.get(n), NumericProfile) for n in schema.numeric_names),
        *(
            (f"categorical feature {n!r}", profile.categorical.get(n), CategoricalProfile)
            for n in schema.categorical_names
        ),
    ]
    if profile.prediction is not None:
        columns.append(("the prediction", profile.prediction, type(profile.prediction)))
    for what, column, kind in columns:
        if column is None or not isinstance(column, kind):
            return f"{what} has no profile"
        if (column.counts < 0).any():
            return f"{what}: negative counts"
        if isinstance(column, NumericProfile):
            if not (np.isfinite(column.edges).all() and np.isfinite(column.sample).all()):
                return f"{what}: edges and sample must be finite"
            if column.counts.size > d.bins or column.sample.size > d.reference_sample:
                return (
                    f"{what}: {column.counts.size} bins and a sample of {column.sample.size}, more than the "
                    f"model builds (detectors.bins {d.bins}, detectors.reference_sample {d.reference_sample})"
                )
        elif isinstance(column, CategoricalProfile) and len(column.categories) > d.top_k:
            return f"{what}: {len(column.categories)} categories, more than detectors.top_k {d.top_k}"
    return None


__all__ = [
    "MAX_PROFILE_BYTES",
    "REJECT_REASONS",
    "RegistryEntry",
    "RegistryRecordError",
    "decode_record",
    "encode_record",
    "parse_key",
    "reference_problem",
    "registry_key",
]
