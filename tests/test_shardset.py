"""The shard-set format's one owner: the tar reader against tarfile, spec resolution, and verification."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import labelled_set, write_drawn_folder
from test_train import labelled_shards, same_image_shards  # noqa: F401 (fixtures)

from gandata import shardset
from gandata.shard import ShardOptions, shard


def test_tar_reader_matches_tarfile_on_every_format(tmp_path):
    long = "deep/" + "x" * 150 + ".png"
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"t{fmt}.tar"
        members = [("a.png", b"1" * 700), ("a.json", b"{}"), ("dir/b.cls", b"3"), ("empty.txt", b"")]
        if fmt != tarfile.USTAR_FORMAT:
            members.append((long, b"long" * 200))
        with tarfile.open(path, "w", format=fmt) as tf:
            folder = tarfile.TarInfo("dir")
            folder.type = tarfile.DIRTYPE
            tf.addfile(folder)  # a non-file member is skipped
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        with open(path, "rb") as f:
            got = list(shardset.tar_members(f, str(path)))
        assert [n for n, _ in got] == [n for n, _ in members if n != "dir"] and [d for _, d in got] == [
            d for _, d in members
        ]
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 100)
    with pytest.raises(ValueError, match="not a tar"):
        with open(bad, "rb") as f:
            list(shardset.tar_members(f, str(bad)))


def test_shard_specs_resolve(labelled_shards, same_image_shards):  # noqa: F811
    urls, sset = shardset.resolve(str(labelled_shards))
    assert len(urls) == 3 and sset.label_names == ["bald", "hair", "hat"]
    assert shardset.resolve(str(same_image_shards))[0] == sorted(str(p) for p in same_image_shards.glob("*.tar"))
    pattern = str(same_image_shards / "same-{000000..000001}.tar")
    assert len(shardset.resolve(pattern)[0]) == 2
    assert shardset.resolve("pipe:cat a.tar::https://example.com/s-{0..1}.tar")[0] == [
        "pipe:cat a.tar", "https://example.com/s-0.tar", "https://example.com/s-1.tar"]
    with pytest.raises(FileNotFoundError):
        shardset.resolve(str(same_image_shards / "missing-{0..2}.tar"))


def test_a_dataset_folder_given_as_shards_says_to_shard_it(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(shardset.NoShards, match=r"shard it first \(gandata shard [^ ]+\) and give the folder"):
        shardset.resolve(str(tmp_path))
    with pytest.raises(shardset.NoShards, match="does not exist"):
        shardset.resolve(str(tmp_path / "nothing.tar"))


def _gandata(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command a message printed, run as the user would (its first word is ``gandata``)."""
    assert words[0] == "gandata", words
    return subprocess.run([sys.executable, "-m", "gandata.cli", *words[1:]], capture_output=True, text=True, cwd=cwd)


def test_a_set_with_an_empty_train_split_says_so_and_how_to_make_it_again(tmp_path):
    """Every sample in val: training is told that the train split is empty, how many are in val and why — and the
    shard command that makes this set again with samples to train on (its sources, folder, name and options), not
    "names no shards … make them with gandata shard", which is what just made it."""
    write_drawn_folder(tmp_path / "imgs", 11, size=(40, 40))
    out = tmp_path / "set"
    shard([tmp_path / "imgs"], out, "s", ShardOptions(size=32, val_fraction=0.999, maxcount=4))
    with pytest.raises(shardset.NoShards) as e:
        shardset.resolve(str(out))
    said = str(e.value)
    assert said.startswith(f"{out} has an empty train split (0 samples; 11 in val: sharded with a val fraction of "
                           "0.999); make it again with gandata shard "), said
    assert "names no shards" not in said and "  " not in said
    command = shlex.split(said.split("make it again with ", 1)[1])
    assert command[-2:] == ["--val-fraction", "0.02"] and "--maxcount" in command
    r = _gandata(command, tmp_path)
    assert r.returncode == 0, r.stderr
    urls, sset = shardset.resolve(str(out))  # the same set, made again: now with samples to train on
    assert urls and sset.samples_in("train") > 0 and sset.info["options"]["maxcount"] == 4
    with pytest.raises(shardset.NoShards, match=r"has an empty val split \(0 samples; 11 in train\)$"):
        shardset.resolve(str(out), "val")  # (at 0.02, 11 samples' keys all hash into train)
    with pytest.raises(shardset.NoShards, match=r"names no shards .*; make them with gandata shard$"):
        shardset.resolve(str(tmp_path / "imgs"))  # a folder with no tars (one space: a command is no longer set apart)


def test_a_size_the_run_does_not_train_at_names_the_shard_command_that_made_the_set(tmp_path):
    """A 32 px set trained at 64 px: the line names the command that makes *this* set again at 64 px (a bare
    ``gandata shard --size 64`` shards every dataset under ./data into their own folders instead), and that command
    does it, keeping the set's other options (its labels, its split)."""
    from gandata.trainers.data import DataError, Decode, tar_samples

    out = labelled_set(tmp_path, 12, val_fraction=0.0, maxcount=5)
    (tmp_path / "work" / "data" / "other" / "raw").mkdir(parents=True)  # what a bare `gandata shard` would take
    urls, _ = shardset.resolve(str(out))
    sample = next(tar_samples({"url": u} for u in urls))
    with pytest.raises(DataError, match=r"is 32×32 px, the run trains at 64 px; make the shards at that size") as e:
        Decode(False, 0, 64)(sample)
    given = re.search(r"\((gandata shard .*)\), or leave --resolution out$", str(e.value))
    assert given, str(e.value)
    command = shlex.split(given.group(1))
    assert command[2] == str(tmp_path / "raw") and command[-2:] == ["--size", "64"] and "--label-field" in command
    r = _gandata(command, tmp_path / "work")
    assert r.returncode == 0, r.stderr
    made = shardset.read(out)
    assert made.resolution == 64 and made.label_names == ["ant", "moth", "zebra"] and made.samples_in("val") == 0
    assert made.info["options"]["maxcount"] == 5 and not list((tmp_path / "work").rglob("dataset.json"))
    Decode(False, 0, 64)(next(tar_samples({"url": u} for u in shardset.resolve(str(out))[0])))  # it trains now
    shutil.rmtree(tmp_path / "raw")  # its sources gone: the command with SRC for the reader to fill in
    now = next(tar_samples({"url": u} for u in shardset.resolve(str(out))[0]))
    with pytest.raises(DataError, match=rf"\(gandata shard SRC --out {re.escape(str(out))} --name set .*--size 32\)"):
        Decode(False, 0, 32)(now)
    with pytest.raises(DataError, match=r"\(gandata shard SRC --out OUT --size 64\)"):
        Decode(False, 0, 64)(sample)  # a tar the set's description no longer names (it was made again since)


def test_verify_finds_a_missing_a_cut_and_a_changed_shard(labelled_shards, tmp_path):  # noqa: F811
    copy = tmp_path / "set"
    shutil.copytree(labelled_shards, copy)
    assert shardset.verify(copy) == []
    first, second, third = shardset.read(copy).tars("train")[:3]
    first.unlink()
    with open(second, "r+b") as f:
        f.truncate(second.stat().st_size - 512)
    data = bytearray(third.read_bytes())
    data[600] ^= 0xFF
    third.write_bytes(bytes(data))
    problems = shardset.verify(copy)
    assert any(first.name in p and "missing" in p for p in problems)
    assert any(second.name in p and "bytes" in p for p in problems)
    assert any(third.name in p and "sha256" in p for p in problems)
    assert shardset.verify(tmp_path / "nowhere")[0].endswith("make the set with gandata shard")
    (copy / shardset.INFO).write_text(json.dumps({"splits": "not a table"}))
    with pytest.raises(shardset.BadInfo, match="not a shard set's description"):
        shardset.read(copy)


def test_inspect_checks_a_shard_set_against_its_description(labelled_shards, tmp_path):  # noqa: F811
    from gandata.inspection import inspect_path

    copy = tmp_path / "set"
    shutil.copytree(labelled_shards, copy)
    assert inspect_path(str(copy)).warning is None
    tar = shardset.read(copy).tars("train")[0]
    with open(tar, "ab") as f:  # a tar rewritten by hand, or a copy gone wrong: still readable, not the one described
        f.write(b"\0" * 1024)
    report = inspect_path(str(copy))
    assert f"{tar.name} has {tar.stat().st_size} bytes, dataset.json says" in report.warning


def test_a_description_names_tars_in_its_folder_or_one_generation_folder_only(tmp_path):
    def described(name: str) -> None:
        (tmp_path / shardset.INFO).write_text(json.dumps({"splits": {"train": {"samples": 0, "shards": [
            {"name": name, "samples": 0}]}}}))
        shardset.read(tmp_path)

    described("x-train-000000.tar")  # a set written before generations
    described("gen-0123456789abcdef/x-train-000000.tar")
    for bad in ("gen-0123456789abcdef/../x.tar", "gen-0123456789abcdef/a/x.tar", "gen-xyz/x.tar", "../x.tar",
                "gen-0123456789abcdef/.x.tar"):
        with pytest.raises(shardset.BadInfo, match="not a file in its folder"):
            described(bad)
    assert shardset.generation([("a.tar", "00")]) == shardset.generation([("a.tar", "00")]) != \
        shardset.generation([("a.tar", "01")])
