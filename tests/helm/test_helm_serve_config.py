"""The serveConfigV2 the chart renders is a valid Ray Serve config whose application args
validate as DeploymentConfig and carry exactly what the values asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from services.serving.deployment_config import DeploymentConfig, deployment_config_from_serve_config


def serve_config(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [manifest for manifest in manifests if manifest["kind"] == "RayService"]
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def rendered_config(render: Callable, values: dict[str, Any]) -> DeploymentConfig:
    return deployment_config_from_serve_config(serve_config(render(values)), "inctrl")


def test_serve_application_points_at_the_app_builder(
    render: Callable, values_case: tuple[str, dict[str, Any]]
) -> None:
    document = serve_config(render(values_case[1]))
    (application,) = document["applications"]
    assert application["import_path"] == "services.serving.app:build_app"
    assert application["route_prefix"] == "/"
    assert document["http_options"] == {"host": "0.0.0.0", "port": 8000}


def test_default_values_give_one_shared_gpu_pool(render: Callable, default_values: dict[str, Any]) -> None:
    config = rendered_config(render, {})
    serve = default_values["serve"]
    assert config.checkpoint_uri == serve["checkpointUri"]
    assert config.registry_prefix == serve["registryPrefix"]
    assert config.nn_backend == serve["nnBackend"]
    assert config.domains == {}
    assert config.detector_timeout_s == serve["detectorTimeoutS"]
    assert config.serve_options() == {
        "pool": {
            "name": "pool",
            "max_ongoing_requests": serve["pool"]["maxOngoingRequests"],
            "max_queued_requests": serve["pool"]["maxQueuedRequests"],
            "ray_actor_options": {"num_cpus": serve["pool"]["numCpus"], "num_gpus": serve["pool"]["numGpus"]},
            "num_replicas": serve["pool"]["replicas"],
        }
    }


def test_prod_domains_carry_their_replicas_batches_and_thresholds(
    render: Callable, prod_values: dict[str, Any]
) -> None:
    config = rendered_config(render, prod_values)
    serve = prod_values["serve"]
    assert set(config.domains) == set(serve["domains"])
    for name, wanted in serve["domains"].items():
        deployment = config.domains[name]
        assert config.threshold_for(name) == wanted["threshold"]
        assert deployment.ray_actor_options.num_gpus == wanted["numGpus"]
        assert deployment.max_ongoing_requests == wanted["maxOngoingRequests"]
        if wanted.get("autoscaling", {}).get("enabled"):
            assert deployment.autoscaling is not None and deployment.num_replicas is None
            assert deployment.autoscaling.min_replicas == wanted["autoscaling"]["minReplicas"]
            assert deployment.autoscaling.max_replicas == wanted["autoscaling"]["maxReplicas"]
        else:
            assert deployment.num_replicas == wanted["replicas"] and deployment.autoscaling is None
        wanted_batch = wanted.get("batch", serve["batch"])
        assert config.batch_for(name).max_batch_size == wanted_batch["maxBatchSize"]
        assert config.batch_for(name).batch_wait_timeout_s == wanted_batch["batchWaitTimeoutS"]
    for domain, threshold in serve["pool"]["thresholds"].items():
        assert config.threshold_for(domain) == threshold
        assert config.deployment_name(domain) == "pool"
    assert config.threshold_for("a-domain-nobody-configured") is None  # the registry's calibrated threshold
    assert config.references_revision == serve["referencesRevision"]


def test_prod_gpu_workers_can_hold_every_replica_at_full_scale(
    render: Callable, prod_values: dict[str, Any]
) -> None:
    config = rendered_config(render, prod_values)
    demand = 0.0
    for options in config.serve_options().values():
        replicas = options["autoscaling_config"]["max_replicas"] if "autoscaling_config" in options else options["num_replicas"]
        demand += replicas * options["ray_actor_options"]["num_gpus"]
    supply = sum(group["maxReplicas"] * group.get("gpus", 0) for group in prod_values["ray"]["workerGroups"])
    assert 0 < demand <= supply


def test_serve_config_changes_follow_values(render: Callable) -> None:
    """Rolling out a checkpoint or references is a values change that reaches the Serve args."""
    config = rendered_config(
        render,
        {"serve": {"checkpointUri": "s3://models/inctrl/v3", "referencesRevision": "r42", "nnBackend": "torch"}},
    )
    assert (config.checkpoint_uri, config.references_revision, config.nn_backend) == (
        "s3://models/inctrl/v3",
        "r42",
        "torch",
    )


@pytest.mark.parametrize("domain_values", [{"replicas": 1, "numGpus": 1, "threshold": 0.8}, {"numGpus": 0.25}])
def test_domain_defaults_come_from_deployment_config(render: Callable, domain_values: dict[str, Any]) -> None:
    """Keys a domain leaves out are not rendered, so DeploymentConfig's defaults apply."""
    config = rendered_config(render, {"serve": {"domains": {"line-7": domain_values}}})
    deployment = config.domains["line-7"]
    assert deployment.ray_actor_options.num_gpus == domain_values["numGpus"]
    assert deployment.num_replicas == domain_values.get("replicas")
    assert config.threshold_for("line-7") == domain_values.get("threshold")
    assert config.batch_for("line-7") == config.batch


def test_back_pressure_and_the_detector_timeout_reach_the_app(render: Callable) -> None:
    config = rendered_config(
        render, {"serve": {"detectorTimeoutS": 5, "pool": {"maxQueuedRequests": 8}, "domains": {"capsule": {"maxQueuedRequests": -1}}}}
    )
    assert config.detector_timeout_s == 5
    options = config.serve_options()
    assert options["pool"]["max_queued_requests"] == 8 and options["domain-capsule"]["max_queued_requests"] == -1
