"""What is true in each window, established with pandas, scipy and scikit-learn alone.

Nothing here imports stream-monitor: the windows are the config's event-time windows computed again
from their definition (tumbling, aligned to multiples of the width since 1970-01-01), and every
statistic is computed afresh from the training slice and the window's rows.

The rules of the product (seed 002: PSI ≥ 0.15 on a feature, a KS/chi-square rejection with an effect
of at least 0.1, MAE up 20 %, F1 down 5 %, AUC down 0.015) say what a retrain trigger is for; the
truth applies them with a clear margin so that a verdict does not hinge on noise:

* drift of a feature in a window is **material** when a KS test (numeric) or a chi-square test
  (categorical) rejects at Holm-adjusted p < 0.01 over the window's features *and* its effect (KS
  statistic, Cramér's V) is at least 0.15; it is **none** when the test does not reject or the effect
  is below 0.1; in between it is **gray** (either verdict is accepted). PSI is reported beside it, with
  its expected value under no drift, because on a small window PSI is large by chance alone.
* the model **decayed** in a window when its metric on the window's rows is worse than on the training
  slice by twice the product's threshold (MAE +40 %, F1 −10 %) and a bootstrap 99 % interval of the
  window's metric is still worse than the threshold itself; it **holds** when the point estimate is
  within the threshold or the interval reaches the baseline (no significant worsening); else gray.
* an **integrity** incident is a window whose event rate (over the time the stream covered in it) is
  below half or above twice the training slice's, or whose missing-value share rises by more than 0.1,
  or whose share of unseen categories exceeds 0.05 (the product's default integrity thresholds);
  values beyond the training range are reported as drift evidence, not as an incident of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score

Status = Literal["material", "gray", "none"]
PerformanceStatus = Literal["decayed", "gray", "holds", "unknown"]

ALPHA = 0.01
MATERIAL_EFFECT = 0.15
NONE_EFFECT = 0.10
PSI_BINS = 10
PSI_EPSILON = 1e-4
MAE_RISE, F1_DROP = 0.20, 0.05  # the product's defaults; "decayed" needs twice these
MISSING_DELTA, NEW_CATEGORY_SHARE, VOLUME_LOW, VOLUME_HIGH = 0.1, 0.05, 0.5, 2.0
BOOTSTRAP_DRAWS = 400


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Seconds since 1970-01-01 of naive UTC datetimes (negative before 1970)."""
    return ((ts - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)


@dataclass
class FeatureDrift:
    feature: str
    statistic: float  # KS D or Cramér's V
    p_value: float  # Holm-adjusted over the window's features
    psi: float
    status: Status


@dataclass
class WindowTruth:
    index: int  # window number: floor(epoch seconds / width)
    start: float
    end: float
    events: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    drift: Status
    metric: float  # the window's MAE (regression) or F1 of the positive class (binary)
    metric_change: float  # relative change against the training baseline (+ worse for MAE)
    auc: float
    performance: PerformanceStatus
    volume_ratio: float
    missing_rise: float
    new_category_share: float
    out_of_range_share: float
    integrity: bool
    notes: list[str] = field(default_factory=list)

    @property
    def moved_features(self) -> list[str]:
        return [f.feature for f in self.features if f.status != "none"]

    @property
    def max_psi(self) -> float:
        values = [f.psi for f in self.features if math.isfinite(f.psi)]
        return max(values, default=0.0)


@dataclass
class Truth:
    windows: list[WindowTruth]
    baseline_metric: float
    baseline_auc: float
    metric_name: str

    def by_index(self) -> dict[int, WindowTruth]:
        return {w.index: w for w in self.windows}


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over a window's tests)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def numeric_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI over the reference's deciles (ties merged), additive smoothing ``PSI_EPSILON``."""
    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(reference) == 0 or len(current) == 0:
        return math.nan
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    return _psi(expected, actual)


def _psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    e = (expected_counts + PSI_EPSILON) / (expected_counts.sum() + PSI_EPSILON * len(expected_counts))
    a = (actual_counts + PSI_EPSILON) / (actual_counts.sum() + PSI_EPSILON * len(actual_counts))
    return float(np.sum((a - e) * np.log(a / e)))


def psi_null_expectation(n_reference: int, n_window: int, bins: int = PSI_BINS) -> float:
    """PSI's expected value with no drift at all: about (bins − 1)·(1/n + 1/m) (a chi-square mean)."""
    return (bins - 1) * (1.0 / max(n_reference, 1) + 1.0 / max(n_window, 1))


def _numeric_drift(name: str, reference: np.ndarray, current: np.ndarray) -> tuple[float, float, float]:
    ref, cur = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if len(ref) == 0 or len(cur) == 0:
        return 0.0, 1.0, math.nan
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue), numeric_psi(ref, cur)


def _categorical_drift(reference: pd.Series, current: pd.Series) -> tuple[float, float, float]:
    categories = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    expected = reference.dropna().astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
    actual = current.dropna().astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
    if len(categories) < 2 or actual.sum() == 0:
        return 0.0, 1.0, 0.0
    table = np.vstack([expected, actual])
    table = table[:, table.sum(axis=0) > 0]
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    cramers_v = math.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
    return cramers_v, float(p_value), _psi(expected, actual)


def _status(statistic: float, p_adjusted: float) -> Status:
    if p_adjusted < ALPHA and statistic >= MATERIAL_EFFECT:
        return "material"
    if p_adjusted >= ALPHA or statistic < NONE_EFFECT:
        return "none"
    return "gray"


def _metric(task: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    if len(labels) == 0:
        return math.nan
    if task == "regression":
        return float(np.mean(np.abs(predictions - labels)))
    return float(f1_score(labels.astype(int), (predictions >= 0.5).astype(int), zero_division=0.0))


def _auc(task: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    if task != "binary" or len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels.astype(int), predictions))


def _relative_change(task: str, metric: float, baseline: float) -> float:
    """+ is worse: MAE's rise, or F1's fall, relative to the baseline."""
    if not (math.isfinite(metric) and baseline > 0):
        return math.nan
    return metric / baseline - 1.0 if task == "regression" else 1.0 - metric / baseline


def _bootstrap_changes(
    task: str, labels: np.ndarray, predictions: np.ndarray, baseline: float, rng: np.random.Generator
) -> np.ndarray:
    """The metric's relative change on ``BOOTSTRAP_DRAWS`` resamples of the window's rows (vectorised)."""
    draws = rng.integers(0, len(labels), size=(BOOTSTRAP_DRAWS, len(labels)))
    if task == "regression":
        metric = np.abs(predictions - labels)[draws].mean(axis=1)
        return metric / baseline - 1.0
    truth, decided = labels[draws] >= 0.5, predictions[draws] >= 0.5
    true_positives = (truth & decided).sum(axis=1)
    counted = truth.sum(axis=1) + decided.sum(axis=1)
    f1 = np.divide(2.0 * true_positives, counted, out=np.zeros(len(draws)), where=counted > 0)
    return 1.0 - f1 / baseline


def _performance(
    task: str, labels: np.ndarray, predictions: np.ndarray, baseline: float, rng: np.random.Generator
) -> tuple[PerformanceStatus, float, float]:
    threshold = MAE_RISE if task == "regression" else F1_DROP
    metric = _metric(task, labels, predictions)
    change = _relative_change(task, metric, baseline)
    if not math.isfinite(change) or len(labels) < 30:
        return "unknown", metric, change
    if change < threshold:
        return "holds", metric, change
    lower = float(np.quantile(_bootstrap_changes(task, labels, predictions, baseline, rng), 0.005))
    if lower < 0:
        # Not even worse than the baseline at the 99 % level: a small window's noise, not a decay.
        return "holds", metric, change
    return ("decayed" if change >= 2 * threshold and lower >= threshold else "gray"), metric, change


def analyse(
    *,
    task: str,
    numeric: tuple[str, ...],
    categorical: tuple[str, ...],
    train: pd.DataFrame,
    stream: pd.DataFrame,
    width_seconds: float,
    seed: int = 0,
) -> Truth:
    """Per window of ``stream``: which features moved, how the model's metric moved, integrity.

    ``train`` and ``stream`` carry ``ts``, the features, ``prediction`` and ``target``.
    """
    rng = np.random.default_rng(seed)
    baseline = _metric(task, train["target"].to_numpy(float), train["prediction"].to_numpy(float))
    baseline_auc = _auc(task, train["target"].to_numpy(float), train["prediction"].to_numpy(float))
    train_seconds = epoch_seconds(train["ts"])
    train_rate = len(train) / max(train_seconds.max() - train_seconds.min(), 1.0)
    stream_seconds = epoch_seconds(stream["ts"])
    first, last = stream_seconds.min(), stream_seconds.max()
    window_of = np.floor(stream_seconds / width_seconds).astype(np.int64)
    train_missing = {name: float(train[name].isna().mean()) for name in (*numeric, *categorical)}
    train_categories = {name: set(train[name].dropna().astype(str)) for name in categorical}
    windows: list[WindowTruth] = []
    for index in np.unique(window_of):
        rows = stream[window_of == index]
        start, end = float(index * width_seconds), float((index + 1) * width_seconds)
        raw: list[tuple[str, float, float, float]] = []
        for name in numeric:
            d, p, psi = _numeric_drift(name, train[name].to_numpy(float), rows[name].to_numpy(float))
            raw.append((name, d, p, psi))
        for name in categorical:
            v, p, psi = _categorical_drift(train[name], rows[name])
            raw.append((name, v, p, psi))
        adjusted = _holm([p for _, _, p, _ in raw])
        features = [
            FeatureDrift(name, stat, p_adj, psi, _status(stat, p_adj))
            for (name, stat, _, psi), p_adj in zip(raw, adjusted, strict=True)
        ]
        d, p, psi = _numeric_drift(
            "prediction", train["prediction"].to_numpy(float), rows["prediction"].to_numpy(float)
        )
        prediction = FeatureDrift("prediction", d, p, psi, _status(d, p))
        statuses = {f.status for f in features}
        drift: Status = "material" if "material" in statuses else "gray" if "gray" in statuses else "none"
        labels, predictions = rows["target"].to_numpy(float), rows["prediction"].to_numpy(float)
        performance, metric, change = _performance(task, labels, predictions, baseline, rng)
        # The event rate over the part of the window the stream ran through (a first or last window
        # that the stream covers only partly is not a drop in volume).
        covered = min(end, last) - max(start, first)
        gap = (last - first) / max(len(stream) - 1, 1)
        volume_ratio = len(rows) / max(covered + gap, 1.0) / train_rate
        missing_rise = max(
            (float(rows[n].isna().mean()) - train_missing[n] for n in (*numeric, *categorical)), default=0.0
        )
        new_share = max(
            (float((~rows[n].dropna().astype(str).isin(train_categories[n])).mean()) for n in categorical),
            default=0.0,
        )
        out_of_range = max(
            (
                float(((rows[n] < train[n].min()) | (rows[n] > train[n].max())).mean())
                for n in numeric
                if rows[n].notna().any()
            ),
            default=0.0,
        )
        # A window shorter than a quarter of its width gives no volume verdict (too little time).
        volume_judged = covered >= 0.25 * width_seconds
        integrity = (
            (volume_judged and not VOLUME_LOW <= volume_ratio <= VOLUME_HIGH)
            or missing_rise > MISSING_DELTA
            or new_share > NEW_CATEGORY_SHARE
        )
        windows.append(
            WindowTruth(
                index=int(index),
                start=start,
                end=end,
                events=len(rows),
                features=features,
                prediction=prediction,
                drift=drift,
                metric=metric,
                metric_change=change,
                auc=_auc(task, labels, predictions),
                performance=performance,
                volume_ratio=volume_ratio,
                missing_rise=missing_rise,
                new_category_share=new_share,
                out_of_range_share=out_of_range,
                integrity=integrity,
            )
        )
    return Truth(
        windows=windows,
        baseline_metric=baseline,
        baseline_auc=baseline_auc,
        metric_name="MAE" if task == "regression" else "F1",
    )
