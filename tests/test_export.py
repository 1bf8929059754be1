"""gandata export: a StyleGAN2-ADA/StyleGAN3 dataset zip and an ImageFolder tree from any shard set, streamed, and read
back the way those tools read them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
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
