"""Ray Serve application: an HTTP/handle ingress routing frames by domain to detector deployments.

    serve run services.serving.app:build_app   (args: the DeploymentConfig, as serveConfigV2 renders it)

Deployments: "pool" serves every domain without its own deployment; each hot domain in the config gets
"domain-<name>" with its own replicas and batch settings (the deployment's user_config, applied by
DetectorDeployment.reconfigure). Every detector replica loads the checkpoint once and batches requests with
serve.batch; a batch may mix domains and goes through the backbone in ONE call, then each domain's group
is scored against its bank (services.serving.engine). Multiplexing by domain around the backbone call
would split batches per domain, so it is not used.

S3 settings come from INCTRL_* environment variables (ServiceSettings); bank cache size, re-check
interval and ingress limits from ServingSettings; API tokens from INCTRL_API_TOKENS (services/auth.py):
the ingress refuses to start without them unless INCTRL_AUTH_DISABLED=true.
"""
# No `from __future__ import annotations`: Serve reads build_app's annotation to validate the args into
# a DeploymentConfig once, before any replica starts.
from ray import serve

from services.serving.deployment_config import POOL_DEPLOYMENT_NAME, DeploymentConfig
from services.serving.detector_deployment import DetectorDeployment
from services.serving.ingress import InspectionIngress


def build_app(config: DeploymentConfig) -> serve.Application:
    """The application for `serve run` / serveConfigV2 (import path services.serving.app:build_app)."""
    options = config.serve_options()
    detectors = {}
    for domain in [None, *config.domains]:
        name = config.deployment_name(domain) if domain is not None else POOL_DEPLOYMENT_NAME
        batch = config.batch_for(domain).model_dump()
        detectors[name] = DetectorDeployment.options(**options[name], user_config=batch).bind(config, name)
    return InspectionIngress.bind(detectors, config)
