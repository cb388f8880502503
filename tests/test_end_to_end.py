"""End to end: raw JSON bytes → MonitoringEngine → replay, on streams with drift at a known point.

Each drifting stream must trigger after its drift point and within a bounded delay, never before; the
stationary million-event stream must not trigger at all with the default settings.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import orjson
import pytest
from contract_schemas import check_one_truth, validate

from stream_monitor.cli import main as cli_main
from stream_monitor.config import load_config
from stream_monitor.core.engine import EngineOutput, MonitoringEngine
from stream_monitor.core.events import decode_predictions
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import ModelSettings
from stream_monitor.core.triggers import Trigger
from stream_monitor.offline.demo_data import DAY, BikeStory, SyntheticStream
from stream_monitor.offline.replay import label_heap, replay

ROOT = Path(__file__).resolve().parent.parent
# Every trigger has these; an escalation also has supersedes and escalation (left out otherwise).
TRIGGER_FIELDS = {f.name for f in fields(Trigger) if not f.metadata.get("omit_if_none")}
# Optional fields: an escalation's; what a versioned model's version was judged against.
ESCALATION_FIELDS = {"supersedes", "escalation", "reference"}


def round_trips(triggers: list[Trigger]) -> list[Trigger]:
    """Every trigger, emitted, reads back from its JSON as itself (the one serialiser and its parser)."""
    for t in triggers:
        emitted = t.with_emitted_at(1.7e9)
        assert Trigger.from_dict(emitted.to_dict()) == emitted
        assert Trigger.from_dict(emitted.to_dict()).to_json_bytes() == emitted.to_json_bytes()
        validate("trigger", orjson.loads(emitted.to_json_bytes()))  # the contract's JSON Schema
        check_one_truth(orjson.loads(emitted.to_json_bytes()))
    return triggers


def batches(raws: list[bytes], size: int = 5000) -> list[list[bytes]]:
    return [raws[i : i + size] for i in range(0, len(raws), size)]


def training_reference(stream: SyntheticStream, schema: ModelSchema, n: int = 20_000) -> ReferenceProfile:
    """The reference a user builds from labelled training data of the pre-drift process."""
    train = SyntheticStream(
        n=n, rate=stream.rate, n_numeric=stream.n_numeric, model_id=stream.model_id, seed=1000 + stream.seed
    )
    raws, _ = train.raw()
    decoded, _ = decode_predictions(raws, {schema.model_id: schema})
    return build_reference(schema, decoded[schema.model_id], train.columns()["y"].astype(float))


def run(
    stream: SyntheticStream,
    key: tuple[str, ...] = ("x0", "x1", "c0"),
    settings: ModelSettings | None = None,
    with_reference: bool = True,
) -> tuple[list[Trigger], list[EngineOutput]]:
    schema = ModelSchema(stream.model_id, "binary", stream.schema_features(key))
    refs = {stream.model_id: training_reference(stream, schema) if with_reference else None}
    engine = MonitoringEngine({schema.model_id: schema}, {schema.model_id: settings or ModelSettings()}, refs)
    preds, labels = stream.raw()
    outputs: list[EngineOutput] = []
    summary = replay(engine, batches(preds), label_heap(labels), on_output=lambda o, _s: outputs.append(o))
    assert summary.rejected == 0
    return round_trips(summary.triggers), outputs


def delay_windows(stream: SyntheticStream, trigger: Trigger, window: int = 5000) -> float:
    """How many (default-size) windows of events after the drift point the trigger's window ended."""
    assert stream.drift_at is not None
    return (trigger.event_time - stream.ts_of(stream.drift_at)) * stream.rate / window


# -- data drift -----------------------------------------------------------------------------------
def test_mean_shift_of_one_sigma_on_a_key_feature() -> None:
    stream = SyntheticStream(n=80_000, drift_at=41_234, mean_shift={"x0": 1.0}, seed=21)
    triggers, _ = run(stream)
    assert triggers, "a 1σ shift on a key feature must trigger"
    first = triggers[0]
    assert first.kind in ("data_drift", "combined")
    assert first.event_time > stream.ts_of(41_234)
    delay = delay_windows(stream, first)
    print(f"\nmean shift 1σ: first trigger {first.kind} {delay:.2f} windows (of 5000) after the drift")
    # the window holding the drift point plus K=2 consecutive windows
    assert 0 < delay <= 3.0
    assert any(r.feature == "x0" and r.detector in ("psi", "ks") for r in first.reasons)
    assert first.recommendation.drift_started_at >= stream.ts_of(41_234) - 5000 / stream.rate
    assert set(first.to_dict()) - ESCALATION_FIELDS == TRIGGER_FIELDS


def test_categorical_frequency_shift() -> None:
    stream = SyntheticStream(n=60_000, drift_at=30_000, c0_probs=(0.2, 0.3, 0.5), seed=22)
    triggers, _ = run(stream)
    assert triggers and triggers[0].event_time > stream.ts_of(30_000)
    delay = delay_windows(stream, triggers[0])
    print(f"\ncategorical shift: first trigger {triggers[0].kind} after {delay:.2f} windows")
    assert delay <= 3.0
    reasons = {(r.detector, r.feature) for r in triggers[0].reasons}
    assert ("psi", "c0") in reasons or ("chi2", "c0") in reasons


def test_no_trigger_before_the_drift_point() -> None:
    # the same streams cut just before their drift: nothing at all
    for stream in (
        SyntheticStream(n=41_000, drift_at=None, seed=21),
        SyntheticStream(n=30_000, drift_at=None, seed=22),
    ):
        triggers, _ = run(stream)
        assert triggers == []


# -- performance ----------------------------------------------------------------------------------
def test_binary_auc_decay_with_labels() -> None:
    # The inputs do not move; the outcome stops following x0. Half the events get a label 1 min later.
    stream = SyntheticStream(
        n=100_000, drift_at=50_000, concept_drift=0.8, label_fraction=0.5, label_delay=60.0, seed=23
    )
    triggers, _ = run(stream)
    kinds = [t.kind for t in triggers]
    assert kinds == ["performance"], kinds  # nothing else: features and predictions are stationary
    t = triggers[0]
    assert t.event_time > stream.ts_of(50_000)
    delay = delay_windows(stream, t)
    print(
        f"\nAUC decay: performance trigger after {delay:.2f} windows; AUC {t.evidence.performance['auc']:.3f}"
    )
    assert delay <= 8.0  # 5000 rolling labels turn over in 2 windows; then 3 consecutive windows
    (r,) = [r for r in t.reasons if r.statistic == "auc"]
    assert r.value <= t.evidence.baseline["auc"] - 0.015
    assert t.recommendation.action == "retrain"
    assert t.evidence.labels_joined > 10_000


def test_regression_mae_rise_and_under_estimation_seed_003() -> None:
    story = BikeStory(stations=40, days=40)
    app = load_config(str(ROOT / "examples" / "config.yaml"), env={})
    bikes = app.model("bikes")
    schema = bikes.schema
    train, train_labels = story.training()
    decoded, _ = decode_predictions([orjson.dumps(e) for e in train], {"bikes": schema})
    ref = build_reference(schema, decoded["bikes"], np.array([lab["label"] for lab in train_labels]))
    engine = MonitoringEngine({"bikes": schema}, {"bikes": bikes.settings}, {"bikes": ref})
    events, labels = story.production()
    summary = replay(
        engine, batches([orjson.dumps(e) for e in events]), label_heap([orjson.dumps(x) for x in labels])
    )
    kinds = [(t.kind, round((t.event_time - story.drift_ts) / DAY, 1)) for t in round_trips(summary.triggers)]
    print(f"\nbikes (days after the warming starts): {kinds}")
    assert summary.triggers and all(t.event_time > story.drift_ts for t in summary.triggers)
    first_drift = next(t for t in summary.triggers if t.kind in ("data_drift", "combined"))
    assert {r.feature for r in first_drift.reasons} >= {"temp"}
    assert (first_drift.event_time - story.drift_ts) / DAY <= 5
    perf = next(t for t in summary.triggers if t.kind in ("performance", "combined"))
    assert any(r.statistic == "mae" for r in perf.reasons)
    measured = perf.evidence.performance
    assert measured["mae"] > 1.2 * perf.evidence.baseline["mae"]
    assert measured["mean_error"] < 0  # the model under-estimates (seed 003)
    assert perf.event_time > first_drift.event_time  # the drift was visible before the error


# -- prediction drift while labels are delayed ---------------------------------------------------
def test_prediction_drift_while_labels_are_delayed_waits_for_labels() -> None:
    # x1 moves the score but is not a key feature: no data-drift trigger; labels come 2 days later.
    stream = SyntheticStream(n=60_000, drift_at=30_000, mean_shift={"x1": 1.0}, label_delay=2 * DAY, seed=24)
    triggers, _ = run(stream, key=("x0",))
    assert [t.kind for t in triggers] == ["prediction_drift"]
    t = triggers[0]
    assert t.event_time > stream.ts_of(30_000) and delay_windows(stream, t) <= 3.0
    assert t.recommendation.action == "wait_for_labels"
    assert [r.feature for r in t.reasons] == ["__prediction__"]


def test_prediction_drift_is_silent_when_fresh_labels_show_no_decay() -> None:
    stream = SyntheticStream(
        n=60_000, drift_at=30_000, mean_shift={"x1": 1.0}, label_delay=1.0, label_fraction=0.5, seed=24
    )
    # count windows of 5000 events span 50 s; labels come after 1 s: the performance view is fresh
    triggers, _ = run(stream, key=("x0",))
    assert [t.kind for t in triggers] == []


# -- the stationary million ------------------------------------------------------------------------
@pytest.mark.slow
def test_one_million_stationary_events_trigger_nothing_with_the_defaults() -> None:
    stream = SyntheticStream(n=1_000_000, label_fraction=0.1, seed=31)
    schema = ModelSchema("synth", "binary", stream.schema_features())
    ref = training_reference(stream, schema, n=50_000)
    engine = MonitoringEngine({"synth": schema}, {"synth": ModelSettings()}, {"synth": ref})
    started = time.perf_counter()
    preds, labels = stream.raw()
    generated = time.perf_counter() - started
    worst: dict[str, float] = {"psi": 0.0, "auc_drop": -1.0, "pred_psi": 0.0}

    def watch(out: EngineOutput, _stream: str) -> None:
        for o in out.per_model.values():
            for ev in o.evaluations:
                for r in ev.results:
                    if r.detector == "psi" and r.feature == "__prediction__":
                        worst["pred_psi"] = max(worst["pred_psi"], r.value)
                    elif r.detector == "psi":
                        worst["psi"] = max(worst["psi"], r.value)
                if "auc" in ev.performance:
                    worst["auc_drop"] = max(worst["auc_drop"], ev.baseline["auc"] - ev.performance["auc"])

    summary = replay(engine, batches(preds, 10_000), label_heap(labels), on_output=watch)
    rate = summary.events / summary.seconds
    print(
        f"\n1M stationary: generated in {generated:.1f}s; "
        f"replay {summary.seconds:.1f}s = {rate:,.0f} events/s; "
        f"{summary.windows} windows, {summary.labels} labels joined, {len(summary.triggers)} triggers; "
        f"max PSI {worst['psi']:.4f}, max prediction PSI {worst['pred_psi']:.4f}, "
        f"max AUC drop {worst['auc_drop']:.4f}"
    )
    assert summary.events == 1_000_000 and summary.windows == 200
    assert summary.labels > 95_000
    assert summary.triggers == []


# -- the command line, driven by the example configuration ---------------------------------------
def test_replay_command_on_the_sample_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ROOT / "examples" / "data"
    out = tmp_path / "triggers.jsonl"
    code = cli_main(
        [
            "replay",
            "--config",
            str(ROOT / "examples" / "config.yaml"),
            str(data / "bikes_predictions.jsonl.gz"),
            str(data / "bikes_labels.jsonl.gz"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    triggers = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert triggers, capsys.readouterr().err
    drift_ts = BikeStory().drift_ts
    for t in triggers:
        assert set(t) - ESCALATION_FIELDS == TRIGGER_FIELDS
        assert Trigger.from_dict(t).to_dict() == t  # what a consumer parses is what was emitted
        assert t["model_id"] == "bikes" and t["model_version"] == "2025.01"
        assert t["reference"] == {"source": "configured", "version": "2025.01"}
        assert t["event_time"] > drift_ts
        assert t["recommendation"]["action"] in ("retrain", "investigate", "wait_for_labels")
        for r in t["reasons"]:
            assert {"detector", "feature", "statistic", "value", "threshold", "window"} <= set(r)
    # Known answer: the temperature drift 3 days after the warming starts, the MAE rise later; no
    # prediction-drift trigger (hourly labels are fresh) and nothing else. The warming goes on, so
    # each condition escalates while latched: every later trigger of a kind supersedes the one before.
    first = [t for t in triggers if "supersedes" not in t]
    assert [t["kind"] for t in first] == ["data_drift", "performance"]
    days = [(t["event_time"] - drift_ts) / DAY for t in first]
    assert days[0] <= 4 < days[1]
    last_of_kind: dict[str, str] = {}
    for t in triggers:
        assert t.get("supersedes") == last_of_kind.get(t["kind"])
        assert ("escalation" in t) == ("supersedes" in t)
        last_of_kind[t["kind"]] = t["trigger_id"]
    err = capsys.readouterr().err
    assert "replayed 12480 events and 12480 joined labels" in err


def test_sample_files_are_small_and_match_the_story() -> None:
    data = ROOT / "examples" / "data"
    files = [
        data / n for n in ("bikes_predictions.jsonl.gz", "bikes_labels.jsonl.gz", "bikes.reference.json")
    ]
    assert sum(f.stat().st_size for f in files) < 2_000_000
    first = orjson.loads(gzip.decompress(files[0].read_bytes()).split(b"\n", 1)[0])
    assert (
        first["model_id"] == "bikes"
        and "weekday"
        not in load_config(str(ROOT / "examples" / "config.yaml"), env={})
        .model("bikes")
        .schema.categorical_names
    )
    profile = ReferenceProfile.from_json(files[2].read_bytes())
    assert profile.model_id == "bikes" and "mae" in profile.baseline
