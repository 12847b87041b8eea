"""Settings of the inspection index and its drift watch, read from INCTRL_INDEX_* environment variables."""
from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class IndexSettings(BaseSettings):
    """Every field maps to INCTRL_INDEX_<FIELD_NAME>. Kafka, topics and S3 come from ServiceSettings.

    The database URL may carry a password: in Kubernetes it comes from a Secret (helm: index.database).
    """

    model_config = SettingsConfigDict(env_prefix="INCTRL_INDEX_", extra="ignore", frozen=True)

    database_url: str = Field(
        "sqlite:///inctrl-index.sqlite3",
        description="SQLAlchemy URL: sqlite:///FILE (embedded default) or postgresql+psycopg://USER:PASS@HOST:PORT/DB.",
    )
    consumer_group: str = Field("inctrl-indexers", description="Kafka consumer group of the indexers.")
    max_poll_records: int = Field(256, gt=0, description="Most events written in one database transaction.")
    poll_timeout_ms: int = Field(500, gt=0, description="How long one poll waits for events.")
    alerts_topic: str = Field("inspection-alerts", description="Topic receiving DriftAlert events.")
    metrics_port: int = Field(9101, ge=0, le=65535, description="Port of /healthz, /readyz and /metrics (0 picks one).")
    drift_window: int = Field(200, gt=0, description="Sliding window: the most recent scores per (domain, line).")
    drift_min_window: int = Field(
        50, gt=0, description="Fewer scores than this in the window: status 'insufficient', no alert."
    )
    drift_bins: int = Field(10, ge=2, le=100, description="PSI bins: quantiles of the calibration scores.")
    drift_level: float = Field(0.25, gt=0, description="PSI at or above this (with KS p <= drift_alpha) raises a drift alert.")
    drift_clear_level: float = Field(
        0.1, ge=0, description="PSI must fall below this before a new crossing can alert again (hysteresis)."
    )
    drift_alpha: float = Field(
        0.01, gt=0, lt=1, description="KS p-value at or below this (with PSI >= drift_level) raises a drift alert."
    )
    drift_clear_alpha: float = Field(
        0.05, gt=0, lt=1, description="Drift clears when PSI < drift_clear_level or the KS p-value exceeds this."
    )
    drift_min_reference: int = Field(
        2, ge=2, description="A domain with fewer calibration scores than this is not watched for drift."
    )
    drift_max_lines: int = Field(
        100, gt=0, description="Most lines per domain the watch follows (bounds the gauges' label sets)."
    )
    drift_line_active_s: float = Field(
        86400.0, gt=0, description="Lines with no frame captured for this long are no longer watched (their gauges go)."
    )
    drift_watch: bool = Field(
        True, description="Run the drift watch in this indexer (run it in one replica only: it publishes the alerts)."
    )
    drift_interval_s: float = Field(10.0, gt=0, description="How often the watch re-evaluates every known line.")
    registry_refresh_s: float = Field(60.0, gt=0, description="How often registered domains are re-read.")

    @model_validator(mode="after")
    def _consistent(self) -> IndexSettings:
        if self.drift_clear_level > self.drift_level:
            raise ValueError("drift_clear_level must not exceed drift_level")
        if self.drift_clear_alpha < self.drift_alpha:
            raise ValueError("drift_clear_alpha must not be below drift_alpha")
        if self.drift_min_window > self.drift_window:
            raise ValueError("drift_min_window must not exceed drift_window")
        return self
