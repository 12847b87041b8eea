"""`inctrl console` (serve the console) and `inctrl review ...` (the same review operations from a shell).

Mount on the root CLI with one line:  app.add_typer(console_app)

Settings: ServiceSettings (S3, buckets, registry prefix, checkpoint), IndexSettings (database URL),
ConsoleSettings (host, port, labelled-examples prefix) and AuthSettings (tokens, for the web console
only: shell commands act with the operator's own S3 and database credentials and record --actor).
"""
from __future__ import annotations

import getpass
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from services.console.labelled import LabelledExamples
from services.console.settings import ConsoleSettings

logger = logging.getLogger(__name__)

console_app = typer.Typer(help="The operator console and review commands.")
review_app = typer.Typer(
    no_args_is_help=True,
    help="Teach by example: mark frames normal, confirm defects, export the labelled examples "
    "(versions and rollback: inctrl domain versions / activate).",
)
console_app.add_typer(review_app, name="review")

_ACTOR = typer.Option(None, "--actor", help="Who reviews (recorded with the review); default cli:<user>.")
_NOTE = typer.Option(None, "--note", help="Reviewer's note, kept with the review.")
_CHECKPOINT = typer.Option(
    None, "--checkpoint", help="Checkpoint that builds new reference banks (default: INCTRL_CHECKPOINT_URI)."
)


def _services(checkpoint: str | None = None):  # noqa: ANN202 - a tuple of the wired collaborators
    """ReviewService, OriginalImages, ObjectStore, ServiceSettings from the environment; index migrated."""
    from services.console.detector_source import LazyDetector
    from services.console.originals import OriginalImages
    from services.console.review import ReviewService
    from services.index import IndexSettings, InspectionIndex, create_index_engine, upgrade
    from services.storage.object_store import ObjectStore
    from services.registry.domain_registry import DomainRegistry
    from services.serving.settings import ServingSettings
    from services.settings import ServiceSettings

    settings = ServiceSettings()
    console = ConsoleSettings()
    store = ObjectStore.from_settings(settings)
    engine = create_index_engine(IndexSettings().database_url)
    upgrade(engine)
    originals = OriginalImages(store, settings.frames_bucket)
    review = ReviewService(
        index=InspectionIndex(engine),
        registry=DomainRegistry(store, settings.registry_prefix, max_references=ServingSettings().max_references),
        store=store,
        originals=originals,
        examples=LabelledExamples(store, console.labelled_prefix),
        detector=LazyDetector(checkpoint or settings.checkpoint_uri, store),
    )
    return review, originals, store, settings


def _actor(actor: str | None) -> str:
    return actor or f"cli:{getpass.getuser()}"


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A refused review prints one line naming the frame or domain and exits 2; nothing was changed."""
    from services.console.originals import OriginalImageMissing
    from services.console.review import AlreadyReferenced, FrameNotIndexed
    from services.registry.records import RegistryError
    from services.results.encoding import ImageDecodeError

    try:
        yield
    except (FrameNotIndexed, OriginalImageMissing, AlreadyReferenced, RegistryError, ImageDecodeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None


@console_app.command("console")
def console_command(
    host: str | None = typer.Option(None, help="Listen address (default: INCTRL_CONSOLE_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default: INCTRL_CONSOLE_PORT)."),
    checkpoint: str | None = _CHECKPOINT,
    backfill: bool = typer.Option(
        False, "--backfill", help="First index every result.json already in the results bucket (e.g. a demo's)."
    ),
) -> None:
    """Serve the operator console until interrupted (tokens from INCTRL_API_TOKENS)."""
    import uvicorn

    from services.auth import AuthSettings, TokenAuthority
    from services.console.app import ConsoleServices, create_console_app
    from services.console.backfill import backfill_results

    console = ConsoleSettings()
    authority = TokenAuthority.from_settings(AuthSettings())
    review, originals, store, settings = _services(checkpoint)
    if backfill:
        count = backfill_results(store, settings.results_bucket, review.index)
        typer.echo(f"indexed {count} stored results from s3://{settings.results_bucket}/results/")
    app = create_console_app(ConsoleServices(review=review, originals=originals, store=store, authority=authority, settings=console))
    bind_host, bind_port = host or console.host, console.port if port is None else port
    typer.echo(f"console on http://{bind_host}:{bind_port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")


@review_app.command("mark-normal")
def mark_normal_command(
    domain: str, line: str, frame_id: str, actor: str | None = _ACTOR, note: str | None = _NOTE,
    checkpoint: str | None = _CHECKPOINT,
) -> None:  # fmt: skip
    """Add the frame's original image to the domain's references as a new, current registry version."""
    review, *_ = _services(checkpoint)
    with _clear_errors():
        outcome = review.mark_normal(domain, line, frame_id, _actor(actor), note)
    typer.echo(f"{domain}: v{outcome.record.version} is current (K={outcome.record.shots}, "
               f"threshold {outcome.record.threshold:.4f}); review recorded for {outcome.review.actor}")  # fmt: skip


@review_app.command("confirm-defect")
def confirm_defect_command(domain: str, line: str, frame_id: str, actor: str | None = _ACTOR, note: str | None = _NOTE) -> None:
    """Store the frame, its thresholded map (the mask) and the note as a labelled defect example."""
    review, *_ = _services()
    with _clear_errors():
        outcome = review.confirm_defect(domain, line, frame_id, _actor(actor), note)
    typer.echo(f"stored {outcome.example.image_uri} with mask {outcome.example.mask_uri}")


@review_app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", help="Local folder to write the folder dataset layout into."),
    domain: list[str] = typer.Option(None, "--domain", help="Only these domains (repeatable; default all)."),
) -> None:
    """Copy the labelled examples to a local folder `inctrl train` reads (data: {dataset: folder, root: OUT})."""
    review, *_ = _services()
    domains = domain or review.examples.domains()
    with _clear_errors():  # the current version's reference images: the exported folder's few-shot prompt pool
        references = {name: [png for _, png in review.registry.reference_images(name)] for name in domains}
    summary = review.examples.export_folder(out, domains, references)
    typer.echo(f"wrote {summary.good} good, {summary.defect} defect, {summary.reference} reference images to {summary.root}")
