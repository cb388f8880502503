"""Synthetic streams with a known drift point: seed 003's bike-sharing story and a stationary control.

``bikes``: an hourly demand model for many stations, trained on a cold fortnight. From ``drift_day``
on, the weather warms by ``warming_per_day`` °C a day, past the training range; demand grows with
temperature but the model (a tree-like fit that cannot extrapolate) saturates, so it under-estimates —
errors grow and are biased. ``churn``: a binary classifier on a stationary stream (the control).
Labels arrive ``label_delay`` seconds after the prediction. Everything is seeded and pure.

>>> story = BikeStory(stations=10, days=18, drift_day=16)
>>> events, labels = story.production()
>>> len(events) == 10 * 24 * 4 == len(labels), events[0]["model_id"], sorted(events[0]["features"])[:3]
(True, 'bikes', ['atemp', 'holiday', 'hour'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

DAY = 86400.0
START_TS = 1_735_689_600.0  # 2025-01-01T00:00:00Z
SEASONS = ("winter", "spring", "summer", "autumn")
WEATHER = ("clear", "mist", "light_rain", "heavy_rain")
# The churn control model's categories (the feature names match its configuration in demo.yaml).
CONTRACTS = ("month-to-month", "one_year", "two_year")
PAYMENTS = ("card", "bank_transfer", "electronic_check")
INTERNET = ("fiber", "dsl", "none")
CHANNELS = ("web", "store", "partner")


@dataclass(frozen=True)
class BikeStory:
    """The bike-sharing demand model of seed 003, with drift starting on ``drift_day``.

    The warming goes on to the end, or, with ``plateau_day``, stops there: from that day on the days are
    as warm as that one (the default, ``None``, is the story as it always was). Days up to the plateau
    are the same either way; the plateau only caps the warming.

    >>> def mean_temp(story, day):
    ...     events, _ = story.production()
    ...     temps = [e["features"]["temp"] for e in events if (e["ts"] - START_TS) // DAY == day]
    ...     return round(float(np.mean(temps)), 1)
    >>> warming, flat = BikeStory(stations=20, days=30), BikeStory(stations=20, days=30, plateau_day=25)
    >>> [mean_temp(warming, d) for d in (19, 25, 29)], [mean_temp(flat, d) for d in (19, 25, 29)]
    ([6.1, 11.0, 15.2], [6.1, 11.0, 11.2])
    """

    stations: int = 200
    days: int = 40
    training_days: int = 14
    drift_day: int = 20
    warming_per_day: float = 1.0
    # The day the warming stops (the temperature stays where it got to); None: it never stops.
    plateau_day: int | None = None
    label_delay: float = 3600.0
    seed: int = 3

    def _warm_days(self, absolute_day: int) -> int:
        """Days of warming behind ``absolute_day`` (negative before the drift)."""
        if self.plateau_day is not None:
            absolute_day = min(absolute_day, self.plateau_day)
        return absolute_day - self.drift_day

    def _day(self, day: int, rng: np.random.Generator, production: bool) -> dict[str, np.ndarray]:
        n = self.stations * 24
        hour = np.repeat(np.arange(24), self.stations)
        ts = START_TS + day * DAY + hour * 3600.0 + rng.uniform(0, 3599, n)
        offset = self.training_days if production else 0
        absolute_day = day + offset
        warm = max(0, self._warm_days(absolute_day)) * self.warming_per_day if production else 0.0
        temp = 6.0 + warm + 4.0 * np.sin((hour - 9) / 24 * 2 * np.pi) + rng.normal(0, 3.0, n)
        atemp = temp + rng.normal(-1.0, 1.0, n)
        humidity = np.clip(rng.normal(0.6, 0.15, n), 0, 1)
        windspeed = np.abs(rng.normal(12, 5, n))
        peak = np.exp(-((hour - 8) ** 2) / 4) + np.exp(-((hour - 17) ** 2) / 4)
        weekday = (absolute_day + 2) % 7
        weather_idx = rng.choice(4, size=n, p=[0.6, 0.25, 0.12, 0.03])
        demand = 20 + 8.0 * np.clip(temp, -5, 35) + 120 * peak - 15 * weather_idx - 20 * humidity
        demand = np.maximum(0, demand + rng.normal(0, 12, n))
        # The model never saw more than ~15 °C: like a tree ensemble, it flattens beyond its data.
        predicted = 20 + 8.0 * np.clip(temp, -5, 15) + 118 * peak - 14 * weather_idx - 18 * humidity
        predicted = np.maximum(0, predicted + rng.normal(0, 4, n))
        return {
            "ts": ts,
            "temp": temp,
            "atemp": atemp,
            "humidity": humidity,
            "windspeed": windspeed,
            "hour": hour.astype(float),
            "weekday": np.full(n, weekday),
            "weather": weather_idx,
            "demand": demand,
            "predicted": predicted,
            "day": np.full(n, absolute_day),
        }

    def _events(self, production: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rng = np.random.default_rng(self.seed + (1 if production else 0))
        days = self.days - self.training_days if production else self.training_days
        events: list[dict[str, Any]] = []
        labels: list[dict[str, Any]] = []
        for day in range(days):
            d = self._day(day, rng, production)
            order = np.argsort(d["ts"])
            season = SEASONS[0] if d["day"][0] < 60 else SEASONS[1]
            for i in order:
                eid = f"bikes-{'p' if production else 't'}-{day}-{i}"
                ts = float(d["ts"][i]) + (self.training_days * DAY if production else 0.0)
                events.append(
                    {
                        "event_id": eid,
                        "model_id": "bikes",
                        "model_version": "2025.01",
                        "ts": round(ts, 3),
                        "features": {
                            "temp": round(float(d["temp"][i]), 2),
                            "atemp": round(float(d["atemp"][i]), 2),
                            "humidity": round(float(d["humidity"][i]), 3),
                            "windspeed": round(float(d["windspeed"][i]), 2),
                            "hour": float(d["hour"][i]),
                            "season": season,
                            "weekday": str(int(d["weekday"][i])),
                            "weather": WEATHER[int(d["weather"][i])],
                            "holiday": False,
                        },
                        "prediction": round(float(d["predicted"][i]), 2),
                        "segment": {"station_type": "downtown" if i % 3 == 0 else "residential"},
                    }
                )
                labels.append(
                    {
                        "event_id": eid,
                        "model_id": "bikes",
                        "ts": round(ts + self.label_delay, 3),
                        "label": round(float(d["demand"][i]), 2),
                    }
                )
        return events, labels

    def training(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The cold fortnight the model was trained on (prediction events and their labels)."""
        return self._events(production=False)

    def production(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Production days after training; drift (warming) starts on ``drift_day``."""
        return self._events(production=True)

    @property
    def drift_ts(self) -> float:
        """Event time at which the warming starts."""
        return START_TS + self.drift_day * DAY


def churn_events(
    n: int, seed: int = 7, start_ts: float = START_TS, span: float = 26 * DAY, label_delay: float = 6 * 3600.0
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A stationary binary-classification stream (the control model): (prediction, label) pairs.

    Its feature names are those of the ``churn`` model in ``demo.yaml`` and ``examples/config.yaml``.

    >>> e, lab = next(churn_events(1))
    >>> e["model_id"], sorted(e["prediction"]), lab["label"] in (0, 1)
    ('churn', ['label', 'score'], True)
    """
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(start_ts, start_ts + span, n))
    tenure = rng.gamma(2.0, 12.0, n)
    charges = rng.normal(70, 20, n)
    calls = rng.poisson(1.0, n)
    contract = rng.choice(CONTRACTS, size=n, p=[0.55, 0.25, 0.2])
    payment = rng.choice(PAYMENTS, size=n, p=[0.4, 0.3, 0.3])
    internet = rng.choice(INTERNET, size=n, p=[0.45, 0.4, 0.15])
    channel = rng.choice(CHANNELS, size=n, p=[0.6, 0.3, 0.1])
    logit = -1.0 - 0.05 * tenure + 0.02 * (charges - 70) + 0.4 * calls + 0.8 * (contract == CONTRACTS[0])
    p = 1 / (1 + np.exp(-logit))
    y = rng.uniform(size=n) < p
    score = np.clip(p + rng.normal(0, 0.05, n), 0.001, 0.999)
    for i in range(n):
        eid = f"churn-{seed}-{i}"
        yield (
            {
                "event_id": eid,
                "model_id": "churn",
                "model_version": "7",
                "ts": round(float(ts[i]), 3),
                "features": {
                    "tenure_months": round(float(tenure[i]), 2),
                    "monthly_charges": round(float(charges[i]), 2),
                    "total_charges": round(float(charges[i] * tenure[i]), 2),
                    "support_calls": int(calls[i]),
                    "contract": str(contract[i]),
                    "payment_method": str(payment[i]),
                    "internet_service": str(internet[i]),
                },
                "prediction": {"score": round(float(score[i]), 4), "label": "1" if score[i] >= 0.5 else "0"},
                "segment": {"channel": str(channel[i])},
            },
            {
                "event_id": eid,
                "model_id": "churn",
                "ts": round(float(ts[i]) + label_delay, 3),
                "label": int(y[i]),
            },
        )


@dataclass(frozen=True)
class SyntheticStream:
    """A fast, vectorised stream of raw prediction and label messages with an optional known drift.

    A binary model on ``n_numeric`` standard-normal features ``x0…`` and two categorical features
    ``c0`` (``a``/``b``/``c``) and ``c1`` (``u``/``v``/``w``/``z``). ``x0``, ``x1`` and ``c0`` drive the
    true outcome and the model's score (``sigmoid`` of the same logit), so the model is well
    calibrated until the drift. From event ``drift_at`` on: ``mean_shift`` moves features by that many
    standard deviations (``{"x0": 1.0}``), ``c0_probs`` changes ``c0``'s frequencies, and
    ``concept_drift`` weakens the link between ``x0`` and the outcome (the score does not know: AUC
    decays, the inputs do not move). A ``label_fraction`` of the events get a label ``label_delay``
    seconds later. Events arrive ``rate`` per second of event time from ``start_ts``.

    >>> s = SyntheticStream(n=1000, drift_at=500, mean_shift={"x0": 1.0}, seed=1)
    >>> preds, labels = s.raw()
    >>> len(preds), len(labels), preds[0][:40]
    (1000, 80, b'{"event_id":"synth-1-0","model_id":"synt')
    """

    n: int = 100_000
    model_id: str = "synth"
    n_numeric: int = 10
    rate: float = 100.0
    label_fraction: float = 0.1
    label_delay: float = 600.0
    drift_at: int | None = None
    mean_shift: tuple[tuple[str, float], ...] | dict[str, float] = ()
    c0_probs: tuple[float, float, float] | None = None
    concept_drift: float = 0.0
    seed: int = 0
    start_ts: float = START_TS

    C0 = ("a", "b", "c")
    C1 = ("u", "v", "w", "z")

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f"x{j}" for j in range(self.n_numeric))

    def ts_of(self, index: int) -> float:
        """Event time of event ``index`` (the arrival grid is regular with small jitter)."""
        return self.start_ts + index / self.rate

    def columns(self) -> dict[str, np.ndarray]:
        """All columns as arrays: ``ts``, ``x``  (n_numeric, n), ``c0``, ``c1`` (codes), ``score``, ``y``."""
        rng = np.random.default_rng(self.seed)
        n = self.n
        ts = self.start_ts + (np.arange(n) + rng.uniform(0, 0.5, n)) / self.rate
        x = rng.standard_normal((self.n_numeric, n))
        c0 = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        c1 = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
        after = np.zeros(n, dtype=bool)
        if self.drift_at is not None:
            after[self.drift_at :] = True
            for name, shift in dict(self.mean_shift).items():
                x[int(name[1:]), after] += shift
            if self.c0_probs is not None:
                c0[after] = rng.choice(3, size=int(after.sum()), p=list(self.c0_probs))
        model_logit = -0.5 + 1.2 * x[0] + 0.8 * x[1] + 0.6 * (c0 == 0)
        true_logit = model_logit - self.concept_drift * after * 1.2 * x[0]
        score = 1.0 / (1.0 + np.exp(-model_logit))
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(np.int64)
        return {"ts": ts, "x": x, "c0": c0, "c1": c1, "score": score, "y": y}

    def raw(self) -> tuple[list[bytes], list[bytes]]:
        """Prediction messages in event-time order, and label messages (event-time order) as bytes."""
        cols = self.columns()
        feats = ",".join(f'"{f}":%.4f' for f in self.numeric_names)
        template = (
            '{"event_id":"%s","model_id":"' + self.model_id + '","model_version":"1","ts":%.3f,'
            '"features":{' + feats + ',"c0":"%s","c1":"%s"},"prediction":{"score":%.5f}}'
        )
        ids = [f"{self.model_id}-{self.seed}-{i}" for i in range(self.n)]
        c0 = np.array(self.C0)[cols["c0"]].tolist()
        c1 = np.array(self.C1)[cols["c1"]].tolist()
        rows = zip(ids, cols["ts"].tolist(), *cols["x"].tolist(), c0, c1, cols["score"].tolist(), strict=True)
        predictions = [(template % row).encode() for row in rows]
        rng = np.random.default_rng(self.seed + 1)
        chosen = np.flatnonzero(rng.uniform(size=self.n) < self.label_fraction)
        label_ts = cols["ts"][chosen] + self.label_delay
        y = cols["y"][chosen].tolist()
        labels = [
            b'{"event_id":"%s","model_id":"%s","ts":%.3f,"label":%d}'
            % (ids[i].encode(), self.model_id.encode(), t, v)
            for i, t, v in zip(chosen.tolist(), label_ts.tolist(), y, strict=True)
        ]
        return predictions, labels

    def schema_features(self, key: tuple[str, ...] = ("x0", "x1", "c0")) -> tuple[Any, ...]:
        """The matching :class:`~stream_monitor.core.schema.FeatureSpec` tuple."""
        from stream_monitor.core.schema import FeatureSpec

        numeric = tuple(FeatureSpec(f, "numeric", key=f in key) for f in self.numeric_names)
        return numeric + tuple(FeatureSpec(c, "categorical", key=c in key) for c in ("c0", "c1"))
