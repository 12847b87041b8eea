"""Settings of the operator console, read from INCTRL_CONSOLE_* environment variables.

The console also reads ServiceSettings (S3 endpoint and keys, results and frames buckets, the registry
prefix, the checkpoint), the index database URL of services/index and the tokens of services/auth, each
from their own variables: one setting, one place.
"""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """Every field maps to INCTRL_CONSOLE_<FIELD_NAME>."""

    model_config = SettingsConfigDict(env_prefix="INCTRL_CONSOLE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the console listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the console listens on (0 picks a free one).")
    labelled_prefix: str = Field(
        "s3://inctrl-models/labelled/",
        pattern=r"^s3://",
        description="Where reviewed frames become labelled examples ({domain}/good|defect|masks|notes/).",
    )
    page_size: int = Field(60, ge=1, le=1000, description="Most frames one page of the frame list shows.")
    histogram_frames: int = Field(
        2000, ge=1, description="A domain's histogram covers its most recent frames, at most this many."
    )
    histogram_bins: int = Field(20, ge=2, le=200, description="Equal bins over [0, 1] of the score histogram.")
    cookie_secure: bool = Field(
        False, description="Mark the inctrl_token cookie Secure (set when the console is served over HTTPS)."
    )
    thumbnail_max_age_s: int = Field(
        300, ge=0, description="Browser cache lifetime of proxied images (result objects never change for a key)."
    )
