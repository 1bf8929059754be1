"""Dataset folders: keys, appending, resume, torn lines, SIGKILL safety, locking."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import drawn_image, kill_when, lines_in, png_bytes

from gandata.datasets import Dataset, check_key, hash_key, is_key, make_key
from gandata.errors import UserError
from gandata.fileio import TMP_MARK


def test_make_key_keeps_safe_text_readable():
    assert make_key("bricklink", "sw0001a") == "bricklink-sw0001a"
    assert make_key("bricklink", "col14-16") == "bricklink-col14-16"
    assert make_key("Bricklink", "SW0001A") == "bricklink-sw0001a"  # keys are case-insensitive (like some filesystems)


def test_make_key_sanitises_and_stays_distinct():
    a, b, c = make_key("img.0001"), make_key("img 0001"), make_key("img/0001")
    for k in (a, b, c):
        assert is_key(k) and "." not in k and "/" not in k
    assert len({a, b, c}) == 3  # the hash of the original text keeps them apart
    assert make_key("img.0001") == a  # stable
    long = make_key("x" * 500)
    assert is_key(long) and len(long) <= 96
    assert make_key("x" * 500) != make_key("x" * 499)
    assert is_key(make_key("...")) and is_key(make_key("日本語"))


def test_hash_key_is_order_independent_and_safe():
    k1 = hash_key("bitmoji", {"hair": 3, "eyes": 7})
    k2 = hash_key("bitmoji", {"eyes": 7, "hair": 3})
    assert k1 == k2 and k1.startswith("bitmoji-") and is_key(k1)
    assert hash_key("bitmoji", {"hair": 4, "eyes": 7}) != k1


def test_check_key_rejects_dots_slashes_and_upper_case():
    for bad in ("a.b", "a/b", "A", "", "x" * 97, "a b"):
        with pytest.raises(ValueError):
            check_key(bad)


def _add(ds: Dataset, i: int) -> dict:
    data = png_bytes(drawn_image(i))
    return ds.add(f"s{i:04d}", data, "png", {"width": 96, "height": 80, "source": "test", "n": i})


def test_add_reopen_resume_and_layout(tmp_path):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        rows = [_add(ds, i) for i in range(5)]
        assert _add(ds, 2) is None  # already there: nothing written twice
        ds.fail("s0099", "HTTP 404", url="http://x/99")
        ds.write_stats({"accepted": 5})
    manifest = (root / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 5
    for row in rows:
        assert row["path"].startswith("images/") and row["path"].count("/") == 2
        data = (root / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert {"key", "path", "sha256", "width", "height", "source", "n"} <= set(row)
    ro = Dataset.open(root)
    assert ro.keys() == {f"s{i:04d}" for i in range(5)}
    assert [f["key"] for f in ro.failures()] == ["s0099"]
    assert ro.open_failures()["s0099"]["error"] == "HTTP 404"
    assert ro.stats() == {"accepted": 5}
    with Dataset.create(root) as ds:  # resume: done keys known, new ones appended
        assert "s0003" in ds and len(ds) == 5
        _add(ds, 5)
    assert len(Dataset.open(root)) == 6


def test_record_must_describe_the_image(tmp_path):
    with Dataset.create(tmp_path / "ds") as ds:
        with pytest.raises(ValueError, match="width"):
            ds.add("k", b"x", "png", {"source": "t"})
        with pytest.raises(ValueError, match="bad key"):
            ds.add("K.png", b"x", "png", {"width": 1, "height": 1, "source": "t"})


def test_torn_last_line_is_ignored_then_cut_before_appending(tmp_path):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        for i in range(3):
            _add(ds, i)
    with open(root / "manifest.jsonl", "ab") as f:
        f.write(b'{"key": "s0003", "path": "images/zz/s00')  # killed mid-line
    assert Dataset.open(root).keys() == {"s0000", "s0001", "s0002"}
    with Dataset.create(root) as ds:
        assert "s0003" not in ds
        _add(ds, 3)
    lines = (root / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["key"] for line in lines)


def test_open_gives_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Dataset.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a gandata dataset"):
        Dataset.open(tmp_path / "plain")


@pytest.mark.slow
def test_second_writer_is_refused(tmp_path):
    with Dataset.create(tmp_path / "ds"):
        with pytest.raises(UserError, match="another gandata command"):
            Dataset.create(tmp_path / "ds")


WRITER = textwrap.dedent(
    """
    import sys, itertools
    sys.path.insert(0, {tests!r})
    from gandata.datasets import Dataset
    from conftest import drawn_image, png_bytes, kill_when, lines_in
    blobs = [png_bytes(drawn_image(i, (160, 160))) for i in range(40)]
    ds = Dataset.create({root!r})
    for i in itertools.count():
        if ("k%06d" % i) not in ds:
            ds.add("k%06d" % i, blobs[i % 40], "png", {{"width": 160, "height": 160, "source": "t"}})
    """
)


@pytest.mark.slow
def test_sigkill_while_writing_leaves_a_consistent_dataset(tmp_path):
    root = tmp_path / "ds"
    script = WRITER.format(tests=str(Path(__file__).parent), root=str(root))
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script])
        kill_when(proc, lambda n=50 * (attempt + 1): lines_in(root / "manifest.jsonl") >= n)
    ds = Dataset.open(root)
    rows = list(ds.rows())
    assert len(rows) >= 100
    for row in rows:  # every row's file is whole
        assert hashlib.sha256(ds.read_bytes(row)).hexdigest() == row["sha256"]
    with Dataset.create(root) as ds:  # reopening cleans temporaries and goes on
        leftovers = [p for p in root.rglob("*") if TMP_MARK in p.name]
        assert not leftovers
        n = len(ds)
        ds.add("extra", png_bytes(drawn_image(999)), "png", {"width": 96, "height": 80, "source": "t"})
    keys = [json.loads(line)["key"] for line in (root / "manifest.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == n + 1


@pytest.mark.parametrize("flush", ["syncfs", "fsync"])
def test_rows_are_written_only_after_their_files_and_folders_are_fsynced(tmp_path, monkeypatch, flush):
    """Group commit: a manifest row never reaches the file before its image and folder were flushed (one syncfs of
    the filesystem for the batch on Linux, else an fsync of each file and folder); a journal line appended after
    rows comes after them; a flush failing in the background is raised by close."""
    import os

    from gandata import fileio

    events = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def syncfs(fd):  # flushes everything on the filesystem: every file and folder written so far
        events.append(("syncfs", os.readlink(f"/proc/self/fd/{fd}")))
        return 0

    monkeypatch.setattr(fileio, "SYNCFS", syncfs if flush == "syncfs" else None)

    real_append = fileio.JsonlLog.append

    def append(self, obj):
        events.append(("row", self.path.name, obj.get("key") or obj.get("parent")))
        return real_append(self, obj)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(fileio.JsonlLog, "append", append)
    png = png_bytes(drawn_image(1, (8, 8)))
    with Dataset.create(tmp_path / "ds") as ds:
        journal = ds.journal("parents")
        for i in range(5):
            ds.add(f"k{i}", png, "png", {"width": 8, "height": 8, "source": "t"})
        journal.append({"parent": "p"})
        assert len(ds) == 5
    rows = [i for i, e in enumerate(events) if e[:2] == ("row", "manifest.jsonl")]
    assert len(rows) == 5
    for i, e in enumerate(events):
        if e[0] == "row" and e[1] == "manifest.jsonl":
            if flush == "syncfs":
                assert any(kind == "syncfs" for kind, *_ in events[:i])
                continue
            synced = [p for kind, p in (x[:2] for x in events[:i]) if kind == "fsync"]
            file = next(p for p in synced if p.endswith(f"/{e[2]}.png"))  # the file itself …
            assert str(Path(file).parent) in synced  # … and the folder that names it
    if flush == "syncfs":  # one flush for the whole batch
        assert sum(kind == "syncfs" for kind, *_ in events) == 1
    assert events.index(("row", "parents.jsonl", "p")) > max(rows)
    assert [r["key"] for r in Dataset.open(tmp_path / "ds").rows()] == [f"k{i}" for i in range(5)]

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(fileio, "SYNCFS", None)
    ds = Dataset.create(tmp_path / "ds")
    ds.add("k9", png, "png", {"width": 8, "height": 8, "source": "t"})
    with pytest.raises(OSError, match="No space"):
        ds.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert "k9" not in Dataset.open(tmp_path / "ds").keys()  # its file was not made durable: no row


def test_durability_none_and_file_store_the_same(tmp_path):
    png = png_bytes(drawn_image(2, (8, 8)))
    for mode in ("none", "file", "batch"):
        with Dataset.create(tmp_path / mode, mode) as ds:
            ds.add("a", png, "png", {"width": 8, "height": 8, "source": "t"})
        assert [r["key"] for r in Dataset.open(tmp_path / mode).rows()] == ["a"]
    with pytest.raises(UserError, match="--durability"):
        Dataset.create(tmp_path / "x", "sometimes")


def test_a_row_whose_file_was_deleted_is_not_done(tmp_path):
    """An image deleted from a dataset folder after it was stored is not done: the next fetch (or crop) writes it
    again; a staged folder's rows of what went to the store (published.jsonl) stay done without their files."""
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        for k in ("a", "b", "c"):
            ds.add(k, png_bytes(drawn_image(ord(k))), "png", {"width": 96, "height": 80, "source": "t"})
    gone = Dataset.open(root).image_path(next(r for r in Dataset.open(root).rows() if r["key"] == "b"))
    gone.unlink()
    (root / "published.jsonl").write_text('{"key": "c"}\n')
    Dataset.open(root).image_path(next(r for r in Dataset.open(root).rows() if r["key"] == "c")).unlink()
    with Dataset.create(root) as ds:
        assert "a" in ds and "b" not in ds and "c" in ds and len(ds) == 2
        assert ds.add("b", png_bytes(drawn_image(ord("b"))), "png", {"width": 96, "height": 80, "source": "t"})
    assert gone.is_file() and sorted(r["key"] for r in Dataset.open(root).rows()) == ["a", "b", "c"]
