"""The chart's open doors stay shut: Ray's dashboard and client port inside the cluster, NetworkPolicies
that let in only what the system needs, and credentials split per component."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import helm_python
import pytest

from .test_helm_chart_manifests import by_kind, pod_templates, selects

DASHBOARD, RAY_CLIENT, GCS = 8265, 10001, 6379


def policy(manifests: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    (found,) = [p for p in by_kind(manifests, "NetworkPolicy") if p["metadata"]["name"].endswith(suffix)]
    return found


def rules_admitting(rules: list[dict[str, Any]], port: int) -> list[dict[str, Any]]:
    """The rules that let traffic to `port` through (a rule without ports admits every port)."""
    return [rule for rule in rules if "ports" not in rule or any(p["port"] == port for p in rule["ports"])]


def env_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in template["spec"]["containers"][0].get("env", [])}


def ray_pod_labels(manifests: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [t["metadata"]["labels"] for where, t in pod_templates(manifests) if where.startswith("ray-")]


@pytest.fixture(scope="module", params=["default", "prod", "prod-with-monitoring"])
def rendered(request: pytest.FixtureRequest, render: Callable, prod_values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = {"default": {}, "prod": prod_values}.get(request.param) or {
        **prod_values,
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {**prod_values.get("networkPolicy", {}), "serveClients": [{"podSelector": {"matchLabels": {"app": "console"}}}]},
    }
    return values, render(values)


def test_ray_head_service_stays_inside_the_cluster(rendered) -> None:
    _, manifests = rendered
    (service,) = by_kind(manifests, "RayService")
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    ports = {port["containerPort"] for port in head["template"]["spec"]["containers"][0]["ports"]}
    assert RAY_CLIENT not in ports and DASHBOARD in ports  # KubeRay's head Service carries exactly these
    for other in by_kind(manifests, "Service"):
        assert other["spec"].get("type", "ClusterIP") == "ClusterIP", other["metadata"]["name"]


def test_only_ray_pods_and_the_operator_reach_the_dashboard_and_client_port(rendered) -> None:
    values, manifests = rendered
    ray = policy(manifests, "-ray")
    assert set(ray["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert all(selects(ray["spec"]["podSelector"], labels) for labels in ray_pod_labels(manifests))
    operator = values.get("networkPolicy", {}).get("kuberayOperator") or [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-operator"}}}
    ]
    rules = ray["spec"]["ingress"]
    for port in (DASHBOARD, RAY_CLIENT, GCS):
        for rule in rules_admitting(rules, port):
            for peer in rule["from"]:
                from_ray_pods = "podSelector" in peer and "namespaceSelector" not in peer and all(
                    selects(peer["podSelector"], labels) for labels in ray_pod_labels(manifests)
                )
                assert from_ray_pods or (port == DASHBOARD and peer in operator), (port, peer)
    consumer = next(t for where, t in pod_templates(manifests) if where.endswith("-consumer"))["metadata"]["labels"]
    serve_rules = [r for r in rules if any(selects(p.get("podSelector", {"matchLabels": {"x": "y"}}), consumer) for p in r["from"]) and "ports" in r]
    assert [[p["port"] for p in r["ports"]] for r in serve_rules] == [[values.get("serve", {}).get("port", 8000)]]
    clients = values.get("networkPolicy", {}).get("serveClients", [])
    for client in clients:
        assert any(client in r["from"] for r in rules_admitting(rules, 8000) if "ports" in r)
        assert not any(client in r["from"] for r in rules_admitting(rules, DASHBOARD))


def test_nothing_reaches_the_consumer_but_monitoring_and_it_reaches_only_serve_s3_kafka_and_dns(rendered) -> None:
    values, manifests = rendered
    consumer = policy(manifests, "-consumer")
    template = next(t for where, t in pod_templates(manifests) if where.endswith("-consumer"))
    assert selects(consumer["spec"]["podSelector"], template["metadata"]["labels"])
    monitoring_on = values.get("metrics", {}).get("serviceMonitor", {}).get("enabled", False)
    if monitoring_on:
        (rule,) = consumer["spec"]["ingress"]
        assert rule["ports"] == [{"port": 9100, "protocol": "TCP"}]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    else:
        assert consumer["spec"]["ingress"] == []
    egress = consumer["spec"]["egress"]
    assert all(rule.get("to") and rule.get("ports") for rule in egress), "an egress rule open to everything"
    s3_ports = values.get("networkPolicy", {}).get("s3", {}).get("ports", [9000])
    kafka_ports = values.get("networkPolicy", {}).get("kafka", {}).get("ports", [9092])
    assert sorted(p["port"] for rule in egress for p in rule["ports"]) == sorted([8000, 53, 53, *s3_ports, *kafka_ports])
    (to_serve,) = [rule for rule in egress if rule["ports"] == [{"port": 8000, "protocol": "TCP"}]]
    assert all(selects(to_serve["to"][0]["podSelector"], labels) for labels in ray_pod_labels(manifests))
    ray_egress = policy(manifests, "-ray")["spec"]["egress"]
    assert not any(p["port"] in kafka_ports for rule in ray_egress for p in rule.get("ports", [])), "Serve needs no Kafka"


def test_each_component_gets_only_its_own_credentials(render: Callable, prod_values: dict[str, Any]) -> None:
    manifests = render(prod_values)
    templates = dict(pod_templates(manifests))
    for where, template in templates.items():
        env = env_of(template)
        s3 = env["INCTRL_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"]
        if where.endswith("-consumer"):
            assert s3 == prod_values["s3"]["consumer"]["existingSecret"]
            assert env["INCTRL_SERVE_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "inctrl-consumer-token", "key": "token"}
            assert "INCTRL_API_TOKENS" not in env
        elif where.startswith("ray-"):
            assert s3 == prod_values["s3"]["serve"]["existingSecret"], where
            assert "INCTRL_SERVE_TOKEN" not in env, where
            # The ingress runs on workers (the head has no CPUs for replicas): only they hold the token list.
            assert ("INCTRL_API_TOKENS" in env) == where.startswith("ray-worker/"), where
    defaults = dict(pod_templates(render({})))
    shared = {env_of(t)["INCTRL_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] for t in defaults.values()}
    assert shared == {"inctrl-s3"}  # without per-component Secrets every pod falls back to the shared one


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": {"apiTokens": {"existingSecret": ""}}}, "/auth/apiTokens/existingSecret"),
        ({"auth": {"consumerToken": {"existingSecret": ""}}}, "/auth/consumerToken/existingSecret"),
        ({"networkPolicy": {"allowAll": True}}, "allowAll"),
        ({"networkPolicy": {"s3": {"peers": [{"cidr": "0.0.0.0/0"}], "ports": [9000]}}}, "cidr"),
        ({"s3": {"serve": {"secret": "x"}}}, "secret"),
    ],
)
def test_bad_security_values_fail_naming_the_value(render: Callable, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render(values)


def test_network_policies_can_be_left_to_the_cluster(render: Callable) -> None:
    assert by_kind(render({"networkPolicy": {"enabled": False}}), "NetworkPolicy") == []
