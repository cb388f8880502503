"""PNG charts for reports (edge module: writes files; needs the optional ``insights`` extra).

matplotlib is the one plotting library every data scientist already reads; it renders headless
(``Agg``) to PNG with no browser or server, which is what a CLI report needs. It is imported lazily
so the service never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_monitor.core.insights.dna import DataDNA
from stream_monitor.core.settings import PolicySettings
from stream_monitor.errors import StreamMonitorError
from stream_monitor.web.status import REGIME_COLOURS


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StreamMonitorError("charts need matplotlib: pip install 'stream-monitor[insights]'") from exc
    return plt


def dna_heatmap_png(dna: DataDNA, path: str | Path, title: str) -> Path:
    """The DNA matrix as a heatmap (darker = more different), buckets ordered in time, with a regime
    strip above it and the regimes in the legend."""
    plt = pyplot()
    from matplotlib.patches import Patch

    n = len(dna.bucket_ids)
    fig, (strip, ax) = plt.subplots(
        2, 1, figsize=(9, 9.6), gridspec_kw={"height_ratios": [0.35, 9]}, sharex=True
    )
    colours = [REGIME_COLOURS.get(dna.kind_of(int(b)), "#999999") for b in dna.bucket_ids]
    strip.bar(np.arange(n), np.ones(n), width=1.0, color=colours)
    strip.set_yticks([])
    strip.set_title(title)
    image = ax.imshow(dna.matrix, cmap="Blues", vmin=0, vmax=max(float(np.nanmax(dna.matrix)), dna.cut * 2))
    step = max(1, n // 15)
    labels = dna.labels or [str(int(b)) for b in dna.bucket_ids]
    ax.set_xticks(range(0, n, step), [labels[i] for i in range(0, n, step)], rotation=70, fontsize=7)
    ax.set_yticks(range(0, n, step), [labels[i] for i in range(0, n, step)], fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.7, label=f"weighted {dna.metric.upper()} between buckets")
    handles = [
        Patch(
            color=REGIME_COLOURS.get(r.kind, "#999999"),
            label=f"regime {r.id}: {r.kind}, {len(r.buckets)} buckets"
            + (f", every {r.period:g}" if r.period else ""),
        )
        for r in dna.regimes
    ]
    if any(dna.groups < 0):
        handles.append(Patch(color=REGIME_COLOURS["incident"], label="integrity incident"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def segments_png(
    segments: Sequence[dict[str, Any]],
    path: str | Path,
    title: str,
    psi_alarm: float = PolicySettings.psi_alarm,
) -> Path:
    """Drift against traffic share per segment (seed 001): big and drifting is what matters; the line
    is the model's segment alarm."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    # A segment without data in the bucket has no drift value (None after JSON): nothing to place.
    segments = [s for s in segments if s.get("drift") is not None and s["drift"] == s["drift"]]
    shares = [float(s["share"] or 0.0) for s in segments]
    drifts = [float(s["drift"]) for s in segments]
    ax.scatter(shares, drifts, s=[40 + 400 * x for x in shares], alpha=0.7, color="#4c78a8")
    for s, x, y in zip(segments, shares, drifts, strict=True):
        ax.annotate(s["segment"], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(psi_alarm, color="#e45756", linestyle="--", linewidth=1, label=f"PSI alarm {psi_alarm:g}")
    ax.set_xlabel("share of traffic")
    ax.set_ylabel("segment drift (weighted PSI vs reference)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
