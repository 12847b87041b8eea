"""The chart's index Deployment, its settings, the Grafana dashboard ConfigMap and the PrometheusRule:
rendered by Helm, valid against Kubernetes' and the operator's schemas, wired to what the code reads
and exports (every metric a panel or an alert queries is one the services export)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import referencing
from kubernetes_validate.utils import schema_contents

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KUBE_VERSION = "1.29.0"
ENABLED = {
    "index": {"enabled": True},
    "monitoring": {"grafanaDashboard": {"enabled": True, "folder": "Inspection"}, "prometheusRule": {"enabled": True}},
    "metrics": {"serviceMonitor": {"enabled": True}},
}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def named(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (manifest,) = [m for m in by_kind(manifests, kind) if m["metadata"]["name"].endswith(suffix)]
    return manifest


@pytest.fixture(scope="module")
def manifests(render: Callable) -> list[dict[str, Any]]:
    return render(ENABLED)


@pytest.fixture(scope="module")
def operator_validator() -> Callable[[dict[str, Any]], None]:
    definitions = schema_contents(f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict/_definitions.json", KUBE_VERSION)
    registry = referencing.Registry().with_resource(definitions["$id"], referencing.Resource.from_contents(definitions))
    monitors = json.loads((SCHEMA_DIR / "monitors-monitoring-v1.json").read_text())
    registry = registry.with_resource(monitors["$id"], referencing.Resource.from_contents(monitors))
    schemas = {
        "PrometheusRule": json.loads((SCHEMA_DIR / "prometheusrule-monitoring-v1.json").read_text()),
        "ServiceMonitor": {"$ref": monitors["$id"] + "#/$defs/ServiceMonitor"},
    }
    return lambda resource: jsonschema.Draft202012Validator(schemas[resource["kind"]], registry=registry).validate(resource)


def exported_metric_names() -> set[str]:
    """Every series name the services' Prometheus registries can expose (counters as *_total, histograms' parts)."""
    from services.index.metrics import IndexMetrics
    from services.metrics import ConsumerMetrics, InspectionMetrics

    names: set[str] = set()
    for metrics in (IndexMetrics(), ConsumerMetrics(), InspectionMetrics()):
        for family in metrics.registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def queried_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\binctrl_[a-z0-9_]+\b", expression))


def test_off_by_default(render: Callable) -> None:
    names = {(m["kind"], m["metadata"]["name"]) for m in render({})}
    assert not {name for name in names if "index" in name[1] or name[0] == "PrometheusRule" or name[1].endswith("-dashboard")}


def test_new_objects_match_kubernetes_and_operator_schemas(manifests, operator_validator) -> None:
    for kind, suffix in (("Deployment", "-index"), ("Service", "-index"), ("ConfigMap", "-index-settings"), ("ConfigMap", "-dashboard")):
        for version in (KUBE_VERSION, kubernetes_validate.latest_version()):
            kubernetes_validate.validate(named(manifests, kind, suffix), version, strict=True)
    operator_validator(named(manifests, "PrometheusRule", "-alerts"))
    operator_validator(named(manifests, "ServiceMonitor", "-index"))
    broken = json.loads(json.dumps(named(manifests, "PrometheusRule", "-alerts")))
    broken["spec"]["groups"][0]["rules"][0]["fore"] = "5m"
    with pytest.raises(jsonschema.ValidationError, match="fore"):
        operator_validator(broken)


def test_index_pod_reads_the_database_url_from_the_secret_and_settings_the_code_reads(manifests) -> None:
    from services.index.settings import IndexSettings
    from services.settings import ServiceSettings

    deployment = named(manifests, "Deployment", "-index")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["inctrl", "index"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["INCTRL_INDEX_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "inctrl-index-db", "key": "url"}}
    assert all("value" not in variable for variable in container["env"]), "a literal value in the index pod's env"
    assert {"INCTRL_S3_ACCESS_KEY", "INCTRL_S3_SECRET_KEY"} <= set(env)
    config_maps = {ref["configMapRef"]["name"] for ref in container["envFrom"]}
    assert config_maps == {"inctrl-settings", named(manifests, "ConfigMap", "-index-settings")["metadata"]["name"]}
    data = named(manifests, "ConfigMap", "-index-settings")["data"]
    fields = {f"INCTRL_INDEX_{name.upper()}" for name in IndexSettings.model_fields}
    assert set(data) <= fields, f"names IndexSettings does not read: {set(data) - fields}"
    loaded = IndexSettings.model_validate({name.removeprefix("INCTRL_INDEX_").lower(): value for name, value in data.items()})
    assert loaded.alerts_topic == "inctrl.alerts" and loaded.drift_level == 0.25 and loaded.metrics_port == 9101
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": loaded.metrics_port}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = named(manifests, "Service", "-index")
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(key) == value for key, value in service["spec"]["selector"].items())
    monitor = named(manifests, "ServiceMonitor", "-index")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert "INCTRL_KAFKA_SASL_PASSWORD" not in env
    assert ServiceSettings.model_fields.keys().isdisjoint({name.removeprefix("INCTRL_").lower() for name in data})


def test_index_pod_gets_kafka_sasl_credentials_when_the_broker_needs_them(render: Callable) -> None:
    manifests = render({**ENABLED, "kafka": {"securityProtocol": "SASL_SSL", "sasl": {"existingSecret": "kafka-user"}}})
    env = {v["name"]: v for v in named(manifests, "Deployment", "-index")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["INCTRL_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kafka-user"


def test_dashboard_is_picked_up_by_the_sidecar_and_queries_exported_metrics(manifests) -> None:
    config_map = named(manifests, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Inspection"}
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    assert dashboard["uid"] == "inctrl-operations"
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    queried = set().union(*map(queried_metrics, expressions))
    exported = exported_metric_names()
    assert queried <= exported, f"dashboard queries metrics nothing exports: {queried - exported}"
    # The operator's loop is on it: drift, dead letters, lag, p95 latency.
    assert {"inctrl_drift_psi", "inctrl_consumer_dead_letters_total", "inctrl_kafka_consumer_lag", "inctrl_consumer_batch_seconds_bucket"} <= queried
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_cover_drift_dead_letters_lag_and_latency_on_exported_metrics(manifests, render: Callable) -> None:
    rules = [rule for group in named(manifests, "PrometheusRule", "-alerts")["spec"]["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == {"InctrlLineDrifting", "InctrlDeadLetterRateHigh", "InctrlConsumerLagHigh", "InctrlP95LatencyHigh"}
    exported = exported_metric_names()
    for rule in rules:
        assert queried_metrics(rule["expr"]) and queried_metrics(rule["expr"]) <= exported, rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
    tuned = render({**ENABLED, "monitoring": {"prometheusRule": {"enabled": True, "consumerLag": {"messages": 500}, "latency": {"p95Seconds": 0.5}}}})
    by_name = {r["alert"]: r for g in named(tuned, "PrometheusRule", "-alerts")["spec"]["groups"] for r in g["rules"]}
    assert by_name["InctrlConsumerLagHigh"]["expr"].endswith("> 500")
    assert by_name["InctrlP95LatencyHigh"]["expr"].endswith("> 0.5")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"index": {"enabled": True, "database": {"existingSecret": "", "urlKey": "url"}}}, "index.database.existingSecret is required"),
        ({"index": {"drift": {"bins": 1}}}, "/index/drift/bins"),
        ({"index": {"databaseUrl": "postgresql://u:p@db/x"}}, "databaseUrl"),  # a URL never goes in values
        ({"monitoring": {"prometheusRule": {"drift": {"for": "ten minutes"}}}}, "/monitoring/prometheusRule/drift/for"),
        ({"monitoring": {"prometheusRule": {"deadLetters": {"ratio": 5}}}}, "/monitoring/prometheusRule/deadLetters/ratio"),
    ],
)
def test_bad_index_and_monitoring_values_fail_naming_the_value(render: Callable, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)
