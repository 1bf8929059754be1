"""gandata export: a StyleGAN2-ADA/StyleGAN3 dataset zip and an ImageFolder tree from any shard set, streamed, and read
back the way those tools read them."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import drawn_image, png_bytes
from PIL import Image

from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.export import export, read_back_stylegan
from gandata.shard import ShardOptions, shard


def _shard_pixels(folder: Path, split: str = "train") -> dict[str, tuple[np.ndarray, int | None]]:
    """Every sample of a split as the shards hold it: key → (RGB pixels, class)."""
    out = {}
    for tar in sorted(folder.rglob(f"*-{split}-*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            img = next(s[k] for k in ("png", "jpg", "webp") if k in s)
            out[s["__key__"]] = (np.asarray(Image.open(io.BytesIO(img)).convert("RGB")),
                                 int(s["cls"]) if "cls" in s else None)
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("export")
    with Dataset.create(base / "raw") as ds:
        for i in range(40):
            ds.add(f"k{i:03d}", png_bytes(drawn_image(i, (48, 40))), "png",
                   {"width": 48, "height": 40, "source": "t", "kind": ["zebra", "ant", "moth"][i % 3]})
    shard([base / "raw"], base / "lab", "lab", ShardOptions(size=32, label_field="kind", val_fraction=0.2,
                                                             maxcount=8, min_shards=1))
    shard([base / "raw"], base / "jpg", "jpg", ShardOptions(size=32, format="jpg", val_fraction=0.0))
    shard([base / "raw"], base / "odd", "odd", ShardOptions(size=24, val_fraction=0.0))
    return {"labelled": base / "lab", "jpg": base / "jpg", "odd": base / "odd"}


def test_a_stylegan_zip_reads_back_as_stylegans_loader_reads_it(sets, tmp_path):
    out = tmp_path / "lab.zip"
    s = export(str(sets["labelled"]), out)
    info = json.loads((sets["labelled"] / "dataset.json").read_text())
    assert s.images == info["counts"]["train"] and s.resolution == 32 and s.classes == 3
    names, labels, shape = read_back_stylegan(out)
    assert names == [f"00000/img{i:08d}.png" for i in range(s.images)] and shape == (3, 32, 32)
    with zipfile.ZipFile(out) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())  # as dataset_tool writes it
        keys = dict(json.loads(zf.read("gandata.json"))["keys"])
        want = _shard_pixels(sets["labelled"])
        for name, label in zip(names, labels):
            pixels, cls = want[keys[name]]
            assert label == cls and np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read(name)))), pixels)
    assert json.loads(zipfile.ZipFile(out).read("gandata.json"))["label_names"] == ["ant", "moth", "zebra"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_unlabelled_jpeg_shards_become_png_with_null_labels(sets, tmp_path):
    out = tmp_path / "jpg.zip"
    s = export(str(sets["jpg"]), out)
    names, labels, _ = read_back_stylegan(out)
    assert labels is None and s.classes is None and len(names) == 40
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("dataset.json")) == {"labels": None}
        keys = dict(json.loads(zf.read("gandata.json"))["keys"])
        want = _shard_pixels(sets["jpg"])
        for name in names[:5]:  # the decoded JPEG, stored losslessly
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read(name)))), want[keys[name]][0])


def test_stylegan_refuses_a_side_that_is_not_a_power_of_two_and_leaves_nothing(sets, tmp_path):
    with pytest.raises(UserError, match=r"power-of-two side; these are 24×24: shard them with --size 64"):
        export(str(sets["odd"]), tmp_path / "odd.zip")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match=r"a StyleGAN dataset is a \.zip file"):
        export(str(sets["labelled"]), tmp_path / "folder")


def test_imagefolder_classes_sort_in_class_id_order_and_a_rerun_resumes(sets, tmp_path):
    out = tmp_path / "folder"
    s = export(str(sets["labelled"]), out, format="imagefolder", split="all")
    info = json.loads((sets["labelled"] / "dataset.json").read_text())
    assert s.images == info["counts"]["total"] == 40 and s.written == 40 and s.classes == 3
    # torchvision's ImageFolder: classes are the sorted folder names, their index the class id
    classes = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert classes == ["0000_ant", "0001_moth", "0002_zebra"]
    want = {**_shard_pixels(sets["labelled"], "train"), **_shard_pixels(sets["labelled"], "val")}
    for idx, c in enumerate(classes):
        for f in (out / c).iterdir():
            pixels, cls = want[f.stem]
            assert cls == idx and np.array_equal(np.asarray(Image.open(f).convert("RGB")), pixels)
    victim = next((out / classes[0]).iterdir())
    victim.unlink()
    again = export(str(sets["labelled"]), out, format="imagefolder", split="all")
    assert again.written == 1 and victim.exists() and again.images == 40
    plain = export(str(sets["jpg"]), tmp_path / "plain", format="imagefolder")
    assert sorted(d.name for d in (tmp_path / "plain").iterdir()) == [".gandata-export", "unlabelled"]
    assert plain.classes is None


@pytest.mark.slow
def test_export_from_the_command_line_and_bad_input(sets, tmp_path):
    r = subprocess.run([sys.executable, "-m", "gandata", "export", str(sets["labelled"]), "--out",
                        str(tmp_path / "x.zip"), "--split", "val", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads((sets["labelled"] / "dataset.json").read_text())
    assert json.loads(r.stdout)["images"] == info["counts"]["val"]
    r = subprocess.run([sys.executable, "-m", "gandata", "export", str(tmp_path / "nothing"), "--out",
                        str(tmp_path / "y.zip")], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("gandata: error:") and len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "y.zip")


def test_split_all_of_a_set_whose_val_split_is_empty(tmp_path):
    """--split all (what the docs recommend) on a set sharded with --val-fraction 0: its val split is there with 0
    samples; every train image is exported, in both layouts."""
    with Dataset.create(tmp_path / "raw") as ds:
        for i in range(10):
            ds.add(f"k{i}", png_bytes(drawn_image(i, (40, 40))), "png", {"width": 40, "height": 40, "source": "t"})
    shard([tmp_path / "raw"], tmp_path / "set", "s", ShardOptions(size=32, val_fraction=0.0, min_shards=1))
    assert json.loads((tmp_path / "set" / "dataset.json").read_text())["counts"]["val"] == 0
    z = export(str(tmp_path / "set"), tmp_path / "all.zip", split="all")
    f = export(str(tmp_path / "set"), tmp_path / "all", format="imagefolder", split="all")
    assert z.images == f.images == 10
    with pytest.raises(UserError, match="no val images"):
        export(str(tmp_path / "set"), tmp_path / "val.zip", split="val")


def _damage_a_member(tar: Path) -> str:
    """40 bytes in the middle of the second image of ``tar`` changed in place, the tar's structure whole: what a bad
    copy or disk leaves. Returns its key."""
    with tarfile.open(tar) as t:
        m = [x for x in t.getmembers() if x.name.endswith(".png")][1]
    data = bytearray(tar.read_bytes())
    for i in range(m.offset_data + m.size // 2, m.offset_data + m.size // 2 + 40):
        data[i] ^= 0x5A
    tar.write_bytes(bytes(data))
    return m.name.split(".", 1)[0]


def _keys(tar: Path) -> set[str]:
    with tarfile.open(tar) as t:
        return {x.name.split(".", 1)[0] for x in t.getmembers()}


def test_a_tar_changed_after_sharding_is_one_line_naming_it(sets, tmp_path):
    """A tar whose bytes changed after sharding: the ImageFolder export checks it against the sha256 dataset.json
    records as it reads it and stops with one line naming it, none of its images left in the folder; the same tar
    in a folder without dataset.json (nothing records its sha256) is decoded, as the zip decodes every image, and
    refused naming the tar and the sample."""
    copy = tmp_path / "set"
    shutil.copytree(sets["labelled"], copy)
    tar = sorted(copy.rglob("*-train-*.tar"))[1]
    damaged = _damage_a_member(tar)
    with pytest.raises(UserError) as e:
        export(str(copy), tmp_path / "folder", format="imagefolder")
    assert str(e.value).startswith(f"{tar}: its sha256 is not the one dataset.json records") and "gandata shard" in \
        str(e.value) and len(str(e.value).splitlines()) == 1
    exported = {f.stem for f in (tmp_path / "folder").rglob("*.png")}
    assert exported and not exported & _keys(tar)  # the tars before it are there, none of its images
    with pytest.raises(UserError, match=rf"^{re.escape(str(tar))}: sample \w+: corrupt"):  # the zip decodes it first
        export(str(copy), tmp_path / "set.zip", split="all")
    assert not (tmp_path / "set.zip").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(tar, plain / tar.name)
    with pytest.raises(UserError, match=rf"^{re.escape(str(plain / tar.name))}: sample {damaged}: .*gandata inspect"):
        export(str(plain), tmp_path / "plain-folder", format="imagefolder")
    assert {f.stem for f in (tmp_path / "plain-folder").rglob("*.png")} < _keys(tar) - {damaged}  # those before it


@pytest.mark.parametrize("fmt, name", [("imagefolder", "folder"), ("stylegan", "x.zip")])
def test_a_second_export_into_one_output_is_refused_while_the_first_writes_it(sets, tmp_path, fmt, name):
    """Two exports into one output: while the first writes it (held in reading its tar, a named pipe the test fills
    only once the second was refused), the second is one line, removing nothing; the first then finishes whole,
    and nothing is left beside the output."""
    tar = sorted(sets["labelled"].rglob("*-train-*.tar"))[0]
    fifo = tmp_path / "slow.tar"
    os.mkfifo(fifo)
    out = tmp_path / "exports" / name
    result: dict = {}

    def first():
        try:
            result["summary"] = export(str(fifo), out, format=fmt)
        except Exception as e:  # said by the assertions below
            result["error"] = e

    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    while True:  # the pipe opens for writing once the first export opened it to read: it holds the output by then
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert thread.is_alive(), result
            time.sleep(0.01)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as w:
        with pytest.raises(UserError, match=rf"^another gandata export is writing {re.escape(str(out))}; wait"):
            export(str(sets["labelled"]), out, format=fmt, split="all")
        w.write(tar.read_bytes())
    thread.join(timeout=300)
    assert "error" not in result, result
    assert result["summary"].images == len(_keys(tar))
    assert [p.name for p in out.parent.iterdir()] == [name]  # no lock and no temporary left beside it
