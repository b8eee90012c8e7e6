"""Web view accounts and sessions, in the registry (revision 0005_web mirrors the tables).

- `web_accounts`: one row per person of the address book who may sign in with a password;
  the hash is scrypt (RFC 7914, hashlib's), stored as `scrypt$n$r$p$salt$hash` (base64),
  so the cost can be raised later and old hashes still verify.
- `web_sessions`: one row per sign-in. The browser holds a random token; the table holds
  only its SHA-256, so a copy of the registry signs nobody in. Each session has its own
  CSRF token and an absolute expiry; signing out deletes the row, and a new password
  deletes every session of that person.

Refused: an empty password, one shorter than MIN_PASSWORD characters. Functions take a
Connection (run them with `Registry.read`/`Registry.write`), so the CLI's `mailrouter web
passwd` and the web view share them.

Known limits: scrypt with n=2**14 costs about 16 MiB and tens of milliseconds per check:
call `verify_password` off the event loop (the web view does, in a thread).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, Index, String, Table, Text, delete, select

from .models import UTCDateTime, metadata

__all__ = ["web_accounts", "web_sessions", "hash_password", "verify_password", "set_password",
           "password_hash", "Session", "open_session", "find_session", "close_session",
           "MIN_PASSWORD"]

MIN_PASSWORD = 8
_N, _R, _P = 2 ** 14, 8, 1

web_accounts = Table(
    "web_accounts", metadata,
    Column("person", String(255), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

web_sessions = Table(
    "web_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("person", String(255), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index(None, "person"),
    Index(None, "expires_at"),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password`; ValueError if it is too short."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Does `password` match `stored`? With None (no account) it still spends the same
    work, so the answer's timing does not say whether the account exists."""
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(want))
    except ValueError:
        hashlib.scrypt(password.encode(), salt=b"0" * 16, n=_N, r=_R, p=_P, dklen=32)
        return False
    return hmac.compare_digest(got, want)


def set_password(conn: Connection, person: str, hashed: str, now: datetime) -> None:
    """Store a person's password hash (made with hash_password) and end their sessions."""
    conn.execute(delete(web_accounts).where(web_accounts.c.person == person))
    conn.execute(web_accounts.insert().values(person=person, password_hash=hashed, updated_at=now))
    conn.execute(delete(web_sessions).where(web_sessions.c.person == person))


def password_hash(conn: Connection, person: str) -> str | None:
    found: str | None = conn.execute(select(web_accounts.c.password_hash).where(
        web_accounts.c.person == person)).scalar_one_or_none()
    return found


@dataclass(frozen=True, slots=True)
class Session:
    person: str
    csrf: str
    expires_at: datetime


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(conn: Connection, person: str, now: datetime, ttl: float) -> tuple[str, Session]:
    """A new session for `person`: (the token for the cookie, the session). Expired
    sessions of anybody are dropped on the way, so the table does not grow."""
    conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session = Session(person, csrf, now + timedelta(seconds=ttl))
    conn.execute(web_sessions.insert().values(token_hash=_token_hash(token), person=person, csrf=csrf,
                                              created_at=now, expires_at=session.expires_at))
    return token, session


def find_session(conn: Connection, token: str, now: datetime) -> Session | None:
    """The live session of a cookie's token, or None (unknown or expired)."""
    row = conn.execute(select(web_sessions).where(
        web_sessions.c.token_hash == _token_hash(token))).first()
    if row is None or row.expires_at <= now:
        return None
    return Session(row.person, row.csrf, row.expires_at)


def close_session(conn: Connection, token: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.token_hash == _token_hash(token)))
