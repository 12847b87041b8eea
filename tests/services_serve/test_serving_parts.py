"""Serving parts that need no stack: frame geometry, metrics text, app-args files, backbone choice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml

from model import InvalidImageError
from model.preprocess import Preprocessor
from services.metrics import DomainLabels, InspectionMetrics
from services.serving.commands import read_app_args
from services.serving.backbone_choice import backbone_config
from services.imaging.geometry import stack_for_backbone, to_backbone_geometry

ARGS = {"checkpoint_uri": "/models/ckpt", "backbone": "tiny", "registry_prefix": "s3://models/registry/"}


def test_geometry_then_normalise_equals_the_detectors_preprocessing() -> None:
    image = torch.rand(3, 90, 64)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    direct = Preprocessor(64, mean, std)(image[None])
    staged = Preprocessor(64, mean, std)(to_backbone_geometry(image.numpy(), 64)[None])
    torch.testing.assert_close(staged, direct, atol=1e-6, rtol=0)
    batch = stack_for_backbone([np.random.rand(3, 50, 70).astype(np.float32), np.random.rand(64, 64).astype(np.float32)], 64)
    assert batch.shape == (2, 3, 64, 64)


def test_geometry_names_the_bad_frame() -> None:
    with pytest.raises(InvalidImageError, match=r"frame 3 .* \(C, H, W\)"):
        to_backbone_geometry(np.zeros((1, 3, 8, 8), np.float32), 64, "frame 3")
    with pytest.raises(InvalidImageError, match="frames\\[1\\].*\\[0, 1\\]"):
        stack_for_backbone([np.zeros((3, 8, 8), np.float32), np.full((3, 8, 8), 2.0, np.float32)], 64, "frames")


def test_metrics_render_counts_by_domain_and_reason() -> None:
    metrics = InspectionMetrics()
    metrics.observe_outcome("capsule", "anomalous", None, 0.02)
    metrics.observe_outcome("capsule", "normal", None, 0.03)
    metrics.observe_outcome("pcb", None, "unknown_domain", 0.001)
    metrics.batch_size.observe(8)
    text = metrics.render().decode()
    assert 'inctrl_frames_total{domain="capsule",verdict="anomalous"} 1.0' in text
    assert 'inctrl_errors_total{domain="unregistered",reason="unknown_domain"} 1.0' in text
    assert 'inctrl_inspect_latency_seconds_count{domain="capsule"} 2.0' in text
    assert "inctrl_backbone_batch_size_sum 8.0" in text


def test_metrics_label_only_registered_domains_whatever_callers_send() -> None:
    metrics = InspectionMetrics(DomainLabels(["hot-domain"]))
    for i in range(500):
        metrics.observe_outcome(f"random-{i}", None, "unknown_domain", 0.001)
    metrics.observe_outcome("hot-domain", None, "retryable", 0.5)
    metrics.observe_outcome("capsule", None, "inference_error", 0.01)  # not yet known to be registered
    metrics.observe_outcome("capsule", "normal", None, 0.02)
    metrics.observe_outcome("capsule", None, "inference_error", 0.01)
    text = metrics.render().decode()
    assert "random-" not in text
    assert 'inctrl_errors_total{domain="unregistered",reason="unknown_domain"} 500.0' in text
    assert 'inctrl_errors_total{domain="hot-domain",reason="retryable"} 1.0' in text
    assert 'inctrl_errors_total{domain="unregistered",reason="inference_error"} 1.0' in text
    assert 'inctrl_errors_total{domain="capsule",reason="inference_error"} 1.0' in text
    series = [line for line in text.splitlines() if line.startswith("inctrl_inspect_latency_seconds_count")]
    assert sorted(series) == sorted(
        f'inctrl_inspect_latency_seconds_count{{domain="{d}"}} {n}' for d, n in (("unregistered", "501.0"), ("hot-domain", "1.0"), ("capsule", "2.0"))
    )


def test_app_args_from_serve_config_or_plain_file(tmp_path: Path) -> None:
    serve_config = tmp_path / "serve.yaml"
    serve_config.write_text(yaml.safe_dump({"applications": [{"name": "inctrl", "import_path": "x:y", "args": ARGS}]}))
    assert read_app_args(serve_config, "inctrl") == ARGS
    with pytest.raises(typer.BadParameter, match="no application 'other'"):
        read_app_args(serve_config, "other")
    plain = tmp_path / "args.yaml"
    plain.write_text(yaml.safe_dump({**ARGS, "registry_prefix": "not-s3"}))
    with pytest.raises(ValueError, match="registry_prefix"):
        read_app_args(plain, "inctrl")


def test_backbone_config_names() -> None:
    assert backbone_config("tiny").pretrained is None
    assert backbone_config("efficientnet-lite0").pretrained == "imagenet"
    assert backbone_config("ViT-B-16-plus-240").pretrained == "laion400m_e32"


def test_serve_validates_the_app_args_once_into_a_deployment_config_and_batch_knobs_become_user_config() -> None:
    from pydantic import ValidationError
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from services.serving.app import build_app

    args = {**ARGS, "batch": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
            "domains": {"capsule": {"num_replicas": 2, "batch": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01}}}}  # fmt: skip
    app = call_user_app_builder_with_args_if_necessary(build_app, args)  # what `serve run` and serveConfigV2 do
    detectors = app._bound_deployment.init_args[0]
    assert {name: d._bound_deployment._deployment_config.user_config for name, d in detectors.items()} == {
        "pool": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
        "domain-capsule": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
    }
    with pytest.raises(ValidationError, match="backbone"):
        call_user_app_builder_with_args_if_necessary(build_app, {**ARGS, "backbone": ""})
