"""The registry: every message, decision and delivery, in SQLite or PostgreSQL.

``Registry`` writes with group commit and answers dedupe questions on retries;
``upgrade`` migrates the schema (``mailrouter db upgrade``). See ``store`` for
the failure model and ``models`` for the tables.
"""

from mailrouter.registry.models import DecisionRecord, DeliveryRecord, MessageRecord
from mailrouter.registry.store import Registry, upgrade

__all__ = ["Registry", "upgrade", "MessageRecord", "DecisionRecord", "DeliveryRecord"]
