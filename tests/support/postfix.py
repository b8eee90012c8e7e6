"""pytest fixtures: postfix (filled in by its owner)."""
