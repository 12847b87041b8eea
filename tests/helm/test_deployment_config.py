"""DeploymentConfig: the Serve application args, their defaults, fallbacks and error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.serving.deployment_config import (
    DeploymentConfigError,
    deployment_config_from_args,
    deployment_config_from_serve_config,
)

BASE: dict[str, Any] = {"checkpoint_uri": "s3://models/inctrl/v2", "registry_prefix": "s3://registry/domains"}


def with_base(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


def test_minimal_args_give_a_single_replica_pool() -> None:
    config = deployment_config_from_args(BASE)
    assert config.nn_backend == "faiss" and config.backbone == "ViT-B-16-plus-240"
    assert config.serve_options()["pool"]["num_replicas"] == 1
    assert config.deployment_name("anything") == "pool"


def test_hot_domain_gets_its_own_autoscaled_deployment() -> None:
    config = deployment_config_from_args(
        with_base(
            batch={"max_batch_size": 8, "batch_wait_timeout_s": 0.02},
            domains={
                "capsule": {
                    "autoscaling": {"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 16},
                    "ray_actor_options": {"num_gpus": 1, "num_cpus": 2},
                    "batch": {"max_batch_size": 32},
                    "threshold": 0.7,
                }
            },
        )
    )
    options = config.serve_options()["domain-capsule"]
    assert options["autoscaling_config"]["max_replicas"] == 5
    assert options["ray_actor_options"] == {"num_cpus": 2.0, "num_gpus": 1.0}
    assert "num_replicas" not in options
    assert config.batch_for("capsule").max_batch_size == 32
    assert config.batch_for("pcb").max_batch_size == 8
    assert config.threshold_for("capsule") == 0.7 and config.threshold_for("pcb") is None  # pcb: the registry's


def test_config_round_trips_through_its_json_dump() -> None:
    config = deployment_config_from_args(with_base(domains={"pcb": {"num_replicas": 2}}))
    assert deployment_config_from_args(config.model_dump(mode="json")) == config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (with_base(domains={"pcb": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}), "domains.pcb.autoscaling"),
        (with_base(domains={"pcb": {"num_replicas": 1, "autoscaling": {"max_replicas": 2}}}), "not both"),
        (with_base(domains={"PCB line": {}}), "'PCB line'"),
        (with_base(domains={"pcb": {"threshold": 1.5}}), "[0, 1]"),
        (with_base(domains={"pcb": {}}, pool={"thresholds": {"pcb": 0.4}}), "['pcb']"),
        (with_base(pool={"max_ongoing_requests": 4}), "max_ongoing_requests (4) is below max_batch_size (16)"),
        (with_base(nn_backend="annoy"), "nn_backend"),
        (with_base(registry_prefix="/local/registry"), "registry_prefix"),
        (with_base(checkpoint_uri="https://example.com/ckpt"), "checkpoint_uri"),
        (with_base(batch={"max_batch_size": 0}), "batch.max_batch_size"),
        (with_base(max_batch=8), "max_batch"),
        ({"registry_prefix": "s3://registry/domains"}, "checkpoint_uri"),
    ],
)
def test_invalid_args_raise_naming_the_field(args: dict[str, Any], message: str) -> None:
    with pytest.raises(DeploymentConfigError) as error:
        deployment_config_from_args(args)
    assert message in str(error.value)


def test_non_mapping_args_are_rejected() -> None:
    with pytest.raises(DeploymentConfigError, match="must be a mapping"):
        deployment_config_from_args(["checkpoint_uri"])  # type: ignore[arg-type]


def test_serve_config_lookup_by_application_name() -> None:
    document = "applications:\n- name: other\n  args: {}\n- name: inctrl\n  args:\n    checkpoint_uri: /ckpt\n    registry_prefix: s3://reg/x\n"
    assert deployment_config_from_serve_config(document, "inctrl").checkpoint_uri == "/ckpt"
    with pytest.raises(DeploymentConfigError, match=r"no application 'missing'; it has \['other', 'inctrl'\]"):
        deployment_config_from_serve_config(document, "missing")
    with pytest.raises(DeploymentConfigError, match="no 'applications' list"):
        deployment_config_from_serve_config("proxy_location: EveryNode\n", "inctrl")


def test_example_serve_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "serve_config.example.yaml"
    config = deployment_config_from_serve_config(example.read_text(), "inctrl")
    assert set(config.serve_options()) == {"pool"} | {f"domain-{name}" for name in config.domains}
    assert all(options["ray_actor_options"]["num_gpus"] == 0 for options in config.serve_options().values())
