"""The address book: resolution through chains, groups, people, teams, moved addresses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailrouter.addressbook.canon import on_our_domains
from mailrouter.addresses import REPLY_MOVED, AddressBook, Limits
from mailrouter.errors import ConfigError, ConfigErrors
from mailrouter.values import REPLY_UNKNOWN
from mailrouter.yamlsrc import loads

HEAD = """\
domains: [example.com, пример.рф]
mailboxes:
  sales: {maildir: sales}
  support: {maildir: support}
  finance: {lmtp: finance@mail.internal}
people:
  ivanov: {address: p.ivanov@example.com, deputy: petrova}
  petrova: {address: a.petrova@example.com, mailbox: finance}
  smirnov: {name: Сергей Смирнов}
teams:
  duty: {members: [ivanov, petrova]}
  desk: {members: [ivanov], mailbox: support}
"""


def book(aliases: str, extra: str = "", limits: Limits = Limits()) -> AddressBook:
    return AddressBook.build(loads(HEAD + extra + "aliases:\n" + aliases, "t.yaml"), limits)


def errors(aliases: str, extra: str = "", limits: Limits = Limits()) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        book(aliases, extra, limits)
    return [str(e) for e in info.value.errors]


def keys(b: AddressBook, rcpt: str) -> list[str]:
    return [t.key for t in b.resolve(rcpt).targets]


def test_chain_keeps_the_path() -> None:
    """A chain of aliases ends at the mailbox, and the path names every step."""
    b = book("  mail@example.com: admin@example.com\n  admin@example.com: support@example.com\n"
             "  support@example.com: mailbox:support\n")
    (t,) = b.resolve("mail@example.com").targets
    assert t.mailbox == "support"
    assert t.path == ("mail@example.com", "admin@example.com", "support@example.com",
                      "mailbox:support")


def test_group_and_nested_group() -> None:
    """A group delivers to each member; a group inside a group is flattened."""
    b = book("  all@example.com: [sales@example.com, ivanov, mailbox:support/Inbox, [team:desk]]\n"
             "  sales@example.com: [mailbox:sales, {mailbox: finance, folder: Счета}]\n")
    assert keys(b, "all@example.com") == ["sales", "finance/Счета", "person:ivanov",
                                          "support/Inbox", "support"]


def test_person_reached_twice_gets_one_copy() -> None:
    """Dedupe: ivanov through two groups and directly is one target, the first path kept."""
    b = book("  a@example.com: [ivanov, petrova]\n  b@example.com: [ivanov, team:duty]\n"
             "  all@example.com: [a@example.com, b@example.com, person:ivanov]\n")
    res = b.resolve("all@example.com")
    assert [t.person for t in res.targets] == ["ivanov", "petrova"]
    assert res.targets[0].path == ("all@example.com", "a@example.com", "person:ivanov")


def test_team_without_mailbox_goes_to_each_member() -> None:
    """team:duty has no mailbox: one copy per member, each naming the person."""
    b = book("  duty@example.com: team:duty\n  desk@example.com: team:desk\n")
    assert [(t.mailbox, t.person) for t in b.resolve("duty@example.com").targets] == [
        ("person:ivanov", "ivanov"), ("finance", "petrova")]
    assert [t.path for t in b.resolve("desk@example.com").targets] == [
        ("desk@example.com", "team:desk")]


def test_person_address_and_default_mailbox() -> None:
    """A person's own address delivers to their (implicit) mailbox and names them."""
    b = book("  x@example.com: mailbox:sales\n")
    res = b.resolve("P.Ivanov@Example.COM")
    assert (res.person, keys(b, "p.ivanov@example.com")) == ("ivanov", ["person:ivanov"])
    assert b.mailboxes["person:ivanov"].where == "people/ivanov"
    assert b.mailboxes["person:ivanov"].kind == "maildir"


def test_self_mapping_delivers_here_and_forwards() -> None:
    """p.ivanov@ mapped to itself plus a colleague: the person keeps a copy."""
    b = book("  p.ivanov@example.com: [p.ivanov@example.com, a.petrova@example.com]\n")
    res = b.resolve("p.ivanov@example.com")
    assert [t.person for t in res.targets] == ["ivanov", "petrova"]
    assert res.targets[0].path == ("p.ivanov@example.com", "person:ivanov")
    assert res.targets[1].path == ("p.ivanov@example.com", "a.petrova@example.com",
                                   "person:petrova")


def test_subaddress_resolves_like_base_with_detail() -> None:
    """sales+urgent@ goes where sales@ goes; the detail is kept as given."""
    b = book("  sales@example.com: mailbox:sales\n  c++@example.com: mailbox:support\n")
    res = b.resolve("Sales+Urgent@example.com")
    assert (res.address, res.detail, keys(b, "sales+x@example.com")) == (
        "sales@example.com", "Urgent", ["sales"])
    assert keys(b, "c++@example.com") == ["support"] and b.resolve("c++@example.com").detail is None
    assert b.resolve("+x@example.com").reply == REPLY_UNKNOWN


def test_an_alias_target_with_a_detail_goes_where_that_rcpt_goes() -> None:
    """orders@: Ivanov+Orders@ was refused at load ("points to unknown address") though RCPT
    TO:<p.ivanov+orders@> is Ivanov's. Now such a target resolves as that recipient does:
    the person found (whole address first, then the part before the first '+'), the form
    written kept in the path, one copy when the person is reached twice; the form is no
    address of its own (RCPT p.ivanov+orders@ is still p.ivanov@ with detail 'orders')."""
    b = book("  orders@example.com: P.Ivanov+Orders@example.com\n"
             "  all@example.com: [ivanov, p.ivanov+x@example.com, sales+quotes@example.com]\n"
             "  sales@example.com: mailbox:sales\n",
             "moved:\n  old@example.com: {now: sales+old@example.com}\n")
    (t,) = b.resolve("orders@example.com").targets
    assert (t.mailbox, t.person, t.folder) == ("person:ivanov", "ivanov", None)
    assert t.path == ("orders@example.com", "p.ivanov+orders@example.com",
                      "p.ivanov@example.com", "person:ivanov")
    assert keys(b, "all@example.com") == ["person:ivanov", "sales"]
    assert keys(b, "old@example.com") == ["sales"]
    res = b.resolve("p.ivanov+orders@example.com")
    assert (res.address, res.detail, res.person) == ("p.ivanov@example.com", "orders", "ivanov")
    assert "p.ivanov+orders@example.com" not in b.addresses()
    assert "orders@example.com" in b.addresses()


def test_a_detail_target_meets_whole_addresses_first_and_loops_are_refused() -> None:
    """c++@ defined beside c@ is c++@, never c@ with detail '+'; c@ pointing at c+x@ (c@
    with a detail) is a loop, refused at load as Postfix's recipient_delimiter reads it;
    a detail form of no known address is still an unknown address."""
    b = book("  c@example.com: c++@example.com\n  c++@example.com: mailbox:support\n")
    assert [t.path for t in b.resolve("c@example.com").targets] == [
        ("c@example.com", "c++@example.com", "mailbox:support")]
    # told from c@, the alias written, not from c+x@ ('+' sorts before '@'), which no one
    # defined: "loop of 2: c+x@ -> c@ -> c+x@" read as if c+x@ were an alias somewhere
    assert errors("  c@example.com: [mailbox:sales, c+x@example.com]\n") == [
        "t.yaml:14:34: alias loop of 2: c@example.com -> c+x@example.com (t.yaml:14) -> "
        "c@example.com (t.yaml:14); break the loop: point one of these at a mailbox, a person "
        "or a team"]
    errs = errors("  a@example.com: nobody+x@example.com\n")
    assert len(errs) == 1 and "points to unknown address nobody+x@example.com" in errs[0]


def test_idn_both_forms() -> None:
    """An IDN domain answers in U-label and A-label form; canonical form is U-label."""
    b = book("  продажи@пример.рф: mailbox:sales\n")
    for rcpt in ("продажи@пример.рф", "продажи@XN--E1AFMKFD.xn--p1ai", "ПРОДАЖИ@Пример.РФ"):
        res = b.resolve(rcpt)
        assert (res.address, keys(b, rcpt)) == ("продажи@пример.рф", ["sales"]), rcpt
    assert b.knows("продажи@xn--e1afmkfd.xn--p1ai")


def test_our_own_address_in_any_form_of_our_domain() -> None:
    """on_our_domains (the autoresponder's and control's one test of "ours") reads the domain
    as the book reads its domains: A-label, U-label, case and a root '.' alike."""
    b = book("  продажи@пример.рф: mailbox:sales\n")
    for sender in ("ann@пример.рф", "<Ann@XN--E1AFMKFD.xn--p1ai>", "ann@ПРИМЕР.РФ.", "a@example.com"):
        assert on_our_domains(sender, b.domains), sender
    for sender in ("ann@client.example", "пример.рф", "@пример.рф", "ann@пример.рф\u200b", ""):
        assert not on_our_domains(sender, b.domains), sender


def test_invisible_and_look_alike_characters_in_the_domain_are_refused_not_mapped() -> None:
    """IDNA 2003's nameprep maps U+200B and its kin to nothing and full-width letters to
    ASCII: `sales@example.com<U+200B>` was sales@ (delivered, though a rule naming
    sales@example.com did not see it). Such a domain is none of ours and RCPT says what is
    wrong with it, 501 5.1.3; the plain forms (case, A-label, U-label, one root '.') still
    resolve, and a local part holding one is simply unknown."""
    b = book("  sales@example.com: mailbox:sales\n  продажи@пример.рф: mailbox:sales\n")
    bad = {"sales@example.com\u200b": "the invisible character U+200B (ZERO WIDTH SPACE)",
           "sales@exa\u00admple.com": "the invisible character U+00AD (SOFT HYPHEN)",
           "sales@example.com\ufeff": "the invisible character U+FEFF",
           "продажи@при\u200dмер.рф": "the invisible character U+200D (ZERO WIDTH JOINER)",
           "sales@\uff45xample.com": "the compatibility character U+FF45 (FULLWIDTH LATIN SMALL "
                                     "LETTER E) in the domain, for 'e'",
           "sales@example\u3002com": "U+3002 (IDEOGRAPHIC FULL STOP) in the domain where a '.'",
           "sales@example.com..": "an empty label", "sales@.example.com": "an empty label"}
    for rcpt, why in bad.items():
        res = b.resolve(rcpt)
        assert not b.knows(rcpt) and res.targets == (), rcpt
        assert (res.reply.code, res.reply.status) == (501, "5.1.3"), rcpt
        assert res.reply.text.startswith("Bad recipient address syntax: " + why), res.reply
        assert res.reply.text.isascii()
    for rcpt in ("SALES@Example.COM.", "продажи@XN--E1AFMKFD.xn--p1ai", "ПРОДАЖИ@Пример.РФ"):
        assert keys(b, rcpt) == ["sales"], rcpt
    assert b.resolve("sal\u200bes@example.com").reply == REPLY_UNKNOWN


def test_a_domain_with_an_invisible_character_is_refused_at_load() -> None:
    """`domains: [example.com<U+200B>]` names a domain no RCPT can match: said at load."""
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(loads("domains: [example.com, \"ex\u200bample.org\"]\n", "d.yaml"))
    assert [str(e) for e in info.value.errors] == [
        "d.yaml:1:24: domain 'ex\\u200bample.org' is not a domain name: the invisible character "
        "U+200B (ZERO WIDTH SPACE) in the domain; write the domain as it is registered, in "
        "plain characters (or its xn-- form)"]


def test_an_address_with_two_at_signs_is_not_an_address() -> None:
    """`x@y@example.com` as an alias or a target was read as local part `x@y`, then its
    domain checked from the first '@': "not on one of our domains; add y@example.com under
    domains:" (or, for a target, "define a mailbox {smtp: ...}"), a fix that cannot work.
    An unquoted '@' in a local part makes no address (RFC 5321 4.1.2): said so."""
    assert errors("  x@y@example.com: mailbox:sales\n  a@example.com: b@c@example.com\n") == [
        "t.yaml:14:3: alias 'x@y@example.com' is not an address; write local@domain",
        "t.yaml:15:18: 'b@c@example.com' is not an address; write local@domain"]


def test_case_insensitive_by_default_and_sensitive_when_asked() -> None:
    """Local parts fold by default; local_part_case: sensitive keeps them apart."""
    b = book("  Sales@EXAMPLE.com: mailbox:sales\n")
    assert keys(b, "sALES@example.COM") == ["sales"]
    s = book("  Sales@example.com: mailbox:sales\n  sales@example.com: mailbox:support\n",
             "address_options: {local_part_case: sensitive}\n")
    assert (keys(s, "Sales@EXAMPLE.com"), keys(s, "sales@example.com")) == (["sales"], ["support"])
    assert s.resolve("SALES@example.com").reply == REPLY_UNKNOWN


def test_local_parts_fold_as_postfix_tables_do_unicode_case_folding() -> None:
    """Postfix (smtputf8_enable) folds table keys and lookups with full Unicode case folding,
    so it took STRASSE@ for the table's straße@ (and οδυσσευσ@ for οδυσσευς@, ſales@ for
    sales@, finance@ for ﬁnance@, ᎠᎡ@ for ꭰꭱ@) and handed it on; the book folded with
    str.lower and answered 550 5.1.1 after Postfix had queued the mail: a bounce. The book
    folds as Postfix does; its keys, and what it shows, stay as written, lower-cased."""
    b = book("  straße@example.com: mailbox:sales\n  ΟΔΥΣΣΕΥΣ@example.com: mailbox:sales\n"
             "  ﬁnance@example.com: mailbox:support\n  ꭰꭱ@example.com: mailbox:support\n"
             "  sales@example.com: mailbox:sales\n  счета@пример.рф: mailbox:sales\n")
    for rcpt, key, detail in [
            ("STRASSE@example.com", "straße@example.com", None),
            ("strasse@example.com", "straße@example.com", None),
            ("Straße+Quotes@Example.com", "straße@example.com", "Quotes"),
            ("strasse+x@example.com", "straße@example.com", "x"),
            ("οδυσσευσ@example.com", "οδυσσευς@example.com", None),
            ("ΟΔΥΣΣΕΥΣ@example.com", "οδυσσευς@example.com", None),
            ("FINANCE@example.com", "ﬁnance@example.com", None),
            ("finance+x@example.com", "ﬁnance@example.com", "x"),
            ("ᎠᎡ@example.com", "ꭰꭱ@example.com", None),
            ("ſales@example.com", "sales@example.com", None),
            ("ſales+x@example.com", "sales@example.com", "x"),
            ("СЧЕТА@XN--E1AFMKFD.xn--p1ai", "счета@пример.рф", None)]:
        res = b.resolve(rcpt)
        assert (res.reply, res.address, res.detail) == (None, key, detail), rcpt
        assert b.key_of(rcpt) == key, rcpt
    assert b.addresses() >= {"straße@example.com", "οδυσσευς@example.com", "ﬁnance@example.com"}
    for rcpt in ("strase@example.com", "fnance@example.com", "stra\u00dfe@example.org"):
        assert b.resolve(rcpt).reply == REPLY_UNKNOWN, rcpt
    s = book("  straße@example.com: mailbox:sales\n",
             "address_options: {local_part_case: sensitive}\n")
    assert s.knows("straße@example.com") and not s.knows("STRASSE@example.com")


def test_two_addresses_one_case_fold_makes_one_are_refused() -> None:
    """strasse@ and straße@ are one address to Postfix's tables (and to RCPT STRASSE@): the
    book cannot route them apart, and says so at load."""
    assert errors("  straße@example.com: mailbox:sales\n  strasse@example.com: mailbox:support\n"
                  "  ﬁ@example.com: mailbox:sales\n  FI@example.com: mailbox:sales\n") == [
        "t.yaml:14:3: address straße@example.com (an alias) and strasse@example.com "
        "(t.yaml:15) are one address: Unicode case folding, which Postfix's tables and RCPT "
        "use, makes both strasse@example.com; keep one of them: it takes mail for every spelling",
        "t.yaml:16:3: address ﬁ@example.com (an alias) and fi@example.com (t.yaml:17) are one "
        "address: Unicode case folding, which Postfix's tables and RCPT use, makes both "
        "fi@example.com; keep one of them: it takes mail for every spelling"]


def test_a_domain_folds_as_postfix_tables_do() -> None:
    """A domain written with a character case folding maps (ſ, ﬁ, Cyrillic tall te) is the
    domain Postfix's tables find for it: known, not 501 5.1.3 after Postfix took it. One
    case folding leaves alone (full-width) is still refused, as Postfix's tables refuse it."""
    b = AddressBook.build(loads("domains: [sales.test, fish.test, почта.рф]\n"
                                "mailboxes: {sales: {maildir: sales}}\n"
                                "aliases: {a@sales.test: mailbox:sales, a@fish.test: mailbox:sales,"
                                " a@почта.рф: mailbox:sales}\n", "d.yaml"))
    for rcpt, key in [("a@\u017fales.test", "a@sales.test"), ("a@\ufb01sh.test", "a@fish.test"),
                      ("A@\u017fALES.TEST.", "a@sales.test"), ("a@поч\u1c84а.рф", "a@почта.рф"),
                      ("a@XN--80A1ACNY.xn--p1ai", "a@почта.рф")]:
        assert b.resolve(rcpt).address == key and b.knows(rcpt), rcpt
    assert on_our_domains("ann@\ufb01sh.test", b.domains)
    assert b.resolve("zz@\ufb01sh.test").reply == REPLY_UNKNOWN
    full = b.resolve("a@\uff33ALES.test").reply
    assert full is not None and (full.code, full.status) == (501, "5.1.3")


def test_unknown_address_and_domain() -> None:
    """Unknown local part or foreign domain: 550 5.1.1, and knows() says no."""
    b = book("  sales@example.com: mailbox:sales\n")
    for rcpt in ("nobody@example.com", "sales@example.org", "no-at-sign", "@example.com"):
        assert b.resolve(rcpt).reply == REPLY_UNKNOWN and not b.knows(rcpt)
    assert b.knows("<sales@example.com>")


def test_bare_postmaster_is_the_postmaster_of_a_domain() -> None:
    """RFC 5321 4.5.1: RCPT TO:<Postmaster> without a domain is accepted (any case)."""
    b = book("  postmaster@example.com: mailbox:support\n")
    for rcpt in ("postmaster", "<Postmaster>", "POSTMASTER"):
        res = b.resolve(rcpt)
        assert res.reply is None and [t.key for t in res.targets] == keys(b, "postmaster@example.com")
    assert book("  sales@example.com: mailbox:sales\n").resolve("postmaster").reply == REPLY_UNKNOWN
    assert b.resolve("webmaster").reply == REPLY_UNKNOWN


def test_quoted_local_part_is_its_content() -> None:
    """RFC 5321 4.1.2: "sales"@ is sales@, and "sales+Clients VIP"@ is sales@ with that detail."""
    b = book("  sales@example.com: mailbox:sales\n")
    assert keys(b, '"sales"@example.com') == keys(b, "sales@example.com") == ["sales"]
    res = b.resolve('"sales+Clients VIP"@example.com')
    assert res.reply is None and res.detail == "Clients VIP" and [t.key for t in res.targets] == ["sales"]
    assert b.resolve('"sa\\les"@example.com').reply is None            # "sa\les" is sales
    assert b.resolve('"nobody"@example.com').reply == REPLY_UNKNOWN


def test_a_quoted_local_part_in_the_book_is_the_address_rcpt_gives() -> None:
    """An alias written with a quoted local part ('"a b"@example.com', a key the Postfix
    tables list as skipped) passed `check` but was dead: RCPT unquotes the local part
    ("a b"@ means a b), the book kept the quotes in its key, so the daemon answered
    550 5.1.1 to the very address the book defines and `mailrouter address` called it
    unknown. Keys and targets are now read as RCPT reads them: "info"@ is info@ (and
    defined twice beside it), "a b"@ stays quoted, a target "a b"@ reaches it."""
    b = book("  '\"A b\"@example.com': mailbox:sales\n"
             "  '\"info\"@example.com': mailbox:support\n"
             "  to-ab@example.com: '\"a b\"@example.com'\n"
             "  to-ab-detail@example.com: '\"a b+x\"@example.com'\n")
    assert keys(b, '"a b"@example.com') == keys(b, '"A B"@example.com') == ["sales"]
    assert keys(b, '"a\\ b"@example.com') == ["sales"]            # "a\ b" is a b
    res = b.resolve('"a b+Q"@example.com')
    assert res.reply is None and res.detail == "Q" and [t.key for t in res.targets] == ["sales"]
    assert keys(b, "info@example.com") == keys(b, '"info"@example.com') == ["support"]
    assert keys(b, "to-ab@example.com") == keys(b, "to-ab-detail@example.com") == ["sales"]
    assert b.addresses() >= {'"a b"@example.com', "info@example.com"}
    assert errors("  sales@example.com: mailbox:sales\n"
                  "  '\"sales\"@example.com': mailbox:support\n") == [
        "t.yaml:15:3: address sales@example.com is defined twice (an alias; first at "
        "t.yaml:14); keep one definition"]


def test_a_group_listing_itself_is_told_to_take_itself_out() -> None:
    """g@: [ivanov, g@, mailbox:sales] was refused with "alias g@ maps to itself ... add a
    person with address: g@, or point the alias at mailbox:NAME": a fix for a one-target
    alias that makes a person of a list. The group is told to take itself out of its list;
    an alias whose only target is itself keeps its message."""
    assert errors("  g@example.com: [ivanov, G@example.com, sales@example.com]\n"
                  "  sales@example.com: mailbox:sales\n"
                  "  self@example.com: self@example.com\n") == [
        "t.yaml:14:27: group g@example.com lists itself, but no person has this address; "
        "remove g@example.com from its own list (its other targets each get one copy), or "
        "add a person with address: g@example.com to keep a copy here",
        "t.yaml:16:21: alias self@example.com maps to itself, but no person has this "
        "address; to deliver here, add a person with address: self@example.com, or point "
        "the alias at mailbox:NAME"]


def test_a_catch_all_is_refused_saying_there_is_none() -> None:
    """'@example.com: mailbox:sales' (Postfix's catch-all) was refused with "is not an
    address; write local@domain", leaving the admin to guess whether a catch-all exists
    in some other spelling. It says there is none, and what happens to other addresses."""
    assert errors("  '@example.com': mailbox:sales\n") == [
        "t.yaml:14:3: alias '@example.com' is a catch-all, which the address book does not "
        "have: it takes only the addresses it lists, and refuses any other with 550 5.1.1 "
        "at RCPT; list each address that should take mail (local@domain)"]


def test_a_person_outside_our_domains_is_not_told_to_add_their_domain() -> None:
    """A person with address: x@gmail.com was told "add gmail.com under domains:": done,
    mailrouter takes gmail.com's mail and `mailrouter postfix` routes the whole domain to
    it. Someone outside is told the way that works: a mailbox {smtp: ...} for them."""
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(loads("domains: [example.com]\npeople:\n  ext: {address: x@gmail.com}\n",
                                "t.yaml"))
    assert [str(e) for e in info.value.errors] == [
        "t.yaml:3:18: address x@gmail.com (the address of person 'ext') is not on one of "
        "our domains; correct the address, or add gmail.com under domains: if it is ours; "
        "for someone outside, leave out address: and give mailbox: NAME, a mailbox "
        "{smtp: x@gmail.com}"]


def test_moved_deliver_and_refuse() -> None:
    """Moved with deliver: true follows now (path shows it); deliver: false is 551 5.1.6."""
    b = book("  sales@example.com: mailbox:sales\n",
             "moved:\n  old@example.com: {now: sales@example.com, autoreply: moved}\n"
             "  gone@example.com: {now: new@other.org, deliver: false}\n")
    res = b.resolve("old@example.com")
    assert res.moved is not None and res.moved.autoreply == "moved" and res.reply is None
    assert res.targets[0].path == ("old@example.com", "sales@example.com", "mailbox:sales")
    gone = b.resolve("gone@example.com")
    assert b.knows("gone@example.com") and gone.targets == ()
    assert gone.reply is not None and (gone.reply.code, gone.reply.status) == (
        REPLY_MOVED.code, REPLY_MOVED.status) and "<new@other.org>" in gone.reply.text


def test_a_moved_address_may_move_on_to_another_moved_one_in_any_order() -> None:
    """old1@ -> old2@ -> sales@, both moved with deliver: true: refused with "moved address
    old1@ delivers to old2@, which is not a known address" when old1@ was written first,
    taken when it came second. Now taken in either order (a detail form of a moved address
    too); two moved addresses pointing at each other are an alias loop, said as one."""
    head = "  sales@example.com: mailbox:sales\n"
    for moved in ("moved:\n  old1@example.com: {now: old2@example.com}\n"
                  "  old2@example.com: {now: sales@example.com}\n"
                  "  old3@example.com: {now: old2+x@example.com}\n",
                  "moved:\n  old3@example.com: {now: old2+x@example.com}\n"
                  "  old2@example.com: {now: sales@example.com}\n"
                  "  old1@example.com: {now: old2@example.com}\n"):
        b = book(head, moved)
        assert [t.path for t in b.resolve("old1@example.com").targets] == [
            ("old1@example.com", "old2@example.com", "sales@example.com", "mailbox:sales")]
        assert keys(b, "old3@example.com") == ["sales"]
    errs = errors(head, "moved:\n  old1@example.com: {now: old2@example.com}\n"
                        "  old2@example.com: {now: old1@example.com}\n")
    assert len(errs) == 1 and "alias loop of 2: old1@example.com -> old2@example.com" in errs[0]
    # a group listing a moved address whose now: is refused: that error alone, not also
    # "grp@ points to unknown address old1@; define old1@ under aliases:" (defined, as moved)
    assert errors(head + "  grp@example.com: [old1@example.com, sales@example.com]\n",
                  "moved:\n  old1@example.com: {now: nobody@example.com}\n") == [
        "t.yaml:14:27: moved address old1@example.com delivers to nobody@example.com, which "
        "is not a known address; define nobody@example.com (an alias or a person's address), "
        "or set deliver: false"]


def test_group_of_50_is_50_targets() -> None:
    """A group of 50 people gives exactly 50 copies."""
    people = "".join(f"  p{i}: {{address: p{i}@example.com}}\n" for i in range(50))
    members = ", ".join(f"p{i}@example.com" for i in range(50))
    b = AddressBook.build(loads(f"domains: [example.com]\npeople:\n{people}"
                                f"aliases:\n  all@example.com: [{members}, p7]\n", "t.yaml"))
    targets = b.resolve("all@example.com").targets
    assert len(targets) == 50 and len({t.key for t in targets}) == 50


def test_cycle_of_two_exact_text() -> None:
    """a -> b -> a is refused with the whole cycle and the line of each edge."""
    assert errors("  a@example.com: b@example.com\n  b@example.com: [mailbox:sales, a@example.com]\n"
                  ) == ["t.yaml:14:18: alias loop of 2: a@example.com -> b@example.com (t.yaml:14)"
                        " -> a@example.com (t.yaml:15); break the loop: point one of these at a "
                        "mailbox, a person or a team"]


def test_cycle_of_five_exact_text() -> None:
    """A five-address cycle written out of order is reported once, edge by edge."""
    lines = ["  c@example.com: d@example.com", "  a@example.com: b@example.com",
             "  e@example.com: a@example.com", "  b@example.com: c@example.com",
             "  d@example.com:\n    - e@example.com"]
    assert errors("\n".join(lines) + "\n") == [
        "t.yaml:15:18: alias loop of 5: a@example.com -> b@example.com (t.yaml:15) -> "
        "c@example.com (t.yaml:17) -> d@example.com (t.yaml:14) -> e@example.com (t.yaml:19)"
        " -> a@example.com (t.yaml:16); break the loop: point one of these at a mailbox, "
        "a person or a team"]


def test_moved_cycle_is_a_cycle() -> None:
    """A moved address delivering back into its own alias is a loop too."""
    errs = errors("  new@example.com: old@example.com\n",
                  "moved:\n  old@example.com: {now: new@example.com}\n")
    assert len(errs) == 1 and "alias loop of 2: new@example.com -> old@example.com" in errs[0]


def test_an_unknown_mailbox_or_team_says_where_to_define_it() -> None:
    """An alias (or a person, or a team) naming an unknown mailbox or team listed the known
    ones, or guessed one, but never said where the missing one is defined: the fix names
    the section, after the did-you-mean or the list."""
    assert errors("  a@example.com: mailbox:sale\n  b@example.com: mailbox:nosuch\n"
                  "  c@example.com: team:dut\n  d@example.com: team:nosuch\n") == [
        "t.yaml:14:18: unknown mailbox 'sale'; did you mean 'sales'? "
        "(define it under 'mailboxes:')",
        "t.yaml:15:18: unknown mailbox 'nosuch'; known mailboxes: finance, person:ivanov, "
        "person:smirnov, sales, support (define it under 'mailboxes:')",
        "t.yaml:16:18: unknown team 'dut'; did you mean 'duty'? (define it under 'teams:')",
        "t.yaml:17:18: unknown team 'nosuch'; known teams: desk, duty "
        "(define it under 'teams:')"]
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(loads("domains: [example.com]\nmailboxes: {sales: {maildir: s}}\n"
                                "people:\n  ivanov: {address: i@example.com, mailbox: sale}\n"
                                "teams:\n  duty: {members: [ivanov], mailbox: nosuch}\n",
                                "t.yaml"))
    assert [str(e) for e in info.value.errors] == [
        "t.yaml:4:45: person 'ivanov' names unknown mailbox 'sale'; did you mean 'sales'? "
        "(define it under 'mailboxes:')",
        "t.yaml:6:38: team 'duty' names unknown mailbox 'nosuch'; known mailboxes: sales "
        "(define it under 'mailboxes:')"]


def test_every_problem_is_reported() -> None:
    """Dangling names, duplicates and bad keys all come back from one build."""
    errs = errors("  a@example.com: mailbox:sale\n  b@example.com: ivanvo\n"
                  "  c@example.com: team:dut\n  d@example.com: nobody@example.com\n"
                  "  A@Example.com: mailbox:sales\n  e@example.com: duty\n"
                  "  f@example.com: {mailbox: sales, fodler: X}\n")
    text = "\n".join(errs)
    assert "unknown mailbox 'sale'; did you mean 'sales'?" in text
    assert "unknown person 'ivanvo'; did you mean 'ivanov'?" in text
    assert "unknown team 'dut'; did you mean 'duty'?" in text
    assert "alias a@example.com points to unknown address nobody@example.com" not in text
    assert "points to unknown address nobody@example.com" in text
    assert "address a@example.com is defined twice (an alias; first at t.yaml:14)" in text
    assert "'duty' is a team, not a person; write team:duty" in text
    assert "unknown key 'fodler' in the target of alias f@example.com; did you mean 'folder'?" in text


def test_limits_depth_and_width() -> None:
    """Chains deeper than max_depth and groups wider than max_width are refused."""
    chain = "".join(f"  a{i}@example.com: a{i + 1}@example.com\n" for i in range(4))
    errs = errors(chain + "  a4@example.com: mailbox:sales\n", limits=Limits(max_depth=4))
    assert len(errs) == 1 and "alias chain from a0@example.com is 5 addresses deep (limit 4)" in errs[0]
    book(chain + "  a4@example.com: mailbox:sales\n", limits=Limits(max_depth=5))
    errs = errors("  w@example.com: [mailbox:sales, mailbox:support, ivanov]\n"
                  "  x@example.com: [w@example.com]\n", limits=Limits(max_width=2))
    assert errs == ["t.yaml:14:19: alias w@example.com expands to 3 targets (limit 2); "
                    "split the group, or deliver it to one shared mailbox"]


def test_a_chain_too_deep_is_named_at_its_start_with_the_whole_chain() -> None:
    """A chain written from a0@ over the limit was reported from the address where it crossed
    it (a3@, line 17), which the admin never wrote as a start, with only the part below it.
    Now: at a0@'s line, every address down to the end, where it crosses, and the group that
    leads into it counted; the fix names each address of the chain over the limit."""
    chain = "".join(f"  a{i}@example.com: a{i + 1}@example.com\n" for i in range(7))
    errs = errors(chain + "  a7@example.com: mailbox:sales\n"
                  "  g@example.com: [ivanov, a2@example.com]\n", limits=Limits(max_depth=4))
    assert errs == [
        "t.yaml:14:19: alias chain from a0@example.com is 8 addresses deep (limit 4): "
        + " -> ".join(f"a{i}@example.com" for i in range(8))
        + "; it passes the limit at a3@example.com (t.yaml:17); 1 other address(es) lead into "
        "it and are refused with it; shorten the chain: point each of a0@example.com, "
        "a1@example.com, a2@example.com, a3@example.com (each starts a chain over the limit) "
        "straight at the final target (the limit is limits.max_alias_depth in config.yaml)"]
    # the fix names every address over the limit: a0@ alone pointed at the end left a1@
    # refused at the next check, then a2@, a3@: one round per address
    fixed = chain.replace("  a0@example.com: a1@example.com\n", "  a0@example.com: mailbox:sales\n")
    errs = errors(fixed + "  a7@example.com: mailbox:sales\n"
                  "  g@example.com: [ivanov, a2@example.com]\n", limits=Limits(max_depth=4))
    assert len(errs) == 1 and "alias chain from a1@example.com" in errs[0]


# --- Loading that cannot explode (issue 9) ---------------------------------------------

def anchor_bomb(levels: int = 9, refs: int = 9, leaf: str = "mailbox:m", name: str = "a",
                head: str = "domains: [example.com]\nmailboxes: {m: {maildir: m}}\naliases:\n") -> str:
    """Nested alias lists that reuse YAML anchors: `levels` lists of `refs` aliases of the
    list before, refs**levels members once flattened (9x9: 387,420,489, in ~600 bytes)."""
    lines = [f"  {name}1@example.com: &{name}1 [{', '.join([leaf] * refs)}]"]
    lines += [f"  {name}{i}@example.com: &{name}{i} [{', '.join([f'*{name}{i - 1}'] * refs)}]"
              for i in range(2, levels + 1)]
    return head + "\n".join(lines) + "\n"


def test_anchor_bomb_is_refused_at_load_with_its_line() -> None:
    """9 levels x 9 references: refused while loading, at the alias that crosses the budget."""
    with pytest.raises(ConfigError) as info:
        loads(anchor_bomb(), "bomb.yaml")
    assert str(info.value).startswith(
        "bomb.yaml:9:24: YAML aliases repeat more than 100000 values in this file")


def test_a_list_repeated_through_anchors_is_walked_once() -> None:
    """Under the loader's budget (5 x 9: 59,049 members flattened) the group is expanded
    once per list object: the right targets, and an error inside it reported once per
    place it is written, not once per repetition (66,420 lines before)."""
    text = anchor_bomb(5, 9, leaf="mailbox:sales", head=HEAD + "aliases:\n")
    b = AddressBook.build(loads(text, "t.yaml"))
    assert [(t.key, t.path) for t in b.resolve("a5@example.com").targets] == [
        ("sales", ("a5@example.com", "mailbox:sales"))]
    broken = anchor_bomb(5, 9, leaf="mailbox:nope", head=HEAD + "aliases:\n")
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(loads(broken, "t.yaml"))
    errs = [str(e) for e in info.value.errors]
    assert errs == [f"t.yaml:14:{24 + 14 * i}: unknown mailbox 'nope'; known mailboxes: finance, "
                    "person:ivanov, person:smirnov, sales, support (define it under 'mailboxes:')"
                    for i in range(9)]


def test_groups_wider_than_the_limit_through_anchors() -> None:
    """max_alias_width counts the distinct targets, whatever anchors repeat them."""
    text = anchor_bomb(4, 9, leaf="[mailbox:sales, mailbox:support, ivanov]",
                       head=HEAD + "aliases:\n")
    errs = [str(e) for e in pytest.raises(ConfigErrors, AddressBook.build, loads(text, "t.yaml"),
                                          Limits(max_width=2)).value.errors]
    assert errs == [f"t.yaml:14:25: alias a{1 + i}@example.com expands to 3 targets "
                    "(limit 2); split the group, or deliver it to one shared mailbox"
                    for i in range(4)]


def test_expansion_budget_for_groups_of_groups() -> None:
    """Groups of groups of 1,000-target groups, each well inside max_alias_width and the
    YAML alias budget: the book as a whole would merge 10,000,000 targets; refused once it
    passes EXPANSION_BUDGET, at the alias where it did."""
    out = ["domains: [example.com]", "mailboxes:"]
    out += [f"  m{i}: {{maildir: m{i}}}" for i in range(1000)]
    out.append("aliases:")
    out += [f"  l{i}@example.com: mailbox:m{i}" for i in range(1000)]
    out.append("  x0@example.com: &L [" + ", ".join(f"l{i}@example.com" for i in range(1000)) + "]")
    out += [f"  x{i}@example.com: *L" for i in range(1, 50)]
    out.append("  y0@example.com: &M [" + ", ".join(f"x{i}@example.com" for i in range(50)) + "]")
    out += [f"  y{i}@example.com: *M" for i in range(1, 200)]
    with pytest.raises(ConfigErrors) as info:
        AddressBook.build(loads("\n".join(out) + "\n", "t.yaml"))
    assert [str(e) for e in info.value.errors] == [(
        "t.yaml:2054:23: the aliases expand to more than 5000000 targets in all, counting each "
        "group once for every group that lists it; passed at y99@example.com; deliver big "
        "groups to one shared mailbox, or list fewer groups in groups")]


# Runs a command in a child forked from this small process and prints its exit code and peak
# RSS. Linux carries the peak RSS of the image a process replaced at exec (the forked or
# vforked caller's) into its ru_maxrss: measured straight from pytest, a batch of tests that
# had grown pytest past 300 MB failed the check below with pytest's size, not mailrouter's.
_PEAK_RSS = """import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def test_check_refuses_the_anchor_bomb_in_little_memory(tmp_path: Path) -> None:
    """`mailrouter check` on the 9x9 file, as a user runs it: exit 1, the error names
    file:line, and the process stays small (it reached 5.9 GB before it died, issue 9)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bomb.yaml").write_text(anchor_bomb(), encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("routing: [rules/*.yaml]\nworkers: 1\n", encoding="utf-8")
    err = tmp_path / "err"
    with open(err, "wb") as e:
        done = subprocess.run([sys.executable, "-c", _PEAK_RSS, "-m", "mailrouter.cli", "check",
                               "-c", str(cfg)], stdout=subprocess.PIPE, stderr=e, cwd=tmp_path,
                              check=True, text=True)
    code, peak_kib = (int(v) for v in done.stdout.split()[-2:])
    assert code == 1
    text = err.read_text(encoding="utf-8")
    assert f"{rules / 'bomb.yaml'}:9:24: YAML aliases repeat more than 100000 values" in text
    assert "Traceback" not in text
    assert peak_kib < 300 * 1024          # KiB on Linux


def test_compact_book_finds_every_address_and_survives_its_cache_emptying(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The book keeps its addresses as sorted UTF-8 bytes (compact.py): non-ASCII local parts
    and domains, prefixes of other addresses and addresses sorting first and last are found;
    and with a cache of 3 made addresses, emptied over and over, every answer stays the same."""
    from mailrouter.addressbook import compact
    aliases = ("  a@example.com: mailbox:sales\n"
               "  ab@example.com: a@example.com\n"
               "  zz@пример.рф: [ab@example.com, ivanov, mailbox:support/Входящие]\n"
               "  продажи@example.com: [zz@пример.рф, team:duty]\n"
               "  продажи2@пример.рф: продажи@example.com\n")
    first = book(aliases)
    addresses = sorted(first.addresses())
    want = {a: first.resolve(a).targets for a in addresses}
    assert "продажи@example.com" in want and "a@example.com" in want
    assert [t.path for t in want["продажи2@пример.рф"]][0] == (
        "продажи2@пример.рф", "продажи@example.com", "zz@пример.рф", "ab@example.com",
        "a@example.com", "mailbox:sales")
    assert not first.knows("a@example.co") and not first.knows("продажи3@пример.рф")
    monkeypatch.setattr(compact, "CACHE_LIMIT", 3)
    small = book(aliases)
    for _ in range(3):
        for a in reversed(addresses):
            assert small.resolve(a).targets == want[a], a


def test_a_moved_address_delivering_outside_our_domains_says_how_to_forward() -> None:
    """`now: someone@gmail.com, deliver: true` was told to "define someone@gmail.com (an
    alias or a person's address)": an alias of another domain is refused too, so the fix led
    to a second error. It names the two ways out."""
    errs = errors("  sales@example.com: mailbox:sales\n",
                  "moved:\n  old@example.com: {now: Someone@Gmail.com, deliver: true}\n"
                  "  gone@example.com: {now: nobody@example.com, deliver: true}\n")
    assert errs == [
        "t.yaml:14:26: moved address old@example.com delivers to someone@gmail.com, which is "
        "not on one of our domains; set deliver: false (the sender is told the new address), "
        "or make old@example.com an alias of a mailbox {smtp: someone@gmail.com} instead",
        "t.yaml:15:27: moved address gone@example.com delivers to nobody@example.com, which is "
        "not a known address; define nobody@example.com (an alias or a person's address), or "
        "set deliver: false"]


def test_a_target_that_yaml_reads_as_a_number_is_named_at_its_alias() -> None:
    """`{mailbox: 2026}` (a number: no position of its own) was an error at no line, which
    `check` and a reload named as config.yaml; it is the alias's line in the routing file."""
    errs = errors("  sales@example.com: mailbox:sales\n  z@example.com: {mailbox: 2026}\n")
    assert errs == ["t.yaml:15:3: unknown mailbox '2026'; known mailboxes: finance, "
                    "person:ivanov, person:smirnov, sales, support (define it under 'mailboxes:')"]
