"""Model versions and the reference registry on the real broker (issue: close the retraining loop).

``stream-monitor run`` watches a model whose v1 drifts (x0 moves): a data-drift trigger names v1. A
reference of the new population is published for v2 with the real CLI while the service runs
(together with hostile registry records, which are counted and change nothing); then v2's events
come: one ``model_version_changed`` record says v2 started against the registry's reference, v2 is
judged against it (no drift trigger for the shift it was trained on), and v1 retires with its series.
A restart reads the registry before it restores, so v2 goes on where it was, with no second record.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from service_fixtures import ROOT, ServiceProcess, free_port, kafka_and_metrics, topic_records

from stream_monitor.core.events import decode_predictions
from stream_monitor.core.reference import ReferenceProfile, build_reference
from stream_monitor.core.registry import encode_record, registry_key
from stream_monitor.core.schema import ModelSchema
from stream_monitor.offline.demo_data import SyntheticStream

RATE = 20.0
START = math.floor(time.time() - 86400.0)  # recent: kept by the broker, accepted by the time bounds
KEY = ("x0", "x1", "c0")
V1 = SyntheticStream(
    n=8000, rate=RATE, seed=31, label_fraction=0.5, label_delay=30.0, drift_at=5000,
    mean_shift={"x0": 1.5}, n_numeric=4, start_ts=START,
)  # fmt: skip
V2 = SyntheticStream(
    n=6000, rate=RATE, seed=32, label_fraction=0.5, label_delay=30.0, drift_at=0,
    mean_shift={"x0": 1.5}, n_numeric=4, start_ts=V1.ts_of(8000),
)  # fmt: skip
MODEL = V1.model_id
SCHEMA = ModelSchema(MODEL, "binary", V1.schema_features(KEY))


def _reference(seed: int, shift: dict[str, float]) -> ReferenceProfile:
    train = SyntheticStream(
        n=10_000, rate=RATE, seed=seed, label_fraction=1.0, drift_at=0, mean_shift=shift, n_numeric=4
    )
    decoded, _ = decode_predictions(train.raw()[0], {MODEL: SCHEMA})
    return build_reference(SCHEMA, decoded[MODEL], train.columns()["y"].astype(float))


def _config(
    path: Path, bootstrap: str, topics: dict[str, str], group: str, reference: Path, port: int
) -> Path:
    features = {f.name: {"type": f.kind, "key": True} if f.key else f.kind for f in V1.schema_features(KEY)}
    config = {
        **kafka_and_metrics(bootstrap, group, topics, port, sync_max_idle_seconds=120.0),
        "models": [
            {
                "id": MODEL,
                "task": "binary",
                "version": "1",
                "features": features,
                "reference": str(reference),
                "window": {"kind": "count", "size": 1000},
                "performance_window": 1000,
                "policy": {"cooldown_seconds": 0, "consecutive_windows": 1},
                "versions": {"max_active": 2, "retire_after_seconds": 60},
            }
        ],
    }
    path.write_bytes(orjson.dumps(config))
    return path


def _versioned(raws: list[bytes], version: str) -> list[bytes]:
    return [r.replace(b'"model_version":"1"', b'"model_version":"%s"' % version.encode()) for r in raws]


def _produce(producer: Any, topics: dict[str, str], predictions: list[bytes], labels: list[bytes]) -> None:
    merged = sorted(
        [(orjson.loads(v)["ts"], 0, "predictions", v) for v in predictions]
        + [(orjson.loads(v)["ts"], 1, "labels", v) for v in labels]
    )
    for ts, _, role, value in merged:
        producer.produce(topics[role], value=value, key=MODEL.encode(), timestamp=round(ts * 1000))
        producer.poll(0)
    assert producer.flush(60) == 0


def _series(member: ServiceProcess, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample, labels), v in member.metrics().items() if sample == name}


def _serving_task(member: ServiceProcess) -> dict[str, Any]:
    """The /state of the partition-task that got the model's events (the other one never did)."""
    (task,) = [t for t in member.state()["tasks"].values() if t["counts"]["predictions"]]
    return dict(task)


def _checkpointed(member: ServiceProcess) -> bool:
    task = _serving_task(member)
    return task["digest"] is not None and task["digest"] != task["restored_digest"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        check=False,
    )


def test_a_published_reference_judges_the_new_version_and_the_old_one_retires(
    kafka_bootstrap: str, topic_factory: Any, group_id: str, producer_factory: Any, tmp_path: Path
) -> None:
    # Two partitions, every record keyed by the model id: one partition-task never sees the model and
    # holds only its waiting placeholder, which must not keep a retired version's series alive.
    predictions = topic_factory(2, prefix="predictions")
    topics = {
        "predictions": predictions,
        "labels": topic_factory(2, prefix="labels"),
        "triggers": predictions.replace("predictions", "triggers"),
        "dlq": predictions.replace("predictions", "dlq"),
        "state": predictions.replace("predictions", "state"),
        "references": predictions.replace("predictions", "references"),
    }
    reference = tmp_path / "v1.reference.json"
    reference.write_bytes(_reference(301, {}).to_json())
    v2_reference = tmp_path / "v2.reference.json"
    v2_reference.write_bytes(_reference(302, {"x0": 1.5}).to_json())
    port = free_port()
    config = _config(tmp_path / "c.json", kafka_bootstrap, topics, group_id, reference, port)
    producer = producer_factory({"linger.ms": 20})
    p1, l1 = V1.raw()
    p2, l2 = V2.raw()
    p2 = _versioned(p2, "2")

    member = ServiceProcess(config, port, tmp_path / "m.log").start()
    try:
        member.wait_for(lambda: member.ready() is not None, 120, "HTTP up")
        _produce(producer, topics, p1, l1)
        member.wait_for(lambda: member.processed()["predictions"] == len(p1), 240, "v1 processed")
        found = topic_records(kafka_bootstrap, topics["triggers"])
        v1_drift = [
            t for t in found if t.get("model_version") == "1" and t["kind"] in ("data_drift", "combined")
        ]
        assert v1_drift and all(t["reference"]["source"] == "configured" for t in v1_drift)
        assert any(r["feature"] == "x0" for t in v1_drift for r in t["reasons"])

        # Hostile registry records first: a bad key, garbage under a good key, a profile of another
        # schema, a record whose header names another version. Each is counted; none is used.
        wrong_schema = ReferenceProfile(1, MODEL)
        hostile = [
            (b"not-json-key", b"whatever"),
            (registry_key(MODEL, "2"), b"\x00garbage"),
            (registry_key(MODEL, "2"), encode_record(wrong_schema, MODEL, "2", published_at=0.0)),
            (registry_key(MODEL, "2"), encode_record(_reference(303, {}), MODEL, "3", published_at=0.0)),
        ]
        for key, value in hostile:
            producer.produce(topics["references"], key=key, value=value)
        assert producer.flush(30) == 0
        done = _cli("reference", "publish", "--config", str(config), "--model", MODEL, "--version", "2",
                    str(v2_reference))  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "published" in done.stdout
        listed = _cli("reference", "list", "--config", str(config))
        assert listed.returncode == 0, listed.stderr
        rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert [r["model_version"] for r in rows if "model_id" in r] == ["2"]
        assert len([r for r in rows if "refused" in r]) == 4

        def outcomes() -> dict[str, float]:
            return {
                dict(k)["outcome"]: v
                for k, v in _series(member, "stream_monitor_reference_records_total").items()
            }

        member.wait_for(lambda: outcomes().get("loaded") == 1.0, 60, "the v2 reference loaded")
        assert outcomes()["bad_record"] == 3 and outcomes()["schema_mismatch"] == 1

        _produce(producer, topics, p2, l2)
        member.wait_for(lambda: member.processed()["predictions"] == len(p1) + len(p2), 240, "v2 processed")
        member.wait_for(
            lambda: ("model", MODEL) in dict.fromkeys(
                k[0] for k in _series(member, "stream_monitor_model_versions_retired_total")
            ) and sum(_series(member, "stream_monitor_model_versions_retired_total").values()) == 1,
            60,
            "v1 retired",
        )  # fmt: skip
        records = topic_records(kafka_bootstrap, topics["triggers"])
        changes = [r for r in records if r["kind"] == "model_version_changed"]
        assert [(c["model_version"], c["previous_version"], c["reference"]) for c in changes] == [
            ("1", None, {"source": "configured", "version": "1"}),
            ("2", "1", {"source": "registry", "version": "2"}),
        ]
        v2 = [t for t in records if t.get("model_version") == "2" and t["kind"] != "model_version_changed"]
        assert not [t for t in v2 if t["kind"] in ("data_drift", "combined")], v2
        info = _series(member, "stream_monitor_model_version_info")
        assert [dict(k) for k in info] == [
            {"model": MODEL, "version": "2", "reference_source": "registry", "reference_version": "2"}
        ]
        psi_versions = {dict(k).get("version") for k in _series(member, "stream_monitor_feature_psi")}
        assert psi_versions == {"2"}  # v1's judged series went with it
        task = _serving_task(member)
        assert [v["version"] for v in task["versions"][MODEL]] == ["2"]

        # A restart: the registry is read before the state is restored, so v2 goes on as it was.
        assert member.terminate() == 0
        member = ServiceProcess(config, port, tmp_path / "m2.log").start()
        member.wait_for(lambda: member.ready() is True, 120, "ready after the restart")
        task = _serving_task(member)
        assert task["versions"][MODEL][0]["reference"] == {"source": "registry", "version": "2"}
        assert task["versions"][MODEL][0]["events"] == len(p2)
        more = SyntheticStream(
            n=2000, rate=RATE, seed=33, label_fraction=0.5, label_delay=30.0, drift_at=0,
            mean_shift={"x0": 1.5}, n_numeric=4, start_ts=V2.ts_of(6000),
        )  # fmt: skip
        p3, l3 = more.raw()
        _produce(producer, topics, _versioned(p3, "2"), l3)
        member.wait_for(lambda: member.processed()["predictions"] == len(p1) + len(p2) + len(p3), 240, "more")
        records = topic_records(kafka_bootstrap, topics["triggers"])
        assert len([r for r in records if r["kind"] == "model_version_changed"]) == 2
        assert not [
            t for t in records if t.get("model_version") == "2" and t["kind"] in ("data_drift", "combined")
        ]

        # The reference is withdrawn (a tombstone): v2 starts again on what it resolves to without it,
        # and a restart restores that state (nothing of the withdrawn reference is needed).
        producer.produce(topics["references"], key=registry_key(MODEL, "2"), value=None)
        assert producer.flush(30) == 0

        def v2_reference() -> dict[str, Any]:
            return dict(_serving_task(member)["versions"][MODEL][0]["reference"])

        member.wait_for(lambda: v2_reference()["source"] != "registry", 60, "v2 off the withdrawn reference")
        assert v2_reference() == {
            "source": "previous",
            "version": "1",
        }  # v1 retired: its (configured) reference
        member.wait_for(lambda: _checkpointed(member), 60, "a checkpoint after the withdrawal")
        assert member.terminate() == 0
        member = ServiceProcess(config, port, tmp_path / "m3.log").start()
        member.wait_for(lambda: member.ready() is True, 120, "ready after the second restart")
        assert v2_reference() == {"source": "previous", "version": "1"}
        assert _serving_task(member)["versions"][MODEL][0]["events"] == len(p2) + len(p3)
        assert "cannot be restored" not in member.log()
    finally:
        member.stop()
