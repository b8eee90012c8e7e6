"""pytest fixtures: pg (filled in by its owner)."""
