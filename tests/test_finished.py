"""`gandata shard`'s finished sets: the swap to a new set is atomic for readers (a kill after every single step of
it, on a disk and on S3), "already sharded" is said only over the very tars `dataset.json` records, the job is
what was read (not names, sizes and dates), options and spellings that change no byte are the same job, a finished
re-run says the set's warnings again, and a tar cut short never reads as complete."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import drawn_image, png_bytes, tar_of, write_drawn_folder
from PIL import ImageDraw

from gandata import shardset, storage
from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.shard import ShardOptions, shard

OLD = dict(size=16, maxcount=8, min_shards=1, val_fraction=0.2, workers=1)
NEW = {**OLD, "seed": 7}  # the same shard names, other contents: a swap in place would mix the two


class Killed(BaseException):
    """A kill at an instant: nothing in gandata catches a BaseException, as nothing runs after SIGKILL."""


STEPS = ("move", "put", "put_file", "remove")  # the storage layer's writes, moves and removals


@contextlib.contextmanager
def killed_after(monkeypatch, step: int, steps: tuple[str, ...] = STEPS):
    """Every call of ``steps`` of the storage layer counted; the ``step``-th completes, then the run dies."""
    done = {"n": 0}

    def counted(fn):
        def step_then_die(*args, **kwargs):
            result = fn(*args, **kwargs)
            done["n"] += 1
            if done["n"] == step:
                raise Killed
            return result
        return step_then_die

    with monkeypatch.context() as m:
        for name in steps:
            m.setattr(storage, name, counted(getattr(storage, name)))
        yield done


def content(folder: str | Path) -> list:
    """What a reader of the set sees through the one shard reader: every split's samples, their members' bytes."""
    seen = []
    for split in shardset.SPLITS:
        if not shardset.read(folder).samples_in(split):
            continue
        urls, ss = shardset.resolve(str(folder), split)
        for url in urls:
            with shardset.open_shard(url) as f:
                seen += [(split, key, sorted(fields.items())) for key, fields in
                         shardset.samples(f, url, ss.samples_of(url))]
    return seen


def all_files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> dict:
    """Images, and the set of the old job and of the new one, each made whole in its own folder."""
    base = tmp_path_factory.mktemp("two")
    write_drawn_folder(base / "imgs", 24, size=(40, 40))
    shard([base / "imgs"], base / "old", "x", ShardOptions(**OLD))
    shard([base / "imgs"], base / "new", "x", ShardOptions(**NEW))
    old, new = content(base / "old"), content(base / "new")
    assert old != new and sorted(old) == sorted(new)  # the same samples, in other tars
    assert [s["name"].split("/")[1] for s in shardset.read(base / "old").shards()] == \
        [s["name"].split("/")[1] for s in shardset.read(base / "new").shards()]
    return {"imgs": base / "imgs", "old": base / "old", "old_seen": old, "new_seen": new}


def _swap_killed_at_every_step(monkeypatch, two_sets, place, steps: tuple[str, ...] = STEPS) -> int:
    """Kill the new job after its 1st, 2nd … storage step, each time over a fresh copy of the old set (``place``
    makes it, returns where); a reader between the kill and the re-run sees the old set or the new, whole; the same
    command then leaves the new set, whole, alone. Returns how many steps the run has."""
    for step in itertools.count(1):
        out = place(step)
        with killed_after(monkeypatch, step, steps) as done:
            try:
                shard([two_sets["imgs"]], out, "x", ShardOptions(**NEW))
                completed = True
            except Killed:
                completed = False
        assert shardset.verify(out) == []  # whole: every tar it names there, with the sha256 it records
        seen = content(out)
        assert seen in (two_sets["old_seen"], two_sets["new_seen"]), f"a mixed set after step {step}"
        swapped = seen == two_sets["new_seen"]
        assert storage.exists(storage.join(out, shardset.INFO))  # never deleted first
        again = shard([two_sets["imgs"]], out, "x", ShardOptions(**NEW))
        assert again.finished_before == swapped, step  # "already sharded" only over the new job's own tars
        assert content(out) == two_sets["new_seen"] and shardset.verify(out) == []
        assert shardset.leftovers(out, shardset.read(out).info) == []
        if completed:
            assert done["n"] == step - 1
            return step - 1
    raise AssertionError("unreachable")


def test_a_kill_after_every_step_of_the_swap_leaves_a_whole_set_and_the_rerun_finishes_it(tmp_path, monkeypatch,
                                                                                         two_sets):
    def place(step: int) -> Path:
        out = tmp_path / f"k{step}"
        shutil.copytree(two_sets["old"], out)
        return out

    steps = _swap_killed_at_every_step(monkeypatch, two_sets, place)
    tars = len(shardset.read(two_sets["old"]).shards())
    assert steps >= 2 * tars + 1  # each move of a new tar, the description, each removal of an old tar


@pytest.mark.slow
def test_a_kill_after_every_step_of_the_swap_on_s3(tmp_path, monkeypatch, two_sets, s3):
    def place(step: int) -> str:
        url = f"{s3}/swap/k{step}"
        for p in sorted(two_sets["old"].rglob("*")):
            if p.is_file() and p.name != ".lock":
                storage.put(f"{url}/{p.relative_to(two_sets['old']).as_posix()}", p.read_bytes())
        return url

    # every move, write and removal of the swap (the uploads of the new tars into the work area come before it)
    steps = _swap_killed_at_every_step(monkeypatch, two_sets, place, ("move", "put", "remove"))
    assert steps >= 2 * len(shardset.read(two_sets["old"]).shards()) + 1


def test_already_sharded_only_over_the_tars_dataset_json_records(tmp_path, two_sets):
    out = tmp_path / "set"
    first = shard([two_sets["imgs"]], out, "x", ShardOptions(**OLD))
    assert not first.finished_before
    tar = shardset.read(out).tars()[1]
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF  # a flipped byte: the same size, the same name
    tar.write_bytes(bytes(data))
    again = shard([two_sets["imgs"]], out, "x", ShardOptions(**OLD))
    assert not again.finished_before and shardset.verify(out) == []
    assert content(out) == two_sets["old_seen"]
    shardset.read(out).tars()[0].unlink()
    assert not shard([two_sets["imgs"]], out, "x", ShardOptions(**OLD)).finished_before
    assert shard([two_sets["imgs"]], out, "x", ShardOptions(**OLD)).finished_before


def _stored_png(seed: int) -> bytes:
    """A PNG whose size depends only on its dimensions (stored, not compressed): another picture, the same size."""
    buf = io.BytesIO()
    drawn_image(seed, (40, 40)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def _replace_keeping_size_and_date(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_dataset_folder_is_identified_by_what_is_read_not_by_its_manifest(tmp_path):
    raw = tmp_path / "raw"
    with Dataset.create(raw) as ds:
        for i in range(10):
            ds.add(f"k{i:02d}", _stored_png(i), "png", {"width": 40, "height": 40, "source": "t"})
    opts = ShardOptions(size=16, min_shards=1, val_fraction=0.0)
    image = next(raw.rglob("k03.png"))
    image.rename(tmp_path / "away.png")  # missing on one run
    s = shard([raw], tmp_path / "out", "d", opts)
    assert s.counts["total"] == 9 and s.removed["unreadable"] == 1
    (tmp_path / "away.png").rename(image)  # and put back
    s = shard([raw], tmp_path / "out", "d", opts)
    assert not s.finished_before and s.counts["total"] == 10
    assert shard([raw], tmp_path / "out", "d", opts).finished_before
    _replace_keeping_size_and_date(image, _stored_png(99))  # other bytes, the same size and date
    s = shard([raw], tmp_path / "out", "d", opts)
    assert not s.finished_before and s.counts["total"] == 9
    assert "sha256 differs" in (tmp_path / "out" / "rejected.jsonl").read_text()


def test_an_image_folder_and_tars_are_identified_by_their_bytes_not_their_sizes_and_dates(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"i{i}.png").write_bytes(_stored_png(i))
    opts = ShardOptions(size=16, min_shards=1, val_fraction=0.0)
    shard([folder], tmp_path / "out", "f", opts)
    before = content(tmp_path / "out")
    _replace_keeping_size_and_date(folder / "i2.png", _stored_png(42))
    s = shard([folder], tmp_path / "out", "f", opts)
    assert not s.finished_before and content(tmp_path / "out") != before
    # tars padded to the same size, with the same date: another tar all the same
    tars = tmp_path / "tars"
    tars.mkdir()
    tar_of(tars / "a.tar", [("s0.png", _stored_png(1)), ("s1.png", _stored_png(2))])
    shard([tars], tmp_path / "from-tars", "t", opts)
    tar_of(tmp_path / "b.tar", [("s0.png", _stored_png(3)), ("s1.png", _stored_png(4))])
    _replace_keeping_size_and_date(tars / "a.tar", (tmp_path / "b.tar").read_bytes())
    s = shard([tars], tmp_path / "from-tars", "t", opts)
    assert not s.finished_before and s.processed == 2


def test_a_finished_rerun_reads_no_input_until_a_files_stamp_moves(tmp_path, monkeypatch):
    """The inputs' digest is kept with their stamps: the same files again are not read (only stat-ed); a file
    rewritten with its old size and date has another change time, and is read."""
    from gandata import inputs

    monkeypatch.setattr(inputs, "SETTLED_NS", -1 << 62)  # the files were just written: keep their stamps all the same
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(6):
        (folder / f"i{i}.png").write_bytes(_stored_png(i))
    opts = ShardOptions(size=16, min_shards=1, val_fraction=0.0)
    shard([folder], tmp_path / "out", "f", opts, keep_work=True)
    with monkeypatch.context() as m:
        m.setattr(inputs, "_sha256_of", lambda path: pytest.fail(f"{path} was read"))
        assert shard([folder], tmp_path / "out", "f", opts, keep_work=True).finished_before
    target = folder / "i4.png"
    was = target.stat().st_ctime_ns
    while target.stat().st_ctime_ns == was:  # the kernel's clock for file times moves in ticks: be past this one
        _replace_keeping_size_and_date(target, _stored_png(77))
    s = shard([folder], tmp_path / "out", "f", opts, keep_work=True)
    assert not s.finished_before and s.processed == 1  # the changed file; the others from the kept spool


def test_options_and_spellings_that_change_no_byte_are_the_same_job(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write_drawn_folder(a, 10, size=(40, 32))
    write_drawn_folder(b, 10, start=10, size=(40, 32))
    base = dict(size=16, min_shards=1, val_fraction=0.2)
    out = tmp_path / "out"
    assert not shard([a, b], out, "o", ShardOptions(**base)).finished_before
    stamps = all_files(out)
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for inputs, changed in [
        ([a, b], dict(threshold=3)),  # --threshold under --dedupe exact
        ([a, b], dict(quality=40)),  # --quality for PNG
        ([a, b], dict(pad_color="red")),  # --pad-color under --resize center-crop
        ([a, b], dict(background="#ffffff")),  # white, spelled otherwise
        ([a, b], dict(workers=1, memory=64)),
        ([b, a], {}),  # the inputs in another order
        (["link", "b"], {}),  # through a symbolic link, and relative to another current folder
    ]:
        s = shard(inputs, "out", "o", ShardOptions(**base, **changed))
        assert s.finished_before and s.processed == 0 and s.reused == 0, (inputs, changed)
        assert all_files(out) == stamps, (inputs, changed)  # nothing written
    # and what does change a byte is another job
    assert not shard([a, b], out, "o", ShardOptions(**base, dedupe="near", threshold=3)).finished_before
    assert not shard([a, b], out, "o", ShardOptions(**base, quality=40, format="jpg")).finished_before


def _variant(i: int) -> bytes:
    """One drawing with a small mark moved about: near duplicates of each other."""
    im = drawn_image(5, (64, 64))
    ImageDraw.Draw(im).point((i, 3), fill=(i * 20 % 256, 0, 0))
    return png_bytes(im)


def test_a_finished_rerun_says_the_sets_warnings_again(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        (folder / f"v{i}.png").write_bytes(_variant(i))
    for i in range(2):
        drawn_image(200 + i, (64, 64)).save(folder / f"other{i}.png")
    opts = ShardOptions(size=32, dedupe="near", min_shards=1, val_fraction=0.0)
    first = shard([folder], tmp_path / "out", "n", opts)
    near = [w for w in first.warnings if w.startswith("near-duplicate removal took")]
    assert near and str(tmp_path / "out" / "near-duplicates.png") in near[0]
    again = shard([folder], tmp_path / "out", "n", opts)
    assert again.finished_before and again.warnings == first.warnings
    assert f"  warning: {near[0]}" in again.lines()


def _member_ends(tar: Path) -> list[int]:
    with tarfile.open(tar) as tf:
        return [m.offset_data + -(-m.size // 512) * 512 for m in tf.getmembers()]


def test_a_tar_cut_at_a_member_boundary_never_reads_as_complete(tmp_path, two_sets):
    tar = shardset.read(two_sets["old"]).tars("train")[0]
    data = tar.read_bytes()
    cut = data[:_member_ends(tar)[3]]  # whole members, then nothing: a copy or a download stopped there
    with pytest.raises(EOFError, match="end-of-archive marker"):
        list(shardset.samples(io.BytesIO(cut), "cut.tar"))
    with pytest.raises(EOFError, match="end-of-archive marker"):  # one zero block is not the marker
        list(shardset.samples(io.BytesIO(cut + b"\0" * 512), "one-zero-block.tar"))
    assert len(list(shardset.samples(io.BytesIO(data), "whole.tar"))) == shardset.read(two_sets["old"]).shards()[0][
        "samples"]
    # a set whose tar was cut: export refuses in one line, shard lists it as damaged and says so
    copy = tmp_path / "set"
    shutil.copytree(two_sets["old"], copy)
    shardset.read(copy).tars("train")[0].write_bytes(cut)
    from gandata.export import export

    with pytest.raises(UserError, match="end-of-archive marker"):
        export(str(copy), tmp_path / "x.zip")
    s = shard([copy], tmp_path / "again", "y", ShardOptions(size=16, min_shards=1, val_fraction=0.0))
    assert s.removed["unreadable"] == 1 and "end-of-archive marker" in s.rejected[0]["reason"]
    # a whole tar that holds other than the samples dataset.json counts (another shard put in its place)
    first, second = shardset.read(copy).tars("train")[:2]
    first.write_bytes(_fewer(second))
    with pytest.raises(UserError, match="samples where dataset.json says"):
        export(str(copy), tmp_path / "y.zip")


def _fewer(tar: Path) -> bytes:
    """The tar's first two samples, whole, in a tar with its end-of-archive marker."""
    with tarfile.open(tar) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    keys = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in members))[:2]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            if name.split(".", 1)[0] in keys:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()

