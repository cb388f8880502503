"""Rolling model quality over the last N joined labels: AUC / accuracy / F1 / MAE / RMSE / bias.

Pure numpy (plus ADWIN, :mod:`stream_monitor.core.detectors.adwin`, on the per-label error). The window
is a set of ring buffers; metrics are
recomputed from the whole window on each :meth:`RollingPerformance.metrics` call, which the monitor makes
once per closed window, never per label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol, Self

import numpy as np

from stream_monitor.core import state_format
from stream_monitor.core.detectors.adwin import Adwin
from stream_monitor.core.quality import (
    DECISION_THRESHOLD,
    binary_auc,
    binary_decisions,
    f1_from_counts,
    mae,
    per_class_f1,
    rmse,
)
from stream_monitor.core.settings import DetectorSettings, ModelSettings
from stream_monitor.core.state_format import StateReader
from stream_monitor.errors import StateError

__all__ = ["Joined", "RollingPerformance", "binary_auc"]

_KIND = "rolling_performance"
_FORMAT = 2  # 1 was a pickle
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


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


class RollingPerformance:
    """Quality of the model over the last ``window`` joined labels, plus ADWIN on the error signal.

    Metrics by task (``n`` = labels in the window for all):

    * ``binary`` — ``auc`` (rank-based, NaN when one class is absent), and at the decision
      (:func:`~stream_monitor.core.quality.binary_decisions`: ``pred_class == positive_class``, or
      ``score >= 0.5`` when the prediction has no class; the reference baseline decides the same way)
      ``accuracy``, ``precision``, ``recall``, ``f1`` of the positive class (NaN when undefined: no
      predicted / actual positives);
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
        window: int = ModelSettings.performance_window,
        positive_class: str = "1",
        *,
        adwin_delta: float = DetectorSettings.adwin_delta,
        max_classes: int = 64,
        decision_threshold: float = DECISION_THRESHOLD,
    ) -> None:
        if task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {task!r}")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.task: Task = task
        self.window = int(window)
        self.positive_class = str(positive_class)
        # Configuration (the schema's), not state: a restored object takes the configured one.
        self.decision_threshold = float(decision_threshold)
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
        self._adwin = Adwin(delta=self.adwin_delta)
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
            positive, _ = binary_decisions(score, pred_class, self.positive_class, self.decision_threshold)
            pred = positive.astype(np.int32)
            error = np.abs(label - score)
        else:
            pred = truth = np.full(k, -1, dtype=np.int32)
            error = np.abs(score - label)
        self._push(score, label, pred, truth)
        detections = self._adwin.update_many(error[np.isfinite(error)].tolist())
        self._drifts += len(detections)
        self._drift = bool(detections)
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
                out["mae"] = mae(err)
                out["rmse"] = rmse(err)
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
            out["f1"] = f1_from_counts(tp, fp, fn)
            return out
        f1 = per_class_f1(pred, truth, len(self._classes))
        seen = ~np.isnan(f1)
        out["macro_f1"] = float(np.mean(f1[seen])) if seen.any() else math.nan
        for code in np.flatnonzero(seen).tolist():
            out[f"f1:{self._classes[code]}"] = float(f1[code])
        return out

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The whole state as a container of :mod:`stream_monitor.core.state_format`."""
        return state_format.tagged(
            _KIND,
            _FORMAT,
            task=self.task,
            window=self.window,
            positive_class=self.positive_class,
            adwin_delta=self.adwin_delta,
            max_classes=self.max_classes,
            pos=self._pos,
            n=self._n,
            classes=list(self._classes),
            # Names beyond max_classes map to the "__other__" code, so the index is more than the list.
            class_index=[[name, code] for name, code in self._class_index.items()],
            drift=self._drift,
            drifts=self._drifts,
            updates=self.updates,
            score=self._score,
            label=self._label,
            pred_code=self._pred_code,
            label_code=self._label_code,
            adwin=self._adwin.to_state(),
        )

    @classmethod
    @state_format.restoring
    def from_state(cls, state: StateReader | dict[str, Any], what: str = "performance") -> Self:
        """Rebuild from :meth:`to_state`; :class:`StateError` when it does not fit."""
        r = state if isinstance(state, StateReader) else StateReader(state, what)
        r.expect(_KIND, _FORMAT)
        task = r.text("task")
        try:
            perf = cls(
                task,  # type: ignore[arg-type]
                r.integer("window"),
                r.text("positive_class"),
                adwin_delta=r.number("adwin_delta"),
                max_classes=r.integer("max_classes"),
            )
        except ValueError as exc:
            raise StateError(f"{r.what}: {exc}") from exc
        w = perf.window
        perf._score = r.array("score", np.float64, shape=(w,))
        perf._label = r.array("label", np.float64, shape=(w,))
        perf._pred_code = r.array("pred_code", np.int32, shape=(w,))
        perf._label_code = r.array("label_code", np.int32, shape=(w,))
        perf._pos = r.integer("pos", min_value=0)
        perf._n = r.integer("n", min_value=0)
        perf._classes = r.strings("classes")
        pairs = r.json_list("class_index", list)
        if (
            perf._pos >= w
            or perf._n > w
            or not all(
                len(p) == 2 and isinstance(p[0], str) and type(p[1]) is int and 0 <= p[1] < len(perf._classes)
                for p in pairs
            )
        ):
            raise StateError(f"{r.what}: ring position, count or class table do not fit window {w}")
        codes = np.concatenate([perf._pred_code, perf._label_code])
        if codes.size and (codes.min() < -1 or codes.max() >= max(len(perf._classes), 2)):
            raise StateError(f"{r.what}: class codes outside the class table")
        perf._class_index = {name: code for name, code in pairs}
        perf._drift = r.flag("drift")
        perf._drifts = r.integer("drifts", min_value=0)
        perf.updates = r.integer("updates", min_value=0)
        perf._adwin = Adwin.from_state(r.child("adwin"))
        return perf

    def snapshot(self) -> bytes:
        """Exact state as bytes (:meth:`to_state` in the one state format).

        >>> perf = RollingPerformance("regression", window=3)
        >>> perf.update_arrays(np.array([1.0, 2.0]), np.array([1.5, 2.5]))
        >>> RollingPerformance.restore(perf.snapshot()).metrics() == perf.metrics()
        True
        """
        return state_format.encode(self.to_state())

    @classmethod
    def restore(cls, data: bytes) -> Self:
        """Rebuild from :meth:`snapshot` bytes; raises :class:`StateError` on bad input."""
        return cls.from_state(state_format.decode(data))
