"""`inctrl consume` and `inctrl replay-dead-letters`: the Kafka side of the online system."""
from __future__ import annotations

import json
import logging
from datetime import datetime

import typer

from services.consumer.dead_letters import replay_dead_letters
from services.consumer.frame_consumer import limit_torch_threads
from services.protocol.messages import DeadLetterReason
from services.serving.settings import ServingSettings
from services.settings import ServiceSettings
from services.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)


def consume_command(
    serve_url: str | None = typer.Option(
        None, "--serve-url", help="HTTP base URL of the Serve app (default: INCTRL_SERVE_URL); a Ray handle when unset."
    ),
    app_name: str | None = typer.Option(None, "--app-name", help="Serve application to send frames to (Ray handle)."),
    address: str = typer.Option("auto", "--address", envvar="RAY_ADDRESS", help="Ray cluster running the Serve app (Ray handle)."),
) -> None:
    """Run the Kafka frame consumer until SIGTERM/SIGINT, with /healthz, /readyz and /metrics on INCTRL_METRICS_PORT."""
    from services.consumer.health import ConsumerHealthServer
    from services.consumer.frame_consumer import FrameConsumer

    limit_torch_threads()
    settings = ServiceSettings()
    url = serve_url or settings.serve_url
    if url:
        from services.consumer.http_client import HttpInspectionClient

        client = HttpInspectionClient(url, timeout_s=ServingSettings().inspect_timeout_s, token=settings.serve_token)
    else:
        import ray

        from services.consumer.serve_client import InspectionClient

        ray.init(address=address, log_to_driver=False)
        client = InspectionClient(app_name)
    logger.info("frame consumer starting", extra={"inspection": url or f"ray handle ({address})"})
    consumer = FrameConsumer.connect(settings, inspect=client, max_aspect_ratio=ServingSettings().max_aspect_ratio)
    with ConsumerHealthServer(consumer, consumer.metrics, client.reachable, settings.metrics_port, settings.consumer_stall_s):
        stats = consumer.run_forever()
    typer.echo(json.dumps(stats.log_fields()))


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
