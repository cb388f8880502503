"""PNG charts for reports (edge module: writes files; needs the optional ``insights`` extra).

matplotlib is the one plotting library every data scientist already reads; it renders headless
(``Agg``) to PNG with no browser or server, which is what a CLI report needs. It is imported lazily
so the service never loads it.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stream_monitor.core.insights.buckets import Bucket
from stream_monitor.core.insights.dna import DataDNA
from stream_monitor.core.settings import PolicySettings
from stream_monitor.errors import StreamMonitorError
from stream_monitor.web.status import REGIME_COLOURS

if TYPE_CHECKING:
    from stream_monitor.offline.planner import Plan


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StreamMonitorError("charts need matplotlib: pip install 'stream-monitor[insights]'") from exc
    return plt


def _duration(seconds: float) -> str:
    """``1 day``, ``7 days``, ``365 days``, ``6 hours``, ``90 minutes``: a bucket's width in words."""
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size and seconds % size == 0:
            n = seconds / size
            return f"{n:g} {unit}" + ("" if n == 1 else "s")
    return f"{seconds:g} seconds"


def _date(ts: float, seconds: float) -> str:
    import datetime as dt

    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=ts)
    return when.strftime("%Y-%m-%d" if seconds % 86400 == 0 else "%Y-%m-%d %H:%M")


def dna_caption(dna: DataDNA, buckets: Sequence[Bucket] = (), still_open: Sequence[int] = ()) -> str:
    """What the DNA chart shows: what a bucket is (its width, the dates), the colour, and the regime
    cut and where it came from."""
    n = len(dna.bucket_ids)
    parts = []
    if buckets:
        width = buckets[0].end - buckets[0].start
        ids = [b.index for b in buckets]
        gaps = sum(1 for a, b in itertools.pairwise(ids) if b - a > 1)
        parts.append(
            f"Each row and column is one bucket: {_duration(width)} of event time (UTC), labelled with the "
            f"date it starts; {n} buckets with data, from {_date(buckets[0].start, width)} to "
            f"{_date(buckets[-1].end, width)} (end exclusive)"
            + (f"; {gaps} gap(s) of buckets without data are left out" if gaps else "")
            + "."
        )
    else:
        parts.append(f"Each row and column is one bucket of event time; {n} buckets, in time order.")
    metric = dna.metric.upper()
    parts.append(
        f"Colour: the {metric} between two buckets' feature histograms (on the reference's bins and "
        "categories), averaged over the features by importance, key features counting double."
    )
    if dna.cut_source == "configured":
        cut = f"configured (insights.dna_cut): {metric} {dna.cut:.3g}"
    else:
        cut = (
            f"{metric} {dna.cut:.3g}, from the buckets' own noise: what sampling alone puts between two "
            "resamples of a bucket, scaled to the stream's background between neighbouring buckets "
            f"(×{dna.overdispersion:.2f}, typical {dna.background:.3g}), at its 99th percentile, never "
            "below insights.dna_min_cut"
        )
    parts.append(
        "Strip above: each bucket's regime — average-linkage clusters of the matrix cut at "
        f"{cut}; a trend is three or more such groups moving steadily away from the first."
    )
    if dna.partial:
        parts.append(
            "Hatched: a partial bucket (the stream started or stopped inside it); it does not shape the "
            "regimes, and joins the nearest one if within its own, wider noise cut (else it stands alone)."
        )
    opened = [b for b in buckets if b.index in set(still_open)]
    if opened:
        parts.append(
            "Still open when the profiles were saved (the stream ended inside it): "
            + ", ".join(_date(b.start, b.end - b.start) for b in opened)
            + "."
        )
    return " ".join(parts)


def dna_heatmap_png(
    dna: DataDNA,
    path: str | Path,
    title: str,
    *,
    buckets: Sequence[Bucket] = (),
    still_open: Sequence[int] = (),
) -> Path:
    """:func:`dna_heatmap_figure` as a PNG."""
    plt = pyplot()
    fig = dna_heatmap_figure(dna, title, buckets=buckets, still_open=still_open)
    out = Path(path)
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return out


def dna_heatmap_figure(
    dna: DataDNA, title: str, *, buckets: Sequence[Bucket] = (), still_open: Sequence[int] = ()
) -> Any:
    """The DNA matrix as a heatmap (darker = more different), buckets ordered in time, with a regime
    strip above it over exactly the matrix's columns, the regimes in the legend and a caption saying
    what a bucket is and where the regime cut came from (:func:`dna_caption`). ``buckets``: the
    :class:`Bucket` profiles behind ``dna`` (for their width and dates). Its axes are labelled
    ``matrix``, ``regimes`` (the strip) and ``colour bar``."""
    plt = pyplot()
    from matplotlib.patches import Patch
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    n = len(dna.bucket_ids)
    fig = plt.figure(figsize=(9, 9))
    ax = fig.add_axes((0.12, 0.08, 0.76, 0.84))
    image = ax.imshow(dna.matrix, cmap="Blues", vmin=0, vmax=max(float(np.nanmax(dna.matrix)), dna.cut * 2))
    # The strip and the colour bar are carved out of the matrix's own box, so the strip spans exactly
    # the matrix's columns and the colour bar exactly its rows.
    divider = make_axes_locatable(ax)
    strip = divider.append_axes("top", size="3.5%", pad=0.06)
    cax = divider.append_axes("right", size="3.5%", pad=0.12)
    for axes, name in ((ax, "matrix"), (strip, "regimes"), (cax, "colour bar")):
        axes.set_label(name)
    colours = [REGIME_COLOURS.get(dna.kind_of(int(b)), "#999999") for b in dna.bucket_ids]
    partial = [int(b) in set(dna.partial) for b in dna.bucket_ids]
    strip.bar(np.arange(n), np.ones(n), width=1.0, color=colours, edgecolor="none")
    for i in np.flatnonzero(partial):
        strip.bar(i, 1.0, width=1.0, color=colours[i], hatch="///", edgecolor="white", linewidth=0)
    strip.set_xlim(ax.get_xlim())
    strip.set_ylim(0, 1)
    strip.set_xticks([])
    strip.set_yticks([])
    strip.set_title(title)
    step = max(1, n // 15)
    labels = dna.labels or [str(int(b)) for b in dna.bucket_ids]
    ax.set_xticks(range(0, n, step), [labels[i] for i in range(0, n, step)], rotation=70, fontsize=7)
    ax.set_yticks(range(0, n, step), [labels[i] for i in range(0, n, step)], fontsize=7)
    fig.colorbar(image, cax=cax, label=f"weighted {dna.metric.upper()} between buckets")
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
    if any(partial):
        handles.append(Patch(facecolor="#bbbbbb", hatch="///", edgecolor="white", label="partial bucket"))
    # Legend and caption below the tick labels, wherever those end.
    fig.canvas.draw()
    to_figure = fig.transFigure.inverted()
    box = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(to_figure)
    inner = ax.get_position()
    legend = fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=((inner.x0 + inner.x1) / 2, box.y0 - 0.01),
        ncol=2,
        fontsize=8,
    )
    fig.canvas.draw()
    below = legend.get_window_extent().transformed(to_figure).y0 - 0.015
    caption = textwrap.wrap(dna_caption(dna, buckets, still_open), 145)
    fig.text(box.x0, below, "\n".join(caption), fontsize=7.5, va="top", ha="left", color="#333333")
    return fig


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


# -- the retraining planner's charts --------------------------------------------------------------
BLUE, RED, ORANGE, GREEN, GREY = "#4c78a8", "#e45756", "#f58518", "#54a24b", "#9d9d9d"


def plan_charts(plan: Plan, out: Path) -> list[str]:
    """The planner's four charts in ``out``: learning curve, training window, decay, cadence (file
    names in that order). Each says in its caption what was trained on what and tested on what; the
    spread across draws, test periods, starts or phases is drawn; loss axes include zero."""
    plt = pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, PercentFormatter

    from stream_monitor.offline.planner import MIN_STARTS_PER_LAG, count, periods_holding

    u = plan.unit
    lc, wd, dc, cd = plan.learning_curve, plan.window, plan.decay, plan.cadence
    percent = PercentFormatter(1.0, decimals=0)

    def chart(name: str, title: str, caption: str, draw: Callable[..., None], panels: int = 1) -> str:
        fig, axes = plt.subplots(1, panels, figsize=(7.5 + 4.5 * (panels - 1), 5.2), squeeze=False)
        draw(*axes[0])
        for ax in axes[0]:
            ax.grid(alpha=0.3)
        if panels == 1:
            axes[0][0].set_title(title)
        else:
            fig.suptitle(title)
        lines = textwrap.wrap(caption, 105 + 60 * (panels - 1))
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7.5, va="bottom", ha="left", color="#333333")
        fig.tight_layout(rect=(0, 0.035 * len(lines) + 0.01, 1, 1))
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        return name

    def loss_axis(ax: Any, values: Sequence[float], label: str) -> None:
        finite = [v for v in values if v == v]
        ax.set_ylim(min(0.0, *finite) * 1.1 if finite else 0.0, max(0.0, *finite) * 1.1 + 0.01)
        ax.yaxis.set_major_formatter(percent)
        ax.axhline(0, color="#555555", linewidth=0.8)
        ax.set_ylabel(label)

    def draw_lc(ax: Any) -> None:
        ax.plot(lc.sizes, lc.scores, marker="o", color=BLUE, label=f"mean of {lc.repeats} random draws")
        ax.vlines(lc.sizes, lc.low, lc.high, color=BLUE, alpha=0.6, label="min – max of the draws")
        ax.axvline(
            lc.suggested_size,
            color=RED,
            linestyle="--",
            label=f"enough: {lc.suggested_size:,} rows (within {plan.tolerance / 4:.1%} of all)",
        )
        ax.set_xscale("log")
        if plan.metric == "auc":
            ax.set_ylim(0.5, 1.0)  # 0.5 is chance
        else:
            ax.set_ylim(0, float(np.nanmax(lc.high)) * 1.1)
            if plan.metric == "wape":
                ax.yaxis.set_major_formatter(percent)
        better = "higher is better" if plan.higher_is_better else "lower is better"
        ax.set(xlabel="training rows (log scale)", ylabel=f"{plan.metric_label()}, {better}")
        ax.legend(fontsize=8)

    def draw_window(ax: Any) -> None:
        ax.plot(
            wd.periods,
            wd.loss,
            marker="o",
            color=BLUE,
            label=f"mean over the {len(wd.test_periods)} test {u}s",
        )
        ax.vlines(wd.periods, wd.loss_q25, wd.loss_q75, color=BLUE, alpha=0.6, label="interquartile range")
        need = periods_holding(lc.suggested_size, plan.data.rows_per_period if plan.data else 1.0)
        ax.axvline(need, color=GREEN, linestyle=":", label=f"learning curve's need: {count(need, u)}")
        ax.axvline(
            plan.advice.window,
            color=RED,
            linestyle="--",
            label=f"plan: the last {count(plan.advice.window, u)}",
        )
        ax.axhline(
            plan.tolerance / 4,
            color=GREY,
            linestyle="--",
            linewidth=1,
            label=f"{plan.tolerance / 4:.1%} (tolerance / 4)",
        )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(wd.periods))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_locator(NullLocator())
        loss_axis(
            ax, [*wd.loss_q25, *wd.loss_q75, *wd.loss], f"{plan.metric.upper()} worse than the best window"
        )
        ax.set_xlabel(f"train on the last … {u}s (log scale)")
        ax.legend(fontsize=8)

    def draw_decay(whole: Any, zoom: Any) -> None:
        near = min(max(dc.lags), 2 * dc.horizon + 2)  # the zoom: the lags around the horizon
        for ax in (whole, zoom):
            ax.fill_between(
                dc.lags,
                dc.loss_q25,
                dc.loss_q75,
                color=BLUE,
                alpha=0.25,
                label="interquartile range over starts",
            )
            ax.plot(dc.lags, dc.loss, marker="o", markersize=4, color=BLUE, label="median over starts")
            ax.axhline(
                plan.tolerance, color=RED, linestyle="--", label=f"tolerance: {plan.tolerance:.0%} worse"
            )
            horizon = f"decay horizon: {count(dc.horizon, u)}" + ("" if dc.bounded else " or more")
            ax.axvline(dc.horizon + 0.5, color=ORANGE, linestyle=":", linewidth=2, label=horizon)
            if dc.limit < dc.horizon:
                ax.plot(
                    dc.lags,
                    dc.loss_recent,
                    color=ORANGE,
                    linewidth=1.2,
                    label=f"median of the latest starts (from {u} {dc.recent_from})",
                )
                ax.axvline(
                    dc.limit + 0.5,
                    color=RED,
                    linestyle=":",
                    linewidth=2,
                    label=f"their horizon: {count(dc.limit, u)}",
                )
            ax.set_xlabel(f"{u}s since the end of training (1 = the fresh model)")
        label = f"{plan.metric.upper()} worse than a fresh model, same {u}"
        loss_axis(whole, [*dc.loss_q25, *dc.loss_q75], label)
        whole.set_xlim(0.5, max(dc.lags) + 0.5)
        whole.set_title(f"all lags measured on at least {MIN_STARTS_PER_LAG} starts", fontsize=10)
        shown = [v for v in dc.loss_q25[:near] if v == v]
        zoom.set_ylim(min(0.0, *shown) * 1.1 if shown else 0.0, 4 * plan.tolerance)
        zoom.yaxis.set_major_formatter(percent)
        zoom.axhline(0, color="#555555", linewidth=0.8)
        zoom.set_xlim(0.5, near + 0.5)
        zoom.set_title(f"zoom: the first {count(near, u)}, up to {4 * plan.tolerance:.0%}", fontsize=10)
        zoom.xaxis.set_major_locator(MaxNLocator(integer=True))
        whole.legend(fontsize=8, loc="upper left")

    def draw_cadence(ax: Any) -> None:
        colours = [RED if k == plan.advice.cadence else (GREY if k > dc.limit else BLUE) for k in cd.every]
        ax.bar(cd.every, cd.loss, color=colours, width=0.8)
        ax.vlines(cd.every, cd.low, cd.high, color="black", linewidth=1)
        ax.axhline(plan.tolerance / 2, color=RED, linestyle="--", linewidth=1)
        handles = [
            Patch(color=RED, label=f"plan: every {count(plan.advice.cadence, u)}"),
            Patch(color=BLUE, label=f"within the decay horizon ({count(dc.limit, u)})"),
            Patch(color=GREY, label="beyond the decay horizon"),
            plt.Line2D([], [], color="black", label="best – worst phase"),
            plt.Line2D(
                [], [], color=RED, linestyle="--", label=f"half the tolerance ({plan.tolerance / 2:.0%})"
            ),
        ]
        loss_axis(
            ax,
            [*cd.low, *cd.high, plan.tolerance / 2],
            f"{plan.metric.upper()} worse than retraining every {u}",
        )
        ax.set_xticks(cd.every if len(cd.every) <= 14 else cd.every[::2])
        ax.set_xlabel(f"retrain every … {u}s")
        ax.legend(handles=handles, fontsize=8, loc="upper left")

    model = f"Model {plan.model_name}"
    measured = [n for n, v in zip(dc.n_starts, dc.loss, strict=True) if v == v]
    first, last = dc.starts[0], dc.starts[-1]
    return [
        chart(
            "learning_curve.png",
            "Learning curve: how many rows does the model need?",
            f"{model}: trained on random subsets of {plan.describe(*lc.train_periods)}, tested on "
            f"{plan.describe(*lc.test_periods)}. Dots: mean of {lc.repeats} draws per size; bars: min – max.",
            draw_lc,
        ),
        chart(
            "training_window.png",
            "Training window: does older data help?",
            f"{model}: trained on the last m {u}s before each of "
            f"{plan.describe(wd.test_periods[0], wd.test_periods[-1])}, tested on that {u} (out of time). "
            f"Loss against the best window on the same {u}; dots: mean, bars: interquartile range over the "
            f"{len(wd.test_periods)} test {u}s.",
            draw_window,
        ),
        chart(
            "decay.png",
            "Decay: how fast does a model age?",
            f"{model}: one model per start {u} t ({plan.describe(first, last)}, {len(dc.starts)} starts"
            + (f"; {len(dc.unfit)} without a model, nothing to train on" if dc.unfit else "")
            + "), "
            f"trained on the {count(dc.train_periods, u)} up to t, tested on {u} t + L; the fresh model is "
            f"trained up to t + L − 1 and tested on the same {u}. Line: median, band: interquartile range "
            f"across starts (every lag shown has at least {min(measured, default=0)} starts)"
            + (
                f"; orange: the median of the latest half of the starts, from {u} {dc.recent_from}."
                if dc.limit < dc.horizon
                else "."
            ),
            draw_decay,
            panels=2,
        ),
        chart(
            "cadence.png",
            "Retraining cadence: what does each retrain buy?",
            f"{model}: {plan.describe(*cd.scored_periods)} replayed, retraining every k {u}s on the last "
            f"{count(dc.train_periods, u)}, each {u} scored with the model of the day (out of time). "
            f"Bars: mean over the k phases of the schedule of the loss against retraining every {u}; "
            f"whiskers: best – worst phase. Never retraining: {cd.never:+.0%}.",
            draw_cadence,
        ),
    ]
