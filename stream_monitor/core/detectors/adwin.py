"""ADWIN (ADaptive WINdowing, Bifet & Gavaldà 2007), the algorithm of river's ``drift.ADWIN``.

River 0.26 keeps ADWIN's state inside a compiled object that only pickle can save, and restoring a
pickle runs code; our state is read back from a Kafka topic, so it must be plain numbers. This is the
same algorithm, written from river's implementation step by step, in the same floating-point order:
on the same stream it makes the same detections at the same positions and holds the same window
width, total and variance (``tests/test_detectors_adwin.py`` checks this against river on seeded
streams). Its whole state is a few numbers and the exponential-histogram buckets, as arrays.

The window is kept as an exponential histogram: level ``i`` holds up to ``max_buckets`` buckets of
``2**i`` values each (their total and their variance); a level that overflows merges its two oldest
buckets into one bucket of the next level. Every ``clock`` values (once the window is longer than
``grace_period``), every cut of the window into an older part W0 and a newer part W1 at a bucket
border is tested: when the means differ by more than a Hoeffding-type bound at confidence ``delta``,
the oldest bucket is dropped and the test repeats; the call reports a drift. As in river, the value
after a detection starts a new, empty window.

>>> import numpy as np
>>> rng = np.random.default_rng(42)
>>> adwin = Adwin()
>>> adwin.update_many(rng.normal(0, 1, 2000).tolist()), adwin.update_many(rng.normal(1.5, 1, 100).tolist())
([], [15])
>>> Adwin.from_state(adwin.to_state()).width == adwin.width
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Self

import numpy as np

from stream_monitor.core.settings import DetectorSettings
from stream_monitor.core.state_format import StateReader, restoring, tagged
from stream_monitor.errors import StateError

__all__ = ["Adwin"]

_KIND = "adwin"
_FORMAT = 1
_MAX_LEVELS = 64


class Adwin:
    """ADWIN over a stream of floats; settings as river's ``drift.ADWIN``. See the module docstring.

    ``update(x)`` feeds one value and returns whether it completed a drift; ``update_many(values)``
    feeds many and returns the offsets of those that did. ``drift_detected`` says whether the last
    value did (the next value then starts a new window). ``width``, ``total``, ``variance`` and
    ``estimation`` describe the current window as river's properties of the same names do.

    >>> adwin = Adwin(clock=1)
    >>> adwin.update_many([0.0] * 100 + [1.0] * 16)  # river's ADWIN(clock=1) says 115 too
    [115]
    >>> adwin.update(1.0), adwin.width  # the value after a detection starts a new window
    (False, 1.0)
    """

    def __init__(
        self,
        delta: float = DetectorSettings.adwin_delta,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if clock < 1 or max_buckets < 2:
            raise ValueError(f"clock must be >= 1 and max_buckets >= 2, got {clock} and {max_buckets}")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._reset()
        self._drift_detected = False

    def _reset(self) -> None:
        # Level i: parallel lists of bucket totals and variances, oldest first.
        self._totals: list[list[float]] = [[]]
        self._variances: list[list[float]] = [[]]
        self._width = 0.0
        self._total = 0.0
        self._variance = 0.0
        self._tick = 0

    # -- reading ------------------------------------------------------------------------------
    @property
    def drift_detected(self) -> bool:
        """Whether the last value fed completed a drift."""
        return self._drift_detected

    @property
    def width(self) -> float:
        """How many values the current window holds."""
        return self._width

    @property
    def total(self) -> float:
        """Sum of the values in the current window."""
        return self._total

    @property
    def variance(self) -> float:
        """Sum of squared deviations from the mean in the current window (river's ``variance``)."""
        return self._variance

    @property
    def estimation(self) -> float:
        """Mean of the current window (0 when it is empty)."""
        return self._total / self._width if self._width else 0.0

    # -- updating -----------------------------------------------------------------------------
    def update(self, x: float) -> bool:
        """Feed one value; return whether it completed a drift."""
        return bool(self.update_many((x,)))

    def update_many(self, values: Iterable[float]) -> list[int]:
        """Feed values in order; return the offsets (into ``values``) of the ones that completed a drift."""
        detections = []
        full = self.max_buckets + 1
        clock, grace_period = self.clock, self.grace_period
        # The per-value work on locals; written back before a cut test (which may shrink the window).
        level0_totals, level0_variances = self._totals[0], self._variances[0]
        width, total, variance, tick = self._width, self._total, self._variance, self._tick
        try:
            for offset, value in enumerate(values):
                x = float(value)
                if self._drift_detected:
                    self._reset()
                    self._drift_detected = False
                    level0_totals, level0_variances = self._totals[0], self._variances[0]
                    width, total, variance, tick = 0.0, 0.0, 0.0, 0
                # Insert (river: insert_element): Welford-style variance update, same operation order.
                level0_totals.append(x)
                level0_variances.append(0.0)
                width += 1.0
                if width > 1.0:
                    delta_v = x - total / (width - 1.0)
                    variance += (width - 1.0) * delta_v * delta_v / width
                else:
                    variance += 0.0
                total += x
                if len(level0_totals) == full:
                    self._compress()
                # Detect (river: detect_change), every `clock` values once past the grace period.
                tick += 1
                if tick % clock == 0 and width > grace_period:
                    self._width, self._total, self._variance = width, total, variance
                    if self._detect():
                        self._drift_detected = True
                        detections.append(offset)
                    width, total, variance = self._width, self._total, self._variance
        finally:
            self._width, self._total, self._variance, self._tick = width, total, variance, tick
        return detections

    def _compress(self) -> None:
        totals, variances = self._totals, self._variances
        level = 0
        while len(totals[level]) == self.max_buckets + 1:
            n1 = float(1 << level)
            t0, t1 = totals[level][0], totals[level][1]
            v0, v1 = variances[level][0], variances[level][1]
            mu1 = t0 / n1
            mu2 = t1 / n1
            temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            if level + 1 == len(totals):
                totals.append([])
                variances.append([])
            totals[level + 1].append(t0 + t1)
            variances[level + 1].append(v0 + v1 + temp)
            del totals[level][:2]
            del variances[level][:2]
            level += 1

    def _detect(self) -> bool:
        change = False
        reduce_width = True
        min_length = float(self.min_window_length)
        while reduce_width:
            reduce_width = False
            width = self._width
            # river's evaluate_cut, with what does not depend on the cut computed once per pass.
            # Python raises where IEEE floats give NaN (log or sqrt of a negative): no cut then, as in river.
            log_width = math.log(width) if width > 0 else 0.0
            if not log_width > 0:
                break
            delta_prime = math.log(2.0 * log_width / self.delta)
            scaled_variance = self._variance / width
            n0, n1 = 0.0, width
            u0, u1 = 0.0, self._total
            done = False
            for level in range(len(self._totals) - 1, -1, -1):
                size = float(1 << level)
                bucket_totals = self._totals[level]
                last = len(bucket_totals) - 1
                for k, t in enumerate(bucket_totals):
                    n0 += size
                    n1 -= size
                    u0 += t
                    u1 -= t
                    if level == 0 and k == last:
                        done = True
                        break
                    if n1 < min_length or n0 < min_length:
                        continue
                    delta_mean = u0 / n0 - u1 / n1
                    m_recip = 1.0 / (n0 - min_length + 1.0) + 1.0 / (n1 - min_length + 1.0)
                    spread = 2.0 * m_recip * scaled_variance * delta_prime
                    if not spread >= 0:
                        continue
                    if abs(delta_mean) > math.sqrt(spread) + 2.0 / 3.0 * delta_prime * m_recip:
                        reduce_width = True
                        change = True
                        self._delete_oldest()
                        done = True
                        break
                if done:
                    break
        return change

    def _delete_oldest(self) -> None:
        last = len(self._totals) - 1
        n = float(1 << last)
        u = self._totals[last][0]
        v = self._variances[last][0]
        mu = u / n
        self._width -= n
        self._total -= u
        mu_window = self._total / self._width if self._width else math.nan
        self._variance -= v + n * self._width * (mu - mu_window) * (mu - mu_window) / (n + self._width)
        del self._totals[last][0]
        del self._variances[last][0]
        if not self._totals[last] and last > 0:
            self._totals.pop()
            self._variances.pop()

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The whole state as a container of :mod:`stream_monitor.core.state_format` (plain numbers).

        Buckets are three arrays: per level the bucket count, and all totals and variances oldest
        level first.
        """
        return tagged(
            _KIND,
            _FORMAT,
            settings=[self.delta, self.clock, self.max_buckets, self.min_window_length, self.grace_period],
            tick=self._tick,
            drift_detected=self._drift_detected,
            window=np.array([self._width, self._total, self._variance], dtype=np.float64),
            bucket_counts=np.array([len(t) for t in self._totals], dtype=np.int64),
            bucket_totals=np.array([t for level in self._totals for t in level], dtype=np.float64),
            bucket_variances=np.array([v for level in self._variances for v in level], dtype=np.float64),
        )

    @classmethod
    @restoring
    def from_state(cls, state: StateReader | dict[str, Any], what: str = "adwin") -> Self:
        """Rebuild from :meth:`to_state`; :class:`StateError` when it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect(_KIND, _FORMAT)
        settings = r.json_list("settings", (int, float))
        if len(settings) != 5:
            raise StateError(f"{r.what}: settings has {len(settings)} values, expected 5")
        delta, clock, max_buckets, min_window_length, grace_period = settings
        try:
            adwin = cls(float(delta), int(clock), int(max_buckets), int(min_window_length), int(grace_period))
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        width, total, variance = r.array("window", np.float64, shape=(3,)).tolist()
        counts = r.array("bucket_counts", np.int64, ndim=1)
        n = int(counts.sum()) if counts.size else 0
        totals = r.array("bucket_totals", np.float64, shape=(n,))
        variances = r.array("bucket_variances", np.float64, shape=(n,))
        if not 1 <= counts.size <= _MAX_LEVELS or counts.min() < 0 or counts.max() > adwin.max_buckets:
            raise StateError(f"{r.what}: bucket counts {counts.tolist()} do not fit max_buckets")
        if float(np.sum(counts * (2.0 ** np.arange(counts.size)))) != width:
            raise StateError(f"{r.what}: buckets hold another number of values than the width {width}")
        ends = np.cumsum(counts).tolist()
        starts = [0, *ends[:-1]]
        adwin._totals = [totals[a:b].tolist() for a, b in zip(starts, ends, strict=True)]
        adwin._variances = [variances[a:b].tolist() for a, b in zip(starts, ends, strict=True)]
        adwin._width, adwin._total, adwin._variance = width, total, variance
        adwin._tick = r.integer("tick", min_value=0)
        adwin._drift_detected = r.flag("drift_detected")
        return adwin

    def __repr__(self) -> str:
        return (
            f"Adwin(delta={self.delta}, clock={self.clock}, max_buckets={self.max_buckets}, "
            f"min_window_length={self.min_window_length}, grace_period={self.grace_period})"
        )
