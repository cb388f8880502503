"""What a configured model looks like to the pure core: its features, task and segment keys.

The configuration loader (``config.py``) builds these from YAML; the core never reads files.

>>> s = ModelSchema(
...     model_id="bikes",
...     task="regression",
...     features=(FeatureSpec("temp", "numeric", key=True), FeatureSpec("season", "categorical")),
... )
>>> s.numeric_names, s.categorical_names, s.key_features
(('temp',), ('season',), ('temp',))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FeatureKind = Literal["numeric", "categorical"]
Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: its name, whether numeric or categorical, and whether it is a key feature."""

    name: str
    kind: FeatureKind
    key: bool = False
    importance: float = 1.0


@dataclass(frozen=True)
class ModelSchema:
    """The fixed shape of one model's events; metric labels come only from here."""

    model_id: str
    task: Task
    features: tuple[FeatureSpec, ...]
    positive_class: str = "1"
    segment_keys: tuple[str, ...] = ()
    max_segments: int = 20
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: i for i, f in enumerate(self.features)})

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == "numeric")

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == "categorical")

    @property
    def key_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.key)

    def feature(self, name: str) -> FeatureSpec | None:
        i = self._index.get(name)
        return None if i is None else self.features[i]
