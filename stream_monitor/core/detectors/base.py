"""The one result type every detector returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DetectorResult"]


@dataclass(frozen=True)
class DetectorResult:
    """One detector's verdict on one feature (or on the model) for one window.

    Parameters
    ----------
    detector
        Which detector: ``"psi"``, ``"ks"``, ``"chi2"``, ``"js"``, ``"kl"``, ``"adwin"``,
        ``"page_hinkley"``, ``"integrity:<check>"`` or ``"prediction_psi"``.
    feature
        Feature name, ``"__prediction__"``, or ``None`` for a model-level result.
    statistic
        What ``value`` is, e.g. ``"psi"``, ``"ks_statistic"``, ``"missing_rate"``.
    value
        The statistic's value (NaN when it cannot be computed, e.g. an empty window).
    threshold
        The alarm threshold ``value`` was compared with.
    drift
        Whether the alarm threshold was crossed (after multiple-testing correction for p-value tests).
    warning
        Whether the (lower) warning threshold was crossed.
    p_value
        For hypothesis tests: the p-value the decision used (adjusted for multiple testing).
    effect_size
        For hypothesis tests: the effect size the decision used (KS statistic, Cohen's w).

    Examples
    --------
    >>> r = DetectorResult("psi", "temp", "psi", value=0.21, threshold=0.15, drift=True, warning=True)
    >>> r.drift, r.p_value
    (True, None)

    """

    detector: str
    feature: str | None
    statistic: str
    value: float
    threshold: float
    drift: bool
    warning: bool = False
    p_value: float | None = None
    effect_size: float | None = None
