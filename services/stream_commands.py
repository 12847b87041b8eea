"""Typer commands of the streaming side; the lead mounts `app` into the `inctrl` CLI."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from services.dead_letters import replay_dead_letters
from services.messages import DeadLetterReason
from services.object_store import ObjectStore
from services.producer import produce_folder
from services.settings import ServiceSettings

app = typer.Typer(help="Streaming commands (settings come from INCTRL_* environment variables).")


@app.callback()
def streaming() -> None:
    """Streaming commands; a callback keeps `produce` a named subcommand even while it is the only one."""


@app.command()
def produce(
    folder: Path = typer.Argument(..., help="Folder of image files to send as frames."),
    domain: str = typer.Option(..., help="Product domain of the frames."),
    line: str = typer.Option(..., help="Production line of the frames."),
    topic: str | None = typer.Option(None, help="Target topic (default: the first INCTRL_FRAMES_TOPICS entry)."),
    limit: int | None = typer.Option(None, min=1, help="Send at most this many images."),
) -> None:
    """Send a folder of images to the frames topic; large images go to S3 and travel by reference."""
    settings = ServiceSettings()
    requests = produce_folder(
        folder, domain, line, settings, topic=topic, store=ObjectStore.from_settings(settings), limit=limit
    )
    inline = sum(request.image is not None for request in requests)
    typer.echo(f"sent {len(requests)} frames to {topic or settings.frames_topics[0]} "
               f"({inline} inline, {len(requests) - inline} by S3 reference)")  # fmt: skip


@app.command("replay-dead-letters")
def replay_dead_letters_command(
    reason: list[DeadLetterReason] = typer.Option(
        [], "--reason", help="Only dead letters with this reason (repeatable; default: every reason)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only dead letters that failed at or after this time (ISO 8601 with a timezone)."
    ),
    topic: str | None = typer.Option(None, "--topic", help="Publish to this topic instead of each letter's original topic."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be re-published; publish nothing."),
) -> None:
    """Re-publish the original frame messages of dead letters, e.g. after fixing what rejected them."""
    try:
        after = datetime.fromisoformat(since) if since is not None else None
    except ValueError as error:
        raise typer.BadParameter(f"--since: {error}") from error
    if after is not None and after.tzinfo is None:
        raise typer.BadParameter("--since needs a timezone, e.g. 2026-03-01T08:00:00+00:00")
    settings = ServiceSettings()
    summary = replay_dead_letters(
        settings, ObjectStore.from_settings(settings), set(reason), after, dry_run=dry_run, topic=topic
    )
    typer.echo(("dry run: " if dry_run else "") + summary.render())
