"""Typer commands of the streaming side; the lead mounts `app` into the `inctrl` CLI."""

from __future__ import annotations

from pathlib import Path

import typer

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
