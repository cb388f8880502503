# A rough stand-in for config.py's typed tree in pydantic v2: same number of models and fields,
# bounds as Field(gt=..., le=...), one validator for durations.
from pathlib import Path
from typing import Annotated, Literal
from pydantic import BaseModel, ConfigDict, Field, BeforeValidator
import re
_D = re.compile(r"^\s*([0-9.]+)\s*(ms|s|m|h|d|w)?\s*$")
U = {"ms": .001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
def dur(v):
    if isinstance(v, str):
        m = _D.match(v); return float(m.group(1)) * U[(m.group(2) or "s")]
    return v
Dur = Annotated[float, BeforeValidator(dur), Field(gt=0)]
class B(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
class Topics(B):
    predictions: str = "predictions"; labels: str = "labels"; triggers: str = "retrain-triggers"; dlq: str = "dlq"; state: str = "state"
class Kafka(B):
    bootstrap_servers: str; group_id: str = "g"; topics: Topics = Topics(); common: dict[str, str | int | float | bool] = {}; consumer: dict[str, str | int | float | bool] = {}; producer: dict[str, str | int | float | bool] = {}
    exactly_once: bool = False; batch_size: int = Field(5000, ge=1); batch_timeout_seconds: Dur = .5; checkpoint_interval_seconds: Dur = 5.0
    assignment_strategy: Literal["range", "roundrobin", "cooperative-sticky"] = "range"; sync_tick_seconds: Dur = 1.0; sync_chunk_offsets: int = Field(5000, ge=1); sync_max_idle_seconds: Dur = 5.0; startup_timeout_seconds: Dur = 300.0
class Metrics(B):
    host: str = "127.0.0.1"; port: int = Field(9108, ge=1, le=65535); ready_max_lag: int = Field(100000, ge=0)
class Window(B):
    kind: Literal["count", "time"] = "count"; size: int = Field(5000, ge=1); slide: int | None = None; width: Dur = 3600.0; slide_seconds: Dur | None = None; allowed_lateness: Annotated[float, BeforeValidator(dur), Field(ge=0)] = 60.0
class Detectors(B):
    bins: int = Field(10, ge=2); top_k: int = Field(20, ge=1); reference_sample: int = Field(5000, ge=1); window_sample: int = Field(2000, ge=1)
    alpha: float = Field(.01, gt=0, lt=1); ks_min_effect: float = Field(.1, ge=0, le=1); chi2_min_effect: float = Field(.1, ge=0, le=1); psi_epsilon: float = Field(1e-4, gt=0)
    missing_rate_delta: float = Field(.1, gt=0, le=1); out_of_range_rate: float = Field(.05, gt=0, le=1); new_category_rate: float = Field(.05, gt=0, le=1)
    volume_ratio_low: float = Field(.5, gt=0, lt=1); volume_ratio_high: float = Field(2.0, gt=1); adwin_delta: float = Field(.002, gt=0, lt=1)
class Policy(B):
    psi_warning: float = Field(.1, gt=0); psi_alarm: float = Field(.15, gt=0); psi_critical: float = Field(.3, gt=0); consecutive_windows: int = Field(2, ge=1)
    hysteresis: float = Field(.8, gt=0, le=1); auc_drop: float = Field(.015, gt=0); performance_standard_errors: float = Field(3.0, gt=0); performance_windows: int = Field(3, ge=1)
    f1_drop_relative: float = Field(.05, gt=0, le=1); mae_rise_relative: float = Field(.2, gt=0); prediction_psi_alarm: float = Field(.2, gt=0); cooldown_seconds: Annotated[float, BeforeValidator(dur), Field(ge=0)] = 21600.0
    min_labels_for_performance: int = Field(200, ge=0); integrity_triggers: bool = True; integrity_windows: int = Field(1, ge=1); key_class: str | None = None
class Incidents(B):
    missing_delta: float = .1; out_of_range_delta: float = .25; new_category_delta: float = .1; volume_low: float = .5; volume_high: float = 2.0; volume_history: int = 7; volume_min_history: int = 3
class Segments(B):
    min_events: int = 200; surge_min_share: float = .05; surge_ratio: float = 3.0; surge_min_events: int = 200; baseline_buckets: int = 7
class Recommend(B):
    recent_buckets: int = 7; min_new_labels: int = 2000; min_buckets: int = 3
class Insights(B):
    bucket: Dur = 86400.0; retention: int = 90; dna_metric: Literal["psi", "js"] = "psi"; dna_cut: float | None = None; key_weight: float = 2.0; surge_cooldown_seconds: Dur = 21600.0
    incidents: Incidents = Incidents(); segments: Segments = Segments(); recommend: Recommend = Recommend()
class LabelBuffer(B):
    max_entries: int = 1000000; ttl_seconds: Dur = 604800.0
class Feature(B):
    type: Literal["numeric", "categorical"]; key: bool = False; importance: float = Field(1.0, ge=0)
class Model(B):
    id: str; task: Literal["binary", "multiclass", "regression"]; version: str | None = None; positive_class: str = "1"; classes: list[str] = []
    features: dict[str, Feature | Literal["numeric", "categorical"]]; key_features: list[str] = []; segment_keys: list[str] = []; max_segments: int = 20
    reference: str | None = None; warmup_events: int = 5000; window: Window = Window(); detectors: Detectors = Detectors(); policy: Policy = Policy()
    performance_window: int = 5000; label_buffer: LabelBuffer = LabelBuffer(); insights: Insights = Insights()
class EventTime(B):
    max_future_seconds: Dur = 86400.0; max_ahead_seconds: Dur | None = None
class App(B):
    kafka: Kafka; metrics: Metrics = Metrics(); models: list[Model]; event_time: EventTime = EventTime(); max_message_bytes: int = 1000000; max_event_id_length: int = 256
def validate():
    import yaml
    data = yaml.safe_load(open(str(Path(__file__).resolve().parents[2] / "examples" / "config.yaml")))
    for m in data["models"]:
        m.pop("reference", None)
    data["kafka"].pop("common", None)
    return App.model_validate(data)
