"""`inctrl index`: migrate the index database, then consume results and dead letters into it until stopped.

Mount on the root CLI:  app.command("index")(index_command)
"""
from __future__ import annotations

import json
import logging

import typer

from services.index.database import create_index_engine, upgrade
from services.index.drift import DriftWatch, RegistryCalibrations
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from services.index.repository import InspectionIndex
from services.index.settings import IndexSettings
from services.settings import ServiceSettings

logger = logging.getLogger(__name__)


def index_command(
    database_url: str | None = typer.Option(
        None, "--database-url", help="SQLAlchemy URL (default: INCTRL_INDEX_DATABASE_URL, else a SQLite file)."
    ),
    idle_timeout_s: float | None = typer.Option(
        None, "--idle-timeout-s", help="Exit after this long without events (default: run until SIGTERM/SIGINT)."
    ),
) -> None:
    """Index inspection results and dead letters into the database; drift watch, /healthz, /readyz, /metrics."""
    from services.consumer.health import ConsumerHealthServer
    from services.storage.object_store import ObjectStore
    from services.registry.domain_registry import DomainRegistry

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for chatty in ("alembic", "kafka"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    service = ServiceSettings()
    settings = IndexSettings() if database_url is None else IndexSettings(database_url=database_url)
    engine = create_index_engine(settings.database_url)
    upgrade(engine)
    index = InspectionIndex(engine)
    metrics = IndexMetrics()
    factory = None
    if settings.drift_watch:
        calibrations = RegistryCalibrations(
            DomainRegistry(ObjectStore.from_settings(service), service.registry_prefix), settings.registry_refresh_s
        )

        def factory(publish, metrics_):  # type: ignore[no-untyped-def]
            return DriftWatch(index, calibrations, settings, publish, metrics_)

    indexer = Indexer(service, settings, index, drift_watch_factory=factory, metrics=metrics)
    logger.info(
        "indexer starting",
        extra={"database": engine.url.render_as_string(hide_password=True), "group": settings.consumer_group,
               "topics": [service.results_topic, service.dead_letter_topic], "drift_watch": settings.drift_watch},
    )  # fmt: skip
    health = ConsumerHealthServer(
        indexer, metrics, indexer.database_reachable, settings.metrics_port, service.consumer_stall_s  # type: ignore[arg-type]
    )
    with health:
        if idle_timeout_s is None:
            stats = indexer.run_forever()
        else:
            with indexer:
                stats = indexer.run(idle_timeout_s=idle_timeout_s)
    typer.echo(json.dumps(stats.log_fields()))
