"""`mailrouter address QUERY`, `address export` and `--version`, run as a user runs them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tomllib

from tests.support.daemon import REPO

CLI = [sys.executable, "-m", "mailrouter.cli"]


def mr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=60,
                          check=False)


def test_address_query_walks_aliases_to_each_mailbox():
    """mail@ -> admin@ -> [ivanov, support@]: both targets, each with its backend and the
    path walked, in text and in JSON; exit 0 for a known address."""
    out = mr("address", "mail@example.com")
    assert out.returncode == 0, out.stderr
    assert "-> person:ivanov [maildir: people/ivanov] for ivanov" in out.stdout
    assert ("via mail@example.com -> admin@example.com -> support@example.com -> mailbox:support"
            in out.stdout)
    js = json.loads(mr("address", "--json", "mail@example.com").stdout)
    assert js["known"] and js["address"] == "mail@example.com"
    assert [t["mailbox"] for t in js["targets"]] == ["person:ivanov", "support"]
    assert js["targets"][1]["path"] == ["mail@example.com", "admin@example.com",
                                        "support@example.com", "mailbox:support"]


def test_address_query_detail_case_and_moved():
    """SALES+Quotes@ is sales@ with detail 'Quotes'; a moved address shows its new address,
    that it still delivers, and its autoreply."""
    js = json.loads(mr("address", "--json", "SALES+Quotes@Example.COM").stdout)
    assert (js["address"], js["detail"], js["targets"][0]["mailbox"]) == (
        "sales@example.com", "Quotes", "sales")
    moved = mr("address", "old-sales@example.com")
    assert "moved: now sales@example.com (delivered there; autoreply moved)" in moved.stdout
    js = json.loads(mr("address", "--json", "old-sales@example.com").stdout)
    assert js["moved"] == {"now": "sales@example.com", "deliver": True, "autoreply": "moved"}


def test_address_query_follows_an_alias_target_with_a_detail(tmp_path):
    """orders@: bob+orders@ (Bob a person) made `mailrouter address` exit 2 with "points to
    unknown address bob+orders@example.com". Now it shows Bob found and the form written in
    the path; the form is no address of its own in `export`."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com]\nrules: []\npeople: {bob: {address: bob@example.com}}\n"
        "aliases:\n  orders@example.com: bob+orders@example.com\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(f"routing: ['{tmp_path / 'book.yaml'}']\n",
                                          encoding="utf-8")
    out = mr("address", "-c", str(tmp_path / "config.yaml"), "orders@example.com")
    assert out.returncode == 0, out.stderr
    assert ("-> person:bob [maildir: people/bob] for bob  via orders@example.com -> "
            "bob+orders@example.com -> bob@example.com -> person:bob") in out.stdout
    export = mr("address", "-c", str(tmp_path / "config.yaml"), "export", "--json")
    assert [d["address"] for d in json.loads(export.stdout)] == ["bob@example.com",
                                                                "orders@example.com"]


def test_address_query_unknown_exits_1_with_the_reply():
    """An unknown or malformed address is an answer, not a crash: exit 1 (as postmap -q),
    with the 550 5.1.1 the daemon would give at RCPT."""
    for query in ("nobody@example.com", "no-at-sign", "x@other.test"):
        out = mr("address", query)
        assert out.returncode == 1, (query, out.stderr)
        assert "unknown: 550 5.1.1" in out.stdout and not out.stderr
    js = json.loads(mr("address", "--json", "nobody@example.com").stdout)
    assert js["known"] is False and js["reply"].startswith("550 5.1.1") and js["targets"] == []


def test_address_query_unknown_names_the_address_meant():
    """`mailrouter address invoice@example.com` said only "unknown: 550 5.1.1", where every
    rule and config error names the name meant. Now the closest known address is given (the
    helper check uses for control.replies), its +detail kept as typed and a typo in the
    domain caught; an address that only shares the domain gets no hint (nobody@ is not
    abuse@), and JSON carries it as did_you_mean (null when known)."""
    cases = {"invoice@example.com": "invoices@example.com",
             "Invoice+Q@Example.COM": "invoices+Q@example.com",
             "suport@exmaple.com": "support@example.com",
             "nobody@example.com": None, "x@other.test": None,
             "s\u0430les@example.com": "sales@example.com"}     # a Cyrillic а
    for query, meant in cases.items():
        out = mr("address", query)
        assert out.returncode == 1 and not out.stderr, (query, out)
        hint = f"; did you mean {meant!r}?" if meant else ""
        if "\u0430" in query:
            hint += " ('s\u0430les': \u0430 is Cyrillic; retype it)"
        assert out.stdout == (f"{query}: unknown: 550 5.1.1 Recipient address rejected: no "
                              f"such address here{hint}\n"), out.stdout
        assert json.loads(mr("address", "--json", query).stdout)["did_you_mean"] == meant
    assert json.loads(mr("address", "--json", "sales@example.com").stdout)["did_you_mean"] is None


def test_address_query_gives_the_reply_rcpt_gives_before_the_book():
    """A path RCPT refuses before asking the address book (`a b@example.com`, `sales@`,
    `@`) was answered "550 5.1.1 no such address"; the daemon (and `explain`) answer
    `553 5.1.3` there, and `address` now says what the daemon says. `<sales@example.com>`
    is read as RCPT reads it."""
    for query in ("a b@example.com", "sales@", "@"):
        out = mr("address", query)
        assert out.returncode == 1, (query, out.stderr)
        assert out.stdout.strip() == f"{query}: unknown: 553 5.1.3 Error: malformed address"
        js = json.loads(mr("address", "--json", query).stdout)
        assert (js["known"], js["reply"], js["targets"]) == (
            False, "553 5.1.3 Error: malformed address", [])
    js = json.loads(mr("address", "--json", "<sales@example.com>").stdout)
    assert (js["query"], js["known"], js["address"]) == (
        "<sales@example.com>", True, "sales@example.com")


def test_address_query_finds_an_alias_with_a_quoted_local_part(tmp_path):
    """'"a b"@example.com: ...' passed `check`, and `mailrouter address '"a b"@example.com'`
    (like the daemon's RCPT) called it unknown: 550 5.1.1 for an address of the book."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com]\nrules: []\nmailboxes: {sales: {maildir: sales}}\n"
        "aliases:\n  '\"a b\"@example.com': mailbox:sales\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(f"routing: ['{tmp_path / 'book.yaml'}']\n",
                                          encoding="utf-8")
    for query in ('"a b"@example.com', '"A B+x"@example.com', '<"a\\ b"@example.com>'):
        js = json.loads(mr("address", "-c", str(tmp_path / "config.yaml"), "--json", query).stdout)
        assert (js["known"], js["address"], [t["mailbox"] for t in js["targets"]]) == (
            True, '"a b"@example.com', ["sales"]), query


def test_address_export_csv_and_json_list_every_address():
    """export: one CSV row (and one JSON object) per known address, sorted, with targets,
    person and moved state; both forms list the same addresses."""
    out = mr("address", "export")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    by = {r["address"]: r for r in rows}
    assert [r["address"] for r in rows] == sorted(by)
    assert by["invoices@example.com"]["targets"] == "finance"
    assert by["product-a@example.com"]["targets"] == "support/PRODUCT-A"
    assert by["p.ivanov@example.com"]["person"] == "ivanov"
    assert (by["old-sales@example.com"]["moved_to"], by["old-sales@example.com"]["moved_delivers"]) \
        == ("sales@example.com", "yes")
    js = json.loads(mr("address", "export", "--json").stdout)
    assert [d["address"] for d in js] == [r["address"] for r in rows]
    assert mr("address", "export", "--csv").stdout == out.stdout


def test_address_query_with_csv_says_it_is_for_export():
    """`address sales@example.com --csv` printed the text form, --csv silently dropped
    (its help said "export as CSV (the default)"): a script reading CSV got text. It is
    now a usage error naming export and --json, exit 2, nothing on stdout."""
    out = mr("address", "sales@example.com", "--csv")
    assert (out.returncode, out.stdout) == (2, ""), out
    assert out.stderr == ("mailrouter address: --csv is for 'address export' (every address); "
                          "for one address, leave it out (text) or give --json\n")
    assert mr("address", "export", "--csv").stdout.startswith("address,targets,")


def test_address_export_csv_opens_in_a_spreadsheet_as_text(tmp_path):
    """`+cmd@`, `-ops@`, `=x@` and `@x@` are legal local parts (RFC 5321 atext) and an alias
    key is any of them: the CSV cell gets a leading ' (as the registry's CSV does), so
    Excel or LibreOffice shows the address instead of running it as a formula."""
    (tmp_path / "book.yaml").write_text(
        "domains: [example.com]\nmailboxes: {sales: {maildir: sales}}\nrules: []\n"
        "people: {eve: {address: '=SUM(1+1)@example.com'}}\n"
        "aliases:\n  '+cmd@example.com': mailbox:sales\n  '-ops@example.com': mailbox:sales\n"
        "  'sales@example.com': mailbox:sales\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(f"routing: ['{tmp_path / 'book.yaml'}']\n",
                                          encoding="utf-8")
    out = mr("address", "-c", str(tmp_path / "config.yaml"), "export", "--csv")
    assert out.returncode == 0, out.stderr
    cells = [r["address"] for r in csv.DictReader(io.StringIO(out.stdout))]
    assert cells == ["'+cmd@example.com", "'-ops@example.com",
                     "'=sum(1+1)@example.com", "sales@example.com"]
    # JSON is data, not a spreadsheet: the addresses as they are
    js = json.loads(mr("address", "-c", str(tmp_path / "config.yaml"), "export", "--json").stdout)
    assert js[0]["address"] == "+cmd@example.com"


def test_version_matches_the_package():
    """--version prints the version pyproject.toml declares."""
    out = mr("--version")
    want = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert out.returncode == 0 and out.stdout.strip() == f"mailrouter {want}"


def test_check_warns_about_a_domain_without_postmaster(tmp_path):
    """RFC 5321 4.5.1: every domain we take mail for MUST take it for postmaster. A second
    domain added without postmaster@ loaded silently and RCPT TO:<postmaster@пример.рф>
    got 550 5.1.1; `check` names the domain, where it is listed (file:line, as errors do)
    and the line to add (pointing at the postmaster another domain has). The example book
    has one for each: no warning."""
    (tmp_path / "book.yaml").write_text(
        "domains:\n  - example.com\n  - пример.рф\nmailboxes: {sales: {maildir: sales}}\nrules: []\n"
        "aliases:\n  sales@example.com: mailbox:sales\n  продажи@пример.рф: mailbox:sales\n"
        "  postmaster@example.com: mailbox:sales\n", encoding="utf-8")
    out = mr("check", "--routing", str(tmp_path / "book.yaml"))
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if line.startswith("warning:")] == [
        f"warning: {tmp_path / 'book.yaml'}:3: domain пример.рф: RCPT "
        "TO:<postmaster@пример.рф> is refused, but RFC 5321 "
        "4.5.1 requires every mail domain to take mail for postmaster; add "
        "'postmaster@пример.рф: postmaster@example.com' under aliases:"]
    assert "warning:" not in mr("check").stdout
