"""Alembic environment: runs migrations on the engine handed over in config.attributes["engine"]."""
from __future__ import annotations

from alembic import context

from services.index.models import Base

engine = context.config.attributes.get("engine")
if engine is None:
    raise RuntimeError("run the index migrations through services.index.database.upgrade(engine)")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=engine.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
