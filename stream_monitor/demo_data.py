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


@dataclass(frozen=True)
class BikeStory:
    """The bike-sharing demand model of seed 003, with drift starting on ``drift_day``."""

    stations: int = 200
    days: int = 40
    training_days: int = 14
    drift_day: int = 20
    warming_per_day: float = 1.0
    label_delay: float = 3600.0
    seed: int = 3

    def _day(self, day: int, rng: np.random.Generator, production: bool) -> dict[str, np.ndarray]:
        n = self.stations * 24
        hour = np.repeat(np.arange(24), self.stations)
        ts = START_TS + day * DAY + hour * 3600.0 + rng.uniform(0, 3599, n)
        offset = self.training_days if production else 0
        absolute_day = day + offset
        warm = max(0, absolute_day - self.drift_day) * self.warming_per_day if production else 0.0
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

    >>> e, lab = next(churn_events(1))
    >>> e["model_id"], sorted(e["prediction"]), lab["label"] in (0, 1)
    ('churn', ['label', 'score'], True)
    """
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(start_ts, start_ts + span, n))
    tenure = rng.gamma(2.0, 12.0, n)
    charges = rng.normal(70, 20, n)
    tickets = rng.poisson(1.0, n)
    plan = rng.choice(["basic", "plus", "pro"], size=n, p=[0.5, 0.35, 0.15])
    logit = -1.0 - 0.05 * tenure + 0.02 * (charges - 70) + 0.4 * tickets
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
                    "tenure": round(float(tenure[i]), 2),
                    "charges": round(float(charges[i]), 2),
                    "tickets": int(tickets[i]),
                    "plan": str(plan[i]),
                },
                "prediction": {"score": round(float(score[i]), 4), "label": "1" if score[i] >= 0.5 else "0"},
            },
            {
                "event_id": eid,
                "model_id": "churn",
                "ts": round(float(ts[i]) + label_delay, 3),
                "label": int(y[i]),
            },
        )
