"""mailrouter: a mail-routing daemon for functional addresses. See README.md and DESIGN.md."""

__version__ = "0.1.0"
__all__ = ["__version__"]
