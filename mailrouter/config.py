"""config.yaml -> a frozen, validated `Config`.

The daemon's own settings (listeners, limits, registry, delivery backends, where
the routing files are). The routing files themselves (address book, rules) are
loaded by `routing.snapshot`. With no file at all, `Config.embedded()` is the
default a new user gets from `mailrouter run`: SMTP on 127.0.0.1:2525, LMTP on
127.0.0.1:2524, a SQLite registry and Maildirs under ./var, the rules in ./rules (the
example rules shipped in the package when there is no ./rules folder). `find_config`
decides which file a command loads: -c, $MAILROUTER_CONFIG, /etc/mailrouter/config.yaml.

Refused: unknown keys (with a "did you mean"), wrong types, ports out of range,
an admin listener off loopback without `admin.token`/`admin.token_file`, a token
shorter than 16 characters or a token file that cannot be read;
relative paths are resolved against the config file's directory. Every error
names file:line and what to write instead; all errors of a load are reported.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import socket
import stat
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from . import yamlsrc
from .errors import ConfigError, ConfigErrors
from .values import Downstream

__all__ = ["Listener", "Limits", "RegistryConfig", "Downstream", "DeliveryConfig", "Config",
           "ControlConfig", "OutboxConfig", "AutoreplyConfig", "PostfixMapsConfig", "WebConfig",
           "find_config", "load_config", "unknown_keys", "is_loopback", "owned_errors",
           "changed_keys", "admin_endpoint"]

PACKAGE_RULES = Path(__file__).resolve().parent / "defaults" / "rules"


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 25 * 1024 * 1024     # SIZE; larger mail gets 552 5.3.4
    max_recipients: int = 100                    # more RCPTs get 452 4.5.3
    max_connections: int = 1000                  # more open sessions are greeted 421 4.7.0
    max_connections_per_client: int = 50         # per worker from one address; more 421 4.7.0; 0: none
    max_connections_per_loopback_client: int = 0  # the same for 127.0.0.0/8 and ::1 (the local MTA)
    max_received: int = 50                       # Received headers before 554 5.4.6 (Postfix hopcount_limit)
    command_timeout: float = 300.0               # idle time allowed between commands (RFC 5321 4.5.3.2.7)
    data_timeout: float = 180.0                  # idle time allowed between DATA chunks (RFC 5321 4.5.3.2.6)
    data_deadline: float = 600.0                 # whole DATA phase; a trickling client gets 421 4.4.2
    max_data_in_flight: int = 1024 * 1024 * 1024  # memory of DATA in flight per process (2 per byte); 452 4.3.1
    process_timeout: float = 300.0               # end of DATA to reply; past it 451 4.3.0 (RFC 5321: 10 min)
    max_alias_depth: int = 20
    max_alias_width: int = 1000
    max_errors: int = 20                         # refused commands, then 421 4.7.0 (Postfix smtpd_hard_error_limit)
    soft_errors: int = 10                        # past this many, each reply waits error_delay (smtpd_soft_error_limit)
    error_delay: float = 1.0                     # seconds (smtpd_error_sleep_time); a delivery resets the count
    greet_delay: float = 1.0                     # before the 220 to a non-loopback peer; talking first: 554 5.5.0
    greet_delay_loopback: float = 0.0            # the same for a peer on 127.0.0.0/8 or ::1 (the local MTA)


# Limits that may be 0 (no delay); every other limit is at least 1.
ZERO_OK_LIMITS = frozenset({"error_delay", "greet_delay", "greet_delay_loopback",
                            "max_connections_per_client", "max_connections_per_loopback_client"})


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    url: str
    batch_max: int = 256
    timeout: float = 10.0
    sync: str = "full"        # SQLite: fsync every commit ("full") or leave it to WAL ("normal")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    maildir_root: Path
    lmtp: Downstream | None = None
    smtp: Downstream | None = None
    max_connections_per_downstream: int = 10     # open at once to one LMTP/SMTP downstream
    hold_permanent_failures: float = 86400.0     # seconds a 5xx for a configured mailbox is 451
    intents_dir: Path | None = None              # None: var/intents beside the config file


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """`control:` execution control: requests, reply tracking, SLA reminders (control/)."""

    replies: tuple[str, ...] = ()            # our addresses that get copies of outgoing mail
    number: str | None = "[#{n}]"            # our request number in subjects; None: not matched
    join: str = "address"                    # who may join a request: address | domain | off
    close_marker: str | None = "[closed]"    # a reply whose subject or first line has it closes
    close_after: float = 14 * 86400.0        # seconds without activity: answered/waiting -> closed
    remind_after: float = 0.0                # business seconds after the first-response due
    escalate_after: float = 4 * 3600.0       # business seconds after the reminder
    head: str | None = None                  # person key: escalations when nobody else can take them
    scan_every: float = 60.0                 # seconds between scheduler runs
    sender: str = ""                         # From of reminders (default: mailrouter@hostname)
    waiting_marker: str | None = "[waiting]"  # a reply that has it: waiting for the customer
    language: str = "en"                     # of reminders and escalations: en | ru


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    """`outbox:`: where autoreplies and DSNs are handed over, and how they are retried."""

    relay: Listener | None = None                # the MTA's submission port; None: they wait
    timeout: float = 30.0                        # seconds per SMTP step with the relay
    retry_min: float = 60.0                      # first retry after this; doubles each time
    retry_max: float = 3600.0                    # ... up to this
    max_age: float = 5 * 86400.0                 # then the row is given up ('failed')


@dataclass(frozen=True, slots=True)
class AutoreplyConfig:
    """`autoreply:`: the RFC 3834 policy the responders of the routing files share."""

    envelope_from: str = "<>"                    # MAIL FROM of answers ('<>' or an address)
    daily_cap: int = 3                           # answers to one sender per 24 h
    robot_senders: tuple[str, ...] | None = None  # None: autoreply.DEFAULT_ROBOT_SENDERS
    dns_check: bool = True                       # no answer to a domain without MX or A/AAAA
    dns_resolver: Listener | None = None         # None: the system's resolvers
    dns_timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class PostfixMapsConfig:
    """`postfix_maps:`: where `mailrouter postfix` writes Postfix's tables (postfixmaps.py)."""

    dir: Path
    mode: str = "relay"                          # relay | virtual
    nexthop: str = ""                            # '' = smtp:[listen.smtp host]:port
    postmap: bool = False                        # run postmap on each file written
    postfix_config: str | None = None            # postmap -c DIR
    kind: str = "hash"                           # table type for postmap and main.cf
    on_reload: bool = False                      # the daemon rewrites them at start and reload


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The `web:` section: who administers, how people sign in, how long a session lasts."""

    admins: tuple[str, ...] = ()                 # person keys of the address book who see everything
    trusted_header: str | None = None            # e.g. X-Remote-User, set by a reverse proxy
    session_ttl: float = 8 * 3600.0              # seconds a sign-in lasts
    hosts: tuple[str, ...] = ()                  # Host header values answered (lower case); () any
    url: str | None = None                       # where people open it; reminders link there
    proxy_secret: str | None = None              # the proxy sends it in PROXY_SECRET_HEADER


WEB_PORT = 9126         # the embedded default: beside the admin endpoint's 9125
PROXY_SECRET_HEADER = "X-Mailrouter-Proxy-Secret"


@dataclass(frozen=True, slots=True)
class Config:
    path: str                                    # '' for the embedded default
    hostname: str
    smtp: Listener | None
    lmtp: Listener | None
    admin: Listener | None
    limits: Limits
    registry: RegistryConfig
    delivery: DeliveryConfig
    routing: tuple[str, ...]                     # glob patterns of routing files, absolute
    shutdown_grace: float = 30.0
    log_level: str = "INFO"
    log_format: str = "kv"                       # kv | json (logs.py)
    workers: int = field(default_factory=lambda: auto_workers())  # processes on the listeners
    workdir: Path = field(default_factory=Path.cwd)
    admin_token: str | None = field(default=None, repr=False)   # bearer token of the admin endpoint
    control: ControlConfig | None = None         # None: no requests, no reply tracking, no SLA
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    autoreply: AutoreplyConfig = field(default_factory=AutoreplyConfig)
    postfix_maps: PostfixMapsConfig | None = None
    web: Listener | None = None                  # the web view; on by default only when embedded
    webui: WebConfig = field(default_factory=WebConfig)

    @property
    def intents_dir(self) -> Path:
        """Where the intent journals go (intents.py): delivery.intents_dir, else var/intents
        beside the config file, which for /etc/mailrouter/config.yaml is a directory the
        systemd unit keeps read-only (ProtectSystem=strict): give it under the state dir."""
        return self.delivery.intents_dir or self.workdir / "var" / "intents"

    def written_dirs(self) -> dict[str, Path]:
        """The directories the daemon writes in, by the key that sets each: checked at start
        and by `mailrouter check`, so that a read-only or foreign one is refused there and
        not met by the first message (451 for every Maildir copy, or every message)."""
        dirs = {"delivery.maildir_root": Path(self.delivery.maildir_root),
                "delivery.intents_dir": self.intents_dir}
        sqlite = self.sqlite_file()
        if sqlite is not None:
            dirs["registry.url"] = sqlite.parent
        if self.postfix_maps is not None and self.postfix_maps.on_reload:
            # stale tables make Postfix refuse each new address of the book with 550
            dirs["postfix_maps.dir"] = self.postfix_maps.dir
        return dirs

    def sqlite_file(self) -> Path | None:
        """The SQLite registry's database file, None for PostgreSQL."""
        scheme, _, rest = self.registry.url.partition(":///")
        if scheme in ("sqlite", "sqlite+aiosqlite") and rest.startswith("/"):
            return Path(rest.partition("?")[0])
        return None

    @classmethod
    def embedded(cls, base: Path | None = None) -> "Config":
        base = (base or Path.cwd()).resolve()
        rules = base / "rules"
        rules_dir = rules if rules.is_dir() else PACKAGE_RULES
        return cls(
            path="", hostname=socket.gethostname() or "localhost",
            smtp=Listener("127.0.0.1", 2525), lmtp=Listener("127.0.0.1", 2524),
            admin=Listener("127.0.0.1", 9125), limits=Limits(),
            registry=RegistryConfig(f"sqlite+aiosqlite:///{base / 'var' / 'registry.db'}"),
            delivery=DeliveryConfig(maildir_root=base / "var" / "mail"),
            routing=(str(rules_dir / "*.yaml"),), workdir=base, web=Listener("127.0.0.1", WEB_PORT))


# -- validation helpers: each returns a value or records a ConfigError -----------------

class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[ConfigError] = []
        self.sections: dict[str, tuple[str, ...]] = {}     # each section read: its keys

    def error(self, value: Any, message: str, hint: str = "", parent: Any = None,
              key: Any = None) -> None:
        """At `value`; one without a position (a number, true, null) at its `key` in
        `parent`, else at `parent` (which named the section's first line, not the bad one)."""
        marks = getattr(parent, "key_marks", None)
        if key is not None and marks and key in marks and not getattr(value, "line", 0):
            line, col = marks[key]
        else:
            _, line, col = yamlsrc.where(value, parent)
        self.errors.append(ConfigError(message, self.path, line, col, hint))

    def section(self, doc: Any, key: str, known: tuple[str, ...]) -> dict[str, Any]:
        self.sections.setdefault(key, known)
        value = doc.get(key) if isinstance(doc, dict) else None
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(value, f"'{key}' must be a mapping", f"write '{key}:' followed by indented keys", doc)
            return {}
        for problem, hint in unknown_keys(value, known):
            self.error(problem, f"unknown key '{problem}' in '{key}'",
                       _empty_above(value, problem, known) or hint, value)
        return value

    def number(self, sec: dict[str, Any], key: str, default: Any, kind: Callable[[Any], Any] = int,
               minimum: float = 0, maximum: float | None = None) -> Any:
        value = sec.get(key, default)
        # .inf and .nan are YAML floats: int() of them was a traceback, and a nan timeout
        # or shutdown grace passed every comparison; 2.5 for a count was cut to 2 unsaid
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < minimum \
                or maximum is not None and value > maximum \
                or kind is int and value != int(value):
            bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            fraction = kind is int and isinstance(value, float) and math.isfinite(value) \
                and value != int(value)
            whole = "a whole number" if fraction else "a number"
            meant = _in_unit(key, value)
            if meant is not None:
                # `command_timeout: 5m`, `max_message_size: 25MB`: the sibling durations
                # (close_after: 14d) take units, these do not; the example was the default
                # ("for example 'command_timeout: 300.0'"), not the value written
                unit, number = meant
                self.error(value, f"'{key}' is a number of {unit}, without a unit, not "
                                  f"{value!r}", f"write '{key}: {number}' ({value} in {unit})",
                           sec, key)
                return default
            self.error(value, f"'{key}' must be {whole} {bounds}, not {value!r}",
                       f"for example '{key}: {_plain(default)}'", sec, key)
            return default
        return kind(value)

    def directory(self, sec: dict[str, Any], key: str, default: str, base: Path) -> Path:
        """A directory setting, relative to the config file. null, '' or a list used to
        become a folder named 'None', the config's own folder or "['a']"."""
        value = sec.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.error(value, f"'{key}' must be a directory path, not {value!r}",
                       f"for example '{key}: {default}' (relative to this file)", sec, key)
            value = default
        if value.startswith("~"):
            self.tilde(value, key, sec)
            value = default
        path = Path(value)
        return path if path.is_absolute() else base / path

    def tilde(self, value: Any, key: str, sec: Any) -> None:
        """`maildir_root: ~/mail` became a folder named '~' beside config.yaml: paths are
        not a shell's, no '~' is expanded; said instead of made."""
        self.error(value, f"'{key}': {value!r} starts with '~', which is not expanded here "
                   "(paths are relative to this file)",
                   "write the full path (/var/lib/mailrouter/..., /home/NAME/...) or one "
                   "relative to this file", sec, key)

    def listener(self, sec: dict[str, Any], key: str, default: Listener | None) -> Listener | None:
        if key not in sec:
            return default
        value = sec[key]
        if value is None or value is False:
            return None
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            # the example was 127.0.0.1:2525 for every key: `lmtp: 2524` was told to take
            # the SMTP listener's port; a bare port is given its host
            example = (f"127.0.0.1:{value}" if str(value).isdigit() and 0 < int(value) <= 65535
                       else f"127.0.0.1:{default.port}" if default is not None
                       else f"127.0.0.1:{_LISTENER_PORTS.get(key, 2525)}")
            self.error(value, f"'{key}' must be HOST:PORT, not {value!r}",
                       f"for example '{key}: {example}', or '{key}: null' to disable", sec, key)
            return default
        return Listener(host.strip("[]"), int(port))


# The port of each HOST:PORT setting's example, where it has no default
_LISTENER_PORTS = {"web": WEB_PORT, "relay": 10027, "resolver": 53}


def unknown_keys(mapping: dict[str, Any], known: tuple[str, ...]) -> list[tuple[Any, str]]:
    """(key, hint) for every key not in `known`, with a did-you-mean when one is close."""
    out = []
    for key in mapping:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = (f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(known))
        out.append((key, hint + yamlsrc.letters_note(key)))
    return out


def _empty_above(mapping: Any, key: Any, known: tuple[str, ...]) -> str:
    """The hint for an unknown key that follows a known key left empty:

        delivery:
          smtp:
          host: 127.0.0.1     <- meant under smtp:, written at its level

    "known keys: maildir_root, lmtp, smtp, ..." sent the admin to look for a typo."""
    marks = getattr(mapping, "key_marks", {})
    line = marks.get(key, (0, 0))[0]
    above = [k for k in mapping if mapping[k] is None and 0 < marks.get(k, (0, 0))[0] < line]
    if not above:
        return ""
    empty = max(above, key=lambda k: marks[k][0])
    between = [k for k in mapping if marks.get(empty, (0, 0))[0] < marks.get(k, (0, 0))[0] < line]
    if any(k in known for k in between):
        return ""       # a key of the section between: not one block meant under it
    return (f"'{empty}:' on line {marks[empty][0]} has no value: to make '{key}' one of its "
            f"keys, indent it (and the keys with it) under '{empty}:' by two more spaces")


TOP_KEYS = ("hostname", "listen", "limits", "registry", "delivery", "routing",
            "shutdown_grace", "log_level", "log_format", "workers", "admin", "control",
            "outbox", "autoreply", "postfix_maps", "web")


# -- which file: -c, $MAILROUTER_CONFIG, /etc/mailrouter/config.yaml, the embedded default

SYSTEM_CONFIG = Path("/etc/mailrouter/config.yaml")
CONFIG_ENV = "MAILROUTER_CONFIG"
DISCOVERY = (f"${CONFIG_ENV}, else {SYSTEM_CONFIG} if it exists, else the embedded "
             "default (./var, ./rules or the packaged example rules, 127.0.0.1:2525/2524)")


def find_config(given: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to load: `given` (-c), else DISCOVERY; None means the embedded default.

    A file named by -c or $MAILROUTER_CONFIG is returned even when it does not exist, so
    loading it says "file not found" instead of quietly running something else. There is no
    ./config.yaml step: a file of that name in whatever folder one stands in need not be
    mailrouter's."""
    if given:
        return Path(given)
    named = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if named:
        return Path(named)
    try:
        return SYSTEM_CONFIG if stat.S_ISREG(SYSTEM_CONFIG.stat().st_mode) else None
    except PermissionError:
        # /etc/mailrouter is root:mailrouter 0750 (install.md): it is there but not this
        # user's to read. Path.is_file raised (a traceback); the embedded default would run
        # beside the real config. load_config says what is in the way instead.
        return SYSTEM_CONFIG
    except OSError:
        return None


def unreadable(p: Path) -> ConfigError | None:
    """The config file given as its directory, or one this user may not read (install.md
    keeps it root:mailrouter 0640 in a 0750 /etc/mailrouter): what stands in the way and
    the fix. Both said only "cannot read: Is a directory" or "... Permission denied"."""
    if os.path.isdir(p):              # not Path.is_dir: it raises on EACCES (3.11)
        return ConfigError("a directory, not a config file", str(p),
                           hint=f"name the file: -c {p / 'config.yaml'}")
    effective = os.access in os.supports_effective_ids
    blocked = next((d for d in reversed(p.parents)
                    if not os.access(d, os.X_OK, effective_ids=effective)), None)
    if blocked is None and (not os.path.exists(p)
                            or os.access(p, os.R_OK, effective_ids=effective)):
        return None
    where = blocked or p
    try:
        st = os.stat(where)
    except OSError:
        return None
    return ConfigError(
        "cannot read: permission denied", str(p),
        hint=f"{where} is uid {st.st_uid}'s, gid {st.st_gid}'s, mode {st.st_mode & 0o777:04o}: "
             f"uid {os.geteuid()} may not {'enter' if blocked else 'read'} it; run the command "
             "as the user mailrouter runs as (runuser -u mailrouter -- mailrouter ...) or as "
             "root, or let that user's group read it")


def load_config(path: str | Path | None) -> Config:
    """Load config.yaml, or the embedded default when `path` is None. Raises ConfigErrors."""
    if path is None:
        return Config.embedded()
    p = Path(path).resolve()
    refused = unreadable(p)
    if refused is not None:
        raise ConfigErrors([refused])
    try:
        doc = yamlsrc.load(p)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    c = _Checker(str(p))
    if doc is None:
        doc = yamlsrc.LocMap()
    if not isinstance(doc, dict):
        raise ConfigErrors([ConfigError("the file must be a mapping of settings", str(p), 1, 1,
                                        "see config.example.yaml")])
    cfg = _build(doc, p, c)
    if c.errors:        # in the file's order, as the address book's are
        raise ConfigErrors(sorted(c.errors, key=lambda e: (e.line, e.column)))
    return cfg


def admin_endpoint(path: str | Path) -> tuple[Listener | None, str | None] | None:
    """`listen.admin` and the admin token of a config file that has errors elsewhere, or
    None when these two cannot be read. `mailrouter reload` (systemctl reload) needs only
    them to reach the daemon: with a typo in `limits:` it exited 2 and reloaded nothing,
    though the daemon reloads its routing files and names config.yaml's errors itself."""
    p = Path(path).resolve()
    try:
        doc = yamlsrc.load(p)
    except (ConfigError, OSError):
        return None
    if not isinstance(doc, dict):
        return None
    c = _Checker(str(p))
    listen = c.section(doc, "listen", ("smtp", "lmtp", "admin", "web"))
    admin = c.listener(listen, "admin", Config.embedded(p.parent).admin)
    token = _admin_token(doc, listen, admin, p.parent, c)
    return None if c.errors else (admin, token)


def owned_errors(exc: ConfigErrors, cfg: Config,
                 given: Sequence[str] | None = None) -> ConfigErrors:
    """`exc` with the config file named on each error that has no file of its own: "no
    routing files match ..." is about config.yaml's `routing:`, and was printed as
    "<config>: ...", which named no file the admin could open. With `given` (the CLI's
    --routing globs, read instead of `routing:`) those errors are about them instead."""
    if all(e.path for e in exc.errors):
        return exc
    if given:
        name = "--routing " + " ".join(repr(g) for g in given)
        return ConfigErrors([e if e.path else ConfigError(e.message, name, e.line, e.column,
                                                          e.hint) for e in exc.errors])
    name = cfg.path or "the embedded default config (no -c FILE)"
    line, column = _routing_key(cfg.path)       # config.yaml's routing:, to open at
    return ConfigErrors([e if e.path else ConfigError(e.message, name, e.line or line,
                                                      e.column or column, e.hint)
                         for e in exc.errors])


def _routing_key(path: str) -> tuple[int, int]:
    """(line, column) of `routing:` in the config file at `path`; (0, 0) without one."""
    if not path:
        return 0, 0
    try:
        doc = yamlsrc.load(path)
    except ConfigError:
        return 0, 0
    marks = getattr(doc, "key_marks", {})
    return marks.get("routing", (0, 0)) if isinstance(doc, dict) else (0, 0)


# Config's fields under the key config.yaml writes them with; those not named are top keys.
# `path` and `workdir` are where the file is, not what it says.
_KEY_OF = {"smtp": "listen.smtp", "lmtp": "listen.lmtp", "admin": "listen.admin",
           "web": "listen.web", "admin_token": "admin.token", "webui": "web"}
_SECTIONS = frozenset({"limits", "registry", "delivery", "control", "outbox", "autoreply",
                       "postfix_maps", "webui"})


def changed_keys(running: Config, edited: Config) -> list[str]:
    """The config.yaml keys whose values differ between the config a daemon started with and
    the file as it is now (`limits.max_recipients`, `listen.smtp`): what a reload does not
    apply (it reads only the routing files), so that it can say so instead of "reloaded"."""
    out: list[str] = []
    for f in fields(Config):
        if f.name in ("path", "workdir"):
            continue
        old, new = getattr(running, f.name), getattr(edited, f.name)
        if old == new:
            continue
        key = _KEY_OF.get(f.name, f.name)
        if f.name in _SECTIONS and is_dataclass(old) and type(old) is type(new):
            out += [f"{key}.{sub.name}" for sub in fields(old)
                    if getattr(old, sub.name) != getattr(new, sub.name)]
        else:
            out.append(key)
    return out


# Sections of the routing files, written in config.yaml by mistake
ROUTING_SECTIONS = ("rules", "aliases", "mailboxes", "people", "teams", "moved", "calendars",
                    "autoreplies", "departments", "domains", "tests", "address_options")


def _top_hint(key: Any, hint: str, c: _Checker) -> str:
    """For an unknown top-level key: the section it belongs under ('smtp' is listen.smtp,
    not "did you mean 'admin'?"), or the routing files for a routing section."""
    name = str(key)
    if name in ROUTING_SECTIONS:
        return (f"'{name}:' belongs in a routing file (the files 'routing:' names, e.g. "
                "rules/*.yaml), not in config.yaml")
    if name.lower() in ("database", "db", "database_url", "db_url"):
        return "did you mean 'registry: {url: ...}'?"
    homes = [section for section, keys in c.sections.items() if name in keys]
    return f"did you mean '{homes[0]}: {{{name}: ...}}'?" if homes else hint


def _build(doc: dict[str, Any], p: Path, c: _Checker) -> Config:
    cfg = _build_sections(doc, p, c)
    _not_ourselves(cfg, doc, c)
    for key, hint in unknown_keys(doc, TOP_KEYS):   # after: c.sections knows every section's keys
        c.error(key, f"unknown key '{key}'", _top_hint(key, hint, c), doc)
    return cfg


def _build_sections(doc: dict[str, Any], p: Path, c: _Checker) -> Config:
    base = p.parent
    dflt = Config.embedded(base)
    listen = c.section(doc, "listen", ("smtp", "lmtp", "admin", "web"))
    lim = c.section(doc, "limits", tuple(Limits.__dataclass_fields__))
    limits = Limits(**{k: c.number(lim, k, getattr(Limits(), k), type(getattr(Limits(), k)),
                                   0 if k in ZERO_OK_LIMITS else 1)
                       for k in Limits.__dataclass_fields__})
    admin = c.listener(listen, "admin", dflt.admin)
    web = c.listener(listen, "web", None)      # a config file turns the web view on itself
    smtp, lmtp = c.listener(listen, "smtp", dflt.smtp), c.listener(listen, "lmtp", dflt.lmtp)
    _distinct_listeners({"smtp": smtp, "lmtp": lmtp, "admin": admin, "web": web}, listen, c)
    return Config(
        path=str(p), hostname=_hostname(doc, dflt.hostname, c),
        smtp=smtp, lmtp=lmtp,
        admin=admin, admin_token=_admin_token(doc, listen, admin, base, c), limits=limits,
        registry=_registry(doc, base, c), delivery=_delivery(doc, base, c),
        routing=_routing(doc, base, c),
        shutdown_grace=float(c.number(doc, "shutdown_grace", 30.0, float)),
        log_level=_log_level(doc, c), log_format=_log_format(doc, c),
        workdir=base,
        workers=_workers(doc, c), control=_control(doc, c),
        outbox=_outbox(doc, c), autoreply=_autoreply(doc, c),
        postfix_maps=_postfix_maps(doc, base, c), web=web, webui=_web(doc, listen, web, c))


_ANY_HOST = ("0.0.0.0", "::", "*", "")


def _distinct_listeners(listeners: Mapping[str, Listener | None], listen: dict[str, Any],
                        c: _Checker) -> None:
    """Two listeners on one port (of one address, or one of them on every address) passed
    check; `run` then failed to bind the second, blaming 'another program'."""
    seen: list[tuple[str, Listener]] = []
    for name, mine in listeners.items():
        if mine is None or mine.port == 0:
            continue
        for other, theirs in seen:
            if mine.port == theirs.port and (mine.host == theirs.host or mine.host in _ANY_HOST
                                             or theirs.host in _ANY_HOST):
                c.error(listen.get(name), f"listen.{name} {mine} is the port of listen.{other} "
                        f"{theirs}", f"give listen.{name} a port of its own", listen, name)
                break
        seen.append((name, mine))


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _same_place(a: Any, b: Listener) -> bool:
    """Would a connection to `a` (host, port) reach our listener `b`?"""
    if a.port != b.port or b.port == 0:
        return False
    return a.host == b.host or b.host in _ANY_HOST or (a.host in _LOOPBACK and b.host in _LOOPBACK)


def _not_ourselves(cfg: Config, doc: dict[str, Any], c: _Checker) -> None:
    """delivery.lmtp/smtp or outbox.relay on our own smtp/lmtp listener: every copy (every
    autoreply) came back to us instead of the mail store (the MTA)."""
    delivery, outbox = doc.get("delivery"), doc.get("outbox")
    targets = (("delivery.lmtp", cfg.delivery.lmtp, delivery, "lmtp"),
               ("delivery.smtp", cfg.delivery.smtp, delivery, "smtp"),
               ("outbox.relay", cfg.outbox.relay, outbox, "relay"))
    for what, to, sec, key in targets:
        for name, ours in (("smtp", cfg.smtp), ("lmtp", cfg.lmtp)):
            if to is not None and ours is not None and _same_place(to, ours):
                at = sec.get(key) if isinstance(sec, dict) else None
                c.error(at, f"{what} {to.host}:{to.port} is mailrouter's own listen.{name}",
                        f"point {what} at the mail store or the MTA (e.g. Dovecot's LMTP, "
                        "Postfix's RETURN_PORT), not back at mailrouter", sec, key)


CONTROL_KEYS = ("replies", "number", "join", "close_marker", "close_after", "remind_after",
                "escalate_after", "head", "scan_every", "sender", "waiting_marker", "language")
NOTICE_LANGUAGES = ("en", "ru")


def _control(doc: dict[str, Any], c: _Checker) -> ControlConfig | None:
    if "control" not in doc:
        return None
    sec = c.section(doc, "control", CONTROL_KEYS)
    d = ControlConfig()
    replies = sec.get("replies") or []
    replies = [replies] if isinstance(replies, str) else replies
    if not isinstance(replies, list) or not all(isinstance(r, str) and "@" in r for r in replies):
        c.error(sec.get("replies"), "'control.replies' must be an address or a list of them",
                "for example 'replies: replies@example.com' (Postfix sender_bcc_maps sends there)", sec)
        replies = []
    number = sec.get("number", d.number)
    if number is not None and (not isinstance(number, str) or number.count("{n}") != 1):
        c.error(number, f"'control.number' must contain {{n}} once, not {number!r}",
                "for example 'number: \"[#{n}]\"', or null to match by references only", sec)
        number = d.number
    join = str(sec.get("join", d.join))
    if join not in ("address", "domain", "off"):
        c.error(sec.get("join"), f"'control.join' must be address, domain or off, not {join!r}",
                "address: only a participant's address may join a request; domain: their domain", sec)
        join = d.join
    marker = sec.get("close_marker", d.close_marker)
    waiting = sec.get("waiting_marker", d.waiting_marker)
    head = sec.get("head")
    language = sec.get("language", d.language)
    if language not in NOTICE_LANGUAGES:
        c.error(language, f"'control.language' must be en or ru, not {language!r}",
                "the language of reminders and escalations, for example 'language: ru'", sec,
                "language")
        language = d.language

    def dur(key: str, default: float) -> float:
        # remind_after and escalate_after count a calendar's working time, which
        # add_business_hours looks for within 3 years: 30d of it fits any real calendar
        most = 30 * 86400.0 if key in ("remind_after", "escalate_after") else MAX_DURATION
        return _duration(sec, key, default, c, "control", most)
    return ControlConfig(
        tuple(_located(r, r.strip().lower()) for r in replies), number, join,
        str(marker) if marker else None, dur("close_after", d.close_after),
        dur("remind_after", d.remind_after), dur("escalate_after", d.escalate_after),
        _located(head, str(head)) if head is not None else None,
        dur("scan_every", d.scan_every) or d.scan_every,
        str(sec.get("sender") or ""), str(waiting) if waiting else None, str(language))


def _postfix_maps(doc: dict[str, Any], base: Path, c: _Checker) -> PostfixMapsConfig | None:
    keys = tuple(PostfixMapsConfig.__dataclass_fields__)
    sec = c.section(doc, "postfix_maps", keys)
    if not sec:
        return None
    if not isinstance(sec.get("dir"), str) or not sec["dir"].strip():
        c.error(sec, "'postfix_maps' needs 'dir', the directory the tables are written to",
                "for example 'dir: /var/lib/mailrouter/postfix'", sec)
        return None
    mode, kind = str(sec.get("mode", "relay")), str(sec.get("kind", "hash"))
    if mode not in ("relay", "virtual"):
        c.error(sec.get("mode"), f"'postfix_maps.mode' must be relay or virtual, not {mode!r}",
                "relay: the domains are only ours; virtual: Postfix hosts other addresses there",
                sec)
    if kind not in ("hash", "btree", "lmdb", "cdb"):
        c.error(sec.get("kind"), f"'postfix_maps.kind' must be hash, btree, lmdb or cdb, not {kind!r}",
                "for example 'kind: hash' (see `postconf -m`)", sec)
    for key in ("postmap", "on_reload"):
        if not isinstance(sec.get(key, False), bool):
            c.error(sec.get(key), f"'postfix_maps.{key}' must be true or false", "", sec, key)
    d = Path(sec["dir"])
    return PostfixMapsConfig(d if d.is_absolute() else base / d, mode, str(sec.get("nexthop", "")),
                             sec.get("postmap") is True,
                             str(sec["postfix_config"]) if sec.get("postfix_config") else None,
                             kind, sec.get("on_reload") is True)


def _located(src: Any, text: str) -> str:
    """`text` keeping the YAML position of `src`: `mailrouter check` compares the names in
    `control:` with the address book (control/checks.py) and cites file:line."""
    out = yamlsrc.LocStr(text)
    out.path, out.line, out.column = yamlsrc.where(src)
    return out


MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Is a listener on this host (or a peer at this address) on this machine?

    An IPv4 peer on a dual-stack socket arrives as ``::ffff:127.0.0.1``, which Python
    before 3.13 does not call loopback: it is read as the IPv4 address it maps.
    """
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])   # no zone
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(doc: dict[str, Any], c: _Checker) -> str:
    """One of LOG_LEVELS, any case. Anything else used to become INFO without a word."""
    value = doc.get("log_level", "INFO")
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(str(value).upper(), str(value).upper())
    if level not in LOG_LEVELS:
        close = difflib.get_close_matches(level, LOG_LEVELS, n=1)
        c.error(value, f"'log_level' must be one of {', '.join(LOG_LEVELS)}, not {value!r}",
                f"did you mean '{close[0]}'?" if close else "for example 'log_level: INFO'",
                doc, "log_level")
        return "INFO"
    return level


# A host name as the greeting, Received: and the loop-guard header carry it: labels of
# letters, digits, '-' and '_' between dots. A space split it into several words there.
_HOSTNAME = re.compile(r"[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*\.?")


def _hostname(doc: dict[str, Any], default: str, c: _Checker) -> str:
    value = doc.get("hostname")
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME.fullmatch(value):
        c.error(value, f"'hostname' must be a host name, not {value!r}",
                "for example 'hostname: mx.example.com' (in the greeting and Received: headers)",
                doc, "hostname")
        return default
    return value


def _log_format(doc: dict[str, Any], c: _Checker) -> str:
    value = doc.get("log_format", "kv")
    if value not in ("kv", "json"):
        c.error(value, f"'log_format' must be kv or json, not {value!r}",
                "kv: key=value lines; json: one JSON object per line", doc, "log_format")
        return "kv"
    return str(value)


def _admin_token(doc: dict[str, Any], listen: dict[str, Any], admin: Listener | None,
                 base: Path, c: _Checker) -> str | None:
    """`admin: {token: ...}` or `admin: {token_file: PATH}`; required when the admin
    listener is not on loopback (anyone who can connect could reload and read metrics)."""
    sec = c.section(doc, "admin", ("token", "token_file"))
    token: str | None = None
    if "token" in sec and "token_file" in sec:
        c.error(sec, "set 'admin.token' or 'admin.token_file', not both",
                "keep token_file: the token stays out of this file", sec)
    elif "token_file" in sec:
        where = Path(str(sec["token_file"]))
        try:
            token = (where if where.is_absolute() else base / where).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            c.error(sec["token_file"], f"cannot read 'admin.token_file': "
                    f"{getattr(exc, 'strerror', None) or exc}",
                    "create it (e.g. openssl rand -hex 32), readable by mailrouter", sec)
            return None
    elif "token" in sec:
        token = str(sec["token"] or "").strip()
    if token is not None and (len(token) < MIN_TOKEN or any(ch.isspace() for ch in token)):
        c.error(sec.get("token", sec.get("token_file")),
                f"the admin token must be at least {MIN_TOKEN} characters without spaces",
                "make one with: openssl rand -hex 32", sec)
        return None
    if admin is not None and token is None and not is_loopback(admin.host):
        c.error(listen.get("admin"), f"the admin listener {admin} is not on loopback, so "
                "anyone who can connect could reload the rules and read the metrics",
                "set 'admin: {token_file: admin.token}' (a bearer token), or listen on "
                "127.0.0.1", listen or doc)
    return token


def _outbox(doc: dict[str, Any], c: _Checker) -> OutboxConfig:
    sec = c.section(doc, "outbox", ("relay", "timeout", "retry_min", "retry_max", "max_age"))
    d = OutboxConfig()
    return OutboxConfig(c.listener(sec, "relay", None), c.number(sec, "timeout", d.timeout, float, 0.1),
                        c.number(sec, "retry_min", d.retry_min, float, 0.01),
                        c.number(sec, "retry_max", d.retry_max, float, 0.01),
                        c.number(sec, "max_age", d.max_age, float, 1))


def _autoreply(doc: dict[str, Any], c: _Checker) -> AutoreplyConfig:
    sec = c.section(doc, "autoreply", ("envelope_from", "daily_cap", "robot_senders", "dns"))
    d = AutoreplyConfig()
    sender = str(sec.get("envelope_from", d.envelope_from)).strip()
    if sender not in ("<>", "") and "@" not in sender:
        c.error(sec.get("envelope_from"), f"'envelope_from' must be <> or an address, not {sender!r}",
                "'<>' (the default) never bounces back; see the README on SPF and DKIM", sec)
    robots = sec.get("robot_senders")
    if robots is not None and (not isinstance(robots, list) or not all(isinstance(r, str) for r in robots)):
        c.error(robots, "'robot_senders' must be a list of local-part patterns",
                "for example robot_senders: [mailer-daemon, noreply, '*-request']", sec)
        robots = None
    dns = sec.get("dns") or {}
    if not isinstance(dns, dict):
        c.error(dns, "'autoreply.dns' must be a mapping", "for example dns: {timeout: 5}", sec)
        dns = {}
    for k, hint in unknown_keys(dns, ("check", "resolver", "timeout")):
        c.error(k, f"unknown key '{k}' in 'autoreply.dns'", hint, dns)
    return AutoreplyConfig("<>" if sender in ("<>", "") else sender.strip("<>"),
                           c.number(sec, "daily_cap", d.daily_cap, int, 1),
                           tuple(robots) if robots is not None else None,
                           bool(dns.get("check", True)), c.listener(dns, "resolver", None),
                           c.number(dns, "timeout", d.dns_timeout, float, 0.1))


def _web(doc: dict[str, Any], listen: dict[str, Any], web: Listener | None, c: _Checker) -> WebConfig:
    """`web: {admins: [person, ...], trusted_header: X-Remote-User, session_ttl: 8h,
    hosts: [mail-control.example.com]}`.

    A trusted header is believed only from a reverse proxy on this host: the web listener
    must then be on loopback, or anyone who can connect could name themselves, and `hosts`
    must name what the proxy forwards as Host: a page in a browser on this host that points
    its own name at 127.0.0.1 (DNS rebinding) could otherwise send the header itself."""
    sec = c.section(doc, "web", ("admins", "trusted_header", "session_ttl", "hosts", "url",
                                 "proxy_secret"))
    admins = sec.get("admins", [])
    if not isinstance(admins, list) or not all(isinstance(a, str) for a in admins):
        c.error(admins, "'web.admins' must be a list of person keys of the address book",
                "for example 'admins: [petrova]'", sec)
        admins = []
    header = sec.get("trusted_header")
    if header is not None and (not isinstance(header, str) or not header.strip()
                               or any(ch.isspace() or ch == ":" for ch in header.strip())):
        c.error(header, f"'web.trusted_header' must be a header name, not {header!r}",
                "for example 'trusted_header: X-Remote-User'", sec)
        header = None
    if header is not None and web is not None and not is_loopback(web.host):
        c.error(listen.get("web"), f"the web listener {web} is not on loopback, so anyone who can "
                f"connect could send {header.strip()} and sign in as anyone",
                "listen on 127.0.0.1 behind the reverse proxy, or drop 'web.trusted_header'",
                listen or doc)
    ttl = _duration(sec, "session_ttl", 8 * 3600.0, c, "web")
    if ttl <= 0:
        c.error(sec.get("session_ttl"), "'web.session_ttl' must be longer than 0",
                "for example 'session_ttl: 8h'", sec, "session_ttl")
        ttl = 8 * 3600.0
    hosts = sec.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() and " " not in h.strip()
                                              for h in hosts):
        c.error(hosts, "'web.hosts' must be a list of host names (the Host header the browser or "
                "the reverse proxy sends, with ':PORT' when it is not 80 or 443)",
                "for example 'hosts: [mail-control.example.com]'", sec)
        hosts = []
    if header is not None and not hosts:
        c.error(sec.get("trusted_header"), "'web.trusted_header' needs 'web.hosts': a page in a "
                f"browser on this host could point its name at the loopback listener and send "
                f"{header.strip()} itself (DNS rebinding)",
                "list the names the reverse proxy forwards as Host, e.g. "
                "'hosts: [mail-control.example.com]'", sec)
    hosts = [h.strip().lower() for h in hosts]
    return WebConfig(tuple(admins), header.strip() if isinstance(header, str) else None, ttl,
                     tuple(hosts), _web_url(sec, hosts, c), _proxy_secret(sec, header, c))


def _proxy_secret(sec: dict[str, Any], header: Any, c: _Checker) -> str | None:
    """`web.proxy_secret`: what the reverse proxy sends in X-Mailrouter-Proxy-Secret, so that
    the trusted header is believed from the proxy alone. Loopback keeps the network out, not
    the other users of this host: any of them could connect and name themselves anyone."""
    secret = sec.get("proxy_secret")
    hint = ("set 'proxy_secret:' to a long random string (openssl rand -hex 32) and have the "
            f"proxy send it: proxy_set_header {PROXY_SECRET_HEADER} \"SECRET\"; "
            "(deploy/nginx/mailrouter-web.conf)")
    if secret is None:
        if header is not None:
            c.error(sec.get("trusted_header"), "'web.trusted_header' needs 'web.proxy_secret': "
                    "any user of this host could connect to the loopback listener and send "
                    f"{str(header).strip()} itself", hint, sec, "trusted_header")
        return None
    if not isinstance(secret, str) or len(secret) < 16 or not secret.isascii() \
            or not secret.isprintable() or " " in secret:
        c.error(secret, "'web.proxy_secret' must be 16 or more printable ASCII characters "
                "without spaces", hint, sec, "proxy_secret")
        return None
    return secret


def _web_url(sec: dict[str, Any], hosts: list[str], c: _Checker) -> str | None:
    """`web.url`: the address people open the web view at (through the reverse proxy), so
    reminders can link to the request. http(s), a host, no query; its host must be one
    `web.hosts` answers, or every link would be refused."""
    url = sec.get("url")
    if url is None:
        return None
    hint = "for example 'url: https://mail-control.example.com' (as people open it)"
    if not isinstance(url, str) or not url.isprintable() or " " in url:
        c.error(url, f"'web.url' must be an address like https://mail-control.example.com, not {url!r}",
                hint, sec, "url")
        return None
    try:
        parts = urlsplit(url.strip())
        parts.port                       # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        c.error(url, f"'web.url' {url!r} is not an address: {exc}", hint, sec, "url")
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        c.error(url, f"'web.url' {url!r} must be http:// or https://, a host and an optional path, "
                "without ?query or #fragment", hint, sec, "url")
        return None
    if hosts and parts.netloc.lower() not in hosts:
        c.error(url, f"'web.url' names {parts.netloc.lower()}, which 'web.hosts' does not answer "
                "(its links would be refused)", f"add '{parts.netloc.lower()}' to 'web.hosts'",
                sec, "url")
        return None
    return url.strip().rstrip("/")


def auto_workers() -> int:
    """One worker per core this process may use, at most 8 (each holds its own caches and
    connections). Counted as the kernel enforces it, not os.cpu_count(): the CPUs in our
    affinity mask (taskset, systemd CPUAffinity=, docker --cpuset-cpus), and no more than a
    cgroup CPU quota allows (docker --cpus=2, systemd CPUQuota=200%), rounded up."""
    return max(1, min(8, usable_cpus()))


def usable_cpus(cgroup_fs: Path = Path("/sys/fs/cgroup"),
                proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may run on: its affinity, capped by the tightest cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_fs, proc_cgroup)
    return max(1, min(cpus, quota)) if quota is not None else max(1, cpus)


def _cgroup_quota(root: Path, proc_cgroup: Path) -> int | None:
    """ceil(quota / period) of the tightest cpu.max (cgroup v2) or cpu.cfs_quota_us (v1)
    on the way from our cgroup up to the root; None when there is no limit or no cgroupfs."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        rel = Path(path.lstrip("/"))
        files: tuple[str, ...]
        if controllers == "":                           # v2: "0::/path"
            base, files = root, ("cpu.max",)
        elif "cpu" in controllers.split(","):           # v1: "4:cpu,cpuacct:/path"
            base, files = root / controllers, ("cpu.cfs_quota_us", "cpu.cfs_period_us")
        else:
            continue
        for d in [base / rel, *(base / p for p in rel.parents)]:
            try:
                if len(files) == 1:
                    q, _, period = (d / files[0]).read_text().strip().partition(" ")
                else:
                    q, period = ((d / f).read_text().strip() for f in files)
            except (OSError, ValueError):
                continue
            if q not in ("max", "-1") and q.lstrip("-").isdigit() and period.isdigit() and int(period):
                found.append(-(-int(q) // int(period)))
    return min(found) if found else None


def _workers(doc: dict[str, Any], c: _Checker) -> int:
    value = doc.get("workers", "auto")
    if value == "auto":
        return auto_workers()
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        c.error(value, f"'workers' must be a number from 1 to 64 or 'auto', not {value!r}",
                "for example 'workers: auto' (one process per core)", doc, "workers")
        return 1
    return value


# The drivers the registry runs on (registry/store.py): aiosqlite, asyncpg. Another one
# ('sqlite+pysqlite', 'postgresql+psycopg2') failed at start with an internal error.
REGISTRY_SCHEMES = ("sqlite", "sqlite+aiosqlite", "postgresql", "postgres", "postgresql+asyncpg")


def _masked(url: str) -> str:
    """The url without its password: an error is printed and may be pasted into a ticket."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def _registry(doc: dict[str, Any], base: Path, c: _Checker) -> RegistryConfig:
    sec = c.section(doc, "registry", ("url", "batch_max", "timeout", "sync"))
    sync = str(sec.get("sync", "full")).lower()
    if sync not in ("full", "normal"):
        c.error(sec.get("sync"), f"registry 'sync' must be full or normal, not {sync!r}",
                "full: each commit survives a power cut; normal: survives a crash of mailrouter", sec)
        sync = "full"
    url = str(sec.get("url") or f"sqlite+aiosqlite:///{base / 'var' / 'registry.db'}")
    scheme = url.partition("://")[0]
    if scheme in REGISTRY_SCHEMES and scheme.startswith("sqlite"):
        file = url.partition(":///")[2] if url.startswith(f"{scheme}:///") else ""
        if not file or file.startswith(":memory:") or file.startswith("?"):
            # SQLAlchemy takes these for a database in memory: every record lost at exit
            # (and its pool took no pool_size: the daemon died with a TypeError traceback)
            c.error(sec.get("url"), f"the SQLite registry url {_masked(url)!r} names no file",
                    "write sqlite+aiosqlite:///var/registry.db (relative to this file) or "
                    "sqlite+aiosqlite:////abs/path/registry.db", sec, "url")
        elif file.startswith("~"):
            c.tilde(sec.get("url"), "url", sec)
        elif not file.startswith("/"):
            url = f"{scheme}:///{base / file}"
    elif scheme not in REGISTRY_SCHEMES:
        c.error(sec.get("url"), f"unsupported registry url {_masked(url)!r}",
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db", sec, "url")
    return RegistryConfig(url, c.number(sec, "batch_max", 256, int, 1),
                          c.number(sec, "timeout", 10.0, float, 0.1), sync)


def _downstream(sec: dict[str, Any], key: str, c: _Checker) -> Downstream | None:
    value = sec.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        c.error(value, f"'delivery.{key}' must be a mapping",
                f"for example '{key}: {{host: 127.0.0.1, port: "
                f"{24 if key == 'lmtp' else 10027}}}'", sec)     # smtp: deploy/postfix's RETURN_PORT
        return None
    for k, hint in unknown_keys(value, ("host", "port", "timeout", "pool_size")):
        c.error(k, f"unknown key '{k}' in 'delivery.{key}'", hint, value)
    port = c.number(value, "port", 24 if key == "lmtp" else 25, int, 1, 65535)
    return Downstream(str(value.get("host", "127.0.0.1")), port,
                      c.number(value, "timeout", 30.0, float, 0.1), c.number(value, "pool_size", 4, int, 1))


def _delivery(doc: dict[str, Any], base: Path, c: _Checker) -> DeliveryConfig:
    sec = c.section(doc, "delivery", ("maildir_root", "lmtp", "smtp", "intents_dir",
                                      "max_connections_per_downstream", "hold_permanent_failures"))
    return DeliveryConfig(c.directory(sec, "maildir_root", "var/mail", base),
                          _downstream(sec, "lmtp", c), _downstream(sec, "smtp", c),
                          c.number(sec, "max_connections_per_downstream", 10, int, 1),
                          _duration(sec, "hold_permanent_failures", 86400.0, c),
                          c.directory(sec, "intents_dir", "var/intents", base))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The plain numbers that are sizes in bytes; every other such key whose name says time is
# in seconds (the rest are counts)
_BYTE_KEYS = ("max_message_size", "max_data_in_flight")
_SECOND_WORDS = ("timeout", "delay", "deadline", "grace", "retry_", "max_age")
_SIZES = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def _plain(number: Any) -> Any:
    """300.0 as 300: the example a hint gives is written as config.example.yaml writes it."""
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _in_unit(key: str, value: Any) -> tuple[str, Any] | None:
    """('seconds', 300) for `command_timeout: 5m`, ('bytes', 26214400) for
    `max_message_size: 25MB` (1024-based, as the rules' sizes): the plain number meant by
    a value written with a unit, for a key that takes a plain number; else None."""
    text = str(value).strip().lower().replace(" ", "") if isinstance(value, str) else ""
    if key in _BYTE_KEYS:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)i?b?", text)
        if m and (m[2] or text.endswith("b")):
            return "bytes", int(float(m[1]) * _SIZES[m[2]])
    elif any(word in key for word in _SECOND_WORDS):
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h|d)", text)
        if m:
            return "seconds", _plain(float(m[1]) * _UNITS[m[2]])
    return None



# The longest duration a setting takes. Past it a time computed from it left datetime's
# range (session_ttl: 99999999d failed every sign-in with OverflowError).
MAX_DURATION = 366 * 86400.0


# A bare number is seconds; under a minute, on a setting counted in hours or days, it was
# meant in the unit of its example: `close_after: 14` closed answered requests after 14
# seconds, `session_ttl: 8` signed people out after 8, with no word from `check`.
_LONG_DURATIONS = ("close_after", "remind_after", "escalate_after", "session_ttl",
                   "hold_permanent_failures")


def _duration(sec: dict[str, Any], key: str, default: float, c: _Checker,
              section: str = "delivery", most: float = MAX_DURATION) -> float:
    """Seconds from a number or a text like 30s, 15m, 12h, 1d (0 turns it off)."""
    value = sec.get(key, default)
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 60 \
            and key in _LONG_DURATIONS and key in sec:
        n = _plain(value)
        c.error(value, f"'{section}.{key}: {n}' is {n} seconds (a bare number is seconds)",
                f"write the unit: '{key}: {n}d' (days), '{n}h' (hours) or '{n}m' (minutes); "
                f"'{n}s' if seconds are meant", sec, key)
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if text[:-1].isdigit() and text[-1:] in _UNITS:
            seconds = float(int(text[:-1]) * _UNITS[text[-1]])
    if seconds is None:
        c.error(value, f"'{section}.{key}' must be a duration such as 30m, 12h or 1d, not {value!r}",
                f"for example '{key}: 1d' (0 turns it off)", sec, key)
        return default
    if seconds > most:
        c.error(value, f"'{section}.{key}' must be at most {int(most // 86400)}d, not {value!r}",
                f"for example '{key}: 1d'", sec, key)
        return default
    return seconds


def _routing(doc: dict[str, Any], base: Path, c: _Checker) -> tuple[str, ...]:
    value = doc.get("routing", ["rules/*.yaml"])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        c.error(value, "'routing' must be a list of file paths or glob patterns",
                "for example 'routing: [rules/*.yaml]'", doc, "routing")
        return ()
    for v in value:
        if v.startswith("~"):
            c.tilde(v, "routing", doc)
    return tuple(v if Path(v).is_absolute() else str(base / v) for v in value)
