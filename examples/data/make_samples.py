"""Regenerate the sample files for ``stream-monitor replay`` (seed 003's bike-sharing story).

    python examples/data/make_samples.py

writes, next to this script:

* ``bikes_predictions.jsonl.gz`` and ``bikes_labels.jsonl.gz`` — 26 production days of 20 stations
  (24 predictions per station and day); the weather warms from day 20 (2025-01-21) on, past the training
  range, and the model under-estimates demand. Labels (the true demand) arrive an hour later.
* ``bikes.reference.json`` — the reference profile of the ``bikes`` model, built with
  ``stream-monitor reference build`` from its training fortnight (predictions with their labels, so
  the profile carries the baseline MAE).

``examples/config.yaml`` points the ``bikes`` model at that profile; then

    stream-monitor replay --config examples/config.yaml examples/data/bikes_predictions.jsonl.gz \\
        examples/data/bikes_labels.jsonl.gz --out triggers.jsonl

Everything is seeded: the event files are byte-identical on every run (gzip without a timestamp).
"""

from __future__ import annotations

import gzip
import tempfile
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


def main() -> None:
    events, labels = STORY.production()
    write_jsonl_gz(HERE / "bikes_predictions.jsonl.gz", events)
    write_jsonl_gz(HERE / "bikes_labels.jsonl.gz", sorted(labels, key=lambda r: r["ts"]))

    train, train_labels = STORY.training()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bikes_training.jsonl"
        rows = ({**e, "label": lab["label"]} for e, lab in zip(train, train_labels, strict=True))
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        out = HERE / "bikes.reference.json"
        code = cli_main(
            ["reference", "build", "--config", str(CONFIG), "--model", "bikes", "--out", str(out), str(path)]
        )
        if code:
            raise SystemExit(code)
    print(f"{len(events)} predictions, {len(labels)} labels; drift starts at ts {STORY.drift_ts:.0f}")


if __name__ == "__main__":
    main()
