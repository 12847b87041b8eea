"""`inctrl domain ...`: register, extend, list, show, roll back and delete inspection domains."""
from __future__ import annotations

import getpass
from datetime import timezone
import logging

import typer

from model.calibration import DEFAULT_TARGET_FPR
from services.registry.domain_registry import DomainRegistry
from services.registry.records import DomainRecord, RegistryError
from services.registry.references import load_reference_images
from services.serving.checkpoint_source import load_detector
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings
from services.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

domain_app = typer.Typer(
    help="Register, extend, list, show, roll back and delete inspection domains (versioned reference images per product)."
)

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
        views = calibration.view_scores
        how = f"calibrated {calibration.method} on {len(calibration.normal_scores) - views} normal scores"
        if views:
            how += f" and {views} of nuisance views of the references"
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
