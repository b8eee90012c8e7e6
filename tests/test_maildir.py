"""Maildir delivery: atomic, durable, deterministic names, Maildir++ folders in modified UTF-7
that a real Dovecot shows under their Unicode names."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from mailrouter.delivery.maildir import Maildir, _write_batch, encode_mutf7, folder_dirname


@pytest.mark.parametrize("name, encoded", [
    ("INBOX", "INBOX"), ("Финансы", "&BCQEOAQ9BDAEPQRBBEs-"), ("A&B", "A&-B"),
    ("Entwürfe", "Entw&APw-rfe"), ("台北", "&U,BTFw-"),      # RFC 3501 5.1.3 example
    ("Счета 2026", "&BCEERwQ1BEIEMA- 2026"),
])
def test_modified_utf7(name, encoded):
    """Folder names are encoded as IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    assert encode_mutf7(name) == encoded


def test_folder_dirname_and_refusals():
    """Nested folders become Maildir++ '.A.B'; empty, '..' and control characters are refused."""
    assert folder_dirname("Finance/2026") == ".Finance.2026"
    assert folder_dirname("Финансы") == ".&BCQEOAQ9BDAEPQRBBEs-"
    for bad in ("", "a//b", "../etc", "a\nb", "x\0y"):
        with pytest.raises(ValueError):
            folder_dirname(bad)


async def test_delivery_is_idempotent_and_leaves_no_tmp(tmp_path):
    """The same copy id twice gives one file in new/; tmp/ is empty afterwards."""
    md = Maildir(tmp_path / "box", "mx.test")
    p1 = await md.deliver(b"Subject: a\r\n\r\nx\r\n", "c0ffee", "Финансы")
    p2 = await md.deliver(b"Subject: a\r\n\r\nx\r\n", "c0ffee", "Финансы")
    assert p1 == p2
    box = tmp_path / "box" / ".&BCQEOAQ9BDAEPQRBBEs-"
    assert [f.name for f in (box / "new").iterdir()] == ["mrc0ffee"]
    assert list((box / "tmp").iterdir()) == [] and (box / "maildirfolder").exists()


@pytest.mark.parametrize("umask", [0o027, 0o022, 0o077])
async def test_copy_modes_follow_the_units_umask(tmp_path, umask):
    """docs/install.md step 1 and the unit's UMask=0027: Maildir files 0640, directories
    0750, the mailrouter group (backups) reads. Copies were made 0600 whatever the umask,
    so the group read nothing. A laxer umask (0022) still gives no one else the mail."""
    old = os.umask(umask)
    try:
        md = Maildir(tmp_path / "box", "mx.test")
        path = await md.deliver(b"Subject: a\r\n\r\nx\r\n", "c0ffee", "Finance")
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640 & ~umask)
    assert oct(os.stat(tmp_path / "box" / ".Finance" / "new").st_mode & 0o777) == \
        oct(0o777 & ~umask)


async def test_copy_moved_to_cur_by_a_client_is_not_delivered_again(tmp_path):
    """After an IMAP client marks the copy seen (new/NAME -> cur/NAME:2,S) a retry adds nothing."""
    md = Maildir(tmp_path / "box", "mx.test")
    path = await md.deliver(b"x\r\n", "beef")
    os.rename(path, tmp_path / "box" / "cur" / "mrbeef:2,S")
    await md.deliver(b"x\r\n", "beef")
    assert list((tmp_path / "box" / "new").iterdir()) == []


async def test_copy_name_does_not_depend_on_the_instance(tmp_path):
    """Two instances (different host names) sharing one mail store: the second one's copy of
    the same message is recognised, in new/ and after a reader moved it to cur/ with any flags."""
    a, b = Maildir(tmp_path / "box", "mx1.test"), Maildir(tmp_path / "box", "mx2.test")
    path = await a.deliver(b"from a\r\n", "c1")
    assert await b.deliver(b"from b\r\n", "c1") == path
    os.rename(path, tmp_path / "box" / "cur" / "mrc1:2,FRS")      # flagged, replied, seen
    await b.deliver(b"from b\r\n", "c1")
    assert list((tmp_path / "box" / "new").iterdir()) == []
    assert list((tmp_path / "box" / "tmp").iterdir()) == []


async def test_copy_from_an_earlier_version_is_recognised(tmp_path):
    """Copies named `mr<id>.<host>` by earlier versions: found in cur/ whatever the host and flags,
    and in new/ under this instance's own host name."""
    box = tmp_path / "box"
    md = Maildir(box, "mx.test")
    await md.deliver(b"seed\r\n", "seed")                          # creates the folder
    (box / "cur" / "mrold1.other.host:2,S").write_bytes(b"x\r\n")
    (box / "new" / "mrold2.mx.test").write_bytes(b"y\r\n")
    await md.deliver(b"x\r\n", "old1")
    await md.deliver(b"y\r\n", "old2")
    await md.deliver(b"z\r\n", "old")                              # a prefix, not the same copy
    assert sorted(f.name for f in (box / "new").iterdir()) == ["mrold", "mrold2.mx.test", "mrseed"]


def _write_now(md: Maildir, data: bytes, copy_id: str) -> str:
    """One copy stored by the writer threads' own batch function, in this thread."""
    (got,) = _write_batch([(md, data, copy_id, None, None)])
    if isinstance(got, BaseException):
        raise got
    return got


def test_same_copy_written_at_once_is_stored_once(tmp_path):
    """Many writers (threads with their own Maildir objects, as separate instances would be)
    writing the same copy at the same moment: exactly one file in new/, the same one (inode)
    that every writer saw when it returned, nothing left in tmp/. A rename into new/ would
    replace a copy another writer had already reported as stored."""
    import threading
    box = tmp_path / "box"
    _write_now(Maildir(box, "seed"), b"seed\r\n", "seed")
    for round_ in range(50):
        writers = [Maildir(box, f"mx{n}.test") for n in range(8)]
        start = threading.Barrier(len(writers))
        paths: list[str] = []
        inodes: set[int] = set()

        def write(md: Maildir, copy_id: str, start: threading.Barrier = start,
                  paths: list[str] = paths, inodes: set[int] = inodes) -> None:
            start.wait()
            paths.append(_write_now(md, f"by {md.host}\r\n".encode(), copy_id))
            inodes.add(os.stat(paths[-1]).st_ino)
        threads = [threading.Thread(target=write, args=(md, f"r{round_}")) for md in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for md in writers:
            md.close()       # each keeps new/ open: 400 descriptors left to the worker
        assert set(paths) == {str(box / "new" / f"mrr{round_}")}
        assert inodes == {os.stat(paths[0]).st_ino}
    assert len(list((box / "new").iterdir())) == 51
    assert list((box / "tmp").iterdir()) == []


async def test_mailbox_removed_while_running_is_recreated(tmp_path):
    """An admin removes (or restores) a Maildir under the running daemon: the next copy
    recreates it instead of failing with 451 until a restart."""
    md = Maildir(tmp_path / "box", "mx.test")
    await md.deliver(b"one\r\n", "01", "Finance")
    shutil.rmtree(tmp_path / "box")
    path = await md.deliver(b"two\r\n", "02", "Finance")
    assert open(path, "rb").read() == b"two\r\n"
    assert [f.name for f in (tmp_path / "box" / ".Finance" / "new").iterdir()] == ["mr02"]


def _fsynced(monkeypatch) -> set[tuple[int, int]]:
    """(device, inode) of every file or directory fsync'd from now on (the real fsync runs)."""
    synced: set[tuple[int, int]] = set()
    fsync = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        fsync(fd)
        synced.add((st.st_dev, st.st_ino))
    monkeypatch.setattr(os, "fsync", spy)
    return synced


def _ident(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


async def test_a_folder_replaced_while_running_has_the_copys_name_fsynced_where_it_is(
        tmp_path, monkeypatch):
    """A folder deleted and re-created under the daemon (an IMAP client through Dovecot, a
    restore): the next copy was linked into the new folder's new/, and the descriptor
    fsync'd was the old one's, kept since the first copy: the copy's name was never made
    durable, after its 250, until a restart. Now the new/ the copy is in is fsync'd."""
    md = Maildir(tmp_path / "box", "mx.test")
    await md.deliver(b"one\r\n", "01", "Finance")
    folder = tmp_path / "box" / ".Finance"
    folder.rename(tmp_path / "box" / ".Finance-deleted")
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True)
    synced = _fsynced(monkeypatch)
    path = await md.deliver(b"two\r\n", "02", "Finance")
    assert os.path.dirname(path) == str(folder / "new")
    assert _ident(folder / "new") in synced
    synced.clear()
    await md.deliver(b"three\r\n", "03", "Finance")          # the new one kept from now on
    assert synced == {_ident(folder / "new")}


async def test_a_folder_made_for_a_copy_is_durable_with_it(tmp_path, monkeypatch):
    """The first copy into a folder (and a mailbox) that did not exist: the directories
    made for it are fsync'd up to the Maildir root, so a power cut cannot take the folder
    (and the copy a 250 was given for) with it; before, only new/ was."""
    synced = _fsynced(monkeypatch)
    md = Maildir(tmp_path / "mail" / "box", "mx.test")
    path = await md.deliver(b"one\r\n", "01", "Finance")
    box = tmp_path / "mail" / "box"
    for d in (box / ".Finance" / "new", box / ".Finance", box, tmp_path / "mail"):
        assert _ident(d) in synced, d
    assert open(path, "rb").read() == b"one\r\n"
    synced.clear()                     # a mailbox `team/sales` under the Maildir root
    md = Maildir(tmp_path / "mail" / "team" / "sales", "mx.test", top=tmp_path / "mail")
    await md.deliver(b"two\r\n", "02")
    for d in (tmp_path / "mail" / "team" / "sales", tmp_path / "mail" / "team",
              tmp_path / "mail"):
        assert _ident(d) in synced, d


async def test_concurrent_first_copies_to_one_new_folder(tmp_path):
    """50 copies at once into a folder that does not exist yet: all land, none twice."""
    md = Maildir(tmp_path / "box", "mx.test")
    await asyncio.gather(*(md.deliver(f"m{n}\r\n".encode(), f"{n:04x}", "Новая") for n in range(50)))
    new = tmp_path / "box" / folder_dirname("Новая") / "new"
    assert sorted(f.name for f in new.iterdir()) == sorted(f"mr{n:04x}" for n in range(50))


async def test_dovecot_lists_our_folder_under_its_unicode_name(dovecot):
    """A folder we create in a Dovecot user's Maildir is listed by doveadm as «Финансы» with
    the message in it: the on-disk naming is the one Dovecot and IMAP clients expect."""
    if not shutil.which("doveadm"):
        pytest.skip("doveadm is not installed (Debian package dovecot-core)")
    dv = dovecot(["user@example.test"])
    root = dv.maildir("user@example.test")
    await Maildir(root, "mx.test").deliver(b"Subject: invoice\r\n\r\nsee attachment\r\n", "f1", "Финансы")
    subprocess.run(["chown", "-R", "nobody:nogroup", str(root)], check=True)
    conf = str(dv.dir / "dovecot.conf")
    out = await asyncio.to_thread(subprocess.run, ["doveadm", "-c", conf, "mailbox", "list", "-u",
                                  "user@example.test"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Финансы" in out.stdout.splitlines()
    out = await asyncio.to_thread(subprocess.run, ["doveadm", "-c", conf, "search", "-u",
                                  "user@example.test", "mailbox", "Финансы", "ALL"],
                                  capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, (out.stdout, out.stderr)


async def test_copies_asked_together_share_a_thread_hop_and_a_folder_fsync(tmp_path, monkeypatch):
    """20 copies asked for at once (two folders): every one stored and readable, in fewer
    writer-thread batches than copies, and each folder's new/ fsync'd once per batch that
    holds it, not once per copy."""
    from mailrouter.delivery import maildir

    batches: list[int] = []
    fsyncs: list[int] = []
    write_batch, fsync = maildir._write_batch, os.fsync

    def counting_batch(jobs):
        batches.append(len(jobs))
        return write_batch(jobs)

    def counting_fsync(fd):
        fsyncs.append(fd)
        return fsync(fd)

    monkeypatch.setattr(maildir, "_write_batch", counting_batch)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    md = Maildir(tmp_path / "box", "mx.test")
    await md.deliver(b"warm\r\n", "warm")                # the folders' descriptors exist
    await md.deliver(b"warm\r\n", "warm2", "Sales")
    batches.clear()
    fsyncs.clear()
    paths = await asyncio.gather(*(md.deliver(f"copy {i}\r\n".encode(), f"c{i}",
                                              "Sales" if i % 2 else None) for i in range(20)))
    assert len(set(paths)) == 20
    assert sorted(open(p, "rb").read() for p in paths) == sorted(f"copy {i}\r\n".encode()
                                                                  for i in range(20))
    assert sum(batches) == 20 and len(batches) < 20
    assert len(fsyncs) <= 2 * len(batches) < 20


async def test_a_failed_folder_fsync_refuses_each_copy_of_its_batch(tmp_path, monkeypatch):
    """fsync of new/ fails (EIO): every copy waiting on it is a temporary failure (451),
    none is reported stored; the next batch, with fsync working, stores them."""
    import errno

    from mailrouter.errors import TemporaryDeliveryError

    md = Maildir(tmp_path / "box", "mx.test")
    await md.deliver(b"warm\r\n", "warm")
    fsync = os.fsync

    def broken(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    got = await asyncio.gather(*(md.deliver(b"x\r\n", f"f{i}") for i in range(5)),
                               return_exceptions=True)
    assert all(isinstance(g, TemporaryDeliveryError) for g in got), got
    monkeypatch.setattr(os, "fsync", fsync)
    got = await asyncio.gather(*(md.deliver(b"x\r\n", f"f{i}") for i in range(5)))
    assert len(set(got)) == 5


def _big_cur(box, n: int = 2500, age_s: int = 3600):
    """A folder whose cur/ holds n messages a reader has seen, last changed age_s ago."""
    cur = box / "cur"
    cur.mkdir(parents=True)
    for i in range(n):
        (cur / f"17000{i:05d}.M{i}P1.host,S=10:2,S").write_bytes(b"")
    (cur / "mrold1.other.host:2,S").write_bytes(b"")          # one of ours, seen
    past = os.stat(cur).st_mtime - age_s
    os.utime(cur, (past, past))
    return cur


def _count_listings(monkeypatch, cur) -> list[str]:
    listed: list[str] = []
    real = os.listdir

    def listdir(path="."):
        if os.fspath(path) == str(cur):
            listed.append(os.fspath(path))
        return real(path)
    monkeypatch.setattr(os, "listdir", listdir)
    return listed


async def test_a_big_unchanged_cur_is_listed_once_not_for_every_copy(tmp_path, monkeypatch):
    """100,000 seen messages in cur/ took ~50 ms of listing per copy (31 messages a second
    into that folder instead of ~450): a big cur/ nobody changed since its listing is
    known by one stat per copy."""
    cur = _big_cur(tmp_path / "box")
    listed = _count_listings(monkeypatch, cur)
    md = Maildir(tmp_path / "box", "mx.test")
    for i in range(5):
        await md.deliver(b"x\r\n", f"c{i}")
    assert len(listed) == 1
    assert len(list((tmp_path / "box" / "new").iterdir())) == 5
    assert await md.deliver(b"x\r\n", "old1") == str(cur / "mrold1.other.host:2,S")   # still found


async def test_a_copy_moved_into_a_big_cur_after_its_listing_is_found(tmp_path, monkeypatch):
    """A reader moving a copy into cur/ changes the directory's mtime: the next copy lists it
    again, and a retry of the moved copy adds nothing."""
    cur = _big_cur(tmp_path / "box")
    listed = _count_listings(monkeypatch, cur)
    md = Maildir(tmp_path / "box", "mx.test")
    path = await md.deliver(b"x\r\n", "beef")
    os.rename(path, cur / "mrbeef:2,S")
    assert await md.deliver(b"x\r\n", "beef") == str(cur / "mrbeef:2,S")
    assert list((tmp_path / "box" / "new").iterdir()) == [] and len(listed) == 2


async def test_a_listing_made_in_the_tick_of_a_change_is_not_trusted(tmp_path, monkeypatch):
    """A move into cur/ within the same timestamp tick as the change before our listing
    leaves the mtime as it was: a listing made that soon after the mtime is not kept, so
    the moved copy is still found (racy timestamps)."""
    cur = _big_cur(tmp_path / "box", age_s=0)
    now = os.stat(cur).st_mtime_ns
    os.utime(cur, ns=(now, now))
    await _moved_keeping_mtime(tmp_path / "box", now)    # the move came in the same tick


async def test_a_change_while_cur_is_listed_is_not_trusted(tmp_path, monkeypatch):
    """A listing that raced a move (the directory changed between the stats around it) is
    not kept."""
    cur = _big_cur(tmp_path / "box")
    md = Maildir(tmp_path / "box", "mx.test")
    path = await md.deliver(b"x\r\n", "beef")     # in new/; cur/ listed and kept
    real = os.listdir
    moved: list[bool] = []

    def listdir(p="."):
        got = real(p)
        if os.fspath(p) == str(cur) and not moved:
            os.rename(path, cur / "mrbeef:2,S")   # a reader, while we list
            moved.append(True)
        return got
    monkeypatch.setattr(os, "listdir", listdir)
    os.utime(cur, (1, 1))                         # changed since: the next copy lists again
    await md.deliver(b"x\r\n", "c2")              # lists; the move lands during the listing
    assert moved
    assert await md.deliver(b"x\r\n", "beef") == str(cur / "mrbeef:2,S")
    assert sorted(p.name for p in (tmp_path / "box" / "new").iterdir()) == ["mrc2"]


async def test_a_listing_a_second_after_a_whole_second_mtime_is_not_trusted(tmp_path):
    """Where mtimes are whole seconds (ext3, FAT), a move 1.5 s after the change before our
    listing can leave the mtime as it was: such a listing is kept only 2 s after its mtime."""
    import asyncio
    import time
    cur = _big_cur(tmp_path / "box")
    await asyncio.sleep(1 - time.time() % 1)      # just past a whole second
    second = (time.time_ns() // 1_000_000_000 - 1) * 1_000_000_000      # the one before it
    os.utime(cur, ns=(second, second))
    await _moved_keeping_mtime(tmp_path / "box", second)   # the move came within the second


async def _moved_keeping_mtime(box, mtime_ns):
    """A copy delivered, moved into cur/ by a reader, cur/'s mtime put back to `mtime_ns`
    (a move the timestamp does not show): the copy asked for again is found there."""
    cur = box / "cur"
    md = Maildir(box, "mx.test")
    path = await md.deliver(b"x\r\n", "beef")
    os.rename(path, cur / "mrbeef:2,S")
    os.utime(cur, ns=(mtime_ns, mtime_ns))
    assert await md.deliver(b"x\r\n", "beef") == str(cur / "mrbeef:2,S")
    assert list((box / "new").iterdir()) == []
