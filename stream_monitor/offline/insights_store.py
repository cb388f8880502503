"""Save and load a model's insight state (bucket profiles, segments) to a local folder.

Edge module: it touches files. Layout of ``<folder>/<model_id>/``: ``schema.json`` (the model's
features, task and segment keys), ``reference.json`` (the reference profile the bucket sketches are
counted against), ``settings.json`` (the model's insight settings: DNA metric and cut, incident
thresholds…, so ``insights dna`` draws what the running model saw) and ``insights.state``
(:meth:`InsightTracker.snapshot`, in the one state format). ``replay --insights-dir`` and ``demo``
write it; ``stream-monitor insights dna`` reads it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson

from stream_monitor.core.engine import MonitoringEngine
from stream_monitor.core.insights.tracker import InsightTracker
from stream_monitor.core.reference import ReferenceProfile
from stream_monitor.core.schema import FeatureSpec, ModelSchema
from stream_monitor.core.settings import IncidentSettings, InsightSettings, RecommendSettings, SegmentSettings
from stream_monitor.errors import StreamMonitorError


def schema_to_dict(schema: ModelSchema) -> dict[str, Any]:
    """JSON-ready schema.

    >>> s = ModelSchema("m", "binary", (FeatureSpec("x", "numeric", key=True),), segment_keys=("ch",))
    >>> schema_from_dict(schema_to_dict(s)) == s
    True
    """
    return {
        "model_id": schema.model_id,
        "task": schema.task,
        "features": [
            {"name": f.name, "kind": f.kind, "key": f.key, "importance": f.importance}
            for f in schema.features
        ],
        "positive_class": schema.positive_class,
        "segment_keys": list(schema.segment_keys),
        "max_segments": schema.max_segments,
    }


def schema_from_dict(d: dict[str, Any]) -> ModelSchema:
    """Inverse of :func:`schema_to_dict`."""
    return ModelSchema(
        d["model_id"],
        d["task"],
        tuple(
            FeatureSpec(f["name"], f["kind"], bool(f["key"]), float(f["importance"])) for f in d["features"]
        ),
        positive_class=d["positive_class"],
        segment_keys=tuple(d["segment_keys"]),
        max_segments=int(d["max_segments"]),
    )


def save_insights(folder: str | Path, tracker: InsightTracker) -> Path:
    """Write a tracker's state under ``folder/<model_id>/``; returns that directory."""
    out = Path(folder) / tracker.schema.model_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "schema.json").write_bytes(
        orjson.dumps(schema_to_dict(tracker.schema), option=orjson.OPT_INDENT_2)
    )
    (out / "reference.json").write_bytes(tracker.reference.to_json())
    settings = dataclasses.asdict(tracker.settings)
    (out / "settings.json").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
    (out / "insights.state").write_bytes(tracker.snapshot())
    return out


def load_insights(folder: str | Path, model_id: str) -> InsightTracker:
    """Read what :func:`save_insights` wrote; a clear error when it is not there."""
    base = Path(folder) / model_id
    if not (base / "insights.state").exists():
        available = (
            sorted(p.parent.name for p in Path(folder).glob("*/insights.state"))
            if Path(folder).exists()
            else []
        )
        raise StreamMonitorError(
            f"no saved insights for model {model_id!r} in {folder} "
            f"(found: {', '.join(available) or 'none'}); "
            "run `stream-monitor demo` or `stream-monitor replay --insights-dir DIR ...` first"
        )
    schema = schema_from_dict(orjson.loads((base / "schema.json").read_bytes()))
    reference = ReferenceProfile.from_json((base / "reference.json").read_bytes())
    settings = None
    if (base / "settings.json").exists():  # folders saved before settings were kept have defaults
        settings = insight_settings_from_dict(orjson.loads((base / "settings.json").read_bytes()))
    return InsightTracker.restore((base / "insights.state").read_bytes(), schema, reference, settings)


def insight_settings_from_dict(d: dict[str, Any]) -> InsightSettings:
    """Inverse of ``dataclasses.asdict`` on :class:`InsightSettings`.

    >>> s = InsightSettings(dna_metric="js", segments=SegmentSettings(surge_ratio=4.0))
    >>> insight_settings_from_dict(dataclasses.asdict(s)) == s
    True
    """
    return InsightSettings(
        **{
            **d,
            "incidents": IncidentSettings(**d["incidents"]),
            "segments": SegmentSettings(**d["segments"]),
            "recommend": RecommendSettings(**d["recommend"]),
        }
    )


def save_all_insights(engine: MonitoringEngine, folder: str) -> None:
    """Save each model's time-bucket profiles (for ``insights dna``) under ``folder/<model>/``."""
    for mon in engine.judging_monitors.values():
        if mon.insights is not None:
            print(f"saved bucket profiles: {save_insights(folder, mon.insights)}", file=sys.stderr)
