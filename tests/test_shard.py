"""`gandata shard`: shards any WebDataset reader can open, reproducible, resumable, split-stable."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from conftest import drawn_image, kill_when, png_bytes, write_drawn_folder

from gandata import images, shardset
from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.records import Signatures, conform, plan_of, record_kinds
from gandata.shard import ShardOptions, even_sizes, shard, shard_all, shard_count, split_of
from gandata.shardset import verify


def _info(folder):
    return shardset.read(folder).info


def _tars(out: Path, info: dict, split: str | None = None) -> list[Path]:
    return [out / s["name"] for sp, v in info["splits"].items() if split in (None, sp) for s in v["shards"]]


def _read_wds(paths: list[Path]) -> list[dict]:
    if not paths:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        ds = wds.WebDataset([str(p) for p in paths], shardshuffle=False, empty_check=False)
        return list(ds)


def _check_output(out: Path) -> dict:
    """Everything a consumer relies on: dataset.json matches the tars, read by webdataset and by tarfile."""
    info = json.loads((out / "dataset.json").read_text())
    for sp, v in info["splits"].items():
        assert v["samples"] == sum(s["samples"] for s in v["shards"]) == info["counts"][sp]
        for s in v["shards"]:
            data = (out / s["name"]).read_bytes()
            assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
    all_keys = []
    for sp in info["splits"]:
        paths = _tars(out, info, sp)
        samples = _read_wds(paths)
        assert len(samples) == info["counts"][sp]
        fieldsets = {frozenset(k for k in s if not k.startswith("__")) for s in samples}
        assert fieldsets <= {frozenset(info["fields"])}  # every sample has the same fields
        for s in samples:
            meta = json.loads(s["json"])
            assert meta["key"] == s["__key__"] and meta["split"] == sp
            im = images.decode(s[info["image_format"]])
            if info["resolution"]:
                assert im.size == (info["resolution"], info["resolution"])
            if "cls" in s:
                assert int(s["cls"]) == meta["cls"]
                assert info["labels"]["names"][meta["cls"]] == meta["label"]
        keys = [s["__key__"] for s in samples]
        tar_keys = []
        for p in paths:
            with tarfile.open(p) as tf:
                names = tf.getnames()
                for m in tf.getmembers():
                    assert m.mtime == 946684800 and m.uid == 0 and m.gid == 0 and m.mode == 0o444
            tar_keys += list(dict.fromkeys(n.split(".", 1)[0] for n in names))
        assert tar_keys == keys
        all_keys += keys
    assert len(all_keys) == len(set(all_keys)) == info["counts"]["total"]
    return info


def _json_types(out: Path, info: dict) -> dict[str, set]:
    types: dict[str, set] = {}
    for s in _read_wds(_tars(out, info)):
        for k, v in json.loads(s["json"]).items():
            types.setdefault(k, set()).add(type(v).__name__)
    return types


def test_shard_real_images_reads_back_everywhere(tmp_path, images12):
    out = tmp_path / "shards"
    summary = shard([images12], out, "anime", ShardOptions(size=32, val_fraction=0.25, workers=2))
    info = _check_output(out)
    assert info["counts"]["total"] == 12 and summary.counts == info["counts"]
    assert info["counts"]["val"] > 0 and info["resolution"] == 32
    assert summary.removed == {"unreadable": 0, "exact_duplicate": 0, "near_duplicate": 0, "missing_label": 0}
    assert summary.patterns["train"] == str(out / info["splits"]["train"]["shards"][0]["name"])
    assert re.fullmatch(r"gen-[0-9a-f]{16}/anime-train-000000\.tar", info["splits"]["train"]["shards"][0]["name"])
    assert any("train shard" in w for w in summary.warnings)  # 1 shard < 8 readers
    for name, types in _json_types(out, info).items():
        assert len(types) == 1, (name, types)


def test_same_inputs_give_byte_identical_shards_whatever_the_order(tmp_path, images12):
    extra = tmp_path / "extra"
    write_drawn_folder(extra, 30)
    opts = ShardOptions(size=32, val_fraction=0.2, maxcount=7, min_shards=1, workers=2)
    a = shard([images12, extra], tmp_path / "a", "x", opts)
    b = shard([extra, images12], tmp_path / "b", "x", ShardOptions(**{**opts.__dict__, "workers": 1}))
    assert a.counts == b.counts
    ia, ib = _info(tmp_path / "a"), _info(tmp_path / "b")
    assert [s["sha256"] for s in ia["splits"]["train"]["shards"]] == [
        s["sha256"] for s in ib["splits"]["train"]["shards"]
    ]
    for s in ia["splits"]["train"]["shards"] + ia["splits"]["val"]["shards"]:
        assert (tmp_path / "a" / s["name"]).read_bytes() == (tmp_path / "b" / s["name"]).read_bytes()
    # the description too: the inputs in any order and the workers are not the job
    assert (tmp_path / "a" / "dataset.json").read_bytes() == (tmp_path / "b" / "dataset.json").read_bytes()
    # a second run in place finds the set finished: it reads no sample and writes nothing
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    again = shard([images12, extra], tmp_path / "a", "x", opts)
    assert again.finished_before and again.processed == 0 and again.reused == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == stamps
    assert again.lines()[0].startswith("x is already sharded") and again.counts == a.counts
    # kept work (--keep-work): a run with another split reuses every processed image
    shard([images12, extra], tmp_path / "k", "x", opts, keep_work=True)
    other = shard([images12, extra], tmp_path / "k", "x", ShardOptions(**{**opts.__dict__, "val_fraction": 0.3}),
                  keep_work=True)
    assert other.reused == 42 and other.processed == 0 and not other.finished_before
    assert not (tmp_path / "a" / ".work").exists()  # removed after success without --keep-work
    # another seed: same split membership, another order
    c = shard([images12, extra], tmp_path / "c", "x", ShardOptions(**{**opts.__dict__, "seed": 1}))
    assert c.counts == a.counts
    assert (
        _info(tmp_path / "c")["splits"]["train"]["shards"][0]["sha256"] != ia["splits"]["train"]["shards"][0]["sha256"]
    )


def test_split_is_stable_when_inputs_grow(tmp_path):
    folder = tmp_path / "imgs"
    write_drawn_folder(folder, 40)
    opts = ShardOptions(size=16, val_fraction=0.3, workers=1)

    def splits(out: Path) -> dict[str, str]:
        info = _check_output(out)
        return {s["__key__"]: sp for sp in ("train", "val") for s in _read_wds(_tars(out, info, sp))}

    shard([folder], tmp_path / "s1", "g", opts, keep_work=True)
    first = splits(tmp_path / "s1")
    write_drawn_folder(folder, 60, start=40)
    summary = shard([folder], tmp_path / "s1", "g", opts, keep_work=True)  # the spool kept: the new images only
    assert summary.reused == 40 and summary.processed == 60
    second = splits(tmp_path / "s1")
    assert len(second) == 100 and set(first.values()) == {"train", "val"}
    assert all(second[k] == sp for k, sp in first.items())
    assert all(split_of(k, 0.3) == sp for k, sp in second.items())


def test_even_shard_sizes_and_names(tmp_path):
    folder = tmp_path / "imgs"
    write_drawn_folder(folder, 103)
    summary = shard([folder], tmp_path / "out", "even", ShardOptions(size=16, val_fraction=0.0, maxcount=30, workers=2))
    info = _check_output(tmp_path / "out")
    sizes = [s["samples"] for s in info["splits"]["train"]["shards"]]
    assert sizes == [26, 26, 26, 25] and summary.shards == {"train": 4, "val": 0}
    gen = info["splits"]["train"]["shards"][0]["name"].split("/")[0]
    assert [s["name"] for s in info["splits"]["train"]["shards"]] == [f"{gen}/even-train-{i:06d}.tar" for i in range(4)]
    assert info["splits"]["train"]["pattern"] == f"{gen}/even-train-{{000000..000003}}.tar"
    assert summary.patterns["val"] is None
    # fewer shards next time: a new generation, and the old one goes
    shard([folder], tmp_path / "out", "even", ShardOptions(size=16, val_fraction=0.0, maxcount=60, min_shards=1))
    now = _info(tmp_path / "out")["splits"]["train"]["shards"][0]["name"].split("/")[0]
    assert now != gen and sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.tar")) == [
        f"{now}/even-train-000000.tar",
        f"{now}/even-train-000001.tar",
    ]


def test_shard_count_rules():
    assert even_sizes(10, 3) == [4, 3, 3] and even_sizes(0, 0) == []
    assert shard_count(200_000, 10_000, 8) == 20
    assert shard_count(5_000, 10_000, 8) == 8  # spread for 8 readers
    assert shard_count(300, 10_000, 8) == 4  # but keep 64+ per shard
    assert shard_count(12, 10_000, 8) == 1 and shard_count(0, 10, 8) == 0
    assert shardset.brace_pattern(["a-train-000000.tar", "a-train-000001.tar"]) == "a-train-{000000..000001}.tar"


@pytest.mark.parametrize("n, maxcount, shards", [(11, 1, 11), (46, 6, 8), (20, 2, 10)])
def test_the_maxcount_hint_gives_the_shards_it_says(tmp_path, n, maxcount, shards):
    """Too few train shards for 8 readers: the hint's --maxcount gives 8 or more, as many samples a shard as that
    allows, and it says how many shards that really is (11 samples cannot make 8 — --maxcount 1 makes 11)."""
    write_drawn_folder(tmp_path / "imgs", n, size=(40, 40))
    first = shard([tmp_path / "imgs"], tmp_path / "a", "a", ShardOptions(size=32, val_fraction=0, min_shards=1))
    said = re.search(r"use --maxcount (\d+) to get (\d+)$", first.warnings[-1])
    assert said and (int(said.group(1)), int(said.group(2))) == (maxcount, shards), first.warnings
    followed = shard([tmp_path / "imgs"], tmp_path / "b", "b",
                     ShardOptions(size=32, val_fraction=0, min_shards=1, maxcount=maxcount))
    assert followed.shards["train"] == shards >= 8 and not followed.warnings
    fewer = shard([tmp_path / "imgs"], tmp_path / "c", "c",
                  ShardOptions(size=32, val_fraction=0, min_shards=1, maxcount=maxcount + 1))
    assert fewer.shards["train"] < 8  # the largest --maxcount that gives 8


def test_an_empty_train_split_is_a_warning_that_names_the_option_not_a_train_hint(tmp_path):
    """Every sample in val: nothing to train on, so no "train on it" line, no pattern printed as None, and a warning
    that names --val-fraction as it was given and a value that leaves samples to train on — in the form that works
    where it is shown."""
    from gandata.pipeline import run

    write_drawn_folder(tmp_path / "imgs", 11, size=(40, 40))
    empty = shard([tmp_path / "imgs"], tmp_path / "a", "a", ShardOptions(size=32, val_fraction=0.999))
    assert empty.counts == {"train": 0, "val": 11, "total": 11}
    text = "\n".join(empty.lines())
    assert "train on it" not in text and "None" not in text and "its tars now: " + empty.patterns["val"] in text
    assert len(empty.warnings) == 1 and "only 0 train shard" not in text
    assert "all 11 samples went to val at --val-fraction 0.999" in empty.warnings[0]
    said = re.search(r"shard it again with --val-fraction ([\d.]+) ", empty.warnings[0])
    assert said and float(said.group(1)) == 0.02
    again = shard([tmp_path / "imgs"], tmp_path / "a", "a", ShardOptions(size=32, val_fraction=float(said.group(1))))
    assert again.counts["train"] > 0 and "train on it" in "\n".join(again.lines())  # what it said works
    pipe = {"pipeline": {"name": "p", "dataset": "p"},
            "shard": {"src": str(tmp_path / "imgs"), "size": 32, "val_fraction": 0.999}}
    warning = run(pipe, data_dir=tmp_path / "data", progress=False, hints="set").stages[0].summary.warnings[0]
    assert "at [shard] val_fraction = 0.999" in warning and "with --set shard.val_fraction=0.02 " in warning
    one = shard([tmp_path / "imgs"], tmp_path / "b", "b", ShardOptions(size=32, val_fraction=0.999))
    assert "with --val-fraction 0.02 " in one.warnings[0]  # (the pipeline's naming ended with it)


def test_exact_duplicates_and_corrupt_files_are_counted_and_listed(tmp_path, images12_copy):
    jpg = images12_copy / "tadne_r0c1.jpg"
    shutil.copy(jpg, images12_copy / "copy_same_bytes.jpg")
    pixels = images.to_rgb(images.decode(jpg.read_bytes()))
    (images12_copy / "copy_as.png").write_bytes(images.encode(pixels, "png"))  # other bytes, same pixels
    data = (images12_copy / "tadne_r0c2.jpg").read_bytes()
    (images12_copy / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (images12_copy / "error_page.jpg").write_bytes(b"<!DOCTYPE html><html><body>Quota Exceeded</body></html>")
    (images12_copy / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    # --no-draft decodes every JPEG whole: the PNG of its pixels makes the very same sample
    summary = shard([images12_copy], out, "anime", ShardOptions(size=32, workers=2, draft=False))
    assert summary.removed["exact_duplicate"] == 2 and summary.removed["unreadable"] == 3
    assert summary.counts["total"] == 12
    report = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    reasons = {Path(r["origin"]).name: r["reason"] for r in report}
    assert Counter(r["kind"] for r in report) == {"exact_duplicate": 2, "unreadable": 3}
    # the three identical images keep one representative: same source size, so the smallest key
    assert "copy_as.png" not in reasons
    assert reasons["copy_same_bytes.jpg"] == reasons["tadne_r0c1.jpg"] == "exact duplicate of copy_as"
    assert "truncated" in reasons["truncated.jpg"] and "HTML" in reasons["error_page.jpg"]
    assert "empty" in reasons["empty.png"]
    info = _check_output(out)
    assert info["removed"] == summary.removed
    # by default a JPEG is decoded at a DCT scale, a PNG whole: the PNG of the JPEG's pixels makes a sample a few
    # levels apart (not an exact duplicate), which --dedupe near finds (the same hash within 2 bits)
    drafted = shard([images12_copy], tmp_path / "draft", "anime", ShardOptions(size=32))
    assert drafted.removed["exact_duplicate"] == 1 and drafted.counts["total"] == 13
    near = shard([images12_copy], tmp_path / "near", "anime", ShardOptions(size=32, dedupe="near"))
    assert near.removed["exact_duplicate"] + near.removed["near_duplicate"] >= 2 and near.counts["total"] <= 12
    # --dedupe none keeps them
    kept = shard([images12_copy], tmp_path / "keep", "anime", ShardOptions(size=32, dedupe="none"))
    assert kept.counts["total"] == 14 and kept.removed["exact_duplicate"] == 0


def test_labels_from_a_record_field(tmp_path):
    root = tmp_path / "data" / "bricks" / "raw"
    cats = ["hat", "hair", "helmet", "hat", "bald", None, "hair", "hat"]
    with Dataset.create(root) as ds:
        for i, cat in enumerate(cats):
            rec = {"width": 96, "height": 80, "source": "test", "year": 1999 + i if i % 3 else "?", "score": i / 2}
            if cat:
                rec["category"] = cat
            ds.add(f"fig{i}", png_bytes(drawn_image(i)), "png", rec)
    out = tmp_path / "out"
    summary = shard([root], out, "bricks", ShardOptions(size=16, label_field="category", val_fraction=0.0))
    info = _check_output(out)
    assert info["labels"]["names"] == ["bald", "hair", "hat", "helmet"]
    assert info["labels"]["counts"] == {"bald": 1, "hair": 2, "hat": 3, "helmet": 1}
    assert summary.removed["missing_label"] == 1 and sorted(info["fields"]) == ["cls", "json", "png"]
    types = _json_types(out, info)
    assert types["year"] == {"str"} and types["score"] == {"float"} and types["cls"] == {"int"}
    # provenance: where the data came from
    assert info["sources"][0]["kind"] == "dataset" and info["sources"][0]["lineage"][0]["path"] == str(root)
    with pytest.raises(UserError, match="no sample has that field"):
        shard([root], tmp_path / "o2", "bricks", ShardOptions(label_field="colour"))


def test_a_file_changed_behind_the_manifest_is_reported(tmp_path):
    root = tmp_path / "raw"
    with Dataset.create(root) as ds:
        rows = [
            ds.add(f"k{i}", png_bytes(drawn_image(i)), "png", {"width": 96, "height": 80, "source": "t"})
            for i in range(3)
        ]
    (root / rows[1]["path"]).write_bytes(png_bytes(drawn_image(77)))
    summary = shard([root], tmp_path / "out", "x", ShardOptions(size=16))
    assert summary.counts["total"] == 2 and summary.removed["unreadable"] == 1
    assert "changed on disk" in summary.rejected[0]["reason"] and summary.rejected[0]["key"] == "k1"


def test_the_type_plan_gives_one_type_per_field():
    """What the writer does: each record's signature (its JSON types), the plan over the signatures the kept samples
    use, and every record conformed to it."""
    raw = [{"a": 1, "b": 1, "c": {"d": 1}, "e": None}, {"a": "x", "b": 2.5, "c": {"d": [1]}, "e": 3}]
    sigs = Signatures()
    used = {sigs.add(record_kinds(r, labelled=False, near=False)) for r in raw}
    plan = {tuple(path): kind for path, kind in plan_of(sigs.all(), used)}
    recs = [conform(r, plan) for r in raw]
    assert recs[0] == {"a": "1", "b": 1.0, "c": {"d": "1"}}
    assert recs[1] == {"a": "x", "b": 2.5, "c": {"d": "[1]"}, "e": 3}


def test_key_collisions(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.png").write_bytes(png_bytes(drawn_image(1)))
    (b / "x.png").write_bytes(png_bytes(drawn_image(1)))
    summary = shard([a, b], tmp_path / "o", "same", ShardOptions(size=16))
    assert summary.counts["total"] == 1 and summary.removed["exact_duplicate"] == 1
    (b / "x.png").write_bytes(png_bytes(drawn_image(2)))
    with pytest.raises(UserError, match="two inputs give the key 'x' to different images"):
        shard([a, b], tmp_path / "o2", "diff", ShardOptions(size=16))


def test_bad_input_gets_one_clear_line(tmp_path, images12):
    with pytest.raises(UserError, match="does not exist"):
        shard([tmp_path / "missing"], tmp_path / "o", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        shard([tmp_path / "empty"], tmp_path / "o", "x")
    for bad, msg in [
        (dict(size=0), "--size"),
        (dict(resize="stretch"), "--resize"),
        (dict(val_fraction=1.5), "--val-fraction"),
        (dict(format="gif"), "--format"),
        (dict(background="blurple"), "--background"),
    ]:
        with pytest.raises(UserError, match=msg):
            shard([images12], tmp_path / "o", "x", ShardOptions(**bad))
    with pytest.raises(UserError, match="--name"):
        shard([images12], tmp_path / "o", "bad name/x")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(UserError, match="no usable images.*not a readable tar"):
        shard([junk], tmp_path / "o", "x")
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_reshard_our_own_shards_and_img2dataset_output(tmp_path, images12):
    shard([images12], tmp_path / "s64", "anime", ShardOptions(size=64, val_fraction=0.25))
    summary = shard([tmp_path / "s64"], tmp_path / "s32", "anime32", ShardOptions(size=32, val_fraction=0.25))
    assert summary.counts["total"] == 12
    info = _check_output(tmp_path / "s32")
    assert info["sources"][0]["kind"] == "shards"


def test_shard_all_under_the_data_dir(tmp_path):
    data = tmp_path / "data"
    for name in ("one", "two"):
        with Dataset.create(data / name / "raw") as ds:
            for i in range(3):
                ds.add(f"k{i}", png_bytes(drawn_image(i + (10 if name == "two" else 0))), "png",
                       {"width": 96, "height": 80, "source": name})
    summaries = shard_all(data, ShardOptions(size=16))
    assert [s.name for s in summaries] == ["one", "two"]
    for name in ("one", "two"):
        assert _check_output(data / name / "shards")["counts"]["total"] == 3
    with pytest.raises(UserError, match="no datasets under"):
        shard_all(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------- SIGKILL


def _run_and_kill(cmd: list[str], ready, timeout: float = 120) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` is true; fail if it ended first."""
    kill_when(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), ready, timeout)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    write_drawn_folder(folder, 600, size=(160, 128))
    return folder


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gandata.cli", "shard", *args]


@pytest.mark.slow
def test_sigkill_while_processing_then_rerun(tmp_path, many_images):
    args = [
        str(many_images),
        "--name",
        "many",
        "--size",
        "32",
        "--val-fraction",
        "0.1",
        "--maxcount",
        "40",
        "--workers",
        "2",
    ]
    ref = tmp_path / "ref"
    assert subprocess.run(_cli(*args, "--out", str(ref)), capture_output=True).returncode == 0
    out = tmp_path / "out"
    index = out / ".work" / "index.jsonl"
    _run_and_kill(_cli(*args, "--out", str(out)), lambda: index.exists() and index.stat().st_size > 20_000)
    assert not (out / "dataset.json").exists()
    run = subprocess.run(_cli(*args, "--out", str(out), "--json"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert 0 < summary["reused"] < 600 and summary["reused"] + summary["processed"] == 600
    info = _check_output(out)
    assert info["splits"] == _info(ref)["splits"]  # same bytes as an uninterrupted run


@pytest.mark.slow
def test_sigkill_while_writing_shards_then_rerun(tmp_path, many_images):
    args = [str(many_images), "--name", "many", "--size", "32", "--val-fraction", "0.1", "--maxcount", "4"]
    out = tmp_path / "out"
    assert subprocess.run(_cli(*args, "--out", str(out)), capture_output=True).returncode == 0
    before = _info(out)
    # run again with another seed and kill it once it has written some of the new shards
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.tar") if ".work" not in p.parts}
    reseed = [*args, "--seed", "7", "--out", str(out)]
    _run_and_kill(_cli(*reseed), lambda: len(list((out / ".work" / "next").glob("many-*.tar"))) >= 2)
    # the old set is still there, whole and described: a reader never sees a set without its dataset.json
    assert _info(out) == before and verify(out) == []
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.tar") if ".work" not in p.parts} == old
    assert subprocess.run(_cli(*reseed), capture_output=True).returncode == 0
    info = _check_output(out)
    assert info["counts"] == before["counts"] and info["splits"] != before["splits"]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_the_default_name_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    from gandata.shard import default_name

    raw = tmp_path / "ws" / "data" / "bitmoji" / "raw"
    with Dataset.create(raw) as ds:
        ds.add("k1", png_bytes(drawn_image(1, (40, 40))), "png", {"width": 40, "height": 40, "source": "t"})
        ds.write_stats({"stage": "fetch bitmoji"})
    names = []
    for cwd in (tmp_path / "ws", tmp_path):  # inside the workspace, and from anywhere else
        monkeypatch.chdir(cwd)
        names.append(default_name(str(raw), "data"))
    assert names == ["bitmoji", "bitmoji"]
    plain = tmp_path / "my pictures"
    plain.mkdir()
    assert default_name(str(plain), "data") == "my-pictures"  # a folder a user made: its own name


def test_an_imagefolder_tree_is_read_with_its_classes(tmp_path):
    tree = tmp_path / "tree"
    for cls, start in (("cats", 0), ("dogs", 10)):
        write_drawn_folder(tree / cls / "deeper" if cls == "dogs" else tree / cls, 6, start=start)
    s = shard([tree], tmp_path / "s", "t", ShardOptions(size=16, label_field="folder", val_fraction=0.0,
                                                        min_shards=1))
    assert s.labels["names"] == ["cats", "dogs"] and s.labels["counts"] == {"cats": 6, "dogs": 6}
