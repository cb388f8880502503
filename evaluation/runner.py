"""Run a case through the real command line, as a user would: files on disk, two CLI calls.

1. the training slice with the model's predictions and the labels, written with ``DataFrame.to_csv``
   (pandas' own timestamp format, booleans as pandas writes them);
2. ``stream-monitor reference build`` on it;
3. the later rows as prediction events (JSON lines, as a producer would serialise them) and their
   labels, each stamped ``label_delay`` after its prediction;
4. ``stream-monitor replay`` on both, triggers to a JSON-lines file.

Both commands run as ``python -m stream_monitor.cli`` in a subprocess, so the evaluation sees exactly
what a user sees (exit code, stderr) and nothing of the package's internals.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.cases import Case
from evaluation.prepare import Prepared

_SUMMARY = re.compile(r"replayed (\d+) events and (\d+) joined labels .*?; (\d+) windows; (\d+) rejected")


@dataclass
class RunResult:
    triggers: list[dict[str, Any]]
    events_sent: int
    labels_sent: int
    events_replayed: int | None  # from replay's summary line
    labels_joined: int | None
    windows: int | None
    rejected: int | None
    boolean_features: tuple[str, ...] = ()  # categorical features that are booleans in the data frame
    notes: list[str] = field(default_factory=list)  # workarounds and failures, for the report
    failed: str | None = None  # why the run could not complete


def _iso(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _native(value: Any) -> Any:
    """A cell as a JSON producer would send it: NaN as null, numpy scalars as Python ones."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def config_yaml(case: Case, reference: str) -> str:
    """The configuration a data scientist would write for this model: defaults but for the windows."""
    features = "\n".join(f"      {name}: numeric" for name in case.numeric) + (
        "\n" + "\n".join(f"      {name}: categorical" for name in case.categorical)
        if case.categorical
        else ""
    )
    key = f"    key_features: [{', '.join(case.key_features)}]\n" if case.key_features else ""
    policy = (
        '    policy: {key_class: "1"}          # watch the F1 of the positive class\n'
        if case.task == "binary"
        else ""
    )
    return (
        f"# Evaluation case {case.name}: {case.model_summary}.\n"
        "kafka:\n"
        "  bootstrap_servers: 127.0.0.1:9092   # required by the format; replay reads files only\n"
        "models:\n"
        f"  - id: {case.name}\n"
        f"    task: {case.task}\n"
        "    features:\n"
        f"{features}\n"
        f"{key}"
        f"    reference: {reference}\n"
        f"    # {case.window_why}\n"
        f"    window: {{kind: time, width: {case.window}, allowed_lateness: 1h}}\n"
        f"    performance_window: {case.performance_window}      # labelled events in the rolling metrics\n"
        f"    label_buffer: {{ttl_seconds: {case.label_ttl}}}   # labels arrive "
        f"{_delay_text(case.label_delay)} after the prediction\n"
        f"{policy}"
    )


def _delay_text(delay: pd.Timedelta) -> str:
    hours = delay / pd.Timedelta(hours=1)
    amount, unit = (hours / 24, "day") if hours >= 24 else (hours, "hour")
    return f"{amount:g} {unit}" + ("" if amount == 1 else "s")


def _last_line(stderr: str) -> str:
    """The line that says why a command failed (its last one: the error, or a traceback's end)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_monitor.cli", *args], capture_output=True, text=True, check=False
    )


def write_inputs(prepared: Prepared, folder: Path) -> tuple[Path, Path, Path]:
    """Training CSV, prediction events and labels (JSON lines) of a case, in ``folder``."""
    case = prepared.case
    training = prepared.train.rename(columns={"target": "label"})[
        ["ts", *case.features, "prediction", "label"]
    ]
    training_path = folder / f"{case.name}_training.csv"
    training.to_csv(training_path, index=False)

    replay = prepared.replay
    event_ts, label_ts = _iso(replay["ts"]), _iso(replay["ts"] + case.label_delay)
    events_path, labels_path = folder / f"{case.name}_events.jsonl", folder / f"{case.name}_labels.jsonl"
    with events_path.open("w") as events, labels_path.open("w") as labels:
        for i, row in enumerate(replay.itertuples(index=False)):
            values = row._asdict()
            event_id = f"{case.name}-{i}"
            event = {
                "event_id": event_id,
                "model_id": case.name,
                "ts": event_ts.iat[i],
                "features": {name: _native(values[name]) for name in case.features},
                "prediction": float(values["prediction"]),
            }
            label = values["target"]
            label_value = int(label) if case.task == "binary" else float(label)
            events.write(json.dumps(event) + "\n")
            labels.write(
                json.dumps(
                    {"event_id": event_id, "model_id": case.name, "ts": label_ts.iat[i], "label": label_value}
                )
                + "\n"
            )
    return training_path, events_path, labels_path


def run_case(prepared: Prepared, folder: Path) -> RunResult:
    case = prepared.case
    folder.mkdir(parents=True, exist_ok=True)
    training_path, events_path, labels_path = write_inputs(prepared, folder)
    reference_path = folder / f"{case.name}.reference.json"
    config_path = folder / f"{case.name}.yaml"
    config_path.write_text(config_yaml(case, reference_path.name))
    result = RunResult(
        triggers=[],
        events_sent=len(prepared.replay),
        labels_sent=len(prepared.replay),
        events_replayed=None,
        labels_joined=None,
        windows=None,
        rejected=None,
        boolean_features=tuple(name for name in case.categorical if prepared.train[name].dtype == bool),
    )
    if prepared.dropped_rows:
        result.notes.append(f"{prepared.dropped_rows} rows without an event time left out")

    build = ["reference", "build", "--config", str(config_path), "--model", case.name]
    built = _cli(*build, str(training_path), "--out", str(reference_path))
    if built.returncode != 0 and "timestamp" in built.stderr:
        # Known problem: `reference build` refuses pandas' default timestamp format. Work around it
        # the way a user would, by writing ISO 8601 with a Z, and say so in the report.
        result.notes.append(
            "`reference build` refused pandas' default timestamps "
            f"(`{prepared.train['ts'].iloc[0]}`): `{_last_line(built.stderr)[:160]}`; "
            "training file rewritten with ISO 8601 `…T…Z` timestamps (known problem)"
        )
        training = pd.read_csv(training_path)
        training["ts"] = _iso(prepared.train["ts"])
        training.to_csv(training_path, index=False)
        built = _cli(*build, str(training_path), "--out", str(reference_path))
    if built.returncode != 0:
        result.failed = f"reference build exited {built.returncode}: {_last_line(built.stderr)}"
        return result

    triggers_path = folder / f"{case.name}_triggers.jsonl"
    replayed = _cli(
        "replay",
        "--config",
        str(config_path),
        str(events_path),
        str(labels_path),
        "--out",
        str(triggers_path),
        "--insights-dir",  # the bucket profiles, for `insights dna` (evaluation/insight.py)
        str(folder / "insights"),
    )
    if replayed.returncode != 0:
        result.failed = f"replay exited {replayed.returncode}: {_last_line(replayed.stderr)}"
        return result
    (folder / f"{case.name}_replay.stderr").write_text(replayed.stderr)
    match = _SUMMARY.search(replayed.stderr)
    if match:
        result.events_replayed, result.labels_joined, result.windows, result.rejected = map(
            int, match.groups()
        )
    result.triggers = [json.loads(line) for line in triggers_path.read_text().splitlines() if line.strip()]
    return result
