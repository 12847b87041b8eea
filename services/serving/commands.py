"""`inctrl serve`: deploy the inspection app on Ray Serve."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
import yaml

from services.ray_cluster import start_ray
from services.serving.deployment_config import deployment_config_from_args
from services.serving.settings import ServingSettings

def read_app_args(path: Path, app_name: str) -> dict[str, Any]:
    """The Serve app args from a YAML/JSON file: a serveConfigV2 document (applications[]) or the args alone."""
    if not path.is_file():
        raise typer.BadParameter(f"config file {path} does not exist")
    document = yaml.safe_load(path.read_text())
    if isinstance(document, dict) and isinstance(document.get("applications"), list):
        apps = {app.get("name"): app for app in document["applications"] if isinstance(app, dict)}
        if app_name not in apps:
            raise typer.BadParameter(f"{path}: no application {app_name!r}; it has {sorted(map(str, apps))}")
        document = apps[app_name].get("args") or {}
    if not isinstance(document, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of Serve app args")
    deployment_config_from_args(document)
    return document



def serve_command(
    config: Path = typer.Option(..., "--config", help="serveConfigV2 YAML or a YAML/JSON file of the app args."),
    app_name: str | None = typer.Option(None, "--app-name", help="Serve application name (default: INCTRL_SERVE_APP_NAME)."),
    address: str | None = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster; a local Ray when absent."),
    host: str = typer.Option("127.0.0.1", help="HTTP host of the Serve proxy."),
    port: int = typer.Option(8000, help="HTTP port of the Serve proxy."),
) -> None:
    """Deploy the inspection app on Ray Serve and keep it running until interrupted."""
    from ray import serve

    from services.serving.app import build_app

    name = app_name or ServingSettings().serve_app_name
    args = read_app_args(config, name)
    start_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(deployment_config_from_args(args)), name=name, route_prefix="/")
    typer.echo(f"serving {name} on http://{host}:{port} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
