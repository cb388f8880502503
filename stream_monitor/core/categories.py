"""One spelling per categorical value, whatever the source: live JSON, CSV, JSONL or Parquet.

A CSV file has only text, so pandas writes ``True`` where JSON writes ``true``, and an integer column
with a gap becomes float and is written ``1.0``; a live event sends ``1``. Were these different
categories, a reference built from the file and the live stream would disagree on every event: the
whole feature would look drifted (all live values land in ``__other__``). So every categorical value —
of a live event (:mod:`stream_monitor.core.events`), of a training file
(:mod:`stream_monitor.offline.reference_io`) and of a reference profile read back from JSON
(:mod:`stream_monitor.core.reference`) — goes through :func:`normalize_category`:

- surrounding whitespace is stripped, and an empty value is missing (CSV cannot tell ``""`` from an
  empty cell);
- booleans, and the texts ``true``/``false`` in any case, are ``"true"``/``"false"``;
- numbers, and texts that are a JSON number, are spelled as Python writes the number JSON would read:
  an integral value without a fraction (``1``, ``1.0``, ``"1.0"``, ``"1e0"`` are ``"1"``), any other
  value by ``repr`` (``"0.5"``); a float NaN (pandas' missing value) is missing;
- any other text is kept as it is (case included: ``"Oslo"`` stays ``"Oslo"``).

The texts ``1`` and ``true`` stay different categories: a boolean is not a number here.
Leading zeros are not a JSON number, so ``"01"`` (a postcode) keeps its spelling.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = ["NotACategory", "normalize_category"]


class NotACategory(TypeError):
    """A value that cannot be a category: a list, an object, an infinite number."""


# The JSON number grammar (RFC 8259); [0-9], not \d: \d matches non-ASCII digits too.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": "true", "false": "false"}


def _number(value: float) -> str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise NotACategory
    # int() of an integral float is exact, so 1e20 and the text "100000000000000000000" agree.
    return str(int(value)) if value.is_integer() else repr(value)


def _text(value: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    boolean = _BOOLEANS.get(text.lower()) if len(text) in (4, 5) else None
    if boolean is not None:
        return boolean
    if text[0] in "-0123456789" and (match := _JSON_NUMBER.fullmatch(text)) is not None:
        if match.group(1) is None and match.group(2) is None:
            # An integer numeral is already its own spelling (no leading zeros, no "+"), except "-0".
            return "0" if text == "-0" else text
        number = float(text)
        if math.isfinite(number):
            return _number(number)
    return text


def normalize_category(value: Any) -> str | None:
    """The one spelling of a categorical value, ``None`` when it is missing (see the module docstring).

    Raises :class:`NotACategory` for a value that is neither text, a boolean nor a finite number.

    >>> [normalize_category(v) for v in (True, "True", " FALSE ", 1, 1.0, "1.0", "1e0", "-0", 2.5)]
    ['true', 'true', 'false', '1', '1', '1', '1', '0', '2.5']
    >>> [normalize_category(v) for v in (None, "", "  ", float("nan"), "Oslo ", "01", "nan", "yes")]
    [None, None, None, None, 'Oslo', '01', 'nan', 'yes']
    >>> normalize_category([1])
    Traceback (most recent call last):
    ...
    stream_monitor.core.categories.NotACategory
    """
    kind = type(value)
    if kind is str:
        return _text(value)
    if value is None:
        return None
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        try:
            return str(value)
        except ValueError:  # more digits than Python converts to text (sys.int_info)
            raise NotACategory from None
    if kind is float:
        return _number(value)
    # numpy scalars (from numpy columns): the Python value they stand for.
    if isinstance(value, np.bool_ | np.integer | np.floating):
        return normalize_category(value.item())
    if isinstance(value, str):  # a str subclass
        return _text(str(value))
    raise NotACategory
