"""Drift detectors: pure statistics over counts and samples, and streaming detectors.

One result type (:class:`DetectorResult`); pure functions for PSI, KS, chi-square, JS/KL and the
multiple-testing decision; integrity checks; per-window evaluation of many features; and
streaming detectors (ADWIN, calibrated Page–Hinkley) sharing one snapshot/restore contract.
"""

from stream_monitor.core.detectors.base import DetectorResult
from stream_monitor.core.detectors.chi_square import chi_square, cohens_w
from stream_monitor.core.detectors.divergence import js_divergence, js_divergence_matrix, kl_divergence
from stream_monitor.core.detectors.integrity import (
    missing_rate_check,
    new_category_check,
    out_of_range_check,
    volume_check,
)
from stream_monitor.core.detectors.ks import ks_2samp_sorted, ks_2samp_sorted_many
from stream_monitor.core.detectors.multiple_testing import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_EFFECT,
    benjamini_hochberg,
    correct_family,
    holm,
    significant_drift,
)
from stream_monitor.core.detectors.psi import PSI_ALARM, PSI_WARNING, psi, psi_matrix, smoothed_proportions
from stream_monitor.core.detectors.streaming import (
    ADWINDetector,
    PageHinkleyDetector,
    StreamDriftDetector,
    make_stream_detector,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_EFFECT",
    "PSI_ALARM",
    "PSI_WARNING",
    "ADWINDetector",
    "DetectorResult",
    "PageHinkleyDetector",
    "StreamDriftDetector",
    "benjamini_hochberg",
    "chi_square",
    "cohens_w",
    "correct_family",
    "holm",
    "js_divergence",
    "js_divergence_matrix",
    "kl_divergence",
    "ks_2samp_sorted",
    "ks_2samp_sorted_many",
    "make_stream_detector",
    "missing_rate_check",
    "new_category_check",
    "out_of_range_check",
    "psi",
    "psi_matrix",
    "significant_drift",
    "smoothed_proportions",
    "volume_check",
]
