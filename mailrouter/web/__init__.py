"""The web view for heads of department: search, a message's story, a counterparty, reports.

`start_web` serves it with aiohttp on the daemon's event loop (listen.web); `make_app`
builds the application (tests use it too). See app.py for the pages and auth.py for
sign-in, rights and the security headers.
"""

from .app import make_app, start_web

__all__ = ["make_app", "start_web"]
