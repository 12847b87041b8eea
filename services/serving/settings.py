"""Settings of the Serve replicas that are not part of the deployment shape (INCTRL_* environment)."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Bank cache behaviour and the Serve application name, from INCTRL_<FIELD> variables."""

    model_config = SettingsConfigDict(env_prefix="INCTRL_", extra="ignore", frozen=True)

    serve_app_name: str = Field("inctrl", description="Ray Serve application name the consumer and CLI look up.")
    bank_cache_size: int = Field(64, ge=1, description="Domains whose banks (and FAISS indexes) a replica keeps.")
    bank_recheck_s: float = Field(
        30.0, ge=0.0, description="How often a cached domain's current.json is re-read to pick up new references."
    )
    inspect_timeout_s: float = Field(120.0, gt=0, description="Longest wait of the consumer for one batch's outcomes.")
    max_aspect_ratio: float = Field(
        64.0, ge=1.0, description="Frames with a longer side / shorter side above this are rejected before resizing."
    )
    max_upload_bytes: int = Field(
        64 * 1024 * 1024,
        gt=0,
        description="Largest HTTP request body of the ingress; larger ones get 413 before the body is read.",
    )
    max_batch_frames: int = Field(
        256, ge=1, description="Most images (multipart parts) one POST /v1/inspect/batch may carry."
    )
    retry_after_s: int = Field(
        2, ge=1, description="Retry-After of the ingress's 503 answers (overload, replica lost, timeout)."
    )
    max_references: int = Field(64, ge=1, description="Most reference images (K) one domain version may hold.")
