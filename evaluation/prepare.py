"""Split a case's data set, train its model on the early slice, and score every row."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from evaluation.cases import Case
from evaluation.datasets import Stream


@dataclass(frozen=True)
class Prepared:
    case: Case
    stream_info: Stream
    train: pd.DataFrame  # the training slice, with the model's (in-sample) predictions
    replay: pd.DataFrame  # the later rows, with the model's predictions
    dropped_rows: int  # rows without an event time (a producer could not send them)


def prepare(case: Case) -> Prepared:
    stream = case.load()
    frame = stream.frame
    timed = frame[frame["ts"].notna()]
    frame = timed[timed["ts"] >= pd.Timestamp(case.train_from)].reset_index(drop=True)
    is_train = frame["ts"] < pd.Timestamp(case.train_until)
    train, replay = frame[is_train].copy(), frame[~is_train].copy()
    model = case.make_model()
    columns = list(case.features)
    model.fit(train[columns], train["target"])

    def score(rows: pd.DataFrame) -> pd.Series:
        if case.task == "binary":
            return pd.Series(model.predict_proba(rows[columns])[:, 1], index=rows.index)
        return pd.Series(model.predict(rows[columns]), index=rows.index)

    train["prediction"] = score(train)
    replay["prediction"] = score(replay)
    return Prepared(
        case=case,
        stream_info=stream,
        train=train.reset_index(drop=True),
        replay=replay.reset_index(drop=True),
        dropped_rows=len(stream.frame) - len(timed),
    )
