"""The shard-set format's one owner: the tar reader against tarfile, spec resolution, and verification."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
from test_train import labelled_shards, same_image_shards  # noqa: F401 (fixtures)

from gandata import shardset


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
    with pytest.raises(shardset.NoShards, match="run  gandata shard"):
        shardset.resolve(str(tmp_path))
    with pytest.raises(shardset.NoShards, match="does not exist"):
        shardset.resolve(str(tmp_path / "nothing.tar"))


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
