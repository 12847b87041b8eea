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
