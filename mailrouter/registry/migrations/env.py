"""Alembic environment for the registry.

Never run by the ``alembic`` command line: ``mailrouter.registry.store`` builds the
Alembic config in code and hands over an open synchronous connection (from
``AsyncConnection.run_sync``) in ``config.attributes["connection"]``. Offline SQL
generation is not supported.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from alembic import context

from mailrouter.registry.models import metadata

# A constant key for pg_advisory_xact_lock: instances sharing one PostgreSQL
# registry that start together migrate one after the other.
MIGRATION_LOCK = 0x6D61696C726F75  # "mailrou"
_TRY_EVERY = 0.25       # seconds between tries (under idle_in_transaction_session_timeout)

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run registry migrations through `mailrouter db upgrade`")


def _take_migration_lock(conn: Any) -> None:
    """Wait for another instance's migration, however long it takes, then hold the lock
    to the end of this transaction. Tried, not waited for in one statement: that wait was
    bounded by registry.timeout (the statement timeout), and an instance started beside one
    running a long revision (0009, 0012 rewrite every message) exited 2 saying the database
    server could not be reached."""
    said = False
    while not conn.exec_driver_sql(
            f"SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK})").scalar():
        if not said:
            logging.getLogger("mailrouter.registry").warning(
                "event=registry_migration_waiting: another process is migrating the "
                "registry; this one starts once it is done")
            said = True
        time.sleep(_TRY_EVERY)


if connection.dialect.name == "postgresql":
    _take_migration_lock(connection)

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
