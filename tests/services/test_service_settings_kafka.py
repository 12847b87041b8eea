"""ServiceSettings: Kafka security options shared by every client, serve URL and consumer port from the environment."""
from __future__ import annotations

import os

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from pydantic import ValidationError

from services.settings import ServiceSettings

KEYS = {"INCTRL_S3_ACCESS_KEY": "access", "INCTRL_S3_SECRET_KEY": "secret"}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only the S3 keys set, whatever INCTRL_* variables the test process inherited."""
    for name in [name for name in os.environ if name.upper().startswith("INCTRL_")]:
        monkeypatch.delenv(name)
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_plaintext_by_default_with_only_the_bootstrap_and_protocol(environment: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings()
    assert settings.kafka_client_options() == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}
    assert settings.serve_url is None and settings.metrics_port == 9100


def test_sasl_ssl_from_the_environment_reaches_the_client_options(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("INCTRL_KAFKA_BOOTSTRAP", "kafka-0:9093,kafka-1:9093")
    environment.setenv("INCTRL_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    environment.setenv("INCTRL_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    environment.setenv("INCTRL_KAFKA_SASL_USERNAME", "inspector")
    environment.setenv("INCTRL_KAFKA_SASL_PASSWORD", "s3cr3t")
    environment.setenv("INCTRL_KAFKA_SSL_CAFILE", "/etc/kafka/ca.pem")
    settings = ServiceSettings()
    assert "s3cr3t" not in repr(settings)
    options = settings.kafka_client_options()
    assert options == {
        "bootstrap_servers": "kafka-0:9093,kafka-1:9093",
        "security_protocol": "SASL_SSL",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "inspector",
        "sasl_plain_password": "s3cr3t",
    }
    # Every key is a configuration name all three kafka-python clients accept (a typo would be silently dropped).
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client.__name__
    assert settings.to_environment()["INCTRL_KAFKA_SASL_PASSWORD"] == "s3cr3t"


def test_sasl_without_credentials_loads_but_names_what_a_kafka_client_misses(environment: pytest.MonkeyPatch) -> None:
    # Serve replicas get the chart's protocol without the Kafka Secret: loading must still work for them.
    environment.setenv("INCTRL_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    environment.setenv("INCTRL_KAFKA_SASL_MECHANISM", "PLAIN")
    settings = ServiceSettings()
    with pytest.raises(ValueError, match="SASL_PLAINTEXT needs INCTRL_KAFKA_SASL_USERNAME, INCTRL_KAFKA_SASL_PASSWORD"):
        settings.kafka_client_options()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INCTRL_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("INCTRL_KAFKA_SASL_MECHANISM", "GSSAPI"),
        ("INCTRL_SERVE_URL", "inctrl-serve-svc:8000"),
        ("INCTRL_METRICS_PORT", "70000"),
        ("INCTRL_CONSUMER_STALL_S", "0"),
    ],
)
def test_bad_values_are_refused_naming_the_field(environment: pytest.MonkeyPatch, name: str, value: str) -> None:
    environment.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("INCTRL_").lower()):
        ServiceSettings()


def test_serve_url_and_metrics_port_from_the_chart_environment(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("INCTRL_SERVE_URL", "http://inctrl-serve-svc.factory.svc:8000/")
    environment.setenv("INCTRL_METRICS_PORT", "9100")
    settings = ServiceSettings()
    assert settings.serve_url == "http://inctrl-serve-svc.factory.svc:8000/" and settings.metrics_port == 9100
