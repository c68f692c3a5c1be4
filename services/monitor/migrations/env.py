"""Alembic environment: runs on the connection ``History.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from services.monitor.tables import METADATA

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=METADATA)
with context.begin_transaction():
    context.run_migrations()
