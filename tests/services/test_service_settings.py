"""ServiceSettings: environment parsing, required secrets, documented defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.settings import ServiceSettings


@pytest.fixture
def s3_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCTRL_S3_ACCESS_KEY", "access-from-env")
    monkeypatch.setenv("INCTRL_S3_SECRET_KEY", "secret-from-env")


def test_s3_keys_are_required_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INCTRL_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("INCTRL_S3_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError) as error:
        ServiceSettings()
    assert {"s3_access_key", "s3_secret_key"} <= {item["loc"][0] for item in error.value.errors()}


def test_secrets_are_hidden_in_repr(s3_keys: None) -> None:
    settings = ServiceSettings()
    assert settings.s3_secret_key.get_secret_value() == "secret-from-env"
    assert "secret-from-env" not in repr(settings)


def test_defaults_follow_the_design(s3_keys: None) -> None:
    settings = ServiceSettings()
    assert (settings.session_timeout_ms, settings.heartbeat_interval_ms) == (6000, 1000)
    assert settings.max_message_bytes == 1_000_000
    assert all(field.description for field in ServiceSettings.model_fields.values())


def test_environment_overrides_and_comma_separated_topics(s3_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCTRL_FRAMES_TOPICS", "frames-line1, frames-line2")
    monkeypatch.setenv("INCTRL_MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("INCTRL_S3_SECURE", "true")
    settings = ServiceSettings()
    assert settings.frames_topics == ["frames-line1", "frames-line2"]
    assert settings.max_in_flight == 7
    assert settings.s3_secure is True


def test_invalid_values_name_the_field(s3_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INCTRL_MAX_POLL_RECORDS", "0")
    with pytest.raises(ValidationError, match="max_poll_records"):
        ServiceSettings()
    monkeypatch.delenv("INCTRL_MAX_POLL_RECORDS")
    monkeypatch.setenv("INCTRL_FRAMES_TOPICS", " , ")
    with pytest.raises(ValidationError, match="frames_topics"):
        ServiceSettings()


def test_to_environment_round_trips(s3_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings(frames_topics=["a", "b"], s3_secure=True, max_in_flight=9, s3_region="eu-west-1")
    environment = settings.to_environment()
    assert environment["INCTRL_FRAMES_TOPICS"] == "a,b"
    assert environment["INCTRL_S3_SECRET_KEY"] == "secret-from-env"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert ServiceSettings() == settings


def test_dead_letters_must_fit_the_broker_limit() -> None:
    with pytest.raises(ValidationError, match="above max_message_bytes=100000"):
        ServiceSettings(s3_access_key="k", s3_secret_key="s", max_message_bytes=100_000)
    assert ServiceSettings(s3_access_key="k", s3_secret_key="s", max_message_bytes=100_000, dead_letter_payload_max_bytes=50_000)


def test_image_uri_prefixes_default_to_the_frames_bucket_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings(s3_access_key="k", s3_secret_key="s").allowed_image_prefixes() == ["s3://inctrl-frames/"]
    monkeypatch.setenv("INCTRL_IMAGE_URI_PREFIXES", "s3://cams/line-1/, s3://cams/line-2/")
    assert ServiceSettings(s3_access_key="k", s3_secret_key="s").allowed_image_prefixes() == ["s3://cams/line-1/", "s3://cams/line-2/"]
    with pytest.raises(ValidationError, match="must be s3://bucket"):
        ServiceSettings(s3_access_key="k", s3_secret_key="s", image_uri_prefixes=["/etc/"])
