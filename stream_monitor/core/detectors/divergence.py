"""Jensen–Shannon and Kullback–Leibler divergences between count vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream_monitor.core.detectors.psi import smoothed_proportions
from stream_monitor.core.settings import DetectorSettings

__all__ = ["js_divergence", "js_divergence_matrix", "kl_divergence"]


def _proportions(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / total, np.nan)


def js_divergence_matrix(p_counts: npt.ArrayLike, q_counts: npt.ArrayLike) -> np.ndarray:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of every row of two ``(F, B)`` count arrays.

    ``JS = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2``. It needs no smoothing: ``m`` is
    positive wherever ``p`` or ``q`` is, and ``0 * log 0 = 0``. Rows with a zero total give NaN.

    Examples
    --------
    >>> js_divergence_matrix([[1, 0], [1, 1]], [[0, 1], [1, 1]])
    array([1., 0.])

    """
    p = _proportions(np.asarray(p_counts, dtype=np.float64))
    q = _proportions(np.asarray(q_counts, dtype=np.float64))
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"expected two (F, B) arrays of the same shape, got {p.shape} and {q.shape}")
    m = (p + q) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kl_pm = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_qm = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    js = np.clip((kl_pm + kl_qm) / 2, 0.0, 1.0)
    return np.where(np.isnan(p).any(axis=1) | np.isnan(q).any(axis=1), np.nan, js)


def js_divergence(p_counts: npt.ArrayLike, q_counts: npt.ArrayLike) -> float:
    """Jensen–Shannon divergence in bits (0 = identical, 1 = disjoint) between two count vectors.

    Counts are normalised to proportions first; the result equals
    ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2``. Symmetric and bounded, so it reads
    the same for every feature; for small shifts ``JS ≈ PSI / (8 ln 2)``, i.e. PSI 0.15 ≈ JS 0.027.

    Examples
    --------
    >>> round(js_divergence([50, 30, 20], [20, 30, 50]), 4)
    0.0958

    """
    p = np.asarray(p_counts, dtype=np.float64)
    q = np.asarray(q_counts, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"expected 1-D counts, got shape {p.shape}; use js_divergence_matrix")
    return float(js_divergence_matrix(p[None, :], q[None, :])[0])


def kl_divergence(
    p_counts: npt.ArrayLike, q_counts: npt.ArrayLike, eps: float = DetectorSettings.psi_epsilon
) -> float:
    """Kullback–Leibler divergence ``KL(p || q)`` in nats, on smoothed proportions.

    Both count vectors become ``(c + eps) / (n + eps * B)`` (as for PSI) so an empty bin of ``q``
    does not make the result infinite; then ``KL = sum p * ln(p / q)``, which equals
    ``scipy.stats.entropy(p, q)`` on the smoothed proportions. Not symmetric:
    ``KL(p || q) + KL(q || p)`` is PSI. NaN if either total is 0.

    Examples
    --------
    >>> round(kl_divergence([50, 30, 20], [20, 30, 50]), 4)
    0.2749

    """
    p = smoothed_proportions(p_counts, eps)
    q = smoothed_proportions(q_counts, eps)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"expected two 1-D count arrays of the same length, got {p.shape}, {q.shape}")
    return float(np.sum(p * np.log(p / q)))
