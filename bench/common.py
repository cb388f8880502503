"""Shared pieces of the benchmarks: the event shape of issue 5, generators, timing and reporting.

Shape: 20 numeric features (``f0`` … ``f19``, ``f0`` is the key feature), 3 categorical (``c0`` … ``c2``,
8 values each, skewed), a binary score that follows the features, 10 % of events labelled later.
Events are generated columnar (numpy) and, where a bench needs raw Kafka messages, serialised with
orjson once up front so the timed part never includes generation.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stream_monitor.core.events import PredictionBatch  # noqa: E402
from stream_monitor.core.reference import ReferenceProfile, build_reference  # noqa: E402
from stream_monitor.core.schema import FeatureSpec, ModelSchema  # noqa: E402

N_NUMERIC = 20
N_CATEGORICAL = 3
CATEGORIES = [f"v{i}" for i in range(8)]
CAT_P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
START_TS = 1_735_689_600.0


def make_schema(
    model_id: str = "m0", n_numeric: int = N_NUMERIC, n_categorical: int = N_CATEGORICAL, key: str = "f0"
) -> ModelSchema:
    feats = [FeatureSpec(f"f{i}", "numeric", key=f"f{i}" == key) for i in range(n_numeric)]
    feats += [FeatureSpec(f"c{i}", "categorical") for i in range(n_categorical)]
    return ModelSchema(model_id, "binary", tuple(feats))


@dataclass
class Columns:
    """One model's events as columns (what the decoder would produce, minus the decode)."""

    event_id: list[str]
    ts: np.ndarray
    numeric: np.ndarray  # (n_numeric, n)
    categorical: list[list[str | None]]
    score: np.ndarray
    label: np.ndarray  # 0/1 ground truth

    def __len__(self) -> int:
        return len(self.ts)


def gen_columns(
    n: int,
    *,
    seed: int,
    start: int = 0,
    n_numeric: int = N_NUMERIC,
    n_categorical: int = N_CATEGORICAL,
    rate: float = 1000.0,
    prefix: str = "e",
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    cat_p: Sequence[np.ndarray] | None = None,
    with_ids: bool = True,
) -> Columns:
    """``n`` events starting at event number ``start`` (ids and ts continue across calls)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_numeric, n))
    if std is not None:
        x *= std[:, None]
    if mean is not None:
        x += mean[:, None]
    cats: list[list[str | None]] = []
    for j in range(n_categorical):
        p = CAT_P if cat_p is None else cat_p[j]
        codes = rng.choice(len(CATEGORIES), size=n, p=p)
        cats.append(np.array(CATEGORIES, dtype=object)[codes].tolist())
    logit = 1.2 * x[0] - 0.8 * x[1] + 0.5 * x[2] if n_numeric >= 3 else x[0]
    score = 1.0 / (1.0 + np.exp(-logit))
    label = (rng.random(n) < score).astype(float)
    ids = [f"{prefix}{i}" for i in range(start, start + n)] if with_ids else []
    ts = START_TS + np.arange(start, start + n, dtype=float) / rate
    return Columns(ids, ts, x, cats, score, label)


def to_batch(model_id: str, c: Columns) -> PredictionBatch:
    n = len(c)
    return PredictionBatch(
        model_id,
        np.arange(n, dtype=np.int64),
        c.event_id,
        c.ts,
        [None] * n,
        c.numeric,
        c.categorical,
        c.score,
        [None] * n,
        {},
        0,
    )


def to_json_events(model_id: str, c: Columns, n_numeric: int = N_NUMERIC) -> list[bytes]:
    """Raw prediction messages of the contract (what Kafka hands the consumer)."""
    out = []
    num = np.round(c.numeric, 6).T.tolist()
    cats = list(zip(*c.categorical, strict=True)) if c.categorical else [()] * len(c)
    names = [f"f{i}" for i in range(n_numeric)]
    cnames = [f"c{j}" for j in range(len(c.categorical))]
    for i in range(len(c)):
        feats: dict[str, Any] = dict(zip(names, num[i], strict=True))
        feats.update(zip(cnames, cats[i], strict=True))
        out.append(
            orjson.dumps(
                {
                    "event_id": c.event_id[i],
                    "model_id": model_id,
                    "model_version": "v1",
                    "ts": float(c.ts[i]),
                    "features": feats,
                    "prediction": {"score": round(float(c.score[i]), 6)},
                }
            )
        )
    return out


def to_json_labels(model_id: str, c: Columns, every: int = 10, delay: float = 30.0) -> list[bytes]:
    """Labels for every ``every``-th prediction, ``delay`` seconds of event time later."""
    return [
        orjson.dumps(
            {
                "event_id": c.event_id[i],
                "model_id": model_id,
                "ts": float(c.ts[i]) + delay,
                "label": int(c.label[i]),
            }
        )
        for i in range(0, len(c), every)
    ]


def make_reference(schema: ModelSchema, n: int = 50_000, seed: int = 12345) -> ReferenceProfile:
    n_cat = len(schema.categorical_names)
    c = gen_columns(n, seed=seed, n_numeric=len(schema.numeric_names), n_categorical=n_cat, prefix="r")
    return build_reference(schema, to_batch(schema.model_id, c), c.label)


# -- timing / reporting ----------------------------------------------------------------------------
def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Median wall seconds of ``repeat`` calls, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def target_line(name: str, value: float, target: float, unit: str, higher_is_better: bool) -> str:
    """'name: value unit (target ≥/≤ target; ratio r) MET/MISSED' — every target prints its ratio."""
    ratio = value / target if higher_is_better else (target / value if value > 0 else float("inf"))
    ok = value >= target if higher_is_better else value <= target
    sign = "≥" if higher_is_better else "≤"

    def num(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"

    return (
        f"| {name} | {num(value)} {unit} | {sign} {num(target)} {unit} | {ratio:.2f}× | "
        f"{'met' if ok else 'MISSED'} |"
    )


def machine_info() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": str(os.cpu_count()),
    }
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in cpu.splitlines():
            if line.startswith("Model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import importlib.metadata as md

    for pkg in ("numpy", "scipy", "river", "orjson", "confluent-kafka"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = "-"
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = ", ".join(
            f"{p.get('internal_api')} {p.get('architecture')}" for p in threadpool_info()
        )
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    return info
