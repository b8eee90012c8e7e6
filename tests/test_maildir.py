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
