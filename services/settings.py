"""Runtime settings of the streaming services, read from INCTRL_* environment variables."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.storage.uri import InvalidS3Uri, S3Uri


# Room a dead letter needs besides its payload: the detail (2,000 characters), the key (512), the other fields.
_DEAD_LETTER_OVERHEAD_BYTES = 16_384


class ServiceSettings(BaseSettings):
    """Everything the consumer, producer, object store and Serve app need to find each other.

    Every field maps to the environment variable INCTRL_<FIELD_NAME> (case-insensitive). The S3 keys
    have no defaults on purpose: they come from the environment or a Kubernetes Secret only.
    """

    model_config = SettingsConfigDict(env_prefix="INCTRL_", extra="ignore", frozen=True)

    kafka_bootstrap: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated host:port list."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How Kafka clients talk to the brokers."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; required with a SASL_* security protocol."
    )
    kafka_sasl_username: SecretStr | None = Field(None, description="SASL username (environment or Secret only).")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (environment or Secret only).")
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle that signed the brokers' certificates; the system CAs when absent."
    )
    frames_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["frames"],
        description="Topics carrying InspectionRequest messages (comma-separated in the environment).",
    )
    results_topic: str = Field("inspection-results", description="Topic receiving InspectionResult events.")
    dead_letter_topic: str = Field("inspection-dead-letters", description="Topic receiving DeadLetter records.")
    consumer_group: str = Field("inctrl-inspectors", description="Kafka consumer group of the frame consumers.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts; earliest so no frame is skipped."
    )
    session_timeout_ms: int = Field(
        6000, gt=0, description="Group session timeout; short so a dead consumer's partitions move quickly."
    )
    heartbeat_interval_ms: int = Field(
        1000, gt=0, description="Group heartbeat interval; must be well below the session timeout."
    )
    max_poll_records: int = Field(32, gt=0, description="Largest micro-batch taken from one poll.")
    max_in_flight: int = Field(
        64, gt=0, description="Most frames polled but not yet committed; caps the micro-batch as well."
    )
    poll_timeout_ms: int = Field(500, gt=0, description="How long one poll waits for records.")
    max_message_bytes: int = Field(
        1_000_000, gt=0, description="Largest accepted frame message (real Kafka's default limit is 1 MB)."
    )
    inline_image_max_bytes: int = Field(
        512_000,
        gt=0,
        description="Producer: images up to this size travel inline (base64); larger ones go to S3 by URI.",
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Decoded images above this pixel count are dead-lettered as image_too_large."
    )
    max_image_side: int = Field(
        16_384,
        gt=0,
        le=65_500,
        description="Images wider or taller than this are dead-lettered as image_too_large (a JPEG overlay side "
        "cannot exceed 65,500).",
    )
    max_decoded_image_bytes: int = Field(
        268_435_456,
        gt=0,
        description="Largest decoded frame (float32 RGB: 12 bytes a pixel); larger ones are dead-lettered as "
        "image_too_large before they are decoded.",
    )
    max_image_object_bytes: int = Field(
        50_000_000,
        gt=0,
        description="Largest image object read by image_uri; its size is checked before it is read.",
    )
    max_in_flight_bytes: int = Field(
        1_073_741_824,
        gt=0,
        description="The consumer polls no more while the frames it holds (messages, fetched files, decoded "
        "pixels) take this many bytes; one micro-batch may go above it.",
    )
    image_uri_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="s3://bucket/prefix locations an image_uri may name (comma-separated in the environment); "
        "empty means the frames bucket. Any other reference is dead-lettered as forbidden_reference.",
    )
    frame_max_attempts: int = Field(
        5,
        ge=1,
        description="Inspections one frame may fail for infrastructure reasons while the service answers "
        "others, before it alone is dead-lettered as retries_exhausted.",
    )
    inspect_retry_initial_backoff_s: float = Field(
        0.5, gt=0, description="First wait before an inspection is tried again; doubles each retry."
    )
    inspect_retry_max_backoff_s: float = Field(
        30.0, gt=0, description="Upper bound of one wait between inspection attempts (also while Serve is down)."
    )
    dead_letter_payload_max_bytes: int = Field(
        256_000,
        gt=0,
        description="A dead letter carries its original message inline up to this size; a larger original is "
        "stored in the dead-letter bucket, referenced by payload_uri, and only its first bytes travel inline.",
    )
    dead_letter_bucket: str | None = Field(
        None, description="Bucket of originals too large for a dead letter (under dead-letters/); the results bucket when unset."
    )
    s3_endpoint: str = Field("127.0.0.1:18333", description="S3 endpoint as host:port (no scheme).")
    s3_secure: bool = Field(False, description="Use HTTPS for S3.")
    s3_region: str | None = Field(None, description="S3 region; None lets the client discover it.")
    s3_access_key: SecretStr = Field(description="S3 access key (environment or Secret only).")
    s3_secret_key: SecretStr = Field(description="S3 secret key (environment or Secret only).")
    results_bucket: str = Field("inctrl-results", description="Bucket for result.json, map.png, overlay.jpg.")
    frames_bucket: str = Field("inctrl-frames", description="Bucket for images too large to send inline.")
    checkpoint_uri: str = Field(
        "s3://inctrl-models/checkpoints/latest", description="Detector checkpoint (s3:// URI or local path)."
    )
    registry_prefix: str = Field(
        "s3://inctrl-models/registry/", description="Where per-domain reference features are kept."
    )
    s3_retry_deadline_s: float = Field(
        120.0, gt=0, description="How long an S3 call keeps retrying through an outage before it raises."
    )
    s3_retry_initial_backoff_s: float = Field(0.2, gt=0, description="First retry delay; doubles each retry.")
    s3_retry_max_backoff_s: float = Field(5.0, gt=0, description="Upper bound of one retry delay.")
    s3_write_concurrency: int = Field(8, gt=0, description="Parallel object writes per micro-batch.")
    overlay_jpeg_quality: int = Field(85, ge=1, le=95, description="JPEG quality of overlay images.")
    store_inputs: bool = Field(
        True,
        description="Keep each frame's image as received (input.png, input.jpg...) next to its result, so "
        "operators can review it and mark it normal (a new reference) from the console.",
    )
    serve_url: str | None = Field(
        None,
        pattern=r"^https?://[^/\s]+",
        description="HTTP base URL of the Serve app; when set, the consumer inspects over HTTP instead of a Ray handle.",
    )
    serve_token: SecretStr | None = Field(
        None,
        description="Bearer token the consumer sends to the Serve app's HTTP ingress (an `inspect` token of "
        "INCTRL_API_TOKENS; from a Secret only).",
    )
    metrics_port: int = Field(
        9100, ge=0, le=65535, description="Consumer port of /healthz, /readyz and /metrics (0 picks a free port)."
    )
    consumer_stall_s: float = Field(
        300.0,
        gt=0,
        description="Liveness fails when the consumer loop has not polled for this long (a stuck batch).",
    )

    @field_validator("frames_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            value = [topic.strip() for topic in value.split(",") if topic.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("frames_topics needs at least one topic")
        return value

    @field_validator("image_uri_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [prefix.strip() for prefix in value.split(",") if prefix.strip()]
        for prefix in value if isinstance(value, list) else []:
            try:
                S3Uri.parse_prefix(prefix)
            except (InvalidS3Uri, AttributeError, TypeError) as error:
                raise ValueError(f"image_uri_prefixes entries must be s3://bucket[/prefix], got {prefix!r}: {error}") from error
        return value

    @model_validator(mode="after")
    def _dead_letters_fit_the_broker(self) -> ServiceSettings:
        # A dead letter carries up to dead_letter_payload_max_bytes as base64 (4/3) plus a bounded detail and key.
        largest = -(-4 * self.dead_letter_payload_max_bytes // 3) + _DEAD_LETTER_OVERHEAD_BYTES
        if largest > self.max_message_bytes:
            raise ValueError(
                f"dead_letter_payload_max_bytes={self.dead_letter_payload_max_bytes} makes dead letters of up to "
                f"{largest} bytes, above max_message_bytes={self.max_message_bytes}"
            )
        return self

    def allowed_image_prefixes(self) -> list[str]:
        """Where an image_uri may point: the configured prefixes, or the whole frames bucket."""
        return self.image_uri_prefixes or [f"s3://{self.frames_bucket}/"]

    def dead_letter_store_bucket(self) -> str:
        """Bucket holding originals too large to travel inside their dead letter."""
        return self.dead_letter_bucket or self.results_bucket

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection keyword arguments shared by every kafka-python client (consumer, producer, admin).

        SASL credentials are checked here rather than at load time: Serve replicas read the same
        settings without the Kafka Secret and never connect to Kafka.
        """
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in {"SSL", "SASL_SSL"} and self.kafka_ssl_cafile is not None:
            options["ssl_cafile"] = self.kafka_ssl_cafile
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [
                f"INCTRL_{name.upper()}"
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"Kafka security protocol {self.kafka_security_protocol} needs {', '.join(missing)}"
                )
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username.get_secret_value()  # type: ignore[union-attr]
            options["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()  # type: ignore[union-attr]
        return options

    def to_environment(self) -> dict[str, str]:
        """These settings as INCTRL_* variables, e.g. to hand to a subprocess or a Ray runtime_env."""
        environment = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            environment[f"INCTRL_{name.upper()}"] = str(value)
        return environment
