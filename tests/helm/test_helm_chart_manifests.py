"""The chart renders, with the default and the production values, to manifests that Kubernetes
and the KubeRay / Prometheus operators would accept, wired together consistently."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

BUILTIN_KINDS = {"ConfigMap", "Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"}
CUSTOM_KINDS = {"RayService", "ServiceMonitor", "PodMonitor"}
SECRET_ENV = {
    "INCTRL_S3_ACCESS_KEY",
    "INCTRL_S3_SECRET_KEY",
    "INCTRL_KAFKA_SASL_USERNAME",
    "INCTRL_KAFKA_SASL_PASSWORD",
    "INCTRL_API_TOKENS",
    "INCTRL_SERVE_TOKEN",
}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def pod_templates(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template the release creates, named by where it sits."""
    for deployment in by_kind(manifests, "Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]
    for service in by_kind(manifests, "RayService"):
        cluster = service["spec"]["rayClusterConfig"]
        yield "ray-head", cluster["headGroupSpec"]["template"]
        for group in cluster["workerGroupSpecs"]:
            yield f"ray-worker/{group['groupName']}", group["template"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    matched = all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "only In expressions are evaluated here"
        matched = matched and labels.get(expression["key"]) in expression["values"]
    return matched


@pytest.fixture(scope="module")
def manifests(render: Callable, values_case: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    _, values = values_case
    return render(values)


def test_chart_lints_without_warnings(chart_dir, values_case: tuple[str, dict[str, Any]]) -> None:
    _, values = values_case
    report = helm_python.lint(str(chart_dir), values, strict=True, namespace="inspection")
    assert report["errors"] == []
    # Severity 1 is Helm's INFO ("icon is recommended"); warnings and errors are above it.
    assert [message for message in report["messages"] if message["severity"] > 1] == []


def test_release_renders_every_expected_resource(
    manifests: list[dict[str, Any]], values_case: tuple[str, dict[str, Any]]
) -> None:
    kinds = {manifest["kind"] for manifest in manifests}
    expected = BUILTIN_KINDS | {"RayService"}
    if values_case[0] == "prod":
        expected |= {"ServiceMonitor", "PodMonitor"}
    assert kinds == expected
    names = [(manifest["kind"], manifest["metadata"]["name"]) for manifest in manifests]
    assert len(names) == len(set(names)), "two resources of one kind share a name"


@pytest.mark.parametrize("kube_version", ["1.29.0", kubernetes_validate.latest_version()])
def test_builtin_resources_match_kubernetes_schemas(
    manifests: list[dict[str, Any]], kube_version: str
) -> None:
    for manifest in manifests:
        if manifest["kind"] in BUILTIN_KINDS:
            kubernetes_validate.validate(manifest, kube_version, strict=True)


def test_custom_resources_match_operator_schemas(
    manifests: list[dict[str, Any]], custom_resource_validator: Callable
) -> None:
    custom = [manifest for manifest in manifests if manifest["kind"] in CUSTOM_KINDS]
    assert custom, "no custom resource rendered"
    for manifest in custom:
        custom_resource_validator(manifest)


def test_crd_schema_rejects_a_misplaced_field(
    manifests: list[dict[str, Any]], custom_resource_validator: Callable
) -> None:
    """The hand-written RayService schema is strict: a field in the wrong place fails."""
    service = yaml.safe_load(yaml.safe_dump(by_kind(manifests, "RayService")[0]))
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplica"] = 1
    with pytest.raises(jsonschema.ValidationError, match="minReplica"):
        custom_resource_validator(service)
    pod = yaml.safe_load(yaml.safe_dump(by_kind(manifests, "RayService")[0]))
    pod["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "x"
    with pytest.raises(jsonschema.ValidationError, match="imagePolicy"):
        custom_resource_validator(pod)


def test_ray_cluster_layout(manifests: list[dict[str, Any]], values_case: tuple[str, dict[str, Any]], default_values) -> None:
    cluster = by_kind(manifests, "RayService")[0]["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = (values_case[1].get("ray") or default_values["ray"])["workerGroups"]
    assert [group["groupName"] for group in cluster["workerGroupSpecs"]] == [g["name"] for g in groups]
    for rendered, wanted in zip(cluster["workerGroupSpecs"], groups):
        assert rendered["minReplicas"] <= rendered["replicas"] <= rendered["maxReplicas"]
        limits = rendered["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == wanted["gpus"]
        tolerations = rendered["template"]["spec"].get("tolerations", [])
        assert any(toleration["key"] == "nvidia.com/gpu" for toleration in tolerations)


def test_pods_run_unprivileged_with_read_only_root(manifests: list[dict[str, Any]]) -> None:
    for where, template in pod_templates(manifests):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        tmp_volumes = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, f"{where}: /tmp is not a writable emptyDir"
            assert container["livenessProbe"] and container["readinessProbe"], where
            assert container["resources"]["limits"] and container["resources"]["requests"], where
            probe_ports = {
                probe["httpGet"]["port"] for probe in (container["livenessProbe"], container["readinessProbe"])
            }
            assert probe_ports <= {port["name"] for port in container["ports"]}, where


def test_credentials_come_only_from_secret_references(manifests: list[dict[str, Any]]) -> None:
    assert by_kind(manifests, "Secret") == []
    config = by_kind(manifests, "ConfigMap")[0]["data"]
    assert not SECRET_ENV & set(config)
    for where, template in pod_templates(manifests):
        for container in template["spec"]["containers"]:
            assert container["envFrom"] == [{"configMapRef": {"name": by_kind(manifests, "ConfigMap")[0]["metadata"]["name"]}}]
            for variable in container.get("env", []):
                assert "value" not in variable, f"{where}: {variable['name']} has a literal value"
                if variable["name"] in SECRET_ENV:
                    assert set(variable["valueFrom"]) == {"secretKeyRef"}, where
            names = {variable["name"] for variable in container.get("env", [])}
            assert {"INCTRL_S3_ACCESS_KEY", "INCTRL_S3_SECRET_KEY"} <= names, where


def test_sasl_credentials_reach_only_the_consumer(prod_values, render: Callable) -> None:
    manifests = render(prod_values)
    sasl_secret = prod_values["kafka"]["sasl"]["existingSecret"]
    for where, template in pod_templates(manifests):
        env = {variable["name"]: variable for variable in template["spec"]["containers"][0].get("env", [])}
        if where.endswith("-consumer"):
            assert env["INCTRL_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == sasl_secret
        else:
            assert "INCTRL_KAFKA_SASL_PASSWORD" not in env, where


def test_rendered_environment_is_what_service_settings_reads(
    manifests: list[dict[str, Any]], values_case: tuple[str, dict[str, Any]], default_values: dict[str, Any]
) -> None:
    """Every INCTRL_* name the chart sets is a ServiceSettings or ServingSettings field, and the consumer's
    environment, with its Secrets filled in, loads as ServiceSettings and gives Kafka clients the chart's
    security settings."""
    settings_module = pytest.importorskip("services.settings")
    serving_module = pytest.importorskip("services.serving.settings")
    fields = {f"INCTRL_{name.upper()}" for name in settings_module.ServiceSettings.model_fields}
    serving_fields = {f"INCTRL_{name.upper()}" for name in serving_module.ServingSettings.model_fields}
    config = by_kind(manifests, "ConfigMap")[0]["data"]
    (consumer,) = by_kind(manifests, "Deployment")
    container = consumer["spec"]["template"]["spec"]["containers"][0]
    env_names = set(config) | {variable["name"] for variable in container["env"]}
    assert env_names <= fields | serving_fields, f"names no settings model reads: {env_names - fields - serving_fields}"
    assert {"INCTRL_BANK_CACHE_SIZE", "INCTRL_BANK_RECHECK_S"} <= set(config)
    serving_module.ServingSettings.model_validate(
        {name.removeprefix("INCTRL_").lower(): config[name] for name in serving_fields & set(config)}
    )
    environment = dict(config) | {name: "from-a-secret" for name in env_names & SECRET_ENV}
    loaded = settings_module.ServiceSettings.model_validate(
        {name.removeprefix("INCTRL_").lower(): value for name, value in environment.items() if name in fields}
    )
    kafka = {**default_values["kafka"], **values_case[1].get("kafka", {})}
    consumer_values = {**default_values["consumer"], **values_case[1].get("consumer", {})}
    assert loaded.frames_topics == kafka["framesTopics"]
    assert loaded.dead_letter_topic == kafka["deadLetterTopic"]
    assert loaded.s3_secret_key.get_secret_value() == "from-a-secret"
    assert loaded.metrics_port == consumer_values["metricsPort"] and loaded.serve_url.startswith("http://")
    kafka_options = loaded.kafka_client_options()
    assert kafka_options["security_protocol"] == kafka["securityProtocol"]
    if kafka["securityProtocol"].startswith("SASL_"):
        assert kafka_options["sasl_mechanism"] == kafka["sasl"]["mechanism"]
        assert kafka_options["sasl_plain_password"] == "from-a-secret"


def test_disruption_budgets_and_monitors_select_rendered_pods(render: Callable, prod_values) -> None:
    manifests = render(prod_values)
    templates = dict(pod_templates(manifests))
    for budget in by_kind(manifests, "PodDisruptionBudget"):
        matched = [where for where, template in templates.items() if selects(budget["spec"]["selector"], template["metadata"]["labels"])]
        assert matched, f"PodDisruptionBudget {budget['metadata']['name']} selects no pod"
    service = by_kind(manifests, "Service")[0]
    consumer = by_kind(manifests, "Deployment")[0]["spec"]["template"]
    assert selects({"matchLabels": service["spec"]["selector"]}, consumer["metadata"]["labels"])
    monitor = by_kind(manifests, "ServiceMonitor")[0]
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= service_ports
    pod_monitor = by_kind(manifests, "PodMonitor")[0]
    ray_pods = [where for where, template in templates.items() if selects(pod_monitor["spec"]["selector"], template["metadata"]["labels"])]
    assert sorted(ray_pods) == sorted(where for where in templates if where.startswith("ray-"))
    for where in ray_pods:
        ports = {port["name"] for port in templates[where]["spec"]["containers"][0]["ports"]}
        assert "metrics" in ports, where


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"serve": {"domains": {"Capsule_1": {"replicas": 1}}}}, "Capsule_1"),
        ({"serve": {"domains": {"capsule": {"replica": 1}}}}, "replica"),
        ({"serve": {"nnBackend": "annoy"}}, "nnBackend"),
        ({"s3": {"existingSecret": ""}}, "existingSecret"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "kafka.sasl.existingSecret is required"),
        ({"settings": {"LOG_LEVEL": "DEBUG"}}, "LOG_LEVEL"),
        ({"ray": {"workerGroups": [{"name": "gpu", "replicas": 1, "minReplicas": 3, "maxReplicas": 2}]}}, "minReplicas (3) exceeds maxReplicas (2)"),
    ],
)
def test_bad_values_fail_naming_the_value(render: Callable, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)
