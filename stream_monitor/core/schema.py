"""What a configured model looks like to the pure core: its features, task and segment keys.

The configuration loader (``config.py``) builds these from YAML; the core never reads files.

>>> s = ModelSchema(
...     model_id="bikes",
...     task="regression",
...     features=(FeatureSpec("temp", "numeric", key=True), FeatureSpec("season", "categorical")),
... )
>>> s.numeric_names, s.categorical_names, s.key_features
(('temp',), ('season',), ('temp',))

A classifier's classes are the labels it accepts. A binary model has two: ``positive_class`` and
the other one, ``"0"`` and ``"1"`` unless ``classes`` names them; a multiclass model's labels are
checked only when ``classes`` lists them.

>>> ModelSchema("churn", "binary", (), positive_class="yes", classes=("no", "yes")).negative_class
'no'
>>> ModelSchema("churn", "binary", ()).label_classes, ModelSchema("topic", "multiclass", ()).label_classes
(('0', '1'), ())
>>> ModelSchema("churn", "binary", (), positive_class="yes")
Traceback (most recent call last):
...
ValueError: binary model 'churn': positive_class 'yes' is not one of its classes ('0', '1')
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
    #: Class labels (classification only); empty: binary ``("0", "1")``, multiclass unchecked.
    classes: tuple[str, ...] = ()
    #: Binary: a score at or above it is a positive decision where an event names no predicted class
    #: (the live F1/accuracy and the reference baseline alike: core/quality.py binary_decisions).
    decision_threshold: float = 0.5
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({f.name: i for i, f in enumerate(self.features)})
        problem = self._classes_problem()
        if problem is not None:
            raise ValueError(f"{self.task} model {self.model_id!r}: {problem}")

    def _classes_problem(self) -> str | None:
        classes = self.classes
        if len(set(classes)) != len(classes):
            return f"classes {classes!r} repeat a class"
        if self.task == "regression":
            return None if not classes else "a regression model has no classes"
        if self.task == "multiclass":
            return None if len(classes) != 1 else "a multiclass model needs at least two classes"
        if classes and len(classes) != 2:
            return f"a binary model has exactly two classes, got {classes!r}"
        if self.positive_class not in self.label_classes:
            return f"positive_class {self.positive_class!r} is not one of its classes {self.label_classes!r}"
        return None

    @property
    def label_classes(self) -> tuple[str, ...]:
        """The labels the model accepts: its ``classes``, or ``("0", "1")`` for a binary model without."""
        if self.task == "binary" and not self.classes:
            return ("0", "1")
        return self.classes

    @property
    def negative_class(self) -> str | None:
        """A binary model's other class (label value 0.0); ``None`` for other tasks."""
        if self.task != "binary":
            return None
        first, second = self.label_classes
        return second if first == self.positive_class else first

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
