"""Streaming detectors: one contract suite over all of them, then each one's calibration."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from river import drift

from stream_monitor.core.detectors import (
    ADWINDetector,
    PageHinkleyDetector,
    StreamDriftDetector,
    make_stream_detector,
)
from stream_monitor.errors import StateError

# Each detector with non-default settings, so "settings are stored under their names" can fail.
FACTORIES: dict[str, Callable[[], StreamDriftDetector]] = {
    "adwin": lambda: ADWINDetector(delta=0.01, clock=16, max_buckets=6, min_window_length=4, grace_period=20),
    "page_hinkley": lambda: PageHinkleyDetector(threshold=15.0, delta=0.4, warmup=300, min_instances=20),
}
NON_DEFAULT_SETTINGS: dict[str, dict[str, object]] = {
    "adwin": {"delta": 0.01, "clock": 16, "max_buckets": 6, "min_window_length": 4, "grace_period": 20},
    "page_hinkley": {"threshold": 15.0, "delta": 0.4, "warmup": 300, "min_instances": 20, "mode": "both"},
}


def _regime_stream(seed: int) -> np.ndarray:
    """Four regimes of 1500 values each: mean 0, 2, 0, -2 (unit variance)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(mean, 1.0, 1500) for mean in (0.0, 2.0, 0.0, -2.0)])


def _detections(detector: StreamDriftDetector, values: np.ndarray, chunk: int) -> list[int]:
    found: list[int] = []
    for start in range(0, values.size, chunk):
        if detector.update(values[start : start + chunk]):
            found.extend(detector.last_update_detections)
    return found


@pytest.mark.parametrize("name", FACTORIES)
def test_snapshot_restore_mid_stream_gives_identical_later_detections(name: str) -> None:
    stream = _regime_stream(1)
    original = FACTORIES[name]()
    before = _detections(original, stream[:2200], chunk=100)
    restored = type(original).restore(original.snapshot())
    after_original = _detections(original, stream[2200:], chunk=100)
    after_restored = _detections(restored, stream[2200:], chunk=100)
    assert before, "the stream should drift before the snapshot"
    assert len(after_original) >= 2, "and drift again after it, or the round trip proves nothing"
    assert after_restored == after_original
    assert restored.n_seen == original.n_seen == stream.size
    assert restored.n_detections == original.n_detections


@pytest.mark.parametrize("name", FACTORIES)
def test_base_class_restores_any_detector_and_factory_builds_by_name(name: str) -> None:
    detector = FACTORIES[name]()
    detector.update(_regime_stream(4)[:2000])
    restored = StreamDriftDetector.restore(detector.snapshot())
    assert type(restored) is type(detector)
    assert restored.settings == detector.settings and restored.n_seen == 2000
    assert make_stream_detector(name, **NON_DEFAULT_SETTINGS[name]).settings == detector.settings


@pytest.mark.parametrize("name", FACTORIES)
def test_detections_do_not_depend_on_chunking(name: str) -> None:
    stream = _regime_stream(2)
    whole = _detections(FACTORIES[name](), stream, chunk=stream.size)
    assert whole == _detections(FACTORIES[name](), stream, chunk=37)
    assert len(whole) >= 3


@pytest.mark.parametrize("name", FACTORIES)
def test_settings_are_public_and_repr_rebuilds_the_detector(name: str) -> None:
    detector = FACTORIES[name]()
    assert detector.settings == NON_DEFAULT_SETTINGS[name]
    for setting, value in NON_DEFAULT_SETTINGS[name].items():
        assert getattr(detector, setting) == value
    namespace = {"ADWINDetector": ADWINDetector, "PageHinkleyDetector": PageHinkleyDetector}
    rebuilt = eval(repr(detector), namespace)
    assert type(rebuilt) is type(detector)
    assert rebuilt.settings == detector.settings


@pytest.mark.parametrize("name", FACTORIES)
def test_nan_values_are_skipped_but_keep_their_stream_position(name: str) -> None:
    stream = _regime_stream(3)[:3000]
    with_gaps = np.insert(stream, [10, 20, 30], np.nan)  # three NaNs before position 33
    plain, gapped = FACTORIES[name](), FACTORIES[name]()
    assert plain.update(stream) is True
    assert gapped.update(with_gaps) is True
    assert gapped.n_seen == stream.size + 3
    assert [i - 3 for i in gapped.last_update_detections] == list(plain.last_update_detections)


@pytest.mark.parametrize("name", FACTORIES)
def test_restore_refuses_foreign_or_corrupt_snapshots(name: str) -> None:
    detector = FACTORIES[name]()
    other = next(type(f()) for n, f in FACTORIES.items() if n != name)
    with pytest.raises(StateError, match="cannot restore"):
        other.restore(detector.snapshot())
    with pytest.raises(StateError, match="not stream-monitor state"):
        type(detector).restore(b"not a snapshot")
    # What this class wrote before the one state format: a pickle, refused without being loaded.
    old_format = pickle.dumps({"format_version": 1, "class": type(detector).__name__, "state": {}})
    with pytest.raises(StateError, match="a pickle"):
        type(detector).restore(old_format)


# --- ADWIN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_adwin_detects_a_shift_after_it_happens_and_not_before(seed: int) -> None:
    rng = np.random.default_rng(seed)
    detector = ADWINDetector()
    assert detector.update(rng.normal(0, 1, 3000)) is False
    assert detector.update(rng.normal(1, 1, 1000)) is True
    first = detector.last_update_detections[0]
    assert 3000 <= first < 3000 + 300


# --- Page–Hinkley ---------------------------------------------------------------------------------


def test_river_page_hinkley_defaults_raise_false_alarms_which_is_why_we_calibrate() -> None:
    values = np.random.default_rng(0).normal(size=100_000)
    detector = drift.PageHinkley()
    alarms = 0
    for value in values.tolist():
        detector.update(value)
        alarms += detector.drift_detected
    assert alarms > 20  # the brief measured ~620 per 1M


def test_page_hinkley_gives_no_alarm_on_a_million_stationary_values() -> None:
    detector = PageHinkleyDetector()
    assert detector.update(np.random.default_rng(0).normal(size=1_000_000)) is False
    assert detector.n_detections == 0


def test_page_hinkley_is_scale_free() -> None:
    # A feature in other units (mean 5000, std 300) behaves like N(0, 1): the warmup learns the scale.
    rng = np.random.default_rng(1)
    detector = PageHinkleyDetector()
    assert detector.update(rng.normal(5000, 300, 200_000)) is False
    assert detector.scale == pytest.approx(300, rel=0.1)
    assert detector.update(rng.normal(5300, 300, 1000)) is True


@pytest.mark.parametrize("seed", range(20))
def test_page_hinkley_finds_a_one_sigma_shift_within_a_bounded_delay(seed: int) -> None:
    rng = np.random.default_rng(seed)
    detector = PageHinkleyDetector()
    assert detector.update(rng.normal(3, 2, 5000)) is False
    assert detector.update(rng.normal(5, 2, 1000)) is True
    assert detector.last_update_detections[0] - 5000 < 150


def test_page_hinkley_warms_up_again_after_a_detection() -> None:
    rng = np.random.default_rng(2)
    detector = PageHinkleyDetector(warmup=500)
    detector.update(rng.normal(0, 1, 2000))
    assert detector.update(rng.normal(10, 5, 500)) is True
    assert detector.scale is None  # warming up on the new regime
    detector.update(rng.normal(10, 5, 1000))
    assert detector.scale == pytest.approx(5, rel=0.15)


def test_page_hinkley_needs_a_usable_warmup() -> None:
    with pytest.raises(ValueError, match="warmup"):
        PageHinkleyDetector(warmup=1)
