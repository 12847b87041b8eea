"""`inctrl produce`: send a folder of images to the frames topic."""
from __future__ import annotations

from pathlib import Path

import typer

from services.producer.frame_producer import produce_folder
from services.settings import ServiceSettings
from services.storage.object_store import ObjectStore


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
