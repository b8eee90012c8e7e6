"""Alembic migrations of the registry, run programmatically by ``registry.store.upgrade``."""
