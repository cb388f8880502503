"""The reference registry's record (core/registry.py): what a member accepts, and every way it refuses.

A registry record is input like any other: whoever can write the topic can send anything. Each case
here is refused with its bounded reason, before it costs more than its stated size.
"""

from __future__ import annotations

import zlib
from functools import cache

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_monitor.core.events import MODEL_VERSION, decode_predictions
from stream_monitor.core.reference import NumericProfile, ReferenceProfile, build_reference
from stream_monitor.core.registry import (
    RegistryRecordError,
    decode_record,
    encode_record,
    max_profile_bytes,
    reference_problem,
    registry_key,
)
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings
from stream_monitor.offline.demo_data import SyntheticStream

STREAM = SyntheticStream(n=3000, seed=4, n_numeric=3)
SCHEMA = ModelSchema("synth", "binary", STREAM.schema_features(("x0",)))
SCHEMAS = {"synth": SCHEMA}


@cache
def profile() -> ReferenceProfile:
    batches, _ = decode_predictions(STREAM.raw()[0], SCHEMAS)
    return build_reference(SCHEMA, batches["synth"], STREAM.columns()["y"].astype(float))


def refused(key: bytes | None, value: bytes | None, reason: str, match: str | None = None) -> None:
    with pytest.raises(RegistryRecordError, match=match) as caught:
        decode_record(key, value, SCHEMAS)
    assert caught.value.reason == reason


def test_a_published_profile_reads_back_as_itself() -> None:
    value = encode_record(profile(), "synth", "2", published_at=1.5)
    entry = decode_record(registry_key("synth", "2"), value, SCHEMAS)
    assert (entry.model_id, entry.model_version, entry.published_at) == ("synth", "2", 1.5)
    assert entry.profile == profile() and entry.digest == profile().digest()
    # A withdrawal (tombstone) names the version and has no profile.
    gone = decode_record(registry_key("synth", "2"), None, SCHEMAS)
    assert gone.profile is None and gone.model_version == "2"


@given(st.from_regex(MODEL_VERSION, fullmatch=True))
@settings(max_examples=40, deadline=None)
def test_any_version_name_round_trips(version: str) -> None:
    value = encode_record(profile(), "synth", version, published_at=0.0)
    assert decode_record(registry_key("synth", version), value, SCHEMAS).model_version == version


@pytest.mark.parametrize(
    "key", [None, b"", b"synth/2", b'["synth"]', b'["synth", 2]', b'["synth", "../x"]', b'{"a": 1}', b"\xff"]
)
def test_a_key_that_is_not_model_and_version_is_refused(key: bytes | None) -> None:
    refused(key, b"anything", "bad_record", "is not \\[model id, version\\]")


def test_an_unknown_model_is_refused() -> None:
    refused(registry_key("other", "1"), b"x", "unknown_model")


def test_garbled_values_are_refused() -> None:
    key = registry_key("synth", "2")
    good = encode_record(profile(), "synth", "2", published_at=0.0)
    head, _, body = good.partition(b"\n")
    header = orjson.loads(head)
    for value in (b"", b"\x00garbage", b"{}\n", head, b"[1]\n" + body, good[: len(good) // 2]):
        refused(key, value, "bad_record")
    # The header must name the key's model and version.
    refused(key, encode_record(profile(), "synth", "3", published_at=0.0), "bad_record", "key names synth/2")
    # A body that inflates to more than stated is cut off at the stated size: never inflated further.
    bomb = zlib.compress(b"{" + b" " * 50_000_000 + b"}", 9)
    small = orjson.dumps({**header, "bytes": 1000}) + b"\n" + bomb
    refused(key, small, "bad_record", "not the stated 1000 bytes")
    # A stated size beyond what this model's profile can take is refused before inflating.
    cap = max_profile_bytes(SCHEMA, DetectorSettings())
    refused(key, orjson.dumps({**header, "bytes": cap + 1}) + b"\n" + bomb, "bad_record", "size beyond")
    # The digest must be the profile's.
    refused(key, orjson.dumps({**header, "digest": "0" * 32}) + b"\n" + body, "bad_record", "digest")


def test_a_profile_that_does_not_fit_the_model_is_refused() -> None:
    key = registry_key("synth", "2")
    refused(
        key, encode_record(ReferenceProfile(1, "synth"), "synth", "2", published_at=0.0), "schema_mismatch"
    )
    other = ReferenceProfile(1, "other")
    assert reference_problem(SCHEMA, other) == "a profile of model 'other'"
    # Two million bins for a model that builds ten: memory, and detectors blinded.
    wide = ReferenceProfile.from_dict(profile().to_dict())
    values = np.arange(2_000_000, dtype=float)
    wide.numeric["x0"] = NumericProfile(
        values[1:], np.ones(2_000_000, np.int64), 0, 1, 0.5, 0.1, 0.0, values[:10]
    )
    assert "bins" in (reference_problem(SCHEMA, wide, DetectorSettings()) or "")
    many = ReferenceProfile.from_dict(profile().to_dict())
    cat = next(iter(many.categorical))
    many.categorical[cat].categories = [f"c{i}" for i in range(50)]
    many.categorical[cat].counts = np.ones(51, np.int64)
    assert "categories" in (reference_problem(SCHEMA, many, DetectorSettings()) or "")
    nan = ReferenceProfile.from_dict(profile().to_dict())
    nan.numeric["x1"].sample = np.array([np.nan])
    assert "finite" in (reference_problem(SCHEMA, nan) or "")
    assert reference_problem(SCHEMA, profile(), DetectorSettings()) is None


def test_a_version_that_is_not_a_name_cannot_be_published() -> None:
    with pytest.raises(ValueError, match="not a model version name"):
        encode_record(profile(), "synth", "a b", published_at=0.0)
