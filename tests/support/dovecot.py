"""pytest fixtures: dovecot (filled in by its owner)."""
