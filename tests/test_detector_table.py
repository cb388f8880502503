"""The table of window detectors: declared once, read everywhere.

The table's invariants (unique names and metric families, settings that exist, ``__prediction__``
and detector names written nowhere else), and the proof that adding a detector is one table entry:
a toy detector registered in the table is evaluated, drives the policy, is exported as a metric and
shown on the status page, with no other change.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_monitor.core.detectors import table
from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.table import (
    PREDICTION,
    InputWindow,
    MetricSpec,
    StatusColumn,
    WindowContext,
    WindowDetectorSpec,
    spec_of,
)
from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.policy import TriggerPolicy, WindowEvaluation
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import DetectorSettings, ModelSettings, PolicySettings, WindowSettings
from stream_monitor.offline.calibration import calibration_hooks
from stream_monitor.offline.demo_data import SyntheticStream
from stream_monitor.offline.replay import label_heap, replay
from stream_monitor.web.metrics import ServiceMetrics
from stream_monitor.web.status import StatusPage

PACKAGE = Path(__file__).resolve().parent.parent / "stream_monitor"
SECTIONS = {"detectors": DetectorSettings, "policy": PolicySettings}


# -- the table's invariants ------------------------------------------------------------------------
def test_names_and_metric_families_are_unique() -> None:
    names = [spec.name for spec in table.WINDOW_DETECTORS]
    assert len(names) == len(set(names))
    families = [m.name for spec in table.WINDOW_DETECTORS for m in spec.metrics]
    assert len(families) == len(set(families))
    assert all(name.startswith("stream_monitor_") for name in families)
    assert all(spec_of(spec.name) is spec for spec in table.WINDOW_DETECTORS)


def test_every_spec_is_consistent() -> None:
    for spec in table.WINDOW_DETECTORS:
        # A detector runs per input or once per model, not both.
        assert spec.applies_to <= {"numeric", "categorical", "prediction"} or spec.applies_to == {"model"}
        # The naming convention dashboards and alert rules rely on.
        assert (spec.kind == "integrity") == spec.name.startswith("integrity:"), spec.name
        assert not spec.family_test or spec.flags_drift  # a test exists to decide drift
        for metric in spec.metrics:
            assert metric.scope != "model" or spec.applies_to == {"model"}
            assert metric.scope != "prediction" or "prediction" in spec.applies_to
        for hook in spec.calibration:
            assert hook.setting in spec.settings or hook.setting == "policy.prediction_psi_alarm"


def test_settings_named_by_the_table_exist() -> None:
    named = {s for spec in table.WINDOW_DETECTORS for s in spec.settings}
    named |= {hook.setting for hook in calibration_hooks()}
    for setting in named:
        section, field = setting.split(".")
        assert field in {f.name for f in dataclasses.fields(SECTIONS[section])}, setting


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def test_detector_names_and_the_prediction_are_written_only_in_the_table() -> None:
    names = {spec.name for spec in table.WINDOW_DETECTORS} | {PREDICTION}
    readers = [
        "core/evaluation.py",
        "core/policy.py",
        "web/metrics.py",
        "web/status.py",
        "offline/calibration.py",
    ]
    for module in readers:
        assert not _string_literals(PACKAGE / module) & names, module
    holders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if PREDICTION in _string_literals(path)
    ]
    assert holders == ["core/detectors/table.py"]


# -- a toy detector, registered in the table only ---------------------------------------------------
def _toy_mean_shift(inputs: Sequence[InputWindow], ctx: WindowContext) -> list[DetectorResult]:
    """Mean shift in reference standard deviations, on the KS samples."""
    out = []
    for i in inputs:
        if i.reference_sample is None or i.window_sample is None or len(i.window_sample) == 0:
            continue
        shift = abs(float(np.mean(i.window_sample)) - float(np.mean(i.reference_sample)))
        value = shift / (float(np.std(i.reference_sample)) or 1.0)
        out.append(DetectorResult("toy_mean_shift", i.name, "mean_shift", value, 0.5, drift=value >= 0.5))
    return out


TOY = WindowDetectorSpec(
    name="toy_mean_shift",
    statistic="mean_shift",
    applies_to=frozenset({"numeric"}),
    kind="drift",
    evaluate=_toy_mean_shift,
    metrics=(MetricSpec("stream_monitor_feature_toy_mean_shift", "Toy: mean shift in reference SDs"),),
    flags_drift=True,
    status=StatusColumn("TOY", digits=2),
)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table, "WINDOW_DETECTORS", (*table.WINDOW_DETECTORS, TOY))


@pytest.mark.usefixtures("toy_registered")
def test_a_detector_added_to_the_table_is_evaluated_exported_and_shown() -> None:
    stream = SyntheticStream(n=8000, drift_at=4000, mean_shift={"x0": 1.5}, seed=41)
    schema = ModelSchema("synth", "binary", stream.schema_features())
    settings = ModelSettings(window=WindowSettings(size=1000), warmup_events=2000)
    engine = MonitoringEngine({"synth": schema}, {"synth": settings})
    registry = CollectorRegistry()
    metrics = ServiceMetrics({"synth": schema}, registry)
    page = StatusPage(lambda: engine.monitors, clock=lambda: 0.0)
    outputs: list[EngineOutput] = []

    def observe(out: EngineOutput, stream_name: str) -> None:
        metrics.observe(out, stream_name)
        outputs.append(out)

    preds, labels = stream.raw()
    replay(engine, [preds[i : i + 1000] for i in range(0, len(preds), 1000)], label_heap(labels), observe)

    # Evaluated: once per numeric feature of every window, after the built-in detectors of the feature.
    evaluations = [ev for o in outputs for m in o.per_model.values() for ev in m.evaluations]
    last = evaluations[-1]
    toy = {r.feature: r for r in last.results if r.detector == "toy_mean_shift"}
    assert set(toy) == set(schema.numeric_names)
    assert toy["x0"].drift and toy["x0"].value > 1.0 and not toy["x1"].drift
    # Exported: its own gauge family; and it counts towards the feature's drift flag.
    get = registry.get_sample_value
    x0 = {"model": "synth", "version": "1", "feature": "x0"}
    assert get("stream_monitor_feature_toy_mean_shift", x0) == toy["x0"].value
    assert get("stream_monitor_feature_drift_detected", x0) == 1.0
    # Shown: a column of the status page's drift table.
    _, _, body = page()
    html = body.decode()
    assert "<th>TOY</th>" in html
    assert f"<td>x0</td><td>{last_psi(last):.3f}</td>" in html
    assert f"<td>{toy['x0'].value:.2f}</td>" in html


def last_psi(ev: WindowEvaluation) -> float:
    return next(r.value for r in ev.results if r.detector == "psi" and r.feature == "x0")


@pytest.mark.usefixtures("toy_registered")
def test_the_policy_counts_a_registered_drift_detector_as_data_drift() -> None:
    policy = TriggerPolicy("m", ("x",), PolicySettings(consecutive_windows=2, cooldown_seconds=0.0))
    fired = []
    for i, value in enumerate([0.1, 0.9, 0.9, 0.9]):
        r = DetectorResult("toy_mean_shift", "x", "mean_shift", value, 0.5, drift=value >= 0.5)
        fired += policy.decide(WindowEvaluation("m", i, i * 60.0, (i + 1) * 60.0, 1000, (r,), {}))
    (t,) = fired
    assert t.kind == "data_drift" and t.evidence.window_index == 2
    assert [(r.detector, r.feature) for r in t.reasons] == [("toy_mean_shift", "x")]


def test_without_registration_the_toy_is_unknown() -> None:
    assert spec_of("toy_mean_shift") is None
    r = DetectorResult("toy_mean_shift", "x", "mean_shift", 0.9, 0.5, drift=True)
    policy = TriggerPolicy("m", ("x",), PolicySettings(consecutive_windows=1, cooldown_seconds=0.0))
    assert policy.decide(WindowEvaluation("m", 0, 0.0, 60.0, 1000, (r,), {})) == []


def test_the_psi_alarm_is_never_below_the_sampling_noise_of_a_small_window() -> None:
    from scipy.stats import chi2

    rng = np.random.default_rng(4)
    shares = np.full(10, 0.1)
    reference = (shares * 50_000).astype(np.int64)
    ctx = table.WindowContext(0, 3600.0, None, DetectorSettings(), 0.1, 0.15)

    def psi_of(n: int) -> DetectorResult:
        window = rng.multinomial(n, shares)
        (result,) = table.PSI.evaluate([table.InputWindow("x", "numeric", reference, window)], ctx)
        return result

    big, small, tiny = psi_of(5000), psi_of(120), psi_of(60)
    assert big.threshold == 0.15  # a window of thousands: the configured alarm
    assert small.threshold == pytest.approx(chi2.ppf(0.99, 9) * (1 / 120 + 1 / 50_000))  # ≈ 0.18
    assert tiny.threshold > 1.0  # 6 events a bin: chance empties bins, worth ~1 of PSI each
    tiny_values = np.array([psi_of(60).value for _ in range(1000)])
    assert np.mean(tiny_values >= 0.15) > 0.3 and np.mean(tiny_values >= tiny.threshold) < 0.03
    # Undrifted 120-event windows cross 0.15 often by chance, the noise level about 1 % of the time.
    values = np.array([psi_of(120).value for _ in range(1000)])
    assert np.mean(values >= 0.15) > 0.03
    assert np.mean(values >= small.threshold) < 0.03
