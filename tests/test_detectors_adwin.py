"""Our ADWIN and Page–Hinkley against river's on seeded streams: the same detections, the same numbers.

River's ADWIN keeps its state in a compiled object that only pickle can save; ours is the same
algorithm in the same floating-point order with its state as plain arrays. These oracle tests are what
allows the swap: every detection at the same position, and the window's width, total and variance
equal to the last bit, on streams with shifts, heavy tails, discrete values and tiny variances, under
default and unusual settings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from river import drift

from stream_monitor.core import state_format
from stream_monitor.core.detectors import ADWINDetector, PageHinkleyDetector
from stream_monitor.core.detectors.adwin import Adwin
from stream_monitor.core.detectors.page_hinkley import PageHinkley


def _regimes(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.normal(mean, 1.0, 2500) for mean in (0.0, 1.5, 0.0, -1.0, 3.0)])


def _bernoulli(rng: np.random.Generator) -> np.ndarray:
    return (rng.random(12_000) < np.repeat([0.1, 0.5, 0.2, 0.9], 3000)).astype(float)


STREAMS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "regimes": _regimes,
    "bernoulli": _bernoulli,
    "discrete": lambda rng: rng.choice([0.0, 1.0, 4.0, 5.0, 6.0, 7.0], 8000),
    "cauchy": lambda rng: rng.standard_cauchy(8000),
    "constant": lambda rng: np.ones(3000),
    "tiny_variance": lambda rng: rng.normal(0.0, 1e-12, 4000) + 1e6,
    "slow_trend": lambda rng: np.linspace(0.0, 3.0, 10_000) + rng.normal(0.0, 1.0, 10_000),
}
ADWIN_SETTINGS: list[dict[str, float]] = [
    {},
    {"clock": 1},
    {"delta": 0.1, "max_buckets": 2, "min_window_length": 1, "grace_period": 0},
    {"delta": 1e-5, "clock": 7, "max_buckets": 9, "min_window_length": 20, "grace_period": 100},
]
PH_SETTINGS: list[dict[str, object]] = [
    {},
    {"alpha": 1.0, "threshold": 20.0, "delta": 0.5},
    {"mode": "up", "min_instances": 5},
    {"mode": "down", "threshold": 3.0, "delta": 0.0},
]


def _river_run(
    detector: drift.ADWIN | drift.PageHinkley, values: np.ndarray
) -> tuple[list[int], list[tuple]]:
    found, windows = [], []
    for i, x in enumerate(values.tolist()):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
        if isinstance(detector, drift.ADWIN) and i % 500 == 499:
            windows.append((detector.width, detector.total, detector.variance, detector.estimation))
    return found, windows


@pytest.mark.parametrize("settings", ADWIN_SETTINGS, ids=str)
@pytest.mark.parametrize("stream", STREAMS)
def test_adwin_detects_exactly_where_rivers_does_with_the_same_window(stream: str, settings: dict) -> None:
    values = STREAMS[stream](np.random.default_rng(7))
    expected, expected_windows = _river_run(drift.ADWIN(**settings), values)
    ours = Adwin(**settings)
    found, windows = [], []
    for start in range(0, values.size, 500):  # chunked: same as value by value
        found += [start + o for o in ours.update_many(values[start : start + 500].tolist())]
        windows.append((ours.width, ours.total, ours.variance, ours.estimation))
    assert found == expected
    assert windows == expected_windows  # bit for bit
    if stream in ("regimes", "bernoulli"):
        assert found, "the stream should drift"


@pytest.mark.parametrize("stream", ["regimes", "cauchy", "bernoulli"])
def test_adwin_restored_mid_stream_continues_exactly_like_an_uninterrupted_river_adwin(stream: str) -> None:
    values = STREAMS[stream](np.random.default_rng(3))
    expected, _ = _river_run(drift.ADWIN(clock=4), values)
    cut = values.size // 3
    first = Adwin(clock=4)
    found = first.update_many(values[:cut].tolist())
    restored = Adwin.from_state(state_format.decode(state_format.encode(first.to_state())))
    found += [cut + o for o in restored.update_many(values[cut:].tolist())]
    assert found == expected


@pytest.mark.parametrize("settings", PH_SETTINGS, ids=str)
@pytest.mark.parametrize("stream", STREAMS)
def test_page_hinkley_detects_exactly_where_rivers_does(stream: str, settings: dict) -> None:
    values = STREAMS[stream](np.random.default_rng(5))
    expected, _ = _river_run(drift.PageHinkley(**settings), values)
    ours = PageHinkley(**settings)  # type: ignore[arg-type]
    cut = values.size // 2
    found = ours.update_many(values[:cut].tolist())
    ours = PageHinkley.from_state(state_format.decode(state_format.encode(ours.to_state())))
    found += [cut + o for o in ours.update_many(values[cut:].tolist())]
    assert found == expected


def test_the_detectors_on_top_make_rivers_detections() -> None:
    """ADWINDetector is river's ADWIN over the finite values; PageHinkleyDetector is river's
    PageHinkley (alpha 1) over the values divided by the warm-up's standard deviation."""
    values = _regimes(np.random.default_rng(11))
    adwin = ADWINDetector(delta=0.01)
    adwin.update(values)
    assert list(adwin.last_update_detections) == _river_run(drift.ADWIN(delta=0.01), values)[0]

    detector = PageHinkleyDetector(warmup=300)
    detector.update(values[:300])
    scale = detector.scale
    assert scale is not None
    detector.update(values[300:2600])
    river_ph = drift.PageHinkley(min_instances=30, delta=0.5, threshold=20.0, alpha=1.0, mode="both")
    first, _ = _river_run(river_ph, values[:2600] / scale)
    assert first and list(detector.last_update_detections) == first[:1]
