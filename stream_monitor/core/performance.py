"""Rolling model quality over the last N joined labels: AUC / accuracy / F1 / MAE / RMSE / bias.

Pure numpy (plus river's ADWIN on the per-label error). The window is a set of ring buffers; metrics are
recomputed from the whole window on each :meth:`RollingPerformance.metrics` call, which the monitor makes
once per closed window, never per label.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any, Literal, Protocol, Self

import numpy as np
from river.drift import ADWIN
from scipy.stats import rankdata

from stream_monitor.errors import StateError

__all__ = ["Joined", "RollingPerformance", "binary_auc"]

_FORMAT = 1
Task = Literal["binary", "multiclass", "regression"]


class Joined(Protocol):
    """What :meth:`RollingPerformance.update` reads; :class:`stream_monitor.core.labels.JoinedLabels` fits."""

    # Read-only properties: a Protocol with plain attributes would be invariant and reject list fields.
    @property
    def score(self) -> np.ndarray: ...
    @property
    def pred_class(self) -> Sequence[str | None]: ...
    @property
    def label(self) -> np.ndarray: ...
    @property
    def label_class(self) -> Sequence[str] | None: ...


def binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney rank sum, average ranks for ties; NaN if a class is absent.

    >>> binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    0.75
    >>> binary_auc(np.array([0.5, 0.5]), np.array([False, True]))
    0.5
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(np.count_nonzero(positive))
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)  # average ranks
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


class RollingPerformance:
    """Quality of the model over the last ``window`` joined labels, plus ADWIN on the error signal.

    Metrics by task (``n`` = labels in the window for all):

    * ``binary`` — ``auc`` (rank-based, NaN when one class is absent), and at the decision ``pred_class ==
      positive_class`` (or ``score >= 0.5`` when the prediction has no class) ``accuracy``, ``precision``,
      ``recall``, ``f1`` of the positive class (NaN when undefined: no predicted / actual positives);
    * ``multiclass`` — ``accuracy``, ``macro_f1`` over the classes seen in labels or predictions of the
      window, and ``f1:<class>`` per class (at most ``max_classes`` distinct classes are tracked; later
      ones share ``__other__``, so metric names stay bounded);
    * ``regression`` — ``mae``, ``rmse``, ``mean_error`` (prediction − label: negative = under-estimation).

    The error fed to ADWIN per label: ``|label − score|`` (binary), ``|score − label|`` (regression),
    ``pred_class != label_class`` (multiclass). ``error_drift_detected`` says whether ADWIN detected a
    change during the most recent :meth:`update`; ``metrics()`` also reports ``error_drifts_total``.

    >>> rng = np.random.default_rng(0)
    >>> perf = RollingPerformance("regression", window=1000)
    >>> label = rng.normal(100, 10, 2000)
    >>> perf.update_arrays(score=label - 3 + rng.normal(0, 1, 2000), label=label)
    >>> m = perf.metrics()
    >>> m["n"], round(m["mean_error"], 1), round(m["mae"], 1)
    (1000.0, -3.0, 3.0)
    """

    def __init__(
        self,
        task: Task,
        window: int = 5000,
        positive_class: str = "1",
        *,
        adwin_delta: float = 0.002,
        max_classes: int = 64,
    ) -> None:
        if task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {task!r}")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.task: Task = task
        self.window = int(window)
        self.positive_class = str(positive_class)
        self.adwin_delta = float(adwin_delta)
        self.max_classes = int(max_classes)
        self._score = np.zeros(self.window, dtype=np.float64)
        self._label = np.zeros(self.window, dtype=np.float64)
        self._pred_code = np.full(self.window, -1, dtype=np.int32)  # multiclass: class; binary: 1/0
        self._label_code = np.full(self.window, -1, dtype=np.int32)
        self._pos = 0
        self._n = 0
        self._classes: list[str] = []
        self._class_index: dict[str, int] = {}
        self._adwin = ADWIN(delta=self.adwin_delta)
        self._drift = False
        self._drifts = 0
        self.updates = 0

    def __len__(self) -> int:
        return self._n

    @property
    def error_drift_detected(self) -> bool:
        """True if ADWIN detected a change in the error during the most recent :meth:`update`."""
        return self._drift

    # -- update -------------------------------------------------------------------------------
    def _codes(self, classes: Sequence[str | None]) -> np.ndarray:
        out = np.empty(len(classes), dtype=np.int32)
        index = self._class_index
        for i, c in enumerate(classes):
            if c is None:
                out[i] = -1
                continue
            code = index.get(c)
            if code is None:
                key = c if len(self._classes) < self.max_classes - 1 else "__other__"
                code = index.get(key)
                if code is None:
                    code = len(self._classes)
                    self._classes.append(key)
                    index[key] = code
                if key == c:
                    index[c] = code
            out[i] = code
        return out

    def update(self, joined: Joined) -> None:
        """Add a batch of joined labels (e.g. :class:`~stream_monitor.core.labels.JoinedLabels`).

        >>> perf = RollingPerformance("binary", window=4)
        >>> class J:  # anything with these four fields
        ...     score = np.array([0.9, 0.2, 0.6]); pred_class = [None, None, None]
        ...     label = np.array([1.0, 0.0, 0.0]); label_class = ["1", "0", "0"]
        >>> perf.update(J())
        >>> perf.metrics()["accuracy"]
        0.6666666666666666
        """
        self.update_arrays(joined.score, joined.label, joined.pred_class, joined.label_class)

    def update_arrays(
        self,
        score: np.ndarray,
        label: np.ndarray,
        pred_class: Sequence[str | None] | None = None,
        label_class: Sequence[str] | None = None,
    ) -> None:
        """Add a batch given as plain arrays: ``label`` is 1.0/0.0 for binary, the value for regression.

        >>> perf = RollingPerformance("multiclass", window=10)
        >>> perf.update_arrays(np.zeros(3), np.zeros(3), ["a", "b", "c"], ["a", "b", "b"])
        >>> round(perf.metrics()["macro_f1"], 4)
        0.5556
        """
        score = np.asarray(score, dtype=np.float64)
        label = np.asarray(label, dtype=np.float64)
        k = len(score)
        if label.shape != (k,):
            raise ValueError("score and label must have the same length")
        if k == 0:
            self._drift = False
            return
        if self.task == "multiclass":
            if pred_class is None or label_class is None:
                raise ValueError("multiclass needs pred_class and label_class")
            pred = self._codes(pred_class)
            truth = self._codes(label_class)
            error = (pred != truth).astype(np.float64)
        elif self.task == "binary":
            truth = (label > 0.5).astype(np.int32)
            by_score = score >= 0.5
            if pred_class is not None:
                by_class = np.array([c == self.positive_class for c in pred_class], dtype=bool)
                has_class = np.array([c is not None for c in pred_class], dtype=bool)
                by_score = np.where(has_class, by_class, by_score)
            pred = by_score.astype(np.int32)
            error = np.abs(label - score)
        else:
            pred = truth = np.full(k, -1, dtype=np.int32)
            error = np.abs(score - label)
        self._push(score, label, pred, truth)
        drift = False
        adwin = self._adwin
        for e in error[np.isfinite(error)].tolist():
            adwin.update(e)
            if adwin.drift_detected:
                drift = True
                self._drifts += 1
        self._drift = drift
        self.updates += 1

    def _push(self, score: np.ndarray, label: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
        w = self.window
        if len(score) >= w:
            score, label, pred, truth = score[-w:], label[-w:], pred[-w:], truth[-w:]
        k = len(score)
        idx = (self._pos + np.arange(k)) % w
        self._score[idx] = score
        self._label[idx] = label
        self._pred_code[idx] = pred
        self._label_code[idx] = truth
        self._pos = int((self._pos + k) % w)
        self._n = min(w, self._n + k)

    # -- metrics ------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Metrics over the current window (see the class docstring); ``{"n": 0.0, ...}`` when empty.

        >>> perf = RollingPerformance("binary")
        >>> perf.update_arrays(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1.0, 0.0, 1.0, 0.0]))
        >>> {k: round(v, 3) for k, v in perf.metrics().items() if k in ("auc", "f1", "precision")}
        {'auc': 0.75, 'precision': 0.5, 'f1': 0.5}
        """
        n = self._n
        out: dict[str, float] = {"n": float(n), "error_drifts_total": float(self._drifts)}
        if n == 0:
            return out
        s, y = self._score[:n], self._label[:n]  # order inside the window does not matter
        if self.task == "regression":
            ok = np.isfinite(s) & np.isfinite(y)
            err = s[ok] - y[ok]
            if len(err):
                out["mae"] = float(np.mean(np.abs(err)))
                out["rmse"] = float(np.sqrt(np.mean(err * err)))
                out["mean_error"] = float(np.mean(err))
            else:
                out.update(mae=math.nan, rmse=math.nan, mean_error=math.nan)
            return out
        pred, truth = self._pred_code[:n], self._label_code[:n]
        out["accuracy"] = float(np.mean(pred == truth))
        if self.task == "binary":
            ok = np.isfinite(s)
            out["auc"] = binary_auc(s[ok], truth[ok] == 1)
            tp = float(np.count_nonzero((pred == 1) & (truth == 1)))
            fp = float(np.count_nonzero((pred == 1) & (truth == 0)))
            fn = float(np.count_nonzero((pred == 0) & (truth == 1)))
            out["precision"] = _ratio(tp, tp + fp)
            out["recall"] = _ratio(tp, tp + fn)
            out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
            return out
        m = len(self._classes)
        valid_t = truth >= 0
        valid_p = pred >= 0
        true_count = np.bincount(truth[valid_t], minlength=m)
        pred_count = np.bincount(pred[valid_p], minlength=m)
        tp_count = np.bincount(truth[(pred == truth) & valid_t], minlength=m)
        seen = (true_count + pred_count) > 0
        den = (true_count + pred_count).astype(np.float64)
        f1 = np.divide(2.0 * tp_count, den, out=np.full(m, math.nan), where=seen)
        out["macro_f1"] = float(np.mean(f1[seen])) if seen.any() else math.nan
        for code in np.flatnonzero(seen).tolist():
            out[f"f1:{self._classes[code]}"] = float(f1[code])
        return out

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Exact state as bytes (pickle, for river's ADWIN), tagged with a format version.

        >>> perf = RollingPerformance("regression", window=3)
        >>> perf.update_arrays(np.array([1.0, 2.0]), np.array([1.5, 2.5]))
        >>> RollingPerformance.restore(perf.snapshot()).metrics() == perf.metrics()
        True
        """
        state: dict[str, Any] = {
            "format": _FORMAT,
            "settings": (self.task, self.window, self.positive_class, self.adwin_delta, self.max_classes),
            "arrays": (self._score, self._label, self._pred_code, self._label_code),
            "pos": self._pos,
            "n": self._n,
            "classes": self._classes,
            "class_index": self._class_index,
            "adwin": self._adwin,
            "drift": self._drift,
            "drifts": self._drifts,
            "updates": self.updates,
        }
        return pickle.dumps(state, protocol=5)

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild from :meth:`snapshot` bytes; raises :class:`StateError` on bad input."""
        try:
            state = pickle.loads(data)
        except Exception as e:
            raise StateError(f"performance snapshot: cannot unpickle: {e}") from e
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise StateError("performance snapshot: unsupported format")
        task, window, positive, delta, max_classes = state["settings"]
        perf = cls(task, window, positive, adwin_delta=delta, max_classes=max_classes)
        perf._score, perf._label, perf._pred_code, perf._label_code = state["arrays"]
        perf._pos, perf._n = state["pos"], state["n"]
        perf._classes = list(state["classes"])
        perf._class_index = dict(state["class_index"])
        perf._adwin = state["adwin"]
        perf._drift, perf._drifts, perf.updates = state["drift"], state["drifts"], state["updates"]
        return perf
