"""Alembic environment for the registry.

Never run by the ``alembic`` command line: ``mailrouter.registry.store`` builds the
Alembic config in code and hands over an open synchronous connection (from
``AsyncConnection.run_sync``) in ``config.attributes["connection"]``. Offline SQL
generation is not supported.
"""

from __future__ import annotations

from alembic import context

from mailrouter.registry.models import metadata

# A constant key for pg_advisory_xact_lock: instances sharing one PostgreSQL
# registry that start together migrate one after the other.
MIGRATION_LOCK = 0x6D61696C726F75  # "mailrou"

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run registry migrations through `mailrouter db upgrade`")

if connection.dialect.name == "postgresql":
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
