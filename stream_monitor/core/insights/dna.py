"""Data DNA (seed 001): the bucket × bucket drift matrix and the regimes it groups buckets into.

**Matrix.** For every pair of buckets and every feature, the PSI (or Jensen–Shannon divergence) of the
two buckets' counts on the reference bins (numeric) or reference categories plus ``__other__``
(categorical); PSI and JS are symmetric, so the matrix is too. Features are combined by a weighted
mean: the weight of a feature is its configured ``importance``, doubled for key features
(``key_weight``) — drift in what the model leans on counts more.

**Regimes.** Buckets are grouped by average-linkage hierarchical clustering (``scipy``) on the matrix,
cut at ``cut`` (default the model's ``policy.psi_warning``, 0.1: the detectors' "warning" level —
two days that differ by less than a drift warning are the same kind of day; for JS it is divided by
8 ln 2: 0.1 / (8 ln 2) ≈ 0.018). Average linkage compares groups by their mean distance, so a slow
trend is not chained into one group the way single linkage would. Each group is then named from
where its buckets sit in time:

- ``normal``: the largest group (ties: the one with the most recent bucket);
- ``recurring``: another group that comes back — its buckets form at least two separate runs
  (weekends, month ends); ``period`` is the median distance between the runs' starts, in buckets;
- ``emerging``: a single run that reaches the latest bucket (a change still in progress);
- ``one_off``: a single run in the past (a campaign, an outage week).

Buckets flagged as integrity incidents are left out of the clustering (regime ``-1``, kind
``incident``): a broken pipeline is not a regime.

Pure: numpy and scipy only.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from stream_monitor.core.insights.buckets import Bucket
from stream_monitor.core.schema import ModelSchema
from stream_monitor.core.settings import (
    PSI_PER_JS,
    DetectorSettings,
    DnaMetric,
    InsightSettings,
    PolicySettings,
)

Metric = DnaMetric
#: Default regime cut per metric: the default PSI warning level (see the module docstring for why).
#: A model's own cut follows its ``policy.psi_warning`` (``ModelSettings.resolved_insights``).
DEFAULT_CUT = {"psi": PolicySettings.psi_warning, "js": PolicySettings.psi_warning / PSI_PER_JS}


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
    """The drift matrix over buckets, per-feature matrices, and the regime of every bucket."""

    bucket_ids: np.ndarray  # (B,) int
    matrix: np.ndarray  # (B, B) combined drift
    per_feature: np.ndarray  # (F, B, B)
    features: tuple[str, ...]
    weights: np.ndarray  # (F,) normalised
    groups: np.ndarray  # (B,) regime id per bucket, -1 = incident
    regimes: list[Regime]
    metric: str = "psi"
    cut: float = DEFAULT_CUT["psi"]
    labels: list[str] = field(default_factory=list)

    def regime_of(self, bucket_id: int) -> Regime | None:
        """The regime a bucket belongs to (None for incidents and unknown buckets)."""
        pos = np.flatnonzero(self.bucket_ids == bucket_id)
        if pos.size == 0 or self.groups[pos[0]] < 0:
            return None
        return self.regimes[int(self.groups[pos[0]])]

    def kind_of(self, bucket_id: int) -> str:
        """``normal`` / ``recurring`` / ``one_off`` / ``emerging``, or ``incident``."""
        regime = self.regime_of(bucket_id)
        return "incident" if regime is None else regime.kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the matrix, per-feature matrices, groups and regimes."""
        return {
            "metric": self.metric,
            "cut": self.cut,
            "buckets": [int(b) for b in self.bucket_ids],
            "labels": list(self.labels),
            "features": list(self.features),
            "weights": [float(w) for w in self.weights],
            "matrix": np.round(self.matrix, 6).tolist(),
            "per_feature": {
                f: np.round(m, 6).tolist() for f, m in zip(self.features, self.per_feature, strict=True)
            },
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


def data_dna(
    counts: np.ndarray,
    weights: np.ndarray,
    bucket_ids: Sequence[int] | np.ndarray | None = None,
    features: Sequence[str] = (),
    *,
    metric: Metric = "psi",
    cut: float | None = None,
    incidents: Sequence[int] = (),
    labels: Sequence[str] = (),
) -> DataDNA:
    """Drift matrix and regimes from ``(B, F, bins)`` bucket counts; see the module docstring.

    ``bucket_ids`` are the buckets' indices in time (consecutive ids are adjacent buckets; a gap
    breaks a run); ``incidents`` lists bucket ids left out of the clustering.
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
    cut_value = DEFAULT_CUT[metric] if cut is None else float(cut)

    incident_set = {int(i) for i in incidents}
    keep = np.array([int(i) not in incident_set for i in ids], dtype=bool)
    groups = np.full(n, -1, dtype=np.int64)
    kept = np.flatnonzero(keep)
    if kept.size == 1:
        groups[kept] = 0
    elif kept.size > 1:
        sub = matrix[np.ix_(kept, kept)]
        sub = (sub + sub.T) / 2
        np.fill_diagonal(sub, 0.0)
        z = linkage(squareform(np.maximum(sub, 0.0), checks=False), method="average")
        raw = fcluster(z, t=cut_value, criterion="distance")
        # Renumber groups by first appearance in time, so ids are stable and readable.
        order: dict[int, int] = {}
        for g in raw:
            order.setdefault(int(g), len(order))
        groups[kept] = [order[int(g)] for g in raw]
    regimes = _name_regimes(groups, ids)
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
    )


def _name_regimes(groups: np.ndarray, ids: np.ndarray) -> list[Regime]:
    n_groups = int(groups.max()) + 1 if groups.size and groups.max() >= 0 else 0
    if n_groups == 0:
        return []
    # Runs are consecutive in time among the non-incident buckets, judged on bucket ids: an incident
    # bucket inside a run does not split it, a missing day does.
    valid = groups >= 0
    latest = int(ids[valid].max())
    sizes = np.bincount(groups[valid], minlength=n_groups)
    last_seen = [max(int(i) for i in ids[groups == g]) for g in range(n_groups)]
    normal = max(range(n_groups), key=lambda g: (sizes[g], last_seen[g]))
    regimes = []
    for g in range(n_groups):
        members = sorted(int(i) for i in ids[groups == g])
        # Adjacent in time = adjacent ids, or separated only by incident buckets.
        runs = _merge_runs(members, ids, groups)
        period = None
        if g == normal:
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


def _merge_runs(members: list[int], ids: np.ndarray, groups: np.ndarray) -> list[list[int]]:
    incident_ids = {int(i) for i, g in zip(ids, groups, strict=True) if g < 0}
    runs: list[list[int]] = []
    for b in members:
        if runs:
            prev = runs[-1][-1]
            between = range(prev + 1, b)
            if all(x in incident_ids for x in between):
                runs[-1].append(b)
                continue
        runs.append([b])
    return runs


def dna_from_buckets(
    schema: ModelSchema,
    buckets: Sequence[Bucket],
    *,
    metric: Metric = "psi",
    cut: float | None = None,
    key_weight: float = InsightSettings.key_weight,
    incidents: Sequence[int] = (),
) -> DataDNA:
    """:func:`data_dna` on closed :class:`Bucket` profiles, weights from the schema."""
    names, w = feature_weights(schema, key_weight)
    return data_dna(
        bucket_counts(buckets),
        w,
        [b.index for b in buckets],
        names,
        metric=metric,
        cut=cut,
        incidents=incidents,
        labels=[b.label for b in buckets],
    )
