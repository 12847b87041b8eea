"""CLI of the online system: domain registry, the Serve app, the Kafka consumer (the demo and the stream bench are in inctrl/dev_commands.py).

Mount on the root CLI:
    app.add_typer(domain_app, name="domain")        # inctrl domain register|add-references|versions|activate|list|show|delete
    app.add_typer(service_app)                      # inctrl serve, inctrl consume
"""
from __future__ import annotations

import getpass
import json
import logging
import tempfile
import time
from datetime import timezone
from pathlib import Path
from typing import Any

import typer
import yaml

from services.deployment_config import deployment_config_from_args
from services.object_store import ObjectStore
from model.calibration import DEFAULT_TARGET_FPR
from services.registry import DomainRecord, DomainRegistry, RegistryError, load_reference_images
from services.serving.checkpoint_source import load_detector
from services.serving.serving_settings import ServingSettings
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)

domain_app = typer.Typer(
    help="Register, extend, list, show, roll back and delete inspection domains (versioned reference images per product)."
)
service_app = typer.Typer(help="Run the online inspection service.")

_REGISTRY_OPTION = typer.Option(None, "--registry", help="s3:// registry prefix (default: INCTRL_REGISTRY_PREFIX).")
_ACTOR_OPTION = typer.Option(None, "--actor", help="Who makes the change, kept in the version's record (default: the OS user).")
_NOTE_OPTION = typer.Option(None, "--note", help="Why, kept in the version's record.")
_CHECKPOINT_OPTION = typer.Option(
    None, "--checkpoint", help="Checkpoint folder or s3:// URI (default: INCTRL_CHECKPOINT_URI)."
)
_DEFECT_IMAGES_OPTION = typer.Option(
    None, "--defect-images", help="Folder or s3:// prefix of defect images: only measure the recall at the threshold, never move it."
)


def _registry(prefix: str | None) -> tuple[DomainRegistry, ObjectStore, ServiceSettings]:
    settings = ServiceSettings()
    store = ObjectStore.from_settings(settings)
    registry = DomainRegistry(store, prefix or settings.registry_prefix, max_references=ServingSettings().max_references)
    return registry, store, settings


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser()
    except OSError:  # no user name in the environment or the password database
        return "cli"


@domain_app.command("register")
def register_domain(
    name: str = typer.Argument(..., help="Domain name (lowercase letters, digits, '-')."),
    class_name: str = typer.Option(..., "--class-name", help="Product name for the text prompts, e.g. capsule."),
    images: str = typer.Option(..., "--images", help="Folder or s3:// prefix of K normal reference images."),
    threshold: float | None = typer.Option(None, "--threshold", help="Fixed threshold; calibrated when absent."),
    calibration_images: str | None = typer.Option(
        None, "--calibration-images", help="Folder or s3:// prefix of extra normal images to calibrate on."
    ),
    target_fpr: float = typer.Option(
        DEFAULT_TARGET_FPR, "--target-fpr", help="False-positive rate on normal frames the calibrated threshold aims at."
    ),
    defect_images: str | None = _DEFECT_IMAGES_OPTION,
    checkpoint: str | None = _CHECKPOINT_OPTION,
    actor: str | None = _ACTOR_OPTION,
    note: str | None = _NOTE_OPTION,
    registry_prefix: str | None = _REGISTRY_OPTION,
) -> None:
    """Build the domain's prompt bank and store it as a new version; prints the domain record."""
    registry, store, settings = _registry(registry_prefix)
    try:
        references = load_reference_images(images, store)
        normals = load_reference_images(calibration_images, store) if calibration_images else None
        defects = load_reference_images(defect_images, store) if defect_images else None
        detector, _ = load_detector(checkpoint or settings.checkpoint_uri, store, "torch")
        record = registry.register(
            name, class_name, references, detector, threshold, normals, source=images, actor=_actor(actor), note=note,
            target_fpr=target_fpr, defect_images=defects,
        )  # fmt: skip
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(record.model_dump_json(indent=2))


@domain_app.command("add-references")
def add_references_command(
    name: str = typer.Argument(..., help="A registered domain."),
    images: str = typer.Option(..., "--images", help="Folder or s3:// prefix of normal images to add to its references."),
    target_fpr: float | None = typer.Option(
        None, "--target-fpr", help="A new target false-positive rate (default: the current version's)."
    ),
    defect_images: str | None = _DEFECT_IMAGES_OPTION,
    checkpoint: str | None = _CHECKPOINT_OPTION,
    actor: str | None = _ACTOR_OPTION,
    note: str | None = _NOTE_OPTION,
    registry_prefix: str | None = _REGISTRY_OPTION,
) -> None:
    """A new version: the current references plus these images, recalibrated, made current; prints its record.

    The recall is measured on the current version's defect images plus any given here."""
    registry, store, settings = _registry(registry_prefix)
    try:
        added = load_reference_images(images, store)
        defects = load_reference_images(defect_images, store) if defect_images else None
        detector, _ = load_detector(checkpoint or settings.checkpoint_uri, store, "torch")
        record = registry.add_references(
            name, added, detector, actor=_actor(actor), note=note, source=images, target_fpr=target_fpr, defect_images=defects
        )
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(record.model_dump_json(indent=2))


@domain_app.command("versions")
def versions_command(name: str, registry_prefix: str | None = _REGISTRY_OPTION) -> None:
    """Every stored version of the domain, oldest first; '*' marks the current one."""
    registry, _, _ = _registry(registry_prefix)
    try:
        history = registry.history(name)
        current = registry.current_version(name) if history else None
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    for record in history:
        mark = "*" if record.version == current else " "
        parent = f"from v{record.parent_version}" if record.parent_version else "registered"
        typer.echo(
            f"{mark} v{record.version}\t{record.created.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}Z\t{record.actor}\t{parent}\tK={record.shots}"
            f"\tthreshold={record.threshold:.4f}\t{record.note or ''}".rstrip()
        )


@domain_app.command("activate")
def activate_command(
    name: str,
    version: int = typer.Argument(..., help="The stored version to serve (see `inctrl domain versions`)."),
    expected_version: int | None = typer.Option(
        None, "--expected-version", help="Refuse unless this is the current version (guards against a concurrent change)."
    ),
    actor: str | None = _ACTOR_OPTION,
    registry_prefix: str | None = _REGISTRY_OPTION,
) -> None:
    """Make a stored version current again (rollback or roll-forward); replicas pick it up without a restart."""
    registry, _, _ = _registry(registry_prefix)
    try:
        record = registry.activate(name, version, actor=_actor(actor), expected_version=expected_version)
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"{name} now serves v{record.version} (K={record.shots}, threshold={record.threshold:.4f})")


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


@domain_app.command("list")
def list_domains(registry_prefix: str | None = _REGISTRY_OPTION) -> None:
    """One line per registered domain: name, version, class, K, image and pixel thresholds, target FPR, recall ('-': unknown)."""
    registry, _, _ = _registry(registry_prefix)
    for record in registry.list():
        calibration = record.calibration
        pixel = "-" if calibration.pixel_threshold is None else f"{calibration.pixel_threshold:.4f}"
        recall = "-" if calibration.recall is None else _percent(calibration.recall)
        typer.echo(
            f"{record.name}\tv{record.version}\t{record.class_name}\tK={record.shots}\tthreshold={record.threshold:.4f}"
            f"\tpixel={pixel}\tfpr<={_percent(record.target_fpr)}\trecall={recall}"
        )


def _describe(record: DomainRecord) -> list[str]:
    """What an operator decides on: the target, the thresholds it gave and the recall measured at them."""
    calibration = record.calibration
    if calibration.method == "given":
        how = "given"
    else:
        how = f"calibrated {calibration.method} on {len(calibration.normal_scores)} normal scores"
    if calibration.pixel_threshold is None:
        pixel = "none (needs K >= 2 references or calibration images)"
    else:
        pixel = f"{calibration.pixel_threshold:.4f}"
    if calibration.recall is None:
        recall = "unknown (no defect images given)"
    else:
        recall = f"{_percent(calibration.recall)} of {len(calibration.defect_scores)} defect images at the image threshold"
    created = record.created.astimezone(timezone.utc)
    return [
        f"{record.reference_version}\tclass {record.class_name}, K={record.shots}, by {record.actor} at {created:%Y-%m-%d %H:%M:%S}Z",
        f"target FPR\t{_percent(record.target_fpr)}",
        f"image threshold\t{record.threshold:.4f} ({how})",
        f"pixel threshold\t{pixel}",
        f"recall\t{recall}",
    ]


@domain_app.command("show")
def show_domain(
    name: str,
    version: int | None = typer.Option(None, "--version", help="A stored version (default: the current one)."),
    as_json: bool = typer.Option(False, "--json", help="The whole record as JSON."),
    registry_prefix: str | None = _REGISTRY_OPTION,
) -> None:
    """The domain's target FPR, image and pixel thresholds and the recall on its defect images (--json: the record)."""
    registry, _, _ = _registry(registry_prefix)
    try:
        record = registry.show(name, version)
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(record.model_dump_json(indent=2) if as_json else "\n".join(_describe(record)))


@domain_app.command("delete")
def delete_domain(name: str, actor: str | None = _ACTOR_OPTION, registry_prefix: str | None = _REGISTRY_OPTION) -> None:
    """Remove every version of the domain (its version numbers stay used: a new registration continues after them)."""
    registry, _, _ = _registry(registry_prefix)
    try:
        removed = registry.delete(name, actor=_actor(actor))
    except RegistryError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(f"deleted {name} ({removed} objects)")


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


def start_ray(address: str | None, temp_dir: Path | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (address) or start a local Ray with its own temp dir."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        folder = temp_dir or Path(tempfile.mkdtemp(prefix="inctrl-ray-", dir="/tmp"))
        ray.init(num_cpus=num_cpus, _temp_dir=str(folder), include_dashboard=False, log_to_driver=False)


@service_app.command("serve")
def serve_command(
    config: Path = typer.Option(..., "--config", help="serveConfigV2 YAML or a YAML/JSON file of the app args."),
    app_name: str | None = typer.Option(None, "--app-name", help="Serve application name (default: INCTRL_SERVE_APP_NAME)."),
    address: str | None = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster; a local Ray when absent."),
    host: str = typer.Option("127.0.0.1", help="HTTP host of the Serve proxy."),
    port: int = typer.Option(8000, help="HTTP port of the Serve proxy."),
) -> None:
    """Deploy the inspection app on Ray Serve and keep it running until interrupted."""
    from ray import serve

    from services.serve_app import build_app

    name = app_name or ServingSettings().serve_app_name
    args = read_app_args(config, name)
    start_ray(address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name=name, route_prefix="/")
    typer.echo(f"serving {name} on http://{host}:{port} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


@service_app.command("consume")
def consume_command(
    serve_url: str | None = typer.Option(
        None, "--serve-url", help="HTTP base URL of the Serve app (default: INCTRL_SERVE_URL); a Ray handle when unset."
    ),
    app_name: str | None = typer.Option(None, "--app-name", help="Serve application to send frames to (Ray handle)."),
    address: str = typer.Option("auto", "--address", envvar="RAY_ADDRESS", help="Ray cluster running the Serve app (Ray handle)."),
) -> None:
    """Run the Kafka frame consumer until SIGTERM/SIGINT, with /healthz, /readyz and /metrics on INCTRL_METRICS_PORT."""
    from services.consumer_health import ConsumerHealthServer
    from services.ingest import FrameConsumer

    settings = ServiceSettings()
    url = serve_url or settings.serve_url
    if url:
        from services.http_inspection_client import HttpInspectionClient

        client = HttpInspectionClient(url, timeout_s=ServingSettings().inspect_timeout_s, token=settings.serve_token)
    else:
        import ray

        from services.serve_app import InspectionClient

        ray.init(address=address, log_to_driver=False)
        client = InspectionClient(app_name)
    logger.info("frame consumer starting", extra={"inspection": url or f"ray handle ({address})"})
    consumer = FrameConsumer(settings, inspect=client)
    with ConsumerHealthServer(consumer, consumer.metrics, client.reachable, settings.metrics_port, settings.consumer_stall_s):
        stats = consumer.run_forever()
    typer.echo(json.dumps(stats.log_fields()))
