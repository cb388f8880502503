"""What ``stream-monitor calibrate`` writes: the model's thresholds as a block of its configuration.

- :func:`threshold_block` — the calibrated values by settings section (``detectors``, ``policy``), kept
  valid (PSI warning ≤ alarm ≤ critical);
- :func:`indented_block` — the model's ``detectors:`` and ``policy:`` sections as they should now read
  (the configured keys kept, the calibrated ones replaced), indented as the model sits in the
  configuration file, so they can replace the model's sections as they are pasted;
- :func:`update_config` — the configuration text with the calibrated keys replaced (or added) in the
  model's block, in place: every other line, comment and key order stays as it was, so ``--write`` gives
  a copy that differs only where the thresholds changed;
- :func:`report_lines` — the comment lines that say what the thresholds rest on: the budget, the time
  blocks, the floors that held, and the false alarms on held-out time;
- :func:`calibrate_command` — the command itself.

Positions come from PyYAML's composer (each node knows where it starts and ends), so the edit needs no
YAML round trip, which would drop the comments.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stream_monitor.errors import StreamMonitorError
from stream_monitor.offline.calibration import Calibration

Block = dict[str, dict[str, float]]
#: Significant digits the thresholds are written with.
DIGITS = 4


def _round(value: float) -> float:
    return float(f"{value:.{DIGITS}g}")


def threshold_block(cal: Calibration) -> Block:
    """The calibrated values by section, rounded; warning ≤ alarm ≤ critical around the alarm.

    >>> import numpy as np
    >>> from stream_monitor.core.settings import ModelSettings
    >>> block = threshold_block(Calibration(ModelSettings(), {}, 0.001, 10, 100))
    >>> block["policy"]["psi_alarm"], sorted(block)
    (0.15, ['detectors', 'policy'])
    """
    p, d = cal.settings.policy, cal.settings.detectors
    return {
        "detectors": {
            "ks_min_effect": _round(d.ks_min_effect),
            "chi2_min_effect": _round(d.chi2_min_effect),
        },
        "policy": {
            "psi_warning": _round(min(p.psi_warning, p.psi_alarm)),
            "psi_alarm": _round(p.psi_alarm),
            "psi_critical": _round(max(p.psi_critical, p.psi_alarm)),
            "prediction_psi_alarm": _round(p.prediction_psi_alarm),
        },
    }


def report_lines(cal: Calibration, model_id: str, budget_per_million: float, source: str) -> list[str]:
    """Comment lines (without ``#``) on what the thresholds rest on."""
    lines = [
        f"stream-monitor calibrate: model {model_id}, budget {budget_per_million:g} false alarms per "
        f"million events ({100 * cal.per_window_budget:.3g} % of windows of {cal.window_events} events)",
        f"null windows: {cal.windows} windows of {cal.window_events} consecutive events in {cal.blocks} "
        f"time blocks of {source}, each against a reference built from the other blocks",
    ]
    floored = [
        f"{name} {cal.thresholds[name]:g} (the data alone gave {cal.raw_thresholds[name]:.3g})"
        for name, hit in cal.floored.items()
        if hit
    ]
    if floored:
        lines.append("held at their floor (the smallest drift worth an alarm): " + ", ".join(floored))
    if cal.held_out is not None:
        lines.append("out of time: " + cal.held_out.summary())
    return lines


# -- locating the model in the configuration text ----------------------------------------------------


def _get(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v
    return None


def _model_node(text: str, model_id: str) -> tuple[int, yaml.MappingNode]:
    """The position in ``models`` and the mapping node of model ``model_id``."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    models = _get(root, "models") if root is not None else None
    if isinstance(models, yaml.SequenceNode):
        for i, item in enumerate(models.value):
            ident = _get(item, "id")
            named = isinstance(ident, yaml.ScalarNode) and ident.value == model_id
            if isinstance(item, yaml.MappingNode) and named:
                return i, item
    raise StreamMonitorError(f"model {model_id!r} is not in the configuration's models")


def _end(node: yaml.Node) -> int:
    """Where the node's last content ends (a block mapping's own end mark lies at the next token)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        return max(_end(v) for _, v in node.value)
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        return max(_end(v) for v in node.value)
    return int(node.end_mark.index)


def _scalar(value: Any) -> str:
    """``value`` as a YAML flow scalar (``0.1``, ``1.0e-05``) that reads back as the same value."""
    return yaml.safe_dump(value, default_flow_style=True).splitlines()[0]


def _layout(model: yaml.MappingNode) -> tuple[int, int]:
    """Column of the model's keys and the indent step of its nested sections (2 when none exist)."""
    column = int(model.value[0][0].start_mark.column)
    for _, v in model.value:
        if isinstance(v, yaml.MappingNode) and v.value and not v.flow_style:
            return column, int(v.value[0][0].start_mark.column) - column
    return column, 2


def indented_block(text: str, model_id: str, block: Block) -> str:
    """The model's sections of ``block`` as they should read — configured keys kept in order, the
    calibrated ones replaced or added — indented as the model's own sections in ``text``.

    >>> cfg = ("models:\\n  - id: m\\n    policy:\\n      psi_alarm: 0.15  # red\\n"
    ...        "      cooldown_seconds: 6h\\n")
    >>> print(indented_block(cfg, "m", {"policy": {"psi_alarm": 0.2}}), end="")
        policy:
          psi_alarm: 0.2
          cooldown_seconds: 6h
    """
    _, model = _model_node(text, model_id)
    column, step = _layout(model)
    out = []
    for section, values in block.items():
        current = _get(model, section)
        merged: dict[str, str] = {}
        if isinstance(current, yaml.MappingNode):
            for k, v in current.value:
                if isinstance(v, yaml.ScalarNode):
                    merged[str(k.value)] = text[v.start_mark.index : v.end_mark.index]
        merged.update({k: _scalar(v) for k, v in values.items()})
        out.append(" " * column + f"{section}:")
        out += [" " * (column + step) + f"{k}: {v}" for k, v in merged.items()]
    return "\n".join(out) + "\n"


def update_config(text: str, model_id: str, block: Block) -> str:
    """``text`` with the keys of ``block`` set in model ``model_id``'s sections, in place.

    >>> cfg = ("models:\\n  - id: m\\n    policy:\\n      psi_alarm: 0.15  # red\\n"
    ...        "      cooldown_seconds: 6h\\n  - id: other\\n    task: binary\\n")
    >>> print(update_config(cfg, "m", {"policy": {"psi_alarm": 0.2, "psi_warning": 0.13},
    ...                                "detectors": {"ks_min_effect": 0.08}}), end="")
    models:
      - id: m
        policy:
          psi_alarm: 0.2  # red
          cooldown_seconds: 6h
          psi_warning: 0.13
        detectors:
          ks_min_effect: 0.08
      - id: other
        task: binary
    """
    _, model = _model_node(text, model_id)
    if model.flow_style:
        raise StreamMonitorError(f"model {model_id!r} is written in flow style ({{...}}): edit it by hand")
    column, step = _layout(model)
    edits: list[tuple[int, int, int, str]] = []  # start, end, order, replacement

    def after_line(index: int) -> int:
        newline = text.find("\n", index)
        return len(text) if newline < 0 else newline + 1

    for section, values in block.items():
        node = _get(model, section)
        if node is None:
            lines = [" " * column + f"{section}:"]
            lines += [" " * (column + step) + f"{k}: {_scalar(v)}" for k, v in values.items()]
            at = after_line(_end(model))
            edits.append((at, at, len(edits), "\n".join(lines) + "\n"))
        elif isinstance(node, yaml.MappingNode) and node.flow_style:
            current = yaml.safe_load(text[node.start_mark.index : node.end_mark.index]) or {}
            merged = {**current, **values}
            flow = "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in merged.items()) + "}"
            edits.append((node.start_mark.index, node.end_mark.index, len(edits), flow))
        elif isinstance(node, yaml.MappingNode) and node.value:
            key_column = int(node.value[0][0].start_mark.column)
            added = []
            for k, v in values.items():
                old = _get(node, k)
                if isinstance(old, yaml.ScalarNode):
                    edits.append((old.start_mark.index, old.end_mark.index, len(edits), _scalar(v)))
                elif old is None:
                    added.append(" " * key_column + f"{k}: {_scalar(v)}\n")
                else:
                    raise StreamMonitorError(f"{section}.{k} of model {model_id!r} is not a plain value")
            if added:
                at = after_line(_end(node))
                edits.append((at, at, len(edits), "".join(added)))
        else:
            raise StreamMonitorError(f"{section} of model {model_id!r} is not a mapping: edit it by hand")
    out = text if text.endswith("\n") or not text else text + "\n"
    for start, end, _, replacement in sorted(edits, key=lambda e: (e[0], e[2]), reverse=True):
        out = out[:start] + replacement + out[end:]
    _check(out, model_id, block)
    return out


def _check(text: str, model_id: str, block: Block) -> None:
    """The edited text must read back with the block's values in the model (and still be YAML)."""
    data = yaml.safe_load(text)
    model = next(m for m in data["models"] if isinstance(m, Mapping) and m.get("id") == model_id)
    for section, values in block.items():
        for k, v in values.items():
            if model.get(section, {}).get(k) != v:
                raise StreamMonitorError(f"could not set {section}.{k} of model {model_id!r} in place")


def calibrate_command(args: argparse.Namespace) -> int:
    """``stream-monitor calibrate``: calibrate, then print the model's sections indented under it, or
    with ``--write NEW`` write a copy of the configuration with them updated in place."""
    from stream_monitor.config import load_config
    from stream_monitor.offline.calibration import calibrate
    from stream_monitor.offline.reference_io import read_training_rows, training_data_settings

    app = load_config(args.config, check_references=False)  # reads training data, not the reference
    model = next((m for m in app.models if m.schema.model_id == args.model), None)
    if model is None:
        raise StreamMonitorError(f"model {args.model!r} is not in {args.config}")
    write = getattr(args, "write", None)
    if write and Path(write).resolve() == Path(args.config).resolve():
        raise StreamMonitorError(
            f"--write makes an updated copy: give a new path, not the configuration in use ({args.config})"
        )
    batch, _ = read_training_rows(args.data, model.schema, training_data_settings(args, model.training))
    try:
        cal = calibrate(
            model.schema,
            batch,
            model.settings,
            budget_per_million=args.budget,
            windows=args.windows,
            window_events=args.window_events,
            seed=args.seed,
        )
    except ValueError as exc:  # too little data for the windows: a user error, said in one line
        raise StreamMonitorError(f"{args.data}: {exc}") from exc
    block = threshold_block(cal)
    text = Path(args.config).read_text(encoding="utf-8")
    position, _ = _model_node(text, args.model)
    comments = report_lines(cal, args.model, args.budget, str(args.data))
    if write:
        updated = update_config(text, args.model, block)
        Path(write).write_text(updated, encoding="utf-8")
        load_config(write, env={}, check_references=False)  # the copy must be a valid configuration
        changed = [
            f"{section}.{k} {getattr(getattr(model.settings, section), k):g} -> {v:g}"
            for section, values in block.items()
            for k, v in values.items()
        ]
        comments.append(f"wrote {write}: models[{position}] ({args.model}) with " + ", ".join(changed))
        if Path(write).resolve().parent != Path(args.config).resolve().parent:
            comments.append(f"relative paths in {write} (reference files) are read from its own folder")
        output = "".join(f"# {line}\n" for line in comments)
    else:
        comments.append(
            f"the model's sections for models[{position}] (id: {args.model}) of {args.config}, indented "
            "as they sit there: they replace its detectors: and policy: (or write an updated copy of the "
            "configuration with --write NEW_CONFIG)"
        )
        output = "".join(f"# {line}\n" for line in comments) + indented_block(text, args.model, block)
    if args.out:
        Path(args.out).write_text(output, encoding="utf-8")
    print(output, end="")
    return 0
