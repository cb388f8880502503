"""The one state format: a versioned container of named parts, safe to read from untrusted bytes.

Every stateful piece (sketches, windows, label buffer, performance, streaming detectors, policy,
insights, warm-up, monitor, engine) turns its state into a *container*: a ``dict`` from part name to
part, where a part is

- a numpy array of booleans, integers or floats (any shape): stored as raw little-endian bytes with
  its dtype and shape, read back bit for bit (NaN, infinities and ``-0.0`` included);
- ``bytes`` (or :class:`Pieces`, bytes given as a list of buffers): stored as they are;
- a ``dict``: a nested container (its keys are part names again);
- anything else JSON can hold (``None``, bool, int, float, str, list): metadata, stored as JSON
  (orjson). A ``dict`` inside a list is plain JSON. JSON has no NaN or infinity (orjson writes
  ``null``), so a float that may be non-finite belongs in an array.

:func:`encode` writes a container as bytes, :func:`decode` reads them back as the same ``dict``
(parts in order: the JSON parts first, then the binary ones, each group in insertion order), and
``encode(decode(b)) == b`` for every blob :func:`encode` wrote. Decoding never runs code (no pickle,
no object dtype, no ``eval``), and on any other bytes it returns a container or raises
:class:`~stream_monitor.errors.StateError`, nothing else: unknown version, truncation, trailing bytes,
bad lengths, unknown dtypes, too deep nesting.
:class:`StateReader` then hands typed parts to each class's ``from_state`` and names what is wrong.

Layout (all integers little-endian; like msgpack, every length comes before what it measures; like
``.npy``, an array is a dtype string, a shape and the raw C-order bytes)::

    blob      = b"SMST" version:u16 container
    container = meta_len:u32 meta                  # meta: one JSON object of the JSON parts
                n_parts:u32 part*                  # the binary parts
    part      = name_len:u16 name tag:u8 body      # name: UTF-8
    body      = (tag 1, array)     dtype_len:u8 dtype ndim:u8 dim:u64 * ndim data
              | (tag 2, bytes)     size:u64 data
              | (tag 3, container) size:u64 container

``dtype`` is numpy's ``dtype.str`` of a little-endian bool, integer or float type (``"|b1"``,
``"<i8"``, ``"<u8"``, ``"<f4"``, ...); ``data`` is ``prod(dims) * itemsize`` bytes. Base64 appears
nowhere: nested state is nested containers, not encoded bytes inside JSON.

>>> blob = encode({"format": 1, "counts": np.array([3, 4], dtype=np.int64), "child": {"name": "x"}})
>>> blob[:6]
b'SMST\\x01\\x00'
>>> decode(blob)
{'format': 1, 'counts': array([3, 4]), 'child': {'name': 'x'}}
>>> encode(decode(blob)) == blob
True
>>> decode(b"\\x80\\x05K\\x01.")
Traceback (most recent call last):
...
stream_monitor.errors.StateError: not stream-monitor state: a pickle (refused: restoring never runs code)
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, Self, TypeVar

import numpy as np
import orjson

from stream_monitor.errors import StateError

__all__ = [
    "MAGIC",
    "VERSION",
    "Pieces",
    "StateReader",
    "decode",
    "encode",
    "encode_chunks",
    "frozen",
    "indexed",
    "is_state",
    "restoring",
    "tagged",
]

MAGIC = b"SMST"
#: Version of the container layout above; a blob of another version is refused.
VERSION = 1
#: Nested containers deeper than this are refused (a hostile blob cannot exhaust the stack).
MAX_DEPTH = 32
_MAX_NDIM = 32

_P = ParamSpec("_P")
_R = TypeVar("_R")
_ARRAY, _BYTES, _CONTAINER = 1, 2, 3
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = MAGIC + _U16.pack(VERSION)
#: The dtypes an array part may have: little-endian bools, integers and floats.
_STORABLE: tuple[type, ...] = (bool, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32)
_STORABLE += (np.uint64, np.float16, np.float32, np.float64)
_DTYPES = {np.dtype(t).newbyteorder("<").str: np.dtype(t).newbyteorder("<") for t in _STORABLE}


# -- encoding ---------------------------------------------------------------------------------------
def encode(state: Mapping[str, Any]) -> bytes:
    """The container ``state`` as bytes (see the module docstring for what a part may be).

    Raises ``TypeError`` for a part that has no place in the format (an object array, a set, a
    ``dict`` with non-string keys): that is a bug in the caller, not bad input.

    >>> len(encode({}))
    14
    """
    return b"".join(encode_chunks(state))


def encode_chunks(state: Mapping[str, Any]) -> list[Any]:
    """:func:`encode`'s bytes as the list of pieces it joins, not joined (no full-size copy).

    Each piece supports the buffer protocol (``bytes``, or a ``uint8`` view of an array part that
    shares the array's memory), so a consumer can hash, compress or write them one by one:
    ``b"".join(encode_chunks(s)) == encode(s)``. The pieces are only valid while the arrays of
    ``state`` are not modified.

    >>> import hashlib
    >>> state = {"n": 1, "x": np.arange(3.0)}
    >>> h = hashlib.sha256()
    >>> for piece in encode_chunks(state):
    ...     h.update(piece)
    >>> h.digest() == hashlib.sha256(encode(state)).digest()
    True
    """
    chunks: list[Any] = [_HEADER]
    _encode_container(state, chunks, 0)
    return chunks


def frozen(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the container ``state`` that later changes to the live objects cannot reach, so it
    can be encoded on another thread while they go on changing (a checkpoint written in the
    background: :mod:`stream_monitor.kafka.checkpoint`).

    Every writeable array is copied; a read-only array is shared (nothing can change it in place:
    numpy refuses the write), which is how the large arrays a class never modifies in place (the label
    buffer's keys, scores and class codes) are not copied. Containers and lists are rebuilt; other
    parts (numbers, strings, ``bytes``) are immutable. ``encode(frozen(s)) == encode(s)``.

    >>> live = {"x": np.zeros(2), "meta": [1, {"a": 2}]}
    >>> copy = frozen(live)
    >>> live["x"][0] = 5.0; live["meta"][1]["a"] = 3
    >>> copy["x"].tolist(), copy["meta"]
    ([0.0, 0.0], [1, {'a': 2}])
    """
    return {name: _frozen(value) for name, value in state.items()}


def _frozen(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy() if value.flags.writeable else value
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_frozen(v) for v in value]
    if isinstance(value, Pieces):
        return Pieces([bytes(p) for p in value.pieces])
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


def _encode_container(state: Mapping[str, Any], chunks: list[Any], depth: int) -> int:
    if depth > MAX_DEPTH:
        raise TypeError(f"state nested deeper than {MAX_DEPTH} containers")
    meta: dict[str, Any] = {}
    parts: list[Any] = []
    size = 0
    n_parts = 0
    for name, value in state.items():
        if not isinstance(name, str):
            raise TypeError(f"state part names are strings, got {name!r}")
        if isinstance(value, np.ndarray):
            n_parts += 1
            size += _encode_array(name, value, parts)
        elif isinstance(value, bytes | bytearray | memoryview):
            n_parts += 1
            data = bytes(value)
            head = _part_head(name, _BYTES) + _U64.pack(len(data))
            parts += [head, data]
            size += len(head) + len(data)
        elif isinstance(value, Pieces):
            n_parts += 1
            head = _part_head(name, _BYTES) + _U64.pack(value.size)
            parts.append(head)
            parts += value.pieces
            size += len(head) + value.size
        elif isinstance(value, Mapping):
            n_parts += 1
            inner: list[Any] = []
            inner_size = _encode_container(value, inner, depth + 1)
            head = _part_head(name, _CONTAINER) + _U64.pack(inner_size)
            parts.append(head)
            parts += inner
            size += len(head) + inner_size
        else:
            meta[name] = value
    meta_bytes = orjson.dumps(meta) if meta else b""
    head = _U32.pack(len(meta_bytes)) + meta_bytes + _U32.pack(n_parts)
    chunks.append(head)
    chunks += parts
    return len(head) + size


class Pieces:
    """A bytes part given as pieces: written as their concatenation, never joined in memory.

    Each piece supports the buffer protocol (contiguous). It decodes as ``bytes`` like any bytes part.

    >>> decode(encode({"b": Pieces([b"ab", memoryview(b"cd")])})) == {"b": b"abcd"}
    True
    """

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: Sequence[Any]) -> None:
        self.pieces = [p for p in pieces if memoryview(p).nbytes]
        self.size = sum(memoryview(p).nbytes for p in self.pieces)


def _part_head(name: str, tag: int) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise TypeError(f"state part name of {len(raw)} bytes (at most 65535)")
    return _U16.pack(len(raw)) + raw + bytes([tag])


def _encode_array(name: str, value: np.ndarray, parts: list[Any]) -> int:
    descr = value.dtype.newbyteorder("<").str
    if descr not in _DTYPES:
        raise TypeError(
            f"state part {name!r}: arrays of {value.dtype} cannot be stored (bool/int/float only)"
        )
    if value.ndim > _MAX_NDIM:
        raise TypeError(f"state part {name!r}: {value.ndim} dimensions (at most {_MAX_NDIM})")
    data = np.asarray(value, dtype=_DTYPES[descr])
    if not data.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
        data = data.copy(order="C")
    head = (
        _part_head(name, _ARRAY)
        + bytes([len(descr)])
        + descr.encode("ascii")
        + bytes([data.ndim])
        + b"".join(_U64.pack(d) for d in data.shape)
    )
    parts += [head, data.reshape(-1).view(np.uint8)]
    return len(head) + data.nbytes


# -- decoding ---------------------------------------------------------------------------------------
def is_state(data: bytes) -> bool:
    """Whether ``data`` starts like a blob of this format (any version).

    >>> is_state(encode({})), is_state(b'{"format": 1}')
    (True, False)
    """
    return bytes(data[:4]) == MAGIC


def decode(data: bytes) -> dict[str, Any]:
    """Read a container written by :func:`encode`; :class:`StateError` on anything else.

    >>> decode(b'{"format": 1}')
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: not stream-monitor state: JSON (from an older stream-monitor?)
    >>> decode(b"SMST\\x07\\x00")
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: state format version 7 is not the version this stream-monitor reads (1)
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    if bytes(view[:4]) != MAGIC:
        raise StateError(f"not stream-monitor state: {_describe(bytes(view[:16]))}")
    if len(view) < 6:
        raise StateError("state truncated in its header")
    (version,) = _U16.unpack_from(view, 4)
    if version != VERSION:
        raise StateError(
            f"state format version {version} is not the version this stream-monitor reads ({VERSION})"
        )
    try:
        state, end = _decode_container(view, 6, len(view), 0)
    except StateError:
        raise
    except (ValueError, TypeError, OverflowError, MemoryError, IndexError, struct.error) as exc:
        raise StateError(f"corrupt state: {exc}") from exc
    if end != len(view):
        raise StateError(f"corrupt state: {len(view) - end} trailing bytes")
    return state


def _describe(head: bytes) -> str:
    if head[:1] == b"\x80":
        return "a pickle (refused: restoring never runs code)"
    if head[:1] in (b"{", b"["):
        return "JSON (from an older stream-monitor?)"
    if head[:4] == b"SMLJ":
        return "an old label buffer snapshot"
    if not head:
        return "no bytes"
    return f"unknown bytes {head[:8]!r}"


def _need(end: int, pos: int, n: int, what: str) -> None:
    if n < 0 or pos + n > end:
        raise StateError(f"corrupt state: truncated in {what}")


def _decode_container(view: memoryview, pos: int, end: int, depth: int) -> tuple[dict[str, Any], int]:
    if depth > MAX_DEPTH:
        raise StateError(f"corrupt state: containers nested deeper than {MAX_DEPTH}")
    _need(end, pos, 4, "a container header")
    (meta_len,) = _U32.unpack_from(view, pos)
    pos += 4
    _need(end, pos, meta_len, "JSON metadata")
    state: dict[str, Any] = {}
    if meta_len:
        try:
            meta = orjson.loads(view[pos : pos + meta_len])
        except orjson.JSONDecodeError as exc:
            raise StateError(f"corrupt state: JSON metadata: {exc}") from exc
        if not isinstance(meta, dict):
            raise StateError("corrupt state: JSON metadata is not an object")
        for key, value in meta.items():
            if isinstance(value, dict):  # encode writes every dict part as a container
                raise StateError(f"corrupt state: JSON part {key!r} is an object")
        state.update(meta)
    pos += meta_len
    _need(end, pos, 4, "a container header")
    (n_parts,) = _U32.unpack_from(view, pos)
    pos += 4
    for _ in range(n_parts):
        _need(end, pos, 2, "a part name")
        (name_len,) = _U16.unpack_from(view, pos)
        pos += 2
        _need(end, pos, name_len + 1, "a part name")
        try:
            name = str(view[pos : pos + name_len], "utf-8")
        except UnicodeDecodeError as exc:
            raise StateError(f"corrupt state: part name is not UTF-8: {exc}") from exc
        if name in state:
            raise StateError(f"corrupt state: part {name!r} appears twice")
        pos += name_len
        tag = view[pos]
        pos += 1
        if tag == _ARRAY:
            state[name], pos = _decode_array(view, pos, end, name)
        elif tag in (_BYTES, _CONTAINER):
            _need(end, pos, 8, f"part {name!r}")
            (size,) = _U64.unpack_from(view, pos)
            pos += 8
            _need(end, pos, size, f"part {name!r}")
            if tag == _BYTES:
                state[name] = bytes(view[pos : pos + size])
            else:
                state[name], inner_end = _decode_container(view, pos, pos + size, depth + 1)
                if inner_end != pos + size:
                    raise StateError(
                        f"corrupt state: container {name!r} has {pos + size - inner_end} extra bytes"
                    )
            pos += size
        else:
            raise StateError(f"corrupt state: part {name!r} has unknown kind {tag}")
    return state, pos


def _decode_array(view: memoryview, pos: int, end: int, name: str) -> tuple[np.ndarray, int]:
    _need(end, pos, 1, f"array {name!r}")
    descr_len = view[pos]
    pos += 1
    _need(end, pos, descr_len + 1, f"array {name!r}")
    descr = bytes(view[pos : pos + descr_len]).decode("ascii", errors="replace")
    dtype = _DTYPES.get(descr)
    if dtype is None:
        raise StateError(f"corrupt state: array {name!r} has dtype {descr!r} (bool/int/float only)")
    pos += descr_len
    ndim = view[pos]
    pos += 1
    if ndim > _MAX_NDIM:
        raise StateError(f"corrupt state: array {name!r} has {ndim} dimensions")
    _need(end, pos, 8 * ndim, f"array {name!r}")
    shape = tuple(_U64.unpack_from(view, pos + 8 * i)[0] for i in range(ndim))
    pos += 8 * ndim
    if any(d >= 1 << 48 for d in shape):
        raise StateError(f"corrupt state: array {name!r} has shape {shape}")
    count = 1
    for d in shape:
        count *= d
    _need(end, pos, count * dtype.itemsize, f"array {name!r}")
    flat = np.frombuffer(view, dtype=dtype, count=count, offset=pos)
    # A copy: writable, aligned, and independent of the blob. Native byte order for arithmetic.
    array = flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    return array, pos + count * dtype.itemsize


# -- reading parts with types -----------------------------------------------------------------------
_JSON_SCALARS = (type(None), bool, int, float, str)


class StateReader:
    """Typed access to a decoded container; every mismatch is a :class:`StateError` naming the part.

    ``what`` names the container in messages (``"model 'm' / windows"``). Classes read their state
    with it in ``from_state`` and never index the dict directly, so a blob that decodes but does not
    fit (a missing part, a string where a count belongs, an array of the wrong shape) is refused
    with a reason instead of failing somewhere later.

    >>> r = StateReader.of(encode({"kind": "demo", "format": 1, "n": 3}), "demo", "demo", 1)
    >>> r.integer("n")
    3
    >>> r.array("x", np.float64)
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: demo: part 'x' is missing
    >>> StateReader.of(encode({"kind": "demo", "format": 2}), "demo", "demo", 1)
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: demo: 'demo' state of layout 2, expected 1
    """

    __slots__ = ("parts", "what")

    def __init__(self, parts: Mapping[str, Any], what: str) -> None:
        if not isinstance(parts, Mapping):
            raise StateError(f"{what}: expected a container, found {type(parts).__name__}")
        self.parts = parts
        self.what = what

    @classmethod
    def of(cls, data: bytes | Mapping[str, Any], what: str, kind: str, version: int) -> Self:
        """A reader of ``data`` (bytes or a decoded container) checked to be ``kind`` at ``version``."""
        reader = cls(decode(data) if isinstance(data, bytes | bytearray | memoryview) else data, what)
        reader.expect(kind, version)
        return reader

    def expect(self, kind: str, version: int) -> None:
        """Check the ``kind`` and ``format`` parts every class writes with :func:`tagged`."""
        found = self.parts.get("kind")
        if found != kind:
            raise StateError(f"{self.what}: expected {kind!r} state, found {found!r}")
        got = self.parts.get("format")
        if got != version:
            raise StateError(f"{self.what}: {kind!r} state of layout {got!r}, expected {version}")

    def _get(self, name: str) -> Any:
        try:
            return self.parts[name]
        except KeyError:
            raise StateError(f"{self.what}: part {name!r} is missing") from None

    def _bad(self, name: str, value: Any, expected: str) -> StateError:
        return StateError(f"{self.what}: part {name!r} is {type(value).__name__}, expected {expected}")

    def has(self, name: str) -> bool:
        """Whether the part exists (and is not None)."""
        return self.parts.get(name) is not None

    def integer(self, name: str, *, min_value: int | None = None) -> int:
        """A JSON integer (not a bool), at least ``min_value`` when given."""
        value = self._get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(name, value, "an integer")
        if min_value is not None and value < min_value:
            raise StateError(f"{self.what}: part {name!r} is {value}, expected at least {min_value}")
        return value

    def number(self, name: str) -> float:
        """A JSON number."""
        value = self._get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._bad(name, value, "a number")
        return float(value)

    def optional_number(self, name: str) -> float | None:
        """A JSON number or null."""
        return None if self._get(name) is None else self.number(name)

    def flag(self, name: str) -> bool:
        """A JSON boolean."""
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._bad(name, value, "a boolean")
        return value

    def text(self, name: str) -> str:
        """A JSON string."""
        value = self._get(name)
        if not isinstance(value, str):
            raise self._bad(name, value, "a string")
        return value

    def optional_text(self, name: str) -> str | None:
        """A JSON string or null."""
        return None if self._get(name) is None else self.text(name)

    def json(self, name: str) -> Any:
        """Any JSON value (lists and scalars; check its shape yourself)."""
        value = self._get(name)
        if not isinstance(value, (*_JSON_SCALARS, list)):
            raise self._bad(name, value, "JSON")
        return value

    def json_list(self, name: str, item: type | tuple[type, ...] | None = None) -> list[Any]:
        """A JSON list, each item an instance of ``item`` when given (bools are not ints here)."""
        value = self._get(name)
        if not isinstance(value, list):
            raise self._bad(name, value, "a list")
        if item is not None:
            for x in value:
                if not isinstance(x, item) or (isinstance(x, bool) and bool not in _as_tuple(item)):
                    raise StateError(
                        f"{self.what}: part {name!r} holds a {type(x).__name__}, expected {_names(item)}"
                    )
        return value

    def strings(self, name: str, *, optional: bool = False) -> list[Any]:
        """A JSON list of strings (or nulls when ``optional``)."""
        return self.json_list(name, (str, type(None)) if optional else str)

    def array(
        self,
        name: str,
        dtype: Any,
        *,
        ndim: int | None = None,
        shape: Sequence[int] | None = None,
    ) -> np.ndarray:
        """An array part of exactly ``dtype``, with ``ndim`` dimensions or exactly ``shape`` when given."""
        value = self._get(name)
        if not isinstance(value, np.ndarray):
            raise self._bad(name, value, "an array")
        if value.dtype != np.dtype(dtype):
            raise StateError(
                f"{self.what}: array {name!r} has dtype {value.dtype}, expected {np.dtype(dtype)}"
            )
        if shape is not None and value.shape != tuple(shape):
            raise StateError(f"{self.what}: array {name!r} has shape {value.shape}, expected {tuple(shape)}")
        if ndim is not None and value.ndim != ndim:
            raise StateError(f"{self.what}: array {name!r} has {value.ndim} dimensions, expected {ndim}")
        return value

    def raw(self, name: str) -> bytes:
        """A bytes part."""
        value = self._get(name)
        if not isinstance(value, bytes):
            raise self._bad(name, value, "bytes")
        return value

    def child(self, name: str, kind: str | None = None, version: int | None = None) -> StateReader:
        """A nested container, checked to be ``kind`` at ``version`` when given."""
        value = self._get(name)
        if not isinstance(value, dict):
            raise self._bad(name, value, "a container")
        reader = StateReader(value, f"{self.what} / {name}")
        if kind is not None and version is not None:
            reader.expect(kind, version)
        return reader

    def optional_child(
        self, name: str, kind: str | None = None, version: int | None = None
    ) -> StateReader | None:
        """:meth:`child`, or None when the part is null."""
        return None if self._get(name) is None else self.child(name, kind, version)

    def children(self, name: str) -> list[StateReader]:
        """The items of a container written by :func:`indexed`, in order."""
        parent = self.child(name)
        if list(parent.parts) != [str(i) for i in range(len(parent.parts))]:
            raise StateError(f"{parent.what}: items are not numbered 0..n-1")
        return [parent.child(str(i)) for i in range(len(parent.parts))]

    def items(self) -> Iterator[tuple[str, Any]]:
        """The raw ``(name, part)`` pairs."""
        return iter(self.parts.items())


def _as_tuple(item: type | tuple[type, ...]) -> tuple[type, ...]:
    return item if isinstance(item, tuple) else (item,)


def _names(item: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(item))


def restoring(build: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorate a ``from_state``: what a constructor or a computation raises on values that decode
    but do not fit (a window of infinite width, a count that overflows) becomes a :class:`StateError`.

    >>> @restoring
    ... def from_state(state):
    ...     return round(state["width"])
    >>> from_state({"width": float("inf")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_monitor.errors.StateError: from_state: state does not fit (OverflowError: cannot convert ...)
    """

    @functools.wraps(build)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return build(*args, **kwargs)
        except StateError:
            raise
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError, MemoryError) as exc:
            name = getattr(build, "__qualname__", "state")
            raise StateError(f"{name}: state does not fit ({type(exc).__name__}: {exc})") from exc

    return checked


def tagged(kind: str, layout: int, /, **parts: Any) -> dict[str, Any]:
    """A container that says what it is: ``kind`` and ``format`` (its layout version), then ``parts``.

    >>> tagged("demo", 1, n=3)
    {'kind': 'demo', 'format': 1, 'n': 3}
    """
    return {"kind": kind, "format": layout, **parts}


def indexed(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A list of containers as one container numbered ``"0"``, ``"1"``, ... (read with ``children``).

    >>> list(indexed([{"a": 1}, {"a": 2}]))
    ['0', '1']
    """
    return {str(i): item for i, item in enumerate(items)}
