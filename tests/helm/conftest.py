"""Fixtures for the chart tests: the chart rendered by Helm's own engine (helm-python-sdk,
which binds Helm's Go SDK), and schema validators resolved from local files only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import referencing
import yaml
from kubernetes_validate.utils import schema_contents

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "inctrl"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RELEASE = "inctrl"
NAMESPACE = "inspection"
# The chart's lowest supported Kubernetes version (Chart.yaml kubeVersion).
KUBE_VERSION = "1.29.0"

Renderer = Callable[[dict[str, Any]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def chart() -> helm_python.Chart:
    with helm_python.Chart.load(str(CHART_DIR)) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Renderer:
    """Render the chart with `values` over its defaults; returns the manifests as dicts."""

    def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return [
            document
            for name, text in sorted(files.items())
            if name.endswith(".yaml")
            for document in yaml.safe_load_all(text)
            if document
        ]

    return rendered


@pytest.fixture(scope="session")
def prod_values() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values-prod.yaml").read_text())


@pytest.fixture(scope="session")
def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text())


@pytest.fixture(scope="session", params=["default", "prod"])
def values_case(request: pytest.FixtureRequest, prod_values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Both shipped values files: name and the user values passed over the defaults."""
    return request.param, ({} if request.param == "default" else prod_values)


@pytest.fixture(scope="session")
def custom_resource_validator() -> Callable[[dict[str, Any]], None]:
    """Validate a RayService, ServiceMonitor or PodMonitor against the hand-written schemas,
    with Kubernetes' own definitions (strict) resolved from kubernetes-validate's files."""
    definitions = schema_contents(
        f"kubernetes-json-schema/v{KUBE_VERSION}-local-strict/_definitions.json", KUBE_VERSION
    )
    registry = referencing.Registry().with_resource(
        definitions["$id"], referencing.Resource.from_contents(definitions)
    )
    rayservice = json.loads((SCHEMA_DIR / "rayservice-ray-v1.json").read_text())
    monitors = json.loads((SCHEMA_DIR / "monitors-monitoring-v1.json").read_text())
    registry = registry.with_resource(monitors["$id"], referencing.Resource.from_contents(monitors))
    schemas = {
        "RayService": rayservice,
        # Validate each monitor against its own definition: errors then name the failing field.
        "ServiceMonitor": {"$ref": monitors["$id"] + "#/$defs/ServiceMonitor"},
        "PodMonitor": {"$ref": monitors["$id"] + "#/$defs/PodMonitor"},
    }

    def validate(resource: dict[str, Any]) -> None:
        jsonschema.Draft202012Validator(schemas[resource["kind"]], registry=registry).validate(resource)

    return validate


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR
