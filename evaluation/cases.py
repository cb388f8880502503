"""The evaluation cases: a data set, the model trained on its early slice, and the monitor's config.

Each case is what a data scientist would set up: train a scikit-learn model on the first period,
write its training rows (with the model's predictions and the labels) as the reference file, and
monitor the rest with the product's default thresholds and event-time windows sized for the data.
The ``scenario`` says what the case is meant to cover; whether the data really show it is decided by
:mod:`evaluation.truth`, and the report prints both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from evaluation import datasets
from evaluation.datasets import Stream

Task = Literal["binary", "regression"]
Scenario = Literal["control", "performance decay", "data drift, model holds", "drift grows later"]


@dataclass(frozen=True)
class Case:
    name: str  # the model id too
    scenario: Scenario
    load: Callable[[], Stream]
    task: Task
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    train_from: str  # rows from here (inclusive) ...
    train_until: str  # ... to here (exclusive) train the model; later rows are replayed
    window: str  # event-time window width, as written in the config ("91d")
    window_why: str  # the config comment: why this width
    label_delay: pd.Timedelta
    label_ttl: str  # how long a prediction waits for its label (covers the delay)
    performance_window: int  # labelled events in the rolling performance metrics
    model_summary: str
    key_features: tuple[str, ...] = ()  # none: every feature counts as key (the product's default)

    @property
    def features(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)

    @property
    def window_seconds(self) -> float:
        return parse_duration(self.window)

    def make_model(self) -> Pipeline:
        """The model: a linear model on scaled numeric features (median-imputed) and one-hot categories."""
        transformers: list[tuple[str, Pipeline | OneHotEncoder, list[str]]] = [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), list(self.numeric))
        ]
        if self.categorical:
            transformers.append(
                ("categorical", OneHotEncoder(handle_unknown="ignore"), list(self.categorical))
            )
        estimator = LogisticRegression(max_iter=1000) if self.task == "binary" else LinearRegression()
        return Pipeline([("features", ColumnTransformer(transformers)), ("model", estimator)])


def parse_duration(text: str) -> float:
    """Seconds of a duration written as the config writes it: ``"91d"``, ``"6h"``, ``"30m"``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
    return float(text[:-1]) * units[text[-1]]


CASES: tuple[Case, ...] = (
    Case(
        name="german_health",
        scenario="control",
        load=datasets.german_health_panel,
        task="binary",
        # Demographics only: household income is nominal and rises with inflation (see the next case).
        numeric=("age", "educ", "female", "married", "kids", "outwork"),
        categorical=(),
        train_from="1984-01-01",
        train_until="1985-01-01",
        window="30d",
        window_why="monthly windows: some 320–370 interviews each, enough for stable histograms",
        label_delay=pd.Timedelta(days=90),
        label_ttl="120d",
        performance_window=1000,
        model_summary="logistic regression: visited a doctor (docvis > 0) from age, education, sex, "
        "marriage, children and work status",
    ),
    Case(
        name="german_health_income",
        scenario="data drift, model holds",
        load=datasets.german_health_panel,
        task="binary",
        numeric=("age", "educ", "hhninc", "female", "married", "kids", "outwork"),
        categorical=(),
        train_from="1984-01-01",
        train_until="1985-01-01",
        window="30d",
        window_why="monthly windows: some 320–370 interviews each, enough for stable histograms",
        label_delay=pd.Timedelta(days=90),
        label_ttl="120d",
        performance_window=1000,
        model_summary="logistic regression: visited a doctor (docvis > 0) from the control's features "
        "and household income (nominal marks)",
    ),
    Case(
        name="seattle_weather",
        scenario="performance decay",
        load=datasets.seattle_weather,
        task="binary",
        numeric=("precipitation", "temp_max", "temp_min", "wind"),
        categorical=("rained_yesterday",),
        train_from="2012-01-01",
        train_until="2013-01-01",
        window="91d",
        window_why="quarterly windows: about 90 days each (a month of daily rows is too few events)",
        label_delay=pd.Timedelta(days=1),
        label_ttl="7d",
        performance_window=200,
        model_summary="logistic regression: is the day's weather class `rain`",
    ),
    Case(
        name="gss_vocabulary",
        scenario="data drift, model holds",
        load=datasets.gss_vocabulary,
        task="regression",
        numeric=("education",),
        categorical=("sex",),
        train_from="1974-01-01",
        train_until="1977-01-01",
        window="365d",
        window_why="yearly windows: the survey runs once a year (some years skipped)",
        label_delay=pd.Timedelta(days=30),
        label_ttl="60d",
        performance_window=1000,
        model_summary="linear regression: vocabulary score (0–10) from education and sex",
    ),
    Case(
        name="mauna_loa_co2",
        scenario="drift grows later",
        load=datasets.mauna_loa_co2,
        task="regression",
        numeric=("co2", "week_of_year"),
        categorical=(),
        train_from="1958-01-01",
        train_until="1961-01-01",
        window="365d",
        window_why="yearly windows: CO2 has a yearly cycle that a shorter window would mistake for drift",
        label_delay=pd.Timedelta(days=7),
        label_ttl="14d",
        performance_window=200,
        model_summary="linear regression: next week's CO2 from this week's CO2 and the week of the year",
        key_features=("co2",),
    ),
    Case(
        name="bundesliga",
        scenario="data drift, model holds",
        load=datasets.bundesliga,
        task="binary",
        numeric=("home_prev_ppg", "away_prev_ppg", "round"),
        categorical=(),
        train_from="1964-07-01",
        train_until="1969-07-01",
        window="365d",
        window_why="yearly windows: about one season (306 matches) each; a season's rounds follow a "
        "schedule that a shorter window would mistake for drift",
        label_delay=pd.Timedelta(hours=2),
        label_ttl="1d",
        performance_window=600,
        model_summary="logistic regression: home win from both teams' previous-season points per game "
        "and the round",
    ),
    Case(
        name="trump_approval",
        scenario="performance decay",
        load=datasets.trump_approval,
        task="regression",
        numeric=("gallup", "ipsos", "morning_consult", "rasmussen", "you_gov"),
        categorical=(),
        train_from="2017-03-01",
        train_until="2017-09-01",
        window="91d",
        window_why="quarterly windows: about 90 daily rows each",
        label_delay=pd.Timedelta(days=1),
        label_ttl="7d",
        performance_window=200,
        model_summary="linear regression: FiveThirtyEight's average from the five pollsters' latest ratings",
    ),
)


def case_named(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no evaluation case {name!r}; known: {', '.join(c.name for c in CASES)}")
