"""Command line: run, check, test, explain, reload, db upgrade.

Every command runs the daemon's own code (as amtool does for Alertmanager):
`check` loads exactly what `run` loads, `explain` and `test` call the same
`Snapshot.decide` the daemon calls after DATA. Exit codes: 0 fine, 1 a check
(errors in the configuration or routing files) or a rule test failed, or the daemon
refused a reload, 2 another command could not load its configuration, 3 `reload`
reloaded the rules but could not rebuild Postfix's tables (postfix_maps.on_reload),
4 `reload` reloaded the rules but config.yaml changed since the start (read only then),
5 `test` found no rule test in the routing files (nothing tested; --allow-no-tests: 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import sys
import textwrap
import urllib.request
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from .config import (CONFIG_ENV, DISCOVERY, PACKAGE_RULES, SYSTEM_CONFIG, Config, Listener,
                     find_config, load_config, owned_errors)
from .errors import ConfigError, ConfigErrors, RegistryError, place_prefix

__all__ = ["main"]

CONFIG_HELP = f"config file; without it: {DISCOVERY}"


def _config(path: str | None, code: int = 2, routing: Sequence[str] | None = None) -> Config:
    """The configuration, or its errors on stderr and exit `code` (check: 1, others: 2).

    `routing`: the --routing globs of check, test and explain, read instead of the config's
    `routing:` (a copy of the rules being edited, tried against the live config).
    """
    try:
        cfg = load_config(find_config(path))
    except ConfigErrors as exc:
        print(f"mailrouter: configuration has {len(exc.errors)} error(s):", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        if not path and os.environ.get(CONFIG_ENV):    # else the admin looks for a -c never given
            print(f"  (the file named by ${CONFIG_ENV}; give -c FILE or unset it)",
                  file=sys.stderr)
        raise SystemExit(code) from None
    if not cfg.path and Path("config.yaml").is_file():
        # `mailrouter run` beside the config.yaml just written ran the embedded default, and
        # `check` passed it, with "config: the embedded default" the only hint
        print("mailrouter: ./config.yaml is not read (no -c FILE, $MAILROUTER_CONFIG or "
              f"{SYSTEM_CONFIG}: the embedded default is used); give it with -c config.yaml",
              file=sys.stderr)
    if routing:
        return _routed(cfg, routing, code)
    if not cfg.path and Path(cfg.routing[0]).parent == PACKAGE_RULES:
        # Outside a project folder (no ./rules) the embedded default runs the packaged
        # example: say so, or `check` and `test` pass on rules the user never wrote.
        print(f"mailrouter: no -c FILE, ${CONFIG_ENV} or {SYSTEM_CONFIG}: using the embedded default "
              f"(routing files: {cfg.routing[0]}; registry and mail under {cfg.workdir / 'var'})",
              file=sys.stderr)
    return cfg


def _routed(cfg: Config, globs: Sequence[str], code: int) -> Config:
    """`cfg` reading the routing files `globs` name (relative to the current folder)."""
    import dataclasses
    import glob
    patterns = tuple(str(Path(g).expanduser().absolute()) for g in globs)
    for given, pattern in zip(globs, patterns):
        if not glob.glob(pattern):
            print(f"mailrouter: --routing {given!r} matches no file (a routing file or a glob "
                  "such as 'rules.new/*.yaml', relative to the current folder)", file=sys.stderr)
            raise SystemExit(code)
    return dataclasses.replace(cfg, routing=patterns)


def _shown(path: str | Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it
    (not when that folder is /, as for a service: /etc/x, not etc/x)."""
    p = Path(path)
    if Path.cwd() == Path("/"):
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _snapshot(cfg: Config, code: int = 2, given: Sequence[str] | None = None) -> Any:
    """The routing files' snapshot, or their errors on stderr and exit `code`. `given`:
    the --routing globs read instead of config.yaml's `routing:`, which an error of the
    set as a whole (no file, no mailbox) then names instead of config.yaml's line."""
    from .routing.snapshot import load_snapshot
    try:
        return load_snapshot(cfg.routing, cfg.limits, cfg.hostname)
    except ConfigErrors as raised:
        exc = owned_errors(raised, cfg, given)
        print(f"mailrouter: routing files have {len(exc.errors)} error(s):", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        raise SystemExit(code) from None


METRICS_DIR_PREFIX = "mailrouter-metrics."


def metrics_dir() -> str:
    """A new directory for the workers' shared counters, named after this process
    (mailrouter-metrics.PID.XXXX in the temp dir; workers.private_dir)."""
    from .workers import private_dir
    return private_dir(METRICS_DIR_PREFIX)


def cmd_run(args: argparse.Namespace) -> int:
    # first thing: a SIGTERM from here on stops the start cleanly (exit 0), see workers.Starting
    from .workers import Starting
    starting = Starting().install()
    cfg = _config(args.config)
    made = None
    if cfg.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # before prometheus_client is imported: workers share their counters through files
        made = os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir()
    book = None
    if cfg.workers > 1:
        # The address book, the longest part of a big start, is built in a child forked now,
        # while this process imports the daemon (half a second; no thread runs yet to fork
        # across); run_workers takes it from there (issue 15: bench/bench_start.py).
        from .routing.files import load_book
        from .workers import start_child
        book = start_child(lambda: load_book(cfg.routing, cfg.limits))
        starting.child = book        # a SIGTERM during the imports below kills it
    from .daemon import run
    try:
        return run(cfg, book, starting)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _config(args.config, code=1, routing=args.routing)
    snap = _snapshot(cfg, code=1, given=args.routing)
    from .control.checks import config_against_book
    crossed = config_against_book(cfg, snap.book)
    if crossed:      # names in config.yaml that the routing files do not define
        print(f"mailrouter: configuration has {len(crossed)} error(s):", file=sys.stderr)
        for err in crossed:
            print(f"  {err}", file=sys.stderr)
        return 1
    from .health import unwritable
    denied: list[str] = []          # to this user only: the daemon's may be another
    unusable = unwritable(cfg, create=False, others=denied)   # what `run` refuses to start on
    if unusable:
        print(f"mailrouter: the daemon could not write in {len(unusable)} of its "
              "directories:", file=sys.stderr)
        for line in unusable:
            print(f"  {line}", file=sys.stderr)
        return 1
    from .routing.ruletests import Names, check_rule_tests
    warnings = snap.warnings(cfg.control is not None)   # the daemon logs these too
    warnings += check_rule_tests(snap.sections.get("tests") or [], Path.cwd(),
                                 Names.of(snap.book, snap.rules.rules), snap.decide)
    from .control.checks import smtp_back_to_us
    warnings += smtp_back_to_us(cfg, snap.book, _mailbox_lines(snap.files))
    warnings += [f"{line}; fine if the daemon runs as a user who can" for line in denied]
    import glob
    # a glob of `routing:` that matches nothing is skipped (an empty drop-in folder may be
    # meant), so a typo in it dropped a file of rules or aliases without a word
    lines = _routing_lines(cfg)
    warnings += [f"{place_prefix(cfg.path or '', lines.get(p, 0))}routing: {_shown(p)!r} matches no "
                 "file; its rules and addresses, if any, are not loaded"
                 for p in cfg.routing if glob.has_magic(p) and not glob.glob(p)]
    warnings += _skipped_warnings(cfg, lines)
    warnings += _unmatched_spellings(cfg, lines, cfg.routing, given=bool(args.routing))
    for w in warnings:
        print(f"warning: {w}")
    from .routing.lint import lint_notes
    for note in lint_notes(snap.rules.rules):
        print(f"note: {note}")
    print(f"ok: {len(snap.files)} routing file(s), {len(snap.book.mailboxes)} mailboxes, "
          f"rule set {snap.hash}" + (f", {len(warnings)} warning(s)" if warnings else ""))
    print(f"config: {_shown(cfg.path) if cfg.path else 'the embedded default'}")
    print(f"routing files: {', '.join(_shown(f) for f in snap.files)}")
    return 0


def _skipped_warnings(cfg: Config, lines: dict[str, int]) -> list[str]:
    """A warning per backup file a `routing:` glob matches (skipped, routing.snapshot), naming
    the file and the config's line of the glob."""
    from fnmatch import fnmatch
    from .routing.files import routing_files
    out = []
    for f in routing_files(cfg.routing)[1]:
        pattern = next((p for p in cfg.routing if fnmatch(f, p)), "")
        where = f"{cfg.path}:{lines[pattern]}" if cfg.path and lines.get(pattern) else \
            cfg.path or "routing:"
        out.append(f"{f}: skipped: an editor's backup or a package manager's leftover, as "
                   f"run-parts skips them; the glob {_shown(pattern)!r} ({where}) matches it; "
                   "remove it, or rename it to load it")
    return out


def _unmatched_spellings(cfg: Config, lines: dict[str, int], routing: Sequence[str],
                         given: bool = False) -> list[str]:
    """A warning per file beside a `*.yaml` glob's that the glob does not match for its
    suffix alone (`extra.yml`, `Routing.YAML`): saved under the other spelling, its rules and
    addresses were not loaded, and nothing said so."""
    import glob
    from .routing.files import routing_files
    files, skipped = routing_files(routing)
    loaded = set(files) | set(skipped)
    out = []
    for pattern in routing:
        head, _, tail = pattern.rpartition("/")
        if not glob.has_magic(tail) or not tail.lower().endswith((".yaml", ".yml")):
            continue
        stem = tail[:tail.rfind(".")]
        for other in sorted(set(glob.glob(f"{head}/{stem}.*" if head else f"{stem}.*"))):
            if other in loaded or not other.lower().endswith((".yaml", ".yml")) \
                    or not os.path.isfile(other):
                continue
            where = ("--routing" if given else f"{cfg.path}:{lines[pattern]}"
                     if cfg.path and lines.get(pattern) else cfg.path or "routing:")
            renamed = other[:other.rfind(".")] + tail[tail.rfind("."):]
            out.append(f"{_shown(other)}: not loaded: the glob {_shown(pattern)!r} ({where}) does "
                       "not match its suffix, so its rules and addresses are not read; rename it "
                       f"to {_shown(renamed)!r} to load it, or move it away")
    return out


def _routing_lines(cfg: Config) -> dict[str, int]:
    """config.yaml's line of each `routing:` pattern (absolute, as Config holds them): the
    item's, else the key's. Empty without a config file, or when it cannot be read again."""
    from . import yamlsrc
    if not cfg.path:
        return {}
    try:
        doc = yamlsrc.load(cfg.path)
    except ConfigError:
        return {}
    if not isinstance(doc, dict):
        return {}
    key_line = doc.key_line("routing") if isinstance(doc, yamlsrc.LocMap) else 0
    value = doc.get("routing")
    base = Path(cfg.path).resolve().parent
    lines = {}
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            path = item if Path(item).is_absolute() else str(base / item)
            lines[path] = getattr(item, "line", 0) or key_line
    return lines


def _mailbox_lines(files: Sequence[str]) -> dict[str, tuple[str, int]]:
    """(file, line) of each mailbox under `mailboxes:` of the routing files, the first
    place: the book keeps no positions of its mailboxes (read bare, for speed)."""
    from . import yamlsrc
    out: dict[str, tuple[str, int]] = {}
    for f in files:
        try:
            doc = yamlsrc.load(f)
        except ConfigError:
            continue
        boxes = doc.get("mailboxes") if isinstance(doc, dict) else None
        if isinstance(boxes, yamlsrc.LocMap):
            for name in boxes:
                out.setdefault(str(name), (f, boxes.key_line(name)))   # as rules name theirs
    return out


def cmd_test(args: argparse.Namespace) -> int:
    from .routing.ruletests import run_rule_tests
    snap = _snapshot(_config(args.config, routing=args.routing), given=args.routing)
    tests = snap.sections.get("tests") or []
    if not tests:
        # "0/0 rule tests passed", exit 0: a CI job running `mailrouter test` on rules whose
        # tests: were never written, or left in a file the glob does not match, passed
        # having tested nothing
        files = ", ".join(_shown(f) for f in snap.files)
        if args.allow_no_tests:
            print(f"no rule tests in the routing files ({files}); nothing was tested "
                  "(--allow-no-tests)")
            return 0
        print(f"mailrouter test: no rule tests in the routing files ({files}): nothing was "
              "tested; add cases under 'tests:' (rules/README.md, \"Tests\"), or give "
              "--allow-no-tests if none is fine", file=sys.stderr)
        return NO_RULE_TESTS
    failures = run_rule_tests(tests, snap.decide, Path.cwd())
    for line in failures:
        print(line)
    print(f"{len(tests) - len(failures) if len(failures) <= len(tests) else 0}/{len(tests)} "
          f"rule tests passed")
    return 1 if failures else 0


def _parse_at(text: str | None) -> datetime | None:
    if not text:
        return None
    if re.fullmatch(r"\s*\d{4}-\d\d-\d\d\s*", text):
        # was 00:00 UTC, where a rule test's `at: 2027-01-11` is refused: a business-hours
        # rule "tried on Monday" got Sunday night in Moscow and the two disagreed unsaid
        print(f"mailrouter explain: --at {text!r} is a day without a time of day; write the "
              f"time too, e.g. {text.strip()}T10:00+03:00", file=sys.stderr)
        raise SystemExit(2)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:      # exit 2 as for every other bad argument (SystemExit(str) is 1)
        print(f"mailrouter explain: --at {text!r} is not an ISO time (e.g. 2026-11-23T10:30+03:00)",
              file=sys.stderr)
        raise SystemExit(2) from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain
    snap = _snapshot(_config(args.config, routing=args.routing), given=args.routing)
    try:
        raw = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        print(f"mailrouter explain: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    report = explain(snap, raw, args.rcpt or [], args.sender, _parse_at(args.at))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        from .explain import format_text
        print(format_text(report))
    return 0


NO_RULE_TESTS = 5        # `test`: the routing files have no rule test (pytest's "no tests ran")
RELOAD_MAPS_FAILED = 3   # `reload`: the rules were reloaded, Postfix's tables were not
RELOAD_NEEDS_RESTART = 4  # `reload`: the rules were reloaded, config.yaml's changes need a restart


def _reload_target(given: str | None
                   ) -> tuple[str | None, Listener | None, str | None, ConfigErrors | None,
                              tuple[str, ...]]:
    """(config path, admin listener, token, config.yaml's errors, routing globs) for `reload`.
    A config.yaml edited since the
    start and now broken elsewhere (`limits:`, `log_format:`) still names the endpoint: the
    reload goes on and the daemon's reply names the errors (exit 4), as for SIGHUP; before,
    `reload` exited 2 and the rules were not reloaded."""
    from .config import admin_endpoint
    path = find_config(given)
    try:
        cfg = load_config(path)
    except ConfigErrors as exc:
        endpoint = admin_endpoint(path) if path is not None else None
        if endpoint is None:
            _config(given)          # prints the errors, exits 2
            raise
        return str(path), *endpoint, exc, ()
    return cfg.path, cfg.admin, cfg.admin_token, None, cfg.routing


def _routing_paths(text: str, routing: tuple[str, ...], gone: bool = False) -> str:
    """The daemon's reply names routing files relative to their directory (its HTTP answer
    shows no other path of the machine): "z-legal.yaml:25:7: ...", which is no file from
    where the admin stands. Each name of a file there is given back its directory, as
    `check` names it. `gone`: `text` is the list of files no longer read."""
    from .daemon import _routing_root
    root = _routing_root(routing)
    if not root.startswith("/") or root == "/":
        return text
    if gone:
        return ", ".join(os.path.join(root, name) for name in text.split(", "))
    out = []
    for line in text.splitlines():
        name = line.split(":", 1)[0]
        if ":" in line and name and not name.startswith("/") and os.path.isfile(
                os.path.join(root, name)):
            # the hint may name the file again, as a word of a shell line (yamlsrc's iconv
            # line for a file not saved as UTF-8, `NAME > NAME.new && mv NAME.new NAME`): run
            # from the admin's folder it named no file; it gets its directory back too
            full = os.path.join(root, name)
            rest = re.sub(rf"(?<=[\s']){re.escape(name)}(?=(?:\.new)?(?:[\s']|$))",
                          full.replace("\\", "\\\\"), line[len(name):])
            line = full + rest
        out.append(line)
    return "\n".join(out)


def cmd_reload(args: argparse.Namespace) -> int:
    path, admin, token, broken, routing = _reload_target(args.config)
    if admin is None:
        print(f"mailrouter reload: {_shown(path) if path else 'the config'} has no admin "
              "listener (listen.admin: null): send SIGHUP to the daemon (systemctl kill -s HUP "
              "mailrouter), or set listen.admin, e.g. 127.0.0.1:9125", file=sys.stderr)
        return 2
    host = f"[{admin.host}]" if ":" in admin.host else admin.host
    url = f"http://{host}:{admin.port}/-/reload"
    req = urllib.request.Request(url, method="POST", data=b"")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            body = json.loads(raw or b"{}")
        except ValueError:      # refused before reloading (401, 421, 403): a line of text
            print(f"mailrouter reload: {url}: {exc.code} {raw.decode('utf-8', 'replace').strip()}",
                  file=sys.stderr)
            return 2
    except OSError as exc:    # URLError wraps the socket's error: "<urlopen error [Errno 111] ...>"
        why = getattr(exc, "reason", exc)
        why = getattr(why, "strerror", None) or str(why)
        print(f"mailrouter reload: cannot reach {url}: {why}; is the daemon running with "
              "this config (systemctl status mailrouter)?", file=sys.stderr)
        if broken is not None:      # the daemon would have named them: say them here
            print(f"mailrouter reload: and {_shown(path or 'config.yaml')} has "
                  f"{len(broken.errors)} error(s), which would stop the next start:",
                  file=sys.stderr)
            for err in broken.errors:
                print(f"  {err}", file=sys.stderr)
        return 2
    detail = str(body.get("detail"))
    if body.get("ok") and "; no longer read: " in detail:
        done, gone = detail.split("; no longer read: ", 1)
        detail = f"{done}; no longer read: {_routing_paths(gone, routing, gone=True)}"
    elif not body.get("ok"):
        detail = _routing_paths(detail, routing)
    print(("reloaded: " if body.get("ok") else "reload refused, old rules kept:\n") + detail)
    if body.get("config"):    # an edited config.yaml is not applied by a reload: said, not hidden
        print(f"mailrouter reload: {body['config']}", file=sys.stderr)
    if not body.get("ok"):
        return 1
    if body.get("postfix_maps"):     # the rules run; Postfix refuses their new addresses
        print("mailrouter reload: the rules were reloaded, but Postfix's tables were not "
              f"rebuilt (Postfix still answers from the old ones):\n  {body['postfix_maps']}\n"
              "then run `mailrouter reload` again", file=sys.stderr)
        return RELOAD_MAPS_FAILED
    return RELOAD_NEEDS_RESTART if body.get("config") else 0


def cmd_postfix(args: argparse.Namespace) -> int:
    """Write Postfix's tables from the address book (see postfixmaps.py)."""
    import dataclasses

    from . import postfixmaps
    from .config import PostfixMapsConfig
    cfg = _config(args.config)
    pm = cfg.postfix_maps or PostfixMapsConfig(Path(args.dir or "."))
    given: dict[str, Any] = {k: v for k, v in (
        ("dir", Path(args.dir).resolve() if args.dir else None), ("mode", args.mode),
        ("nexthop", args.nexthop or (postfixmaps.default_nexthop(cfg, args.transport)
                                     if args.transport else None)),
        ("postfix_config", args.postfix_config),
        ("postmap", True if args.postmap else None)) if v is not None}
    pm = dataclasses.replace(pm, **given)
    if not args.dir and cfg.postfix_maps is None:
        print("mailrouter postfix: say where to write the tables: --dir DIR, or "
              "postfix_maps: {dir: ...} in the config", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(cfg, postfix_maps=pm)
    snap = _snapshot(cfg)
    try:
        written = postfixmaps.refresh(cfg, snap.book)
    except (OSError, RuntimeError) as exc:     # str() was "[Errno 20] Not a directory: '...'"
        print(f"mailrouter postfix: the tables were not written: {postfixmaps.failure(exc, pm.dir)}",
              file=sys.stderr)
        return 2
    stale = [n for n in written.indexed if n not in written.changed]
    print(f"{len(written.changed)} table(s) changed in {pm.dir} ({pm.mode} mode, next hop "
          f"{postfixmaps.default_nexthop(cfg)})" + ("" if pm.postmap else "; run postmap on each")
          + (f"; index rebuilt for {', '.join(stale)}" if stale else ""))
    # what in main.cf would make these tables refuse mail Postfix takes now (the set-up
    # script stops on the same): said before the lines, which would do the harm
    for warning in postfixmaps.conflicts(snap.book, pm.dir, pm.mode, pm.kind, pm.postfix_config,
                                         cfg.limits.max_message_size):
        print(f"mailrouter postfix: warning: {warning}", file=sys.stderr)
    # an admin who reran the command after an edit ran these lines again: each table
    # listed twice in main.cf (Postfix takes it, and each lookup is made twice)
    lines = postfixmaps.postconf_lines(pm.dir, pm.mode, snap.book.options.detail_separator,
                                       pm.kind, postfixmaps.main_cf(pm.postfix_config))
    if not lines:
        print("main.cf already lists them: nothing to add (Postfix notices a changed table "
              "by itself)")
        return 0
    print("add them to main.cf once (these add to what is there), then `postfix reload`:")
    for line in lines:
        print(f"  {line}")
    return 0


def cmd_address(args: argparse.Namespace) -> int:
    """`address QUERY`: the book's answer for one address (exit 1: unknown, as postmap -q);
    `address export`: every address, CSV (default) or JSON."""
    from . import addressquery
    book = _snapshot(_config(args.config)).book
    if args.query == "export":
        if args.json:
            print(json.dumps(addressquery.export(book), ensure_ascii=False, indent=2))
        else:
            sys.stdout.write(addressquery.export_csv(book))
        return 0
    if not args.query.strip():
        print("mailrouter address: give an address, e.g. sales@example.com, or 'export'",
              file=sys.stderr)
        return 2
    if args.csv:      # it printed the text form, as if --csv had not been given
        print("mailrouter address: --csv is for 'address export' (every address); for one "
              "address, leave it out (text) or give --json", file=sys.stderr)
        return 2
    found = addressquery.describe(book, args.query)
    from .intake.handler import rcpt_path
    address, refused = rcpt_path(args.query)
    if refused is not None:      # RCPT refuses it before the book is asked: `a b@example.com`,
        # `sales@`, `@` were "550 5.1.1 no such address", where the daemon answers 553 5.1.3
        found = found | {"known": False, "address": None, "detail": None, "person": None,
                         "moved": None, "targets": [], "reply": str(refused),
                         "did_you_mean": None}
    elif address != args.query:  # `<sales@example.com>` is read as RCPT reads it
        found = addressquery.describe(book, address) | {"query": args.query}
    print(json.dumps(found, ensure_ascii=False, indent=2) if args.json
          else addressquery.format_text(found))
    return 0 if found["known"] else 1


def _where(url: str) -> str:
    """A registry for messages: a SQLite file's path, else the URL without its password."""
    from .registry.store import registry_location
    return registry_location(url)


def cmd_db(args: argparse.Namespace) -> int:
    from .registry import upgrade
    cfg = _config(args.config)
    try:
        asyncio.run(upgrade(cfg.registry.url))
    except RegistryError as exc:     # the error alone did not say which database
        from .registry.store import registry_advice
        advice = registry_advice(exc, _where(cfg.registry.url))
        print(f"mailrouter db upgrade: {_where(cfg.registry.url)}: {exc}"
              + (f"; {advice}" if advice else "") + " (registry.url in "
              f"{_shown(cfg.path) if cfg.path else 'the embedded default'})", file=sys.stderr)
        return 2
    print(f"registry schema is up to date: {_where(cfg.registry.url)}")
    return 0


def _ask_registry(cfg: Config, what: str, ask: Callable[[Any], Awaitable[Any]]) -> Any:
    from .control.cli import ask_registry
    return ask_registry(cfg, what, ask)


def _zone(cfg: Config, command: str) -> tzinfo:
    """The company's zone (calendars.company_zone of the routing files): the CLI's text
    prints registry times in it with the offset, as `request show` and the web view do.
    Routing files with errors must not hide the registry (what came in, while the admin
    mends them): then UTC, and a note on stderr."""
    from .calendars import company_zone
    from .routing.snapshot import load_snapshot
    try:
        return company_zone(load_snapshot(cfg.routing, cfg.limits, cfg.hostname).rules.calendars)
    except ConfigErrors as exc:
        print(f"mailrouter {command}: times in UTC: the routing files, which give the company's "
              f"zone, have {len(exc.errors)} error(s) (mailrouter check)", file=sys.stderr)
        return timezone.utc


def cmd_registry(args: argparse.Namespace) -> int:
    from .calendars import company_time
    cfg = _config(args.config)
    found: list[dict[str, Any]] = _ask_registry(cfg, "registry", lambda reg: reg.recent(args.n or None))
    zone = _zone(cfg, "registry") if found else timezone.utc
    if not found:
        print(f"no messages in the registry yet ({_where(cfg.registry.url)})")
    from .control.cli import printable
    for m in found:
        retries = f"  (received {m['attempts']} times: retries)" if m.get("attempts", 1) > 1 else ""
        print(f"{company_time(m['received_at'], zone, 'seconds')} {m['status']:9} "
              f"{printable(m['from_addr'] or m['mail_from'])}"
              f"  {m['subject']!r}  {printable(m['message_id'] or '')}{retries}")
        for d in m["decisions"]:
            where = (d["mailbox"] or "-") + (f"/{d['folder']}" if d["folder"] else "")
            extra = "".join(f" {k}={d[k]}" for k in ("owner", "priority") if d[k])
            print(f"    {d['rcpt']} -> {where}{extra}  [{d['reply']}]")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    rows: list[dict[str, Any]] = _ask_registry(cfg, "outbox", lambda reg: reg.outbox_list(args.n or 2**31))
    if args.json:
        print(json.dumps([{k: (v.isoformat() if isinstance(v, datetime) else v)
                           for k, v in r.items()} for r in rows], ensure_ascii=False, indent=2))
        return 0
    from .calendars import company_time
    zone = _zone(cfg, "outbox") if rows else timezone.utc
    relay = cfg.outbox.relay
    print(f"relay: {relay or 'none (outbox.relay is not set: messages wait here)'}")
    if not rows:
        print("the outbox is empty")
    for r in rows:
        when = r["sent_at"] if r["state"] == "sent" else r["next_try"]
        print(f"{r['id']:>6} {r['kind']:9} {r['state']:10} {r['rcpt']}  attempts={r['attempts']} "
              f"{'sent' if r['state'] == 'sent' else 'next'}={company_time(when, zone, 'seconds')}"
              + (f"  {r['last_error']}" if r["last_error"] else ""))
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("mailrouter web passwd: the two passwords differ; nothing changed")
    return first


def cmd_web(args: argparse.Namespace) -> int:
    """`web passwd PERSON`: set the web view password of a person of the address book."""
    from .registry.accounts import hash_password, set_password
    cfg = _config(args.config)
    snap = _snapshot(cfg)
    if args.person not in snap.book.people:
        from .addressbook.errs import did_you_mean
        close = did_you_mean(args.person, snap.book.people, "people", listing=False)
        print(f"mailrouter web passwd: {args.person!r} is not a person of the address book"
              + (f"; {close}" if close else " (give the key under people:)"), file=sys.stderr)
        return 2
    from .registry.store import sqlite_missing
    if sqlite_missing(cfg.registry.url):
        print(f"mailrouter web passwd: no registry at {_where(cfg.registry.url)}; "
              "start the daemon or run `mailrouter db upgrade` first", file=sys.stderr)
        return 2
    try:
        hashed = hash_password(_read_password(args.password_stdin))
    except ValueError as exc:
        print(f"mailrouter web passwd: {exc}; nothing changed", file=sys.stderr)
        return 2

    # a registry error: its file, the error and the fix (a lock held by a sqlite3 shell
    # said "database is locked" with "is the schema current?", and no file)
    now = datetime.now(timezone.utc)
    _ask_registry(cfg, "web passwd", lambda reg: reg.write(
        "web passwd", lambda conn: set_password(conn, args.person, hashed, now)))
    print(f"password set for {args.person}; their other sessions are signed out")
    return 0


# An example for each command's --help, checked to parse by the tests: a help that lists
# options but shows no command line left the admin to guess how they combine.
C = "-c /etc/mailrouter/config.yaml"
EXAMPLES: dict[str, tuple[str, ...]] = {
    "run": (f"mailrouter run {C}", "mailrouter run                # the embedded default"),
    "check": (f"mailrouter check {C} && systemctl reload mailrouter",
              f"mailrouter check {C} --routing 'rules.new/*.yaml'   # an edited copy"),
    "test": (f"mailrouter test {C}",
             f"mailrouter test {C} --routing 'rules.new/*.yaml'    # before it goes live"),
    "explain": ("mailrouter explain --rcpt invoices@example.com rules/samples/invoice-koi8r.eml",
                "mailrouter explain --from '<>' --at 2026-12-31T18:00+03:00 --json bounce.eml"),
    "reload": (f"mailrouter reload {C}",),
    "registry": (f"mailrouter registry {C} -n 20",),
    "registry search": ("mailrouter registry search --subject 'счет*' --since 2027-01-01 --csv",),
    "registry history": ("mailrouter registry history client@outside.test --json",),
    "registry reloads": ("mailrouter registry reloads -n 10",),
    "report": ("mailrouter report --since 2027-01-01 --until 2027-02-01 --csv",),
    "request": ("mailrouter request show 42", "mailrouter request close 42"),
    "outbox": (f"mailrouter outbox {C} -n 20",),
    "address": ("mailrouter address sales+Quotes@example.com", "mailrouter address export --csv"),
    "postfix": (f"mailrouter postfix {C} --dir /var/lib/mailrouter/postfix --postmap",),
    "web": ("mailrouter web passwd petrova", "echo 'a long passphrase' | mailrouter web passwd "
            "petrova --password-stdin"),
    "db": (f"mailrouter db upgrade {C}",),
}


# Each command's exit codes in its own --help: only the program's --help listed them, so
# `mailrouter reload --help` (what systemctl reload runs) did not say what 1, 3 or 4 mean.
EXITS: dict[str, str] = {
    "run": "0 stopped (SIGTERM, Ctrl-C), 2 could not start (config, a directory it cannot "
           "write, a port in use)",
    "check": "0 valid (warnings allowed), 1 errors in the config or the routing files",
    "test": "0 every case passed, 1 a case failed, 2 the config or the routing files have "
            "errors (mailrouter check names them), 5 the routing files have no rule test: "
            "nothing was tested (0 with --allow-no-tests)",
    "explain": "0 decided (also for a broken message), 2 the config, the routing files or "
               "the message could not be read",
    "reload": "0 reloaded, 1 the daemon refused the new routing files (the old rules keep "
              "running; the errors are printed), 2 the daemon could not be reached, 3 "
              "reloaded but Postfix's tables (postfix_maps) were not rebuilt, 4 reloaded but "
              "config.yaml changed (or broke) since the start: restart to apply it",
    "address": "0 known (export: listed), 1 unknown (with the reply the daemon gives at "
               "RCPT), 2 the config or the routing files have errors, or --csv for one address",
    "outbox": "0 listed, 2 no registry or the config has errors",
    "registry": "0 listed (none too), 2 no registry, the registry could not be read, or the "
                "config has errors",
    "registry search": "0 listed (none too), 2 a bad argument, no registry, the registry "
                       "could not be read, or the config has errors",
    "registry history": "0 listed (none too), 2 a bad argument, no registry, the registry "
                        "could not be read, or the config has errors",
    "registry reloads": "0 listed (none too), 2 no registry, the registry could not be read, "
                        "or the config has errors",
    "report": "0 reported, 2 a bad date, no registry, the registry could not be read, or the "
              "config has errors",
    "request": "0 shown or changed, 1 no such request, or not changed (close of a closed "
               "one, reopen of an open one), 2 a bad number, no registry, the registry could "
               "not be read or written, or the config has errors",
    "postfix": "0 the tables are written, 2 they could not be (the reason and the fix on stderr)",
    "web": "0 the password is set, 2 not (an unknown person, a short password, no registry)",
    "db": "0 the schema is up to date, 2 the registry could not be upgraded",
}


def _explain_usage(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give every (sub)command its examples and make it the one that reports a stray
    argument: argparse's top-level parser did, with the program's usage, not the command's."""
    parser.set_defaults(_parser=parser)
    if path in EXAMPLES:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = "example:\n" + "\n".join(f"  {e}" for e in EXAMPLES[path])
    if path in EXITS:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = "exit codes:\n" + "\n".join(     # before the example, which ends it
            textwrap.wrap(EXITS[path], 88, initial_indent="  ", subsequent_indent="  ")) + (
            "\n" + parser.epilog if parser.epilog else "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _explain_usage(sub, f"{path} {name}".strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mailrouter", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mail-routing daemon for functional addresses (sales@, support@, ...): "
                    "SMTP/LMTP intake, aliases, YAML rules, a registry of every decision.",
        epilog="examples:\n"
               "  mailrouter run                                  # no -c: see below\n"
               "  mailrouter check -c /etc/mailrouter/config.yaml # before a reload\n"
               "  mailrouter test  -c /etc/mailrouter/config.yaml # the rule tests\n"
               "  mailrouter explain --rcpt invoices@example.com --json message.eml\n"
               "  mailrouter reload -c /etc/mailrouter/config.yaml\n"
               "Every command takes -c FILE and --help. Without -c, the config is\n"
               f"${CONFIG_ENV} if set, else {SYSTEM_CONFIG} if it exists, else the embedded\n"
               "default: listeners on 127.0.0.1:2525 (SMTP), :2524 (LMTP), :9125 (admin), :9126 (the\n"
               "web view), a SQLite registry and Maildirs under ./var, the routing files ./rules/*.yaml,\n"
               "or the example rules shipped in the package when there is no ./rules (a note on stderr\n"
               "says so).\n"
               "Only `run` and `db upgrade` create the registry or the mail store.\n"
               "Exit codes: 0 ok, 1 check found errors, a rule test failed, the daemon refused\n"
               "a reload, an address is unknown or a request is not there (or not changed), 2\n"
               "another command could not load its configuration or do its job, 3\n"
               "reload: the rules were reloaded but Postfix's tables (postfix_maps) were not, 4\n"
               "reload: the rules were reloaded but config.yaml changed since the start (restart),\n"
               "5 test: the routing files have no rule test (nothing was tested).")
    from . import __version__
    from .control.cli import count as _count
    p.add_argument("--version", action="version", version=f"mailrouter {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
        sp.set_defaults(func=func)
        return sp

    add("run", cmd_run, "run the daemon until SIGTERM or Ctrl-C (SIGHUP reloads the routing "
        "files)")
    ck = add("check", cmd_check, "validate the configuration and routing files; exit 1 on errors")
    ts = add("test", cmd_test, "run the rule tests in the routing files; exit 1 on any failure")
    ex = add("explain", cmd_explain, "show the decision for one message, without delivering it")
    for sp in (ck, ts, ex):     # try an edited copy before it goes live (the daemon watches its own)
        sp.add_argument("--routing", action="append", metavar="GLOB",
                        help="read these routing files instead of the config's 'routing:' "
                             "(repeatable; e.g. an edited copy: --routing 'rules.new/*.yaml')")
    ts.add_argument("--allow-no-tests", action="store_true",
                    help="exit 0 when the routing files have no rule test (without it: exit 5, "
                         "so a CI job does not pass having tested nothing)")
    ex.add_argument("file", metavar="FILE.eml", help="the message ('-' for stdin)")
    ex.add_argument("--rcpt", action="append", metavar="ADDR",
                    help="envelope recipient (repeatable; default: the To/Cc addresses)")
    ex.add_argument("--from", dest="sender", metavar="ADDR",
                    help="envelope sender (default: the From address)")
    ex.add_argument("--at", metavar="TIME", help="decide at this ISO time, e.g. "
                    "2027-01-11T10:00+03:00 (without an offset: UTC; default: now)")
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    add("reload", cmd_reload, "ask the running daemon to reload its routing files")
    reg = add("registry", cmd_registry, "show the newest messages in the registry with their decisions")
    reg.add_argument("-n", type=_count, default=10, metavar="N", help="how many (default 10; 0: all)")
    from .control.cli import add_commands
    add_commands(sub, add, reg, _config, _snapshot, _zone)
    ob = add("outbox", cmd_outbox, "list the outgoing mail (autoreplies, DSNs) and its state")
    ob.add_argument("-n", type=_count, default=50, metavar="N", help="how many (default 50; 0: all)")
    ob.add_argument("--json", action="store_true", help="machine-readable output")
    ad = add("address", cmd_address, "what the address book does with one address (exit 1 "
             "when unknown), or 'export' for every address")
    ad.add_argument("query", metavar="ADDRESS|export",
                    help="an envelope recipient, e.g. sales+Quotes@example.com; or 'export'")
    form = ad.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true",
                      help="JSON instead of text (one address) or CSV (export)")
    form.add_argument("--csv", action="store_true",
                      help="export only: CSV rows with a header line (export's default)")
    pf = add("postfix", cmd_postfix, "write Postfix's recipient and transport tables from the "
             "address book, so Postfix refuses unknown addresses at RCPT")
    pf.add_argument("--dir", metavar="DIR", help="where to write (default: postfix_maps.dir)")
    pf.add_argument("--mode", choices=["relay", "virtual"],
                    help="relay: relay_recipient_maps (default); virtual: virtual_alias_maps")
    pf.add_argument("--nexthop", metavar="TRANSPORT",
                    help="Postfix transport to mailrouter (default: smtp:[listen.smtp])")
    pf.add_argument("--transport", metavar="NAME",
                    help="the Postfix transport (master.cf) that reaches listen.smtp, when "
                         "--nexthop is not given: NAME:[listen.smtp] (the set-up script's "
                         "'mailrouter')")
    pf.add_argument("--postmap", action="store_true", help="run postmap on each changed table")
    pf.add_argument("--postfix-config", metavar="DIR", help="postmap -c DIR")
    w = add("web", cmd_web, "web view accounts: web passwd PERSON sets a person's password")
    w.add_argument("action", choices=["passwd"], help="passwd: set the password of PERSON")
    w.add_argument("person", metavar="PERSON", help="a person's key under people: in the address book")
    w.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin (no prompt)")
    db = add("db", cmd_db, "registry database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade: migrate the schema to the latest")
    for name, sp in sub.choices.items():
        _explain_usage(sp, name)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, stray = parser.parse_known_args(argv)
    if stray:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(stray)}")
    if args.command != "run":    # the commands print their own errors; no log lines twice
        logging.getLogger("mailrouter").setLevel(logging.ERROR)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        # Ctrl-C at `web passwd`'s prompt or during a long `report`: the admin asked for
        # it; a traceback through getpass said nothing more. 130 = 128 + SIGINT, as shells.
        print(f"\nmailrouter {args.command}: interrupted; nothing more done", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mailrouter registry -n 500 | head`: the reader left; that is not an error.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
