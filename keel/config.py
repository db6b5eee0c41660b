"""Typed configuration: `params.yaml` parsed once into frozen pydantic models.

Nothing dataset-specific lives in code: the target, the task type, the entity key, the time
semantics, the feature columns and the split policy all come from here. Unknown keys are
errors, so a typo in `params.yaml` fails loudly instead of being ignored.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keel.expressions import referenced_columns

__all__ = [
    "ApiConfig",
    "ConfigError",
    "DataConfig",
    "EngineConfig",
    "EntityKeyConfig",
    "EvaluateConfig",
    "FeaturizeConfig",
    "GateConfig",
    "HistoryConfig",
    "IngestConfig",
    "MonitorConfig",
    "Params",
    "ReplayConfig",
    "ReplayTargets",
    "RetrainConfig",
    "ScoreConfig",
    "ServeConfig",
    "SplitConfig",
    "TrainConfig",
    "ValidateConfig",
    "load_params",
]


class ConfigError(ValueError):
    """`params.yaml` is missing, malformed or inconsistent."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EntityKeyConfig(_Frozen):
    """How each record gets a stable identity.

    `column`: an existing id column. `content_hash`: a hash of the row's source values plus the
    occurrence number among identical rows (for data such as the hotel bookings, which has no id
    and holds identical but distinct records). `row_number`: the position in the source.
    """

    method: Literal["column", "content_hash", "row_number"] = "content_hash"
    column: str | None = None
    name: str = "entity_key"

    @model_validator(mode="after")
    def _column_given(self) -> EntityKeyConfig:
        if self.method == "column" and not self.column:
            raise ValueError("entity_key.method 'column' needs entity_key.column")
        return self


class DataConfig(_Frozen):
    """What the table means: target, task, identity and time semantics."""

    task: Literal["binary", "regression"]
    target: str
    entity_key: EntityKeyConfig = Field(default_factory=EntityKeyConfig)
    derived: dict[str, str] = Field(
        default_factory=dict,
        description="Named expressions of source columns, e.g. dates built from parts.",
    )
    event_time: str | None = Field(None, description="When a record is made (and scored).")
    label_time: str | None = Field(None, description="When a record's label becomes known.")
    split_time: str | None = Field(
        None, description="The time a time-based split orders by (defaults to event_time)."
    )
    slice_by: list[str] = Field(default_factory=list, description="Columns to report metrics by.")

    @property
    def order_time(self) -> str | None:
        """The column the time split orders by."""
        return self.split_time or self.event_time


def _inside_project(value: str) -> str:
    """A relative path may not climb out of the project folder; an absolute one is explicit."""
    if not Path(value).is_absolute() and Path(os.path.normpath(value)).parts[:1] == ("..",):
        raise ValueError(
            f"'{value}' points outside the project folder: paths in params.yaml are relative "
            "to it and may not climb out with '..' (write an absolute path to read a file "
            "elsewhere on purpose)"
        )
    return value


class IngestConfig(_Frozen):
    """Where the immutable source lives (CSV, CSV.gz or parquet), relative to the project."""

    source: str

    _source_inside = field_validator("source")(_inside_project)


class ValidateConfig(_Frozen):
    """The Great Expectations suite the raw data must pass."""

    suite: str
    max_examples: int = Field(5, ge=1, le=100)

    _suite_inside = field_validator("suite")(_inside_project)


class SplitConfig(_Frozen):
    """Split policy.

    `time`: train on records ordered before `cutoff` whose label is known by `cutoff`, validate
    on the tail of the training period (from `validation_start`), hold out `cutoff..holdout_end`.
    `random`: seeded fractions, for data without any time column.
    """

    method: Literal["time", "random"]
    cutoff: dt.date | None = None
    holdout_end: dt.date | None = None
    validation_start: dt.date | None = None
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    validation_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42
    holdout_labels_known: bool = Field(
        False,
        description="Hold out only records whose label is known by holdout_end (retraining).",
    )
    reference_end: dt.date | None = Field(
        None,
        description=(
            "Last day whose records (their features, never labels) the drift reference may "
            "describe; default: the day before cutoff. A retraining sets it to its as_of."
        ),
    )
    no_holdout: bool = Field(
        False,
        description=(
            "No holdout (time split only): the refit after a passed gate learns every label "
            "known by cutoff, its gate window included; its metrics are the gated candidate's."
        ),
    )

    @model_validator(mode="after")
    def _dates_consistent(self) -> SplitConfig:
        if self.method == "time":
            if not (self.cutoff and self.holdout_end and self.validation_start):
                raise ValueError(
                    "split.method 'time' needs cutoff, holdout_end and validation_start"
                )
            if not self.validation_start < self.cutoff <= self.holdout_end:
                raise ValueError(
                    "split dates must satisfy validation_start < cutoff <= holdout_end"
                )
        elif self.no_holdout:
            raise ValueError("split.no_holdout needs split.method 'time'")
        return self


class HistoryConfig(_Frozen):
    """Outcome-history features per key column (see `keel.history`).

    For every key column, the count of earlier records with the same value whose outcome was
    known in the trailing `window_days` before the record is scored, and their outcome rate,
    smoothed toward the window's overall rate with `prior` pseudo-records. Needs
    `data.event_time` and `data.label_time`; only outcomes known before count.
    """

    columns: list[str] = Field(default_factory=list)
    window_days: float | None = Field(365, gt=0, le=36500)
    prior: float = Field(20, gt=0)


class FeaturizeConfig(_Frozen):
    """Which columns become features, which never may, and how the data is split."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    derived: dict[str, str] = Field(
        default_factory=dict, description="Extra numeric features as expressions of columns."
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Columns that leak the label or change after the event; never features.",
    )
    min_category_count: int = Field(1, ge=1)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    split: SplitConfig

    @property
    def history_names(self) -> list[str]:
        """The history features, rate and count per key."""
        return [f"hist_{kind}_{key}" for key in self.history.columns for kind in ("rate", "n")]

    @property
    def feature_names(self) -> list[str]:
        """All model inputs in a fixed order."""
        return [*self.numeric, *self.categorical, *self.derived, *self.history_names]


class TrainConfig(_Frozen):
    """XGBoost training: device, seed, rounds, early stopping, recency weighting."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    nthread: int = Field(0, ge=0, description="0: all cores.")
    num_boost_round: int = Field(2000, ge=1)
    early_stopping_rounds: int = Field(100, ge=1)
    refit_full: bool = Field(
        True, description="Refit on train+validation with the early-stopped round count."
    )
    recency_half_life_days: float | None = Field(
        None, gt=0, description="Weight rows by 0.5 ** (age / half-life); None: equal weights."
    )
    xgboost: dict[str, Any] = Field(default_factory=dict)


class EvaluateConfig(_Frozen):
    """Holdout evaluation settings."""

    threshold: float = Field(0.5, gt=0, lt=1)
    calibration_bins: int = Field(10, ge=2, le=100)


HIGHER_IS_BETTER = frozenset({"roc_auc", "pr_auc", "accuracy", "precision", "recall", "r2"})
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "rmse", "mae"})


class GateConfig(_Frozen):
    """The promotion policy: when a candidate may replace the champion.

    Both are scored on the same recent labelled window. The candidate must beat the champion's
    `primary_metric` by at least `min_improvement`, no slice (e.g. hotel) may get worse by more
    than `max_slice_drop`, and `calibration_metric` may not get worse by more than
    `max_calibration_worsening`. With `require_approval` a passing candidate waits as
    `challenger` until a person runs `keel models approve`.
    """

    model_name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    primary_metric: str = "roc_auc"
    min_improvement: float = Field(0.0, ge=0)
    max_slice_drop: float = Field(0.02, ge=0)
    calibration_metric: str | None = "brier"
    max_calibration_worsening: float = Field(0.005, ge=0)
    require_approval: bool = False

    @model_validator(mode="after")
    def _known_metrics(self) -> GateConfig:
        known = HIGHER_IS_BETTER | LOWER_IS_BETTER
        for metric in (self.primary_metric, self.calibration_metric):
            if metric is not None and metric not in known:
                raise ValueError(f"unknown metric '{metric}'; known: {sorted(known)}")
        return self


class ScoreConfig(_Frozen):
    """Batch scoring: which records, what to do with invalid ones, chunking, reason codes.

    A batch as of T holds the records whose event time falls in (T - period_days, T] and whose
    label is not yet known at T. With `include_resolved`, it holds every record made in the
    period, each scored with what was known when it was made (its outcome history as of its
    own event time): a batch that stands in for scoring each record the moment it was made.
    """

    period_days: float = Field(7, gt=0)
    include_resolved: bool = Field(
        False,
        description=(
            "Also score records whose label became known within the period, each with what was "
            "known when it was made (a replay stepping a week at a time standing in for "
            "continuous scoring). Off for live scoring: a known outcome needs no prediction."
        ),
    )
    invalid_rows: Literal["quarantine", "reject"] = "quarantine"
    chunk_rows: int = Field(50_000, ge=100)
    reason_codes: int = Field(3, ge=0, le=20)
    reason_method: Literal["shap", "approx"] = Field(
        "shap",
        description="Exact TreeSHAP, or XGBoost's approximate contributions (faster in batches).",
    )


class MonitorConfig(_Frozen):
    """Monitoring windows and the thresholds that emit events."""

    window_days: float = Field(28, gt=0)
    min_rows: int = Field(200, ge=1, description="Fewer labelled rows: no performance verdict.")
    psi_bins: int = Field(10, ge=2, le=100)
    psi_threshold: float = Field(0.25, gt=0)
    ks_threshold: float | None = Field(
        None, gt=0, le=1, description="Also flag numeric features whose KS distance exceeds this."
    )
    chi2_alpha: float | None = Field(
        None, gt=0, lt=1, description="Also flag categories whose chi-squared p-value is below."
    )
    min_roc_auc: float | None = Field(0.8, gt=0, lt=1)
    max_log_loss: float | None = Field(None, gt=0)
    ignore_features: list[str] = Field(
        default_factory=list,
        description=(
            "Features whose drift is expected (e.g. the calendar in a short window); shell "
            "patterns such as hist_* match several."
        ),
    )


class RetrainConfig(_Frozen):
    """Event-driven retraining."""

    cooldown_days: float = Field(
        56, ge=0, description="No second retraining within this many days of logical time."
    )
    trigger_within_seconds: int = Field(
        600, ge=1, description="The automation fires once per this many seconds (storm guard)."
    )
    holdout_days: float = Field(
        28, gt=0, description="Gate window: the newest labelled days before the event's as_of."
    )
    validation_days: float = Field(56, gt=0, description="Early-stopping slice before that.")
    refit: bool = Field(
        False,
        description=(
            "After the gate passes, train the same recipe again on every label known at as_of "
            "(the gate window too) and promote that refit in the candidate's place."
        ),
    )
    events: list[str] = Field(
        default_factory=lambda: ["keel.drift.detected", "keel.performance.degraded"]
    )


class ServeConfig(_Frozen):
    """Cron schedules of `keel serve`."""

    score_cron: str = "0 * * * *"
    outcomes_cron: str = "30 * * * *"
    monitor_cron: str = "0 6 * * *"
    timezone: str = "UTC"


class ApiConfig(_Frozen):
    """`keel api`: the online scoring API and the dashboard.

    API keys never live here: they come from `KEEL_API_KEYS` (comma-separated), are kept only
    as sha256 digests and are compared in constant time.
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes.")
    max_records: int = Field(1000, ge=1, description="Records per request; more is a 413.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Request body size limit; larger is a 413."
    )
    poll_seconds: float = Field(
        1.0, gt=0, le=60, description="How often the champion alias is checked (hot swap)."
    )
    log_predictions: bool = Field(
        True, description="Write served predictions to the prediction store (off the request)."
    )
    log_flush_seconds: float = Field(1.0, gt=0, le=60)
    log_queue_rows: int = Field(
        100_000, ge=1, description="Predictions waiting to be written; beyond, they are dropped."
    )
    require_key: bool = Field(True, description="false: no API key at all (local use only).")
    public_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/readyz", "/metrics"],
        description="Paths served without an API key.",
    )


class EngineConfig(_Frozen):
    """Where the heavy work runs: in this process (`local`) or on a Dask cluster (`dask`).

    With `dask`, training uses `xgboost.dask`, batch scoring runs in Dask dataframe partitions
    of `score.chunk_rows` rows, and the independent tasks of a flow (drift per feature, metrics
    per slice) run on Prefect's `DaskTaskRunner`. `address` is the scheduler
    (`tcp://host:8786`, or `KEEL_DASK_ADDRESS`, which wins); without one, a local cluster of
    `n_workers` processes is started for the run.
    """

    kind: Literal["local", "dask"] = "local"
    address: str | None = None
    n_workers: int = Field(2, ge=1, description="Local cluster only: worker processes.")
    threads_per_worker: int = Field(1, ge=1, description="Local cluster only.")


Strategy = Literal["static", "scheduled", "keel"]
STRATEGIES: tuple[Strategy, ...] = ("static", "scheduled", "keel")


class ReplayTargets(_Frozen):
    """What the replay checks and reports (each figure is printed with whether it holds)."""

    min_mean_auc: float = Field(0.88, description="keel: mean monthly ROC AUC at least this.")
    min_month_auc: float = Field(0.84, description="keel: no month below this.")
    max_retrains: int = Field(8, description="keel: at most this many retrainings.")
    max_gap_to_scheduled: float = Field(
        0.005, description="keel: mean AUC not below scheduled's by more than this."
    )
    static_decay_months: int = Field(2, description="static: its last N months ...")
    static_decay_below: float = Field(0.80, description="... are below this AUC.")


class ReplayConfig(_Frozen):
    """`keel replay`: walk simulated time and compare retraining strategies.

    Each step of `step_days` runs the real flows with `as_of` set to the simulated date:
    outcomes known by then, score the records made in the step, monitor. `static` never
    retrains, `scheduled` retrains every `scheduled_every_steps` steps, and `keel` retrains
    only when the monitor's events start the retrain deployment through its automation.
    """

    start: dt.date | None = None
    end: dt.date | None = None
    step_days: int = Field(7, ge=1)
    strategies: list[Strategy] = Field(default_factory=lambda: list(STRATEGIES))
    scheduled_every_steps: int = Field(4, ge=1)
    score_as_made: bool = Field(
        True,
        description=(
            "Score every record made in a step with what was known when it was made "
            "(score.include_resolved), as continuous production would have; false: only those "
            "still open at the step's end, with what is known then."
        ),
    )
    event_wait_seconds: float = Field(
        120, gt=0, description="How long to wait for the automation to start a retraining."
    )
    reason_method: Literal["shap", "approx"] | None = Field(
        None,
        description=(
            "The reason codes the replay's scoring stores (score.reason_method for the "
            "strategies); null keeps score.reason_method. Scores, and so every figure of the "
            "replay, do not depend on it; exact TreeSHAP costs far more CPU per booking."
        ),
    )
    targets: ReplayTargets = Field(default_factory=ReplayTargets)


class Params(_Frozen):
    """The whole `params.yaml`, grouped by stage."""

    data: DataConfig
    ingest: IngestConfig
    validate_: ValidateConfig = Field(alias="validate")
    featurize: FeaturizeConfig
    train: TrainConfig
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _no_leakage(self) -> Params:
        data, feat = self.data, self.featurize
        leaking = {data.target, *feat.exclude}
        named = set(feat.numeric) | set(feat.categorical)
        if named & leaking:
            raise ValueError(
                f"features {sorted(named & leaking)} are the target or listed in featurize.exclude"
            )

        def reads(columns: set[str], seen: frozenset[str] = frozenset()) -> set[str]:
            # Every column read, following derived data columns to the source, however deep.
            out = set(columns)
            for col in columns & (set(data.derived) - seen):
                out |= reads(referenced_columns(data.derived[col]), seen | {col})
            return out

        features = {n: {n} for n in named} | {
            n: referenced_columns(e) for n, e in feat.derived.items()
        }
        for name, direct in sorted(features.items()):
            bad = sorted(reads(direct) & leaking)
            if bad:
                what = (
                    f"derived feature '{name}' = '{feat.derived[name]}'"
                    if name in feat.derived
                    else f"feature '{name}'"
                )
                raise ValueError(f"{what} reads {bad}, which leak the label")
        history = set(feat.history.columns)
        if history & leaking:
            raise ValueError(
                f"history keys {sorted(history & leaking)} are the target or listed in "
                "featurize.exclude"
            )
        if history and not (data.event_time and data.label_time):
            raise ValueError("featurize.history needs data.event_time and data.label_time")
        times = {data.event_time, data.label_time, data.split_time} & named
        if times:
            raise ValueError(f"time columns {sorted(t for t in times if t)} cannot be raw features")
        if feat.split.method == "time" and not (data.order_time and data.label_time):
            raise ValueError("a time split needs data.event_time (or split_time) and label_time")
        if feat.split.method == "random" and self.train.recency_half_life_days is not None:
            raise ValueError("train.recency_half_life_days needs a time split (featurize.split)")
        dupes = {n for n in feat.feature_names if feat.feature_names.count(n) > 1}
        if dupes:
            raise ValueError(f"features listed twice: {sorted(dupes)}")
        return self


def load_params(path: Path) -> Params:
    """Read and check `params.yaml`.

    Args:
        path: The params file.

    Returns:
        The frozen, validated parameters.

    Raises:
        ConfigError: The file is missing, is not YAML, or breaks a rule; the message names it.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of stage sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  - {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(f"{path} is invalid:\n" + "\n".join(lines)) from None
