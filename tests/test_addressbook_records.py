"""The book's people, mailboxes and person addresses kept compact (addressbook/records.py):
they must read exactly as the dicts they replace."""

from __future__ import annotations

import datetime as dt

from mailrouter.addressbook.model import Mailbox, Person
from mailrouter.addressbook.records import CompactMap, mailbox_map, people_map, text_map
from mailrouter.addresses import AddressBook
from mailrouter.yamlsrc import loads

BOOK = """
domains: [example.com]
mailboxes:
  sales: {maildir: sales}
  desk: {lmtp: '127.0.0.1:24', sieve_folders: true}
people:
  zoe: {address: Zoe@Example.com, name: Зоя, away: ['2027-01-05..2027-01-09', 2027-02-01]}
  ann: {address: ann@example.com, mailbox: sales, deputy: zoe}
  "ёж": {}
aliases:
  team@example.com: [zoe, ann]
"""


def test_people_and_mailboxes_read_as_the_dicts_they_replace() -> None:
    book = AddressBook.build({k: [v] for k, v in loads(BOOK, "b.yaml").items()})
    assert list(book.people) == ["zoe", "ann", "ёж"]          # the file's order, as a dict's
    zoe = book.people["zoe"]
    assert zoe == Person("zoe", "zoe@example.com", "Зоя", None,
                         ((dt.date(2027, 1, 5), dt.date(2027, 1, 9)),
                          (dt.date(2027, 2, 1), dt.date(2027, 2, 1))), "person:zoe")
    assert zoe.is_away(dt.date(2027, 1, 6)) and not zoe.is_away(dt.date(2027, 1, 10))
    assert book.people.get("ann") == Person("ann", "ann@example.com", None, "zoe", (), "sales")
    assert book.people.get("nobody") is None and "nobody" not in book.people
    assert "ёж" in book.people and len(book.people) == 3
    assert dict(book.people.items())["ёж"].mailbox == "person:ёж"
    assert list(book.mailboxes) == ["sales", "desk", "person:zoe", "person:ёж"]
    assert book.mailboxes["desk"] == Mailbox("desk", "lmtp", "127.0.0.1:24", True)
    assert book.mailboxes["person:ёж"] == Mailbox("person:ёж", "maildir", "people/ёж")
    assert book.resolve("zoe@example.com").person == "zoe"
    assert book.resolve("team@example.com").person is None


def test_compact_map_finds_every_key_and_no_other() -> None:
    keys = [f"k{i}" for i in range(300)] + ["", "é", "z" * 40, "a\udcff"]
    m = CompactMap([(k, i) for i, k in enumerate(keys)], str, int)
    assert list(m) == keys and len(m) == len(keys)
    assert all(m[k] == i and m.get(k) == i for i, k in enumerate(keys))
    for absent in ("k300", "k", "z" * 39, "zz", "\uffff", 5):
        assert absent not in m and m.get(absent, "-") == "-"   # type: ignore[arg-type]
    assert m == {k: i for i, k in enumerate(keys)}


def test_dates_and_datetimes_of_away_come_back_as_they_were() -> None:
    when = dt.datetime(2027, 1, 5, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    p = Person("x", None, None, None, ((when, when), (dt.date(2027, 1, 1), dt.date(2027, 1, 2))), "m")
    assert people_map({"x": p})["x"] == p
    assert mailbox_map({"m": Mailbox("m", "smtp", "a@b")})["m"] == Mailbox("m", "smtp", "a@b")
    assert text_map({"a@b": "x"}).get("a@b") == "x"
