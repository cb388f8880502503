"""The Page–Hinkley test (Page 1954), the algorithm of river's ``drift.PageHinkley``, with plain state.

Written from river's implementation in the same floating-point order, so the same stream gives the
same detections at the same positions (``tests/test_detectors_adwin.py`` checks it against river);
unlike river's object, its state is six numbers that :mod:`stream_monitor.core.state_format` stores
without pickle. :class:`~stream_monitor.core.detectors.streaming.PageHinkleyDetector` calibrates it.

Per value ``x``: the running mean ``m``; ``S+ = alpha * S+ + (x - m) - delta`` and
``S- = alpha * S- + (x - m) + delta``; their running minimum and maximum. After ``min_instances``
values, a rise of ``S+`` above its minimum (mode ``up``) or a fall of ``S-`` below its maximum (mode
``down``) by more than ``threshold`` is a drift; the next value starts afresh.

>>> ph = PageHinkley(threshold=5.0, delta=0.1, min_instances=10)
>>> ph.update_many([0.0] * 20 + [1.0] * 10)  # river's PageHinkley says 26 too
[26]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, Self

import numpy as np

from stream_monitor.core.state_format import StateReader, restoring, tagged
from stream_monitor.errors import StateError

__all__ = ["PageHinkley"]

_KIND = "page_hinkley_test"
_FORMAT = 1
Mode = Literal["up", "down", "both"]


class PageHinkley:
    """Page–Hinkley test; settings and defaults as river's ``drift.PageHinkley``. See the module docstring.

    >>> ph = PageHinkley()
    >>> ph.update(1.0), ph.drift_detected
    (False, False)
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "both",
    ) -> None:
        if mode not in ("up", "down", "both"):
            raise ValueError(f"Invalid 'mode'. Valid values are: ['up', 'down', 'both'], got {mode!r}")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode: Mode = mode
        self._reset()
        self._drift_detected = False

    def _reset(self) -> None:
        self._n = 0.0
        self._mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0

    @property
    def drift_detected(self) -> bool:
        """Whether the last value fed completed a drift."""
        return self._drift_detected

    def update(self, x: float) -> bool:
        """Feed one value; return whether it completed a drift."""
        return bool(self.update_many((x,)))

    def update_many(self, values: Iterable[float]) -> list[int]:
        """Feed values in order; return the offsets (into ``values``) of the ones that completed a drift."""
        detections = []
        up, down = self.mode != "down", self.mode != "up"
        for offset, value in enumerate(values):
            x = float(value)
            if self._drift_detected:
                self._reset()
                self._drift_detected = False
            self._n += 1.0
            self._mean += (1.0 / self._n) * (x - self._mean)
            dev = x - self._mean
            self._sum_increase = self.alpha * self._sum_increase + dev - self.delta
            self._sum_decrease = self.alpha * self._sum_decrease + dev + self.delta
            if self._sum_increase < self._min_increase:
                self._min_increase = self._sum_increase
            if self._sum_decrease > self._max_decrease:
                self._max_decrease = self._sum_decrease
            if self._n >= self.min_instances:
                rise = self._sum_increase - self._min_increase
                fall = self._max_decrease - self._sum_decrease
                if (up and rise > self.threshold) or (down and fall > self.threshold):
                    self._drift_detected = True
                    detections.append(offset)
        return detections

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The whole state as a container of :mod:`stream_monitor.core.state_format`."""
        return tagged(
            _KIND,
            _FORMAT,
            settings=[self.min_instances, self.delta, self.threshold, self.alpha],
            mode=self.mode,
            drift_detected=self._drift_detected,
            sums=np.array(
                [
                    self._n,
                    self._mean,
                    self._sum_increase,
                    self._sum_decrease,
                    self._min_increase,
                    self._max_decrease,
                ],
                dtype=np.float64,
            ),
        )

    @classmethod
    @restoring
    def from_state(cls, state: StateReader | dict[str, Any], what: str = "page_hinkley") -> Self:
        """Rebuild from :meth:`to_state`; :class:`StateError` when it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect(_KIND, _FORMAT)
        settings = r.json_list("settings", (int, float))
        if len(settings) != 4:
            raise StateError(f"{r.what}: settings has {len(settings)} values, expected 4")
        min_instances, delta, threshold, alpha = settings
        mode = r.text("mode")
        try:
            test = cls(int(min_instances), float(delta), float(threshold), float(alpha), mode)  # type: ignore[arg-type]
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        (
            test._n,
            test._mean,
            test._sum_increase,
            test._sum_decrease,
            test._min_increase,
            test._max_decrease,
        ) = r.array("sums", np.float64, shape=(6,)).tolist()
        test._drift_detected = r.flag("drift_detected")
        return test

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances}, delta={self.delta}, "
            f"threshold={self.threshold}, alpha={self.alpha}, mode={self.mode!r})"
        )
