# The same tree as proto_pydantic in msgspec Structs (bounds as Meta constraints).
from pathlib import Path
from typing import Annotated, Literal
import msgspec
from msgspec import Meta, Struct
Pos = Annotated[float, Meta(gt=0)]
Frac = Annotated[float, Meta(gt=0, le=1)]
I1 = Annotated[int, Meta(ge=1)]
class B(Struct, forbid_unknown_fields=True, frozen=True): pass
class Topics(B):
    predictions: str = "predictions"; labels: str = "labels"; triggers: str = "retrain-triggers"; dlq: str = "dlq"; state: str = "state"
class Kafka(B):
    bootstrap_servers: str; group_id: str = "g"; topics: Topics = Topics(); common: dict[str, str | int | float | bool] = {}; consumer: dict[str, str | int | float | bool] = {}; producer: dict[str, str | int | float | bool] = {}
    exactly_once: bool = False; batch_size: I1 = 5000; batch_timeout_seconds: Pos | str = .5; checkpoint_interval_seconds: Pos | str = 5.0
    assignment_strategy: Literal["range", "roundrobin", "cooperative-sticky"] = "range"; sync_tick_seconds: Pos | str = 1.0; sync_chunk_offsets: I1 = 5000; sync_max_idle_seconds: Pos | str = 5.0; startup_timeout_seconds: Pos | str = 300.0
class Metrics(B):
    host: str = "127.0.0.1"; port: Annotated[int, Meta(ge=1, le=65535)] = 9108; ready_max_lag: Annotated[int, Meta(ge=0)] = 100000
class Window(B):
    kind: Literal["count", "time"] = "count"; size: I1 = 5000; slide: I1 | None = None; width: Pos | str = 3600.0; slide_seconds: Pos | str | None = None; allowed_lateness: float | str = 60.0
class Detectors(B):
    bins: Annotated[int, Meta(ge=2)] = 10; top_k: I1 = 20; reference_sample: I1 = 5000; window_sample: I1 = 2000
    alpha: Annotated[float, Meta(gt=0, lt=1)] = .01; ks_min_effect: Annotated[float, Meta(ge=0, le=1)] = .1; chi2_min_effect: Annotated[float, Meta(ge=0, le=1)] = .1; psi_epsilon: Pos = 1e-4
    missing_rate_delta: Frac = .1; out_of_range_rate: Frac = .05; new_category_rate: Frac = .05
    volume_ratio_low: Annotated[float, Meta(gt=0, lt=1)] = .5; volume_ratio_high: Annotated[float, Meta(gt=1)] = 2.0; adwin_delta: Annotated[float, Meta(gt=0, lt=1)] = .002
class Policy(B):
    psi_warning: Pos = .1; psi_alarm: Pos = .15; psi_critical: Pos = .3; consecutive_windows: I1 = 2
    hysteresis: Frac = .8; auc_drop: Pos = .015; performance_standard_errors: Pos = 3.0; performance_windows: I1 = 3
    f1_drop_relative: Frac = .05; mae_rise_relative: Pos = .2; prediction_psi_alarm: Pos = .2; cooldown_seconds: float | str = 21600.0
    min_labels_for_performance: Annotated[int, Meta(ge=0)] = 200; integrity_triggers: bool = True; integrity_windows: I1 = 1; key_class: str | None = None
class Incidents(B):
    missing_delta: float = .1; out_of_range_delta: float = .25; new_category_delta: float = .1; volume_low: float = .5; volume_high: float = 2.0; volume_history: int = 7; volume_min_history: int = 3
class Segments(B):
    min_events: int = 200; surge_min_share: float = .05; surge_ratio: float = 3.0; surge_min_events: int = 200; baseline_buckets: int = 7
class Recommend(B):
    recent_buckets: int = 7; min_new_labels: int = 2000; min_buckets: int = 3
class Insights(B):
    bucket: Pos | str = 86400.0; retention: int = 90; dna_metric: Literal["psi", "js"] = "psi"; dna_cut: float | None = None; key_weight: float = 2.0; surge_cooldown_seconds: Pos | str = 21600.0
    incidents: Incidents = Incidents(); segments: Segments = Segments(); recommend: Recommend = Recommend()
class LabelBuffer(B):
    max_entries: int = 1000000; ttl_seconds: Pos | str = 604800.0
class Feature(B):
    type: Literal["numeric", "categorical"]; key: bool = False; importance: Annotated[float, Meta(ge=0)] = 1.0
class Model(B):
    id: str; task: Literal["binary", "multiclass", "regression"]; features: dict[str, Feature | str]; version: str | None = None; positive_class: str = "1"; classes: list[str] = []
    key_features: list[str] = []; segment_keys: list[str] = []; max_segments: int = 20
    reference: str | None = None; warmup_events: int = 5000; window: Window = Window(); detectors: Detectors = Detectors(); policy: Policy = Policy()
    performance_window: int = 5000; label_buffer: LabelBuffer = LabelBuffer(); insights: Insights = Insights()
class EventTime(B):
    max_future_seconds: Pos | str = 86400.0; max_ahead_seconds: Pos | str | None = None
class App(B):
    kafka: Kafka; models: list[Model]; metrics: Metrics = Metrics(); event_time: EventTime = EventTime(); max_message_bytes: int = 1000000; max_event_id_length: int = 256
def validate():
    import yaml
    data = yaml.safe_load(open(str(Path(__file__).resolve().parents[2] / "examples" / "config.yaml")))
    for m in data["models"]:
        m.pop("reference", None)
    data["kafka"].pop("common", None)
    return msgspec.convert(data, App)
