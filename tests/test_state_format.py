"""The one state format: exact round trips, and hostile bytes never get past a StateError.

The decoder reads state from a Kafka topic that others may be able to write to: whatever the bytes,
it returns a container or raises :class:`StateError` — never another exception, never runs code.
"""

from __future__ import annotations

import ast
import math
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_monitor.core import state_format
from stream_monitor.core.state_format import StateReader, decode, encode
from stream_monitor.errors import StateError

PACKAGE = Path(__file__).resolve().parent.parent / "stream_monitor"

SAMPLE: dict[str, Any] = {
    "kind": "sample",
    "format": 1,
    "name": "é 🚀",
    "flags": [True, None, 1.5, "x", {"inside": "a list: plain JSON"}],
    "floats": np.array([np.nan, -np.inf, np.inf, -0.0, 1e-310, 2.5]),
    "matrix": np.arange(12, dtype=np.int32).reshape(3, 4),
    "empty": np.empty((0, 7), dtype=np.float32),
    "big": np.array([2**64 - 1, 0], dtype=np.uint64),
    "mask": np.array([True, False, True]),
    "scalar": np.array(3.25),
    "raw": b"\x00\xff\x80 raw bytes",
    "child": {"n": 3, "grandchild": {"deep": np.array([1, 2], dtype=np.int16)}, "empty": {}},
}


def test_round_trip_is_exact_and_canonical() -> None:
    blob = encode(SAMPLE)
    back = decode(blob)
    assert encode(back) == blob
    assert (
        back["name"] == SAMPLE["name"] and back["flags"] == SAMPLE["flags"] and back["raw"] == SAMPLE["raw"]
    )
    for key in ("floats", "matrix", "empty", "big", "mask", "scalar"):
        assert back[key].dtype == SAMPLE[key].dtype and back[key].shape == SAMPLE[key].shape
        assert back[key].tobytes() == SAMPLE[key].tobytes()  # bit for bit: NaN, -0.0, subnormals
    assert back["child"]["grandchild"]["deep"].tolist() == [1, 2]
    assert back["child"]["empty"] == {}
    # Decoded arrays are the decoder's own: writable, independent of the blob.
    back["matrix"][0, 0] = 99
    assert decode(blob)["matrix"][0, 0] == 0


def test_layout_is_little_endian_and_documented() -> None:
    blob = encode({"a": np.array([1], dtype=">i4"), "m": 1})
    assert blob[:6] == b"SMST\x01\x00"
    (meta_len,) = struct.unpack_from("<I", blob, 6)
    assert blob[10 : 10 + meta_len] == b'{"m":1}'
    assert blob.endswith(b"\x01\x00\x00\x00")  # big-endian input is stored little-endian
    assert decode(blob)["a"].dtype == np.dtype("<i4")


@pytest.mark.parametrize(
    "value",
    [np.array(["text"]), np.array([object()]), np.array([1 + 2j]), {1: "int key"}, {"s": {1, 2}}],
    ids=["unicode", "object", "complex", "int-key", "set"],
)
def test_encode_refuses_what_the_format_cannot_hold(value: Any) -> None:
    with pytest.raises(TypeError):
        encode({"part": value} if not isinstance(value, dict) else value)


def test_versions_and_foreign_bytes_are_refused_with_a_reason() -> None:
    with pytest.raises(StateError, match="version 2 is not the version this stream-monitor reads"):
        decode(b"SMST\x02\x00" + encode({})[6:])
    with pytest.raises(StateError, match="a pickle"):
        decode(pickle.dumps({"format": 1}))
    with pytest.raises(StateError, match="JSON"):
        decode(b'{"format": 1}')
    with pytest.raises(StateError, match="old label buffer"):
        decode(b"SMLJ\x00\x00\x00\x00")
    with pytest.raises(StateError, match="no bytes"):
        decode(b"")
    with pytest.raises(StateError, match="trailing"):
        decode(encode({}) + b"\x00")


def test_hostile_lengths_and_shapes_never_allocate() -> None:
    head = b"SMST\x01\x00" + struct.pack("<I", 0) + struct.pack("<I", 1) + struct.pack("<H", 1) + b"a"
    huge_array = head + b"\x01\x03<f8\x02" + struct.pack("<QQ", 2**40, 2**40)
    with pytest.raises(StateError, match=r"shape|truncated"):
        decode(huge_array)
    with pytest.raises(StateError, match="truncated"):
        decode(head + b"\x02" + struct.pack("<Q", 2**62))
    with pytest.raises(StateError, match="dtype"):
        decode(head + b"\x01\x03|O8\x01" + struct.pack("<Q", 1) + b"\x00" * 8)
    with pytest.raises(StateError, match="unknown kind"):
        decode(head + b"\x09")


def test_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {}
    for _ in range(state_format.MAX_DEPTH + 5):
        deep = {"d": deep}
    with pytest.raises(TypeError, match="deeper"):
        encode(deep)
    body = struct.pack("<II", 0, 0)
    for _ in range(state_format.MAX_DEPTH + 5):
        body = (
            struct.pack("<II", 0, 1)
            + struct.pack("<H", 1)
            + b"d"
            + b"\x03"
            + struct.pack("<Q", len(body))
            + body
        )
    with pytest.raises(StateError, match="deeper"):
        decode(b"SMST\x01\x00" + body)


def test_duplicate_parts_and_objects_in_metadata_are_refused() -> None:
    one = encode({"a": np.zeros(1)})
    n_parts_at = 6 + 4
    two = bytearray(one[:n_parts_at] + struct.pack("<I", 2) + one[n_parts_at + 4 :] + one[n_parts_at + 4 :])
    with pytest.raises(StateError, match="twice"):
        decode(bytes(two))
    meta = b'{"a":{"b":1}}'
    with pytest.raises(StateError, match="is an object"):
        decode(b"SMST\x01\x00" + struct.pack("<I", len(meta)) + meta + struct.pack("<I", 0))


def test_reader_names_the_part_and_the_problem() -> None:
    r = StateReader.of(encode({"kind": "k", "format": 3, "n": "7", "a": np.zeros(2)}), "thing", "k", 3)
    with pytest.raises(StateError, match=r"thing: part 'n' is str, expected an integer"):
        r.integer("n")
    with pytest.raises(StateError, match=r"thing: array 'a' has dtype float64, expected int64"):
        r.array("a", np.int64)
    with pytest.raises(StateError, match=r"thing: array 'a' has shape \(2,\), expected \(3,\)"):
        r.array("a", np.float64, shape=(3,))
    with pytest.raises(StateError, match="thing: expected 'other' state, found 'k'"):
        StateReader.of(encode({"kind": "k", "format": 3}), "thing", "other", 3)
    with pytest.raises(StateError, match="thing / a: expected a container"):
        StateReader(r.parts["a"], "thing / a")


# -- hypothesis: round trips of generated containers, and hostile bytes ------------------------------
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3).map(lambda d: [d])
    ),
    max_leaves=8,
)
dtypes = st.sampled_from(["|b1", "<i1", "<i2", "<i4", "<i8", "<u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"])


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(dtypes))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    raw = draw(
        st.binary(min_size=dtype.itemsize * math.prod(shape), max_size=dtype.itemsize * math.prod(shape))
    )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return array if dtype.kind != "b" else array.view(np.uint8).astype(bool)


containers = st.recursive(
    st.dictionaries(st.text(max_size=6), json_values | arrays() | st.binary(max_size=8), max_size=4),
    lambda inner: st.dictionaries(st.text(max_size=6), inner | json_values | arrays(), max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(containers)
def test_generated_containers_round_trip_byte_for_byte(state: dict[str, Any]) -> None:
    blob = encode(state)
    back = decode(blob)
    assert encode(back) == blob
    assert set(back) == set(state)


def _damaged(blob: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "byte", "insert", "random"]))
    if kind == "random":
        return bytes(data.draw(st.binary(max_size=64)))
    position = data.draw(st.integers(0, max(0, len(blob) - 1)))
    out = bytearray(blob)
    if kind == "truncate":
        return bytes(out[:position])
    if kind == "insert":
        return bytes(out[:position] + data.draw(st.binary(min_size=1, max_size=9)) + out[position:])
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(out)
    out[position] = data.draw(st.integers(0, 255))
    return bytes(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_bytes_give_a_state_error_or_a_container(data: st.DataObject) -> None:
    """Random, truncated, bit-flipped, patched or extended blobs: a StateError or a valid container
    (one that encodes again), never another exception."""
    blob = encode(data.draw(containers) if data.draw(st.booleans()) else SAMPLE)
    hostile = _damaged(blob, data)
    try:
        back = decode(hostile)
    except StateError:
        return
    assert isinstance(back, dict)
    decode(encode(back))


# -- no pickle anywhere --------------------------------------------------------------------------------
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            names |= {
                a.value.split(".")[0]
                for a in node.args[:1]
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            }
    return names


def test_no_module_of_the_package_imports_pickle_or_its_kin() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(_imports(path) & UNSAFE_MODULES)
        for path in PACKAGE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_base64_inside_state() -> None:
    """Nested state is nested containers: no core module encodes bytes as base64 text."""
    offenders = [
        str(p.relative_to(PACKAGE)) for p in (PACKAGE / "core").rglob("*.py") if "base64" in _imports(p)
    ]
    assert offenders == []
