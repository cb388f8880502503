"""Regenerate the sample files for ``stream-monitor replay`` (seed 003's bike-sharing story).

    python examples/data/make_samples.py

writes, next to this script:

* ``bikes_predictions.jsonl.gz`` and ``bikes_labels.jsonl.gz`` — 26 production days of 20 stations
  (24 predictions per station and day); the weather warms from day 20 (2025-01-21) on, past the training
  range, and the model under-estimates demand. Labels (the true demand) arrive an hour later.
* ``bikes_training.csv`` — the model's training fortnight (before any drift), one row per prediction:
  ``ts`` (RFC 3339), the features, the segment key ``station_type``, ``prediction`` (the model's output)
  and ``label`` (the true demand); the training-file format is described in the README;
* ``bikes.reference.json`` — the reference profile of the ``bikes`` model, built with
  ``stream-monitor reference build`` from ``bikes_training.csv`` (predictions with their labels, so
  the profile carries the baseline MAE).

``examples/config.yaml`` points the ``bikes`` model at that profile; then

    stream-monitor replay --config examples/config.yaml examples/data/bikes_predictions.jsonl.gz \\
        examples/data/bikes_labels.jsonl.gz --out triggers.jsonl

Everything is seeded: the event files are byte-identical on every run (gzip without a timestamp).
"""

from __future__ import annotations

import csv
import datetime
import gzip
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from stream_monitor.cli import main as cli_main
from stream_monitor.offline.demo_data import BikeStory

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "config.yaml"
STORY = BikeStory(stations=20, days=40)


def write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(body)


TRAINING_COLUMNS = (
    "ts",
    "temp",
    "atemp",
    "humidity",
    "windspeed",
    "hour",
    "season",
    "weekday",
    "weather",
    "holiday",
    "station_type",
    "prediction",
    "label",
)


def write_training_csv(path: Path, events: list[dict[str, Any]], labels: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TRAINING_COLUMNS)
        for event, label in zip(events, labels, strict=True):
            when = datetime.datetime.fromtimestamp(event["ts"], tz=datetime.UTC)
            row = {
                **event["features"],
                **event["segment"],
                "ts": when.isoformat(sep="T", timespec="seconds"),
                "prediction": event["prediction"],
                "label": label["label"],
            }
            writer.writerow(["" if row[c] is None else row[c] for c in TRAINING_COLUMNS])


def main() -> None:
    events, labels = STORY.production()
    write_jsonl_gz(HERE / "bikes_predictions.jsonl.gz", events)
    write_jsonl_gz(HERE / "bikes_labels.jsonl.gz", sorted(labels, key=lambda r: r["ts"]))

    train, train_labels = STORY.training()
    # The training fortnight as a data scientist would export it (pandas' to_csv): one row per
    # prediction with its features, segment, score and true label; time as "YYYY-MM-DD HH:MM:SS+00:00".
    training_csv = HERE / "bikes_training.csv"
    write_training_csv(training_csv, train, train_labels)
    out = HERE / "bikes.reference.json"
    code = cli_main(
        ["reference", "build", "--config", str(CONFIG), "--model", "bikes", "--out", str(out), str(training_csv)]
    )
    if code:
        raise SystemExit(code)
    print(f"{len(events)} predictions, {len(labels)} labels; drift starts at ts {STORY.drift_ts:.0f}")


if __name__ == "__main__":
    main()
