"""Data DNA (seed 001): the bucket × bucket drift matrix and the regimes it groups buckets into.

**Matrix.** For every pair of buckets and every feature, the PSI (or Jensen–Shannon divergence) of the
two buckets' counts on the reference bins (numeric) or reference categories plus ``__other__``
(categorical); PSI and JS are symmetric, so the matrix is too. Features are combined by a weighted
mean: the weight of a feature is its configured ``importance``, doubled for key features
(``key_weight``) — drift in what the model leans on counts more.

**The cut, from the buckets' own noise.** Two buckets of unchanged data still differ: each is a
sample. Each bucket is resampled against itself — two Poisson resamples of its own counts (the Poisson
bootstrap; half a count added to every bin, Jeffreys' prior, so a bin a small bucket missed can still be
drawn), compared with the same metric, smoothing and feature weights as the matrix — which gives the
divergence that sampling alone puts between two buckets like it: its mean per bucket, and the shape of
its distribution pooled over the buckets. Real streams also vary from bucket to bucket (weather, news,
paydays), more than sampling explains: the ratio of the divergence between *neighbouring* buckets to
their sampling mean (the lower median over all neighbouring pairs, at least 1; a shift or a campaign
moves only a few neighbouring pairs, so it does not move the median) scales sampling noise up to the
stream's own background. The cut is the 99th percentile of that background: ``overdispersion × median
over buckets of the sampling 99th percentile``, never below ``min_cut`` (PSI 0.01). Two buckets further
apart than that differ by more than 99 % of pairs of unchanged neighbours would — a jump 14 times the
day-to-day background separates two regimes, day-to-day noise never does; small buckets are noisier and
get a wider cut on their own, without a threshold to tune. A configured ``cut`` replaces the derived one.

**Regimes.** Buckets are grouped by average-linkage hierarchical clustering (``scipy``) on the matrix,
cut at the cut. Average linkage compares groups by their mean distance, so a slow trend is not chained
into one group the way single linkage would. A **trend** is then recognised from where groups sit in
time: at least three groups, each one contiguous run of buckets, following one another without a jump
(no neighbouring pair beyond the cut) and moving steadily away from the first (the mean divergence from
the first group grows group after group, and from the last group likewise) — a change made of steps each
within the noise, which clustering alone would shatter into one-offs. A first or last group more than
twice as long as the chain's others is a plateau before or after the trend, not part of it, when it stands
still — one level for it and a straight line through the other groups explain the buckets better (BIC)
than one straight line through all; a long end group that keeps moving with the rest is where a steady
change was slowest to cross the cut, and stays in the trend. A lone bucket whose neighbours agree with
each other (a spike) does not break a chain. Each group is then named from
where its buckets sit in time, in *runs*: buckets of the group that follow one another among the buckets
that hold data (a time with no data — a survey that skips a year, an outage — has no bucket, and an
incident bucket belongs to no regime: neither ends a run):

- ``trend``: the groups of a trend, as one regime;
- ``normal``: the largest other group (ties: the one with the most recent bucket);
- ``recurring``: another group that comes back — its buckets form at least two separate runs
  (weekends, month ends); ``period`` is the median distance between the runs' starts, in buckets;
- ``emerging``: a single run that reaches the latest bucket (a change still in progress);
- ``one_off``: a single run in the past (a campaign, an outage week).

The latest bucket is therefore named by its relation to the recent past: the regime it continues
(``normal``, ``recurring``), the trend it extends (``trend``), or a new run (``emerging``).

Buckets flagged as integrity incidents are left out of the clustering (regime ``-1``, kind
``incident``): a broken pipeline is not a regime. *Partial* buckets (the stream started or stopped inside
them, :func:`~stream_monitor.core.insights.buckets.partial_buckets`) do not shape the regimes or the
noise: each joins the regime nearest to it in time and content if that is within its own, wider noise
cut (fewer events), else it starts a run of its own.

Pure: numpy and scipy only; the resampling is seeded by bucket, so the same buckets give the same DNA.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> days = np.arange(21)
>>> weekend = days % 7 >= 5
>>> means = np.where(weekend, 1.0, 0.0)
>>> edges = np.linspace(-2, 3, 9)
>>> counts = np.stack([np.bincount(np.searchsorted(edges, rng.normal(m, 1, 3000)), minlength=10)
...                    for m in means])[:, None, :]            # (buckets, features, bins)
>>> dna = data_dna(counts, np.ones(1), bucket_ids=days)
>>> [r.kind for r in dna.regimes], dna.regimes[1].period
(['normal', 'recurring'], 7.0)
>>> [int(g) for g in dna.groups[:8]]
[0, 0, 0, 0, 0, 1, 1, 0]
>>> 0.01 <= dna.cut < 0.05 < float(dna.matrix[0, 5])
True
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from stream_monitor.core.insights.buckets import Bucket, partial_buckets
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import (
    DNA_MIN_CUT_PSI,
    PSI_PER_JS,
    DetectorSettings,
    DnaMetric,
    IncidentSettings,
    InsightSettings,
)

Metric = DnaMetric
#: Floor of the noise-derived cut per metric (see ``DNA_MIN_CUT_PSI`` in the settings for why). A
#: model's own floor is its ``insights.dna_min_cut`` (``ModelSettings.resolved_insights``).
DEFAULT_MIN_CUT = {"psi": DNA_MIN_CUT_PSI, "js": DNA_MIN_CUT_PSI / PSI_PER_JS}
#: Share of unchanged neighbouring buckets that stay within the cut (see the module docstring).
NOISE_QUANTILE = 0.99
#: Resamples per bucket, and at least this many pooled over all buckets for the quantile's shape.
NOISE_DRAWS = 16
NOISE_POOL = 800
#: Neighbouring pairs needed before their own tail is estimated (below: sampling's shape only).
NEIGHBOURS_FOR_SHAPE = 8
#: Fewest groups that make a trend (two are a shift with a soft edge), and how much longer than the
#: chain's other groups an end group must be to count as a plateau rather than part of the trend.
TREND_MIN_GROUPS = 3
PLATEAU_RATIO = 2.0
#: How steadily a trend moves away from its first group: Spearman's correlation of the groups' order
#: with their divergence from the first (and, backwards, from the last) at least this.
TREND_MIN_RANK_CORRELATION = 0.8
_SEED = 0x5EED_D4A


@dataclass(frozen=True)
class Regime:
    """One group of buckets: its id, kind, member bucket ids and (recurring) period in buckets."""

    id: int
    kind: str
    buckets: tuple[int, ...]
    runs: int
    period: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "buckets": list(self.buckets),
            "runs": self.runs,
            "period": self.period,
        }


@dataclass
class DataDNA:
    """The drift matrix over buckets, per-feature matrices, the regime of every bucket, and the noise
    the cut was derived from (``noise``: per bucket, the mean divergence between two resamples of it;
    ``background``: the typical divergence of unchanged neighbouring buckets; ``overdispersion``: how
    many times sampling noise that background is; ``cut_source``: ``noise`` or ``configured``)."""

    bucket_ids: np.ndarray  # (B,) int
    matrix: np.ndarray  # (B, B) combined drift
    per_feature: np.ndarray  # (F, B, B)
    features: tuple[str, ...]
    weights: np.ndarray  # (F,) normalised
    groups: np.ndarray  # (B,) regime id per bucket, -1 = incident
    regimes: list[Regime]
    metric: str = "psi"
    cut: float = DEFAULT_MIN_CUT["psi"]
    labels: list[str] = field(default_factory=list)
    noise: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (B,)
    background: float = 0.0
    overdispersion: float = 1.0
    cut_source: str = "noise"
    partial: tuple[int, ...] = ()

    def regime_of(self, bucket_id: int) -> Regime | None:
        """The regime a bucket belongs to (None for incidents and unknown buckets)."""
        pos = np.flatnonzero(self.bucket_ids == bucket_id)
        if pos.size == 0 or self.groups[pos[0]] < 0:
            return None
        return self.regimes[int(self.groups[pos[0]])]

    def kind_of(self, bucket_id: int) -> str:
        """``normal`` / ``recurring`` / ``trend`` / ``one_off`` / ``emerging``, or ``incident``."""
        regime = self.regime_of(bucket_id)
        return "incident" if regime is None else regime.kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the matrix, per-feature matrices, groups, regimes and the noise behind the cut."""
        return {
            "metric": self.metric,
            "cut": self.cut,
            "cut_source": self.cut_source,
            "background": round(float(self.background), 6),
            "overdispersion": round(float(self.overdispersion), 4),
            "buckets": [int(b) for b in self.bucket_ids],
            "labels": list(self.labels),
            "features": list(self.features),
            "weights": [float(w) for w in self.weights],
            "matrix": np.round(self.matrix, 6).tolist(),
            "per_feature": {
                f: np.round(m, 6).tolist() for f, m in zip(self.features, self.per_feature, strict=True)
            },
            "noise": [None if not np.isfinite(v) else round(float(v), 6) for v in self.noise],
            "partial": [int(b) for b in self.partial],
            "groups": [int(g) for g in self.groups],
            "regimes": [r.to_dict() for r in self.regimes],
        }


def feature_weights(
    schema: ModelSchema, key_weight: float = InsightSettings.key_weight
) -> tuple[tuple[str, ...], np.ndarray]:
    """Feature names in sketch order (numeric, then categorical) and their normalised weights.

    >>> from stream_monitor.core.schema import FeatureSpec, ModelSchema
    >>> features = (FeatureSpec("a", "numeric", key=True), FeatureSpec("b", "categorical"))
    >>> s = ModelSchema("m", "binary", features)
    >>> names, w = feature_weights(s)
    >>> names, w.round(3).tolist()
    (('a', 'b'), [0.667, 0.333])
    """
    names = schema.numeric_names + schema.categorical_names
    raw = []
    for name in names:
        spec = schema.feature(name)
        assert spec is not None
        raw.append(max(spec.importance, 0.0) * (key_weight if spec.key else 1.0))
    w = np.asarray(raw, dtype=np.float64)
    total = w.sum()
    return names, (w / total if total > 0 else np.full(len(names), 1.0 / max(len(names), 1)))


def bucket_counts(buckets: Sequence[Bucket]) -> np.ndarray:
    """Stack the buckets' per-feature counts into one ``(B, F, bins)`` array (zero-padded bins)."""
    if not buckets:
        return np.zeros((0, 0, 0))
    rows = []
    for b in buckets:
        sk = b.sketch
        rows.append(
            [np.asarray(sk.feature_counts(i), dtype=float) for i in range(len(sk.schema.numeric_names))]
            + [np.asarray(c, dtype=float) for c in sk.categorical_counts]
        )
    n_features = len(rows[0])
    width = max((len(c) for row in rows for c in row), default=1)
    out = np.zeros((len(buckets), n_features, width))
    for i, row in enumerate(rows):
        for f, c in enumerate(row):
            out[i, f, : len(c)] = c
    return out


def pairwise_divergence(
    counts: np.ndarray, metric: Metric = "psi", eps: float = DetectorSettings.psi_epsilon
) -> np.ndarray:
    """``(F, B, B)`` PSI or JS between every pair of buckets, per feature, from ``(B, F, bins)`` counts.

    Zero-padded bins are dropped per feature (they are zero in every bucket), so the smoothing is the
    same as :func:`stream_monitor.core.detectors.psi`'s. A bucket without values for a feature gives NaN.

    >>> c = np.array([[[50, 30, 20]], [[20, 30, 50]]], dtype=float)
    >>> pairwise_divergence(c).round(4)[0].tolist()
    [[0.0, 0.5498], [0.5498, 0.0]]
    """
    n_buckets, n_features, _ = counts.shape
    out = np.zeros((n_features, n_buckets, n_buckets))
    for f in range(n_features):
        c = counts[:, f, :]
        used = c.sum(axis=0) > 0
        c = c[:, used] if used.any() else c[:, :1]
        totals = c.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "psi":
                p = (c + eps) / (totals + eps * c.shape[1])
                logp = np.log(p)
                d = np.sum((p[:, None, :] - p[None, :, :]) * (logp[:, None, :] - logp[None, :, :]), axis=2)
            else:
                p = c / totals
                m = (p[:, None, :] + p[None, :, :]) / 2
                a = np.where(p[:, None, :] > 0, p[:, None, :] * np.log2(p[:, None, :] / m), 0.0)
                b = np.where(p[None, :, :] > 0, p[None, :, :] * np.log2(p[None, :, :] / m), 0.0)
                d = np.clip((a.sum(axis=2) + b.sum(axis=2)) / 2, 0.0, 1.0)
        empty = (totals[:, 0] <= 0)[:, None] | (totals[:, 0] <= 0)[None, :]
        out[f] = np.where(empty, np.nan, d)
    return out


def _divergence(a: np.ndarray, b: np.ndarray, used: np.ndarray, metric: Metric, eps: float) -> np.ndarray:
    """PSI or JS between count arrays ``a`` and ``b`` of shape ``(..., F, bins)`` over the ``used``
    ``(F, bins)`` bins, smoothed exactly as :func:`pairwise_divergence`; NaN where either is empty."""
    k = np.maximum(used.sum(axis=-1), 1)[..., :]  # (F,)
    a = np.where(used, a, 0.0)
    b = np.where(used, b, 0.0)
    ta = a.sum(axis=-1)
    tb = b.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "psi":
            pa = (a + eps) / (ta + eps * k)[..., None]
            pb = (b + eps) / (tb + eps * k)[..., None]
            d = np.sum(np.where(used, (pa - pb) * (np.log(pa) - np.log(pb)), 0.0), axis=-1)
        else:
            pa = a / ta[..., None]
            pb = b / tb[..., None]
            m = (pa + pb) / 2
            ka = np.where(pa > 0, pa * np.log2(pa / m), 0.0)
            kb = np.where(pb > 0, pb * np.log2(pb / m), 0.0)
            d = np.clip((ka.sum(axis=-1) + kb.sum(axis=-1)) / 2, 0.0, 1.0)
    return np.where((ta > 0) & (tb > 0), d, np.nan)


def bucket_noise(
    counts: np.ndarray,
    weights: np.ndarray,
    bucket_ids: Sequence[int] | np.ndarray,
    metric: Metric = "psi",
    eps: float = DetectorSettings.psi_epsilon,
) -> np.ndarray:
    """``(B, R)``: per bucket, the feature-weighted divergence between two Poisson resamples of its own
    counts, ``R`` times (see the module docstring); NaN for a bucket without values. Each bucket's draws
    are seeded by its id and size, so a bucket keeps its noise while others come and go.

    >>> c = np.array([[[500, 300, 200]], [[50, 30, 20]]], dtype=float)
    >>> noise = bucket_noise(c, np.ones(1), [0, 1]).mean(axis=1)
    >>> bool(noise[1] > 5 * noise[0])   # ten times fewer events, about ten times the noise
    True
    """
    n_buckets, n_features, _ = counts.shape
    draws = max(NOISE_DRAWS, -(-NOISE_POOL // max(n_buckets, 1)))
    out = np.full((n_buckets, draws), np.nan)
    if n_buckets == 0 or n_features == 0:
        return out
    used = counts.sum(axis=0) > 0  # (F, bins): the bins the matrix compares
    k = used.sum(axis=-1)
    w = np.asarray(weights, dtype=np.float64)
    for i in range(n_buckets):
        c = np.where(used, counts[i], 0.0)
        n = c.sum(axis=-1)  # (F,)
        present = n > 0
        if not present.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = np.where(present[:, None], n[:, None] * (c + 0.5 * used) / (n + 0.5 * k)[:, None], 0.0)
        rng = np.random.default_rng([_SEED, int(bucket_ids[i]) % (1 << 32), int(c.sum()) % (1 << 32)])
        x = rng.poisson(np.where(used, lam, 0.0), size=(draws, 2, *lam.shape)).astype(np.float64)
        d = _divergence(x[:, 0], x[:, 1], used, metric, eps)  # (R, F)
        ok = ~np.isnan(d) & present
        wsum = (ok * w).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(wsum > 0, (np.where(ok, d, 0.0) * w).sum(axis=1) / wsum, np.nan)
    return out


@dataclass(frozen=True)
class NoiseCut:
    """The cut derived from the noise and the numbers behind it (see the module docstring)."""

    cut: float
    background: float
    overdispersion: float
    mean: np.ndarray  # (B,) mean sampling divergence per bucket
    upper: np.ndarray  # (B,) its NOISE_QUANTILE per bucket (sampling only)


def noise_cut(matrix: np.ndarray, noise: np.ndarray, order: Sequence[int]) -> NoiseCut:
    """The cut from ``noise`` (:func:`bucket_noise`) of the buckets at positions ``order`` (time order,
    the buckets that shape the regimes) and the matrix between neighbours in that order.

    >>> m = np.array([[0, .01, .2], [.01, 0, .2], [.2, .2, 0]])
    >>> nc = noise_cut(m, np.full((3, 100), 0.01), [0, 1, 2])
    >>> round(nc.overdispersion, 2), round(nc.cut, 3)        # neighbours: 1× and 20× the noise
    (1.0, 0.01)
    """
    mean = np.nanmean(noise, axis=1) if noise.size else np.zeros(len(matrix))
    mean = np.where(np.isfinite(mean), np.maximum(mean, 1e-12), np.nan)
    idx = [i for i in order if np.isfinite(mean[i])]
    if not idx:
        return NoiseCut(0.0, 0.0, 1.0, mean, mean.copy())
    # The shape of the null (its upper quantile over its mean) pooled over buckets: a few draws per
    # bucket give its level, all draws together its tail.
    ratios = (noise[idx] / mean[idx, None]).ravel()
    ratios = ratios[np.isfinite(ratios)]
    tail = float(np.quantile(ratios, NOISE_QUANTILE)) if ratios.size else 1.0
    upper = mean * tail
    neighbours = [
        matrix[a, b] / ((mean[a] + mean[b]) / 2)
        for a, b in itertools.pairwise(idx)
        if np.isfinite(matrix[a, b])
    ]
    # The lower median: with two neighbouring pairs, one of them a jump, the other one is the background.
    over = float(np.quantile(neighbours, 0.5, method="lower")) if len(neighbours) >= 2 else 1.0
    over = max(over, 1.0)
    # Day-to-day variation of a real stream is often low-dimensional (the weather moves a few features
    # one way), so its tail is heavier than sampling noise spread over every bin: with enough
    # neighbours, their own tail counts too — a gamma law fitted to their lower quantiles (a shift, a
    # campaign or weekends only move upper ones), read at the same quantile.
    scale = max(1.0, _neighbour_tail(neighbours) / tail) if tail > 0 else 1.0
    return NoiseCut(
        cut=over * scale * float(np.median(upper[idx])),
        background=over * float(np.median(mean[idx])),
        overdispersion=over,
        mean=mean,
        upper=upper,
    )


def _neighbour_tail(ratios: Sequence[float]) -> float:
    """The :data:`NOISE_QUANTILE` of neighbouring divergences over their median, from a gamma law fitted
    to their quartile and median (0 with fewer than :data:`NEIGHBOURS_FOR_SHAPE` of them).

    >>> rng = np.random.default_rng(0)
    >>> heavy, light = _neighbour_tail(rng.chisquare(1, 400)), _neighbour_tail(rng.chisquare(30, 400))
    >>> 10 < heavy < 20, 1.5 < light < 2   # chi-square with 1 and 30 degrees of freedom: 14.6 and 1.7
    (True, True)
    """
    r = np.asarray([x for x in ratios if np.isfinite(x)], dtype=np.float64)
    if r.size < NEIGHBOURS_FOR_SHAPE:
        return 0.0
    q25, q50 = np.quantile(r, [0.25, 0.5])
    if not (q25 > 0 and q50 > q25):
        return 0.0
    spread = float(q50 / q25)

    def gap(shape: float) -> float:
        # special.gammaincinv(a, q) is scipy.stats.gamma.ppf(q, a), without importing scipy.stats.
        return float(special.gammaincinv(shape, 0.5) / special.gammaincinv(shape, 0.25)) - spread

    lo, hi = 0.05, 1e4
    if gap(lo) < 0:  # heavier than the heaviest shape tried
        shape = lo
    elif gap(hi) > 0:  # as concentrated as a constant: no tail beyond the median
        return 1.0
    else:
        from scipy.optimize import brentq  # here only: scipy.optimize is 23 MB

        shape = float(brentq(gap, lo, hi, xtol=1e-6))
    return float(special.gammaincinv(shape, NOISE_QUANTILE) / special.gammaincinv(shape, 0.5))


def data_dna(
    counts: np.ndarray,
    weights: np.ndarray,
    bucket_ids: Sequence[int] | np.ndarray | None = None,
    features: Sequence[str] = (),
    *,
    metric: Metric = "psi",
    cut: float | None = None,
    min_cut: float | None = None,
    incidents: Sequence[int] = (),
    partial: Sequence[int] = (),
    labels: Sequence[str] = (),
) -> DataDNA:
    """Drift matrix and regimes from ``(B, F, bins)`` bucket counts; see the module docstring.

    ``bucket_ids`` are the buckets' indices in time; only buckets that hold data are given, and a run
    of a regime goes over them (a bucket id with no data in between does not break it);
    ``incidents`` lists bucket ids left out of the clustering, ``partial`` those that join a regime
    without shaping it. ``cut`` fixes the cut (default: from the noise, at least ``min_cut``, default
    :data:`DEFAULT_MIN_CUT` of the metric).
    """
    n = counts.shape[0]
    ids = np.arange(n) if bucket_ids is None else np.asarray(bucket_ids, dtype=np.int64)
    per_feature = pairwise_divergence(counts, metric) if n else np.zeros((len(weights), 0, 0))
    w = np.asarray(weights, dtype=np.float64)
    # Weighted mean over the features that have values in both buckets.
    present = ~np.isnan(per_feature)
    wsum = np.einsum("f,fij->ij", w, present.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.einsum("f,fij->ij", w, np.nan_to_num(per_feature)) / wsum
    matrix = np.where(wsum > 0, matrix, 0.0)
    np.fill_diagonal(matrix, 0.0)
    matrix = (matrix + matrix.T) / 2

    incident_set = {int(i) for i in incidents}
    partial_set = {int(i) for i in partial} - incident_set
    time_order = [int(i) for i in np.argsort(ids, kind="stable")]
    core = [i for i in time_order if int(ids[i]) not in incident_set | partial_set]
    if not core:  # nothing but partial buckets: let them shape the regimes after all
        core, partial_set = [i for i in time_order if int(ids[i]) not in incident_set], set()
    noise = bucket_noise(counts, w, ids, metric) if n else np.zeros((0, 1))
    nc = noise_cut(matrix, noise, core)
    floor = DEFAULT_MIN_CUT[metric] if min_cut is None else float(min_cut)
    cut_value = max(nc.cut, floor) if cut is None else float(cut)

    label: dict[int, int] = {}
    if len(core) == 1:
        label[core[0]] = 0
    elif len(core) > 1:
        from scipy.cluster.hierarchy import fcluster, linkage  # here only: 13 MB
        from scipy.spatial.distance import squareform

        sub = matrix[np.ix_(core, core)]
        z = linkage(squareform(np.maximum(sub, 0.0), checks=False), method="average")
        raw = fcluster(z, t=cut_value, criterion="distance")
        label = {p: int(g) for p, g in zip(core, raw, strict=True)}
    trends: set[int] = set()
    for chain in _trend_chains(core, label, matrix, cut_value, nc.background):
        merged = chain[0]
        label.update({p: merged for p, g in label.items() if g in chain})
        trends.add(merged)
    rank = {p: r for r, p in enumerate(time_order)}
    for p in sorted((i for i in time_order if int(ids[i]) in partial_set), key=rank.__getitem__):
        label[p] = _nearest_regime(p, label, rank, matrix, _partial_cut(p, nc, core, cut_value, cut is None))

    # Renumber groups by first appearance in time, so ids are stable and readable.
    groups = np.full(n, -1, dtype=np.int64)
    order_of: dict[int, int] = {}
    for p in time_order:
        if p in label:
            groups[p] = order_of.setdefault(label[p], len(order_of))
    regimes = _name_regimes(groups, ids, {order_of[g] for g in trends if g in order_of})
    return DataDNA(
        bucket_ids=ids,
        matrix=matrix,
        per_feature=per_feature,
        features=tuple(features),
        weights=w,
        groups=groups,
        regimes=regimes,
        metric=metric,
        cut=cut_value,
        labels=list(labels),
        noise=nc.mean,
        background=nc.background,
        overdispersion=nc.overdispersion,
        cut_source="noise" if cut is None else "configured",
        partial=tuple(sorted(int(ids[i]) for i in time_order if int(ids[i]) in partial_set)),
    )


def _partial_cut(p: int, nc: NoiseCut, core: list[int], cut: float, derived: bool) -> float:
    """A partial bucket's own cut: the derived cut with its (larger) sampling noise in place of a
    typical bucket's for its half of the pair; a configured cut stays as configured."""
    if not derived or not np.isfinite(nc.upper[p]):
        return cut
    typical = float(np.nanmedian(nc.upper[core])) if core else 0.0
    return max(cut, nc.overdispersion * (float(nc.upper[p]) + typical) / 2)


def _nearest_regime(
    p: int, label: dict[int, int], rank: dict[int, int], matrix: np.ndarray, cut: float
) -> int:
    """The group of the regime nearest to bucket ``p``: mean divergence to the (up to 3) members of
    each group closest to it in time — a trend is compared with its near end — if within ``cut``;
    else a new group."""
    members: dict[int, list[int]] = {}
    for q, g in label.items():
        members.setdefault(g, []).append(q)
    best, best_d = None, np.inf
    for g, qs in members.items():
        near = sorted(qs, key=lambda q: abs(rank[q] - rank[p]))[:3]
        d = float(np.mean(matrix[p, near]))
        if d < best_d:
            best, best_d = g, d
    if best is not None and best_d <= cut:
        return best
    return max(members, default=0) + 1


def _trend_chains(
    core: list[int], label: dict[int, int], matrix: np.ndarray, cut: float, background: float
) -> list[list[int]]:
    """Groups that make a trend (see the module docstring), as chains of group labels in time order."""
    sizes = Counter(label[p] for p in core)
    # A lone bucket whose neighbours agree with each other is a spike, not a step of anything.
    seq = [
        p
        for i, p in enumerate(core)
        if not (
            0 < i < len(core) - 1
            and sizes[label[p]] == 1
            and matrix[core[i - 1], core[i + 1]] <= cut < max(matrix[core[i - 1], p], matrix[p, core[i + 1]])
        )
    ]
    at: dict[int, list[int]] = {}
    for i, p in enumerate(seq):
        at.setdefault(label[p], []).append(i)
    # (first, last, group, compact): a group may join a chain when it is one run of buckets (a few
    # foreign buckets inside, where noise blurs the edge between two steps) and never comes back.
    spans = []
    for g, idx in at.items():
        compact = len(idx) == sizes[g] and (idx[-1] - idx[0] + 1) - len(idx) <= max(1, len(idx) // 3)
        spans.append((idx[0], idx[-1], g, compact))
    spans.sort(key=lambda t: (t[0] + t[1], t[0]))
    members = {g: [seq[i] for i in idx] for g, idx in at.items()}
    chains: list[list[int]] = []
    run: list[tuple[int, int, int, bool]] = []
    for span in [*spans, (-1, -1, -1, False)]:
        first, last, _, compact = span
        follows = bool(run) and run[-1][0] < first <= run[-1][1] + 1 and last > run[-1][1]
        if compact and (not run or follows):
            run.append(span)
            continue
        chain = _trend_of([g for _, _, g, _ in run], members, seq, matrix, cut, background)
        if chain:
            chains.append(chain)
        run = [span] if compact else []
    return chains


def _trend_of(
    chain: list[int],
    members: dict[int, list[int]],
    seq: list[int],
    matrix: np.ndarray,
    cut: float,
    background: float,
) -> list[int]:
    """``chain`` without plateaus at its ends, if what is left is a trend; else ``[]``.

    A first or last group more than :data:`PLATEAU_RATIO` times as long as the others is left out when
    it stands still (:func:`_plateau`); when it moves with the rest, the chain is tried with it first,
    then without it."""
    queue = [list(chain)]
    seen: set[tuple[int, ...]] = set()
    while queue:
        c = queue.pop(0)
        fallbacks: list[list[int]] = []
        while len(c) >= TREND_MIN_GROUPS:
            lengths = [len(members[g]) for g in c]
            long_first = lengths[0] > PLATEAU_RATIO * float(np.median(lengths[1:]))
            long_last = lengths[-1] > PLATEAU_RATIO * float(np.median(lengths[:-1]))
            if long_first and _plateau(c, 0, members, seq, matrix):
                c = c[1:]
            elif long_last and _plateau(c, -1, members, seq, matrix):
                c = c[:-1]
            else:
                fallbacks = [short for short, long in ((c[1:], long_first), (c[:-1], long_last)) if long]
                break
        if len(c) < TREND_MIN_GROUPS or tuple(c) in seen:
            continue
        seen.add(tuple(c))
        if _steady(c, members, seq, matrix, cut):
            return c
        queue = fallbacks + queue
    return []


def _steady(
    chain: list[int], members: dict[int, list[int]], seq: list[int], matrix: np.ndarray, cut: float
) -> bool:
    """Whether the groups of ``chain`` make one steady change (see the module docstring)."""

    def between(a: int, b: int) -> float:
        return float(np.mean(matrix[np.ix_(members[a], members[b])]))

    for ends in (chain, chain[::-1]):
        away = [between(ends[0], g) for g in ends[1:]]
        # Steadily away from the first group, and beyond the cut at the far end. Steadily: in rank
        # (Spearman), since far-apart buckets differ by noisy amounts (PSI's spread grows with it).
        if away[-1] <= cut or (len(away) > 2 and _rank_correlation(away) < TREND_MIN_RANK_CORRELATION):
            return False
    # Made of many small steps, not of a few shifts between plateaus (a staircase). When most groups
    # are one or two buckets, every step is a change: there is no plateau. Otherwise, on the chain's
    # main axis (classical scaling of the matrix, whose divergences behave as squared distances), a
    # straight line through time must explain the buckets at least as well as one level per group
    # (BIC: the line has 2 parameters, the levels one per group).
    if float(np.median([len(members[g]) for g in chain])) <= 2:
        return True
    path = [p for p in seq if p in set().union(*(members[g] for g in chain))]
    level = {p: i for i, g in enumerate(chain) for p in members[g]}
    x = _main_axis(matrix[np.ix_(path, path)])
    t = np.arange(len(path), dtype=np.float64)
    line = x - np.polyval(np.polyfit(t, x, 1), t)
    at = np.array([level[p] for p in path])
    levels = x - np.array([x[at == g].mean() for g in range(len(chain))])[at]
    n, tiny = len(path), 1e-12 * (float(np.sum(x**2)) + 1e-300)
    bic_line = n * np.log(float(np.sum(line**2)) / n + tiny) + 2 * np.log(n)
    bic_levels = n * np.log(float(np.sum(levels**2)) / n + tiny) + len(chain) * np.log(n)
    return bool(bic_line <= bic_levels)


def _plateau(
    chain: list[int], end: int, members: dict[int, list[int]], seq: list[int], matrix: np.ndarray
) -> bool:
    """Whether the long group at ``end`` (0 or -1) of ``chain`` stands still beside the trend rather
    than carries it on. On the chain's main axis (classical scaling of the matrix, buckets in time
    order), a plateau — one level for the group and a straight line through the other groups'
    buckets — must explain the buckets better than one straight line through all of them (BIC: 3
    parameters against 2). A steady change that the clustering cut into a few short groups and one long
    one (where the change is slowest to cross the cut) is one line: the long group is part of it.
    """
    chain_members = set().union(*(members[g] for g in chain))
    path = [p for p in seq if p in chain_members]
    x = _main_axis(matrix[np.ix_(path, path)])
    t = np.arange(len(path), dtype=np.float64)
    own = np.isin(path, members[chain[end]])
    if (~own).sum() < 2:
        return True

    def line_rss(t: np.ndarray, x: np.ndarray) -> float:
        return float(np.sum((x - np.polyval(np.polyfit(t, x, 1), t)) ** 2))

    n, tiny = len(path), 1e-12 * (float(np.sum(x**2)) + 1e-300)
    flat = line_rss(t[~own], x[~own]) + float(np.sum((x[own] - x[own].mean()) ** 2))
    bic_line = n * np.log(line_rss(t, x) / n + tiny) + 2 * np.log(n)
    bic_plateau = n * np.log(flat / n + tiny) + 3 * np.log(n)
    return bool(bic_plateau < bic_line)


def _rank_correlation(values: Sequence[float]) -> float:
    """Spearman's correlation of ``values`` with their order (1: always increasing).

    >>> round(_rank_correlation([1, 2, 4, 3]), 3), round(_rank_correlation([3, 2, 1]), 3)
    (0.8, -1.0)
    """
    ranks = np.argsort(np.argsort(np.asarray(values, dtype=np.float64), kind="stable"), kind="stable")
    order = np.arange(len(ranks), dtype=np.float64)
    if len(ranks) < 2:
        return 1.0
    return float(np.corrcoef(order, ranks.astype(np.float64))[0, 1])


def _main_axis(d: np.ndarray) -> np.ndarray:
    """Coordinates on the first axis of classical (Torgerson) scaling of ``d`` read as squared distances.

    >>> t = np.arange(5.0)
    >>> x = _main_axis((t[:, None] - t[None, :]) ** 2)
    >>> np.allclose(np.abs(x - x.mean()), np.abs(t - t.mean()))
    True
    """
    n = len(d)
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ d @ j
    values, vectors = np.linalg.eigh((b + b.T) / 2)
    return vectors[:, -1] * np.sqrt(max(float(values[-1]), 0.0))


def _name_regimes(
    groups: np.ndarray, ids: np.ndarray, trends: AbstractSet[int] = frozenset()
) -> list[Regime]:
    n_groups = int(groups.max()) + 1 if groups.size and groups.max() >= 0 else 0
    if n_groups == 0:
        return []
    valid = groups >= 0
    latest = int(ids[valid].max())
    sizes = np.bincount(groups[valid], minlength=n_groups)
    last_seen = [max(int(i) for i in ids[groups == g]) for g in range(n_groups)]
    others = [g for g in range(n_groups) if g not in trends]
    normal = max(others, key=lambda g: (sizes[g], last_seen[g])) if others else None
    all_runs = _runs(groups, ids)
    regimes = []
    for g in range(n_groups):
        members = sorted(int(i) for i in ids[groups == g])
        runs = all_runs[g]
        period = None
        if g in trends:
            kind = "trend"
        elif g == normal:
            kind = "normal"
        elif len(runs) >= 2:
            kind = "recurring"
            starts = [r[0] for r in runs]
            period = float(np.median(np.diff(starts)))
        elif runs[0][-1] == latest:
            kind = "emerging"
        else:
            kind = "one_off"
        regimes.append(Regime(g, kind, tuple(members), len(runs), period))
    return regimes


def _runs(groups: np.ndarray, ids: np.ndarray) -> dict[int, list[list[int]]]:
    """Per group, its runs: bucket ids that follow one another among the buckets that hold data, in
    time. A bucket without data (a survey that skips a year, an outage: it has no profile) and an
    incident bucket (``-1``) are not buckets of another regime, so neither splits a run.

    >>> groups = np.array([0, 0, 1, -1, 1, 0])
    >>> _runs(groups, np.array([1, 3, 4, 5, 8, 9]))   # ids 2, 6 and 7 hold no data
    {0: [[1, 3], [9]], 1: [[4, 8]]}
    """
    out: dict[int, list[list[int]]] = {}
    previous = -1
    for i in np.argsort(ids, kind="stable"):
        g = int(groups[i])
        if g < 0:
            continue
        runs = out.setdefault(g, [])
        if g == previous:
            runs[-1].append(int(ids[i]))
        else:
            runs.append([int(ids[i])])
        previous = g
    return out


def dna_from_buckets(
    schema: ModelSchema,
    buckets: Sequence[Bucket],
    *,
    metric: Metric = "psi",
    cut: float | None = None,
    min_cut: float | None = None,
    key_weight: float = InsightSettings.key_weight,
    incidents: Sequence[int] = (),
    partial_coverage: float = IncidentSettings.partial_coverage,
) -> DataDNA:
    """:func:`data_dna` on closed :class:`Bucket` profiles, weights from the schema; partial buckets
    (:func:`~stream_monitor.core.insights.buckets.partial_buckets`) found from their coverage."""
    names, w = feature_weights(schema, key_weight)
    return data_dna(
        bucket_counts(buckets),
        w,
        [b.index for b in buckets],
        names,
        metric=metric,
        cut=cut,
        min_cut=min_cut,
        incidents=incidents,
        partial=sorted(partial_buckets(buckets, partial_coverage)),
        labels=[b.label for b in buckets],
    )
