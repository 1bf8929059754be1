"""One iterator of samples over dataset folders, plain image folders and WebDataset tars."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import drawn_image, png_bytes, tar_of

from gandata.datasets import Dataset, dataset_stage_folders, is_key
from gandata.errors import UserError
from gandata.inputs import DatasetInput, FolderInput, TarInput, open_input


def test_plain_folder_is_read_recursively_with_stable_safe_keys(tmp_path, images12):
    root = tmp_path / "mine"
    (root / "Sub Dir").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "a.png").write_bytes(png_bytes(drawn_image(1)))
    (root / "a.jpg").write_bytes((images12 / "tadne_r0c1.jpg").read_bytes())
    (root / "Sub Dir" / "Pic.0001.PNG").write_bytes(png_bytes(drawn_image(2)))
    (root / ".hidden" / "x.png").write_bytes(png_bytes(drawn_image(3)))
    (root / "notes.txt").write_text("not an image")
    src = open_input(root)
    assert isinstance(src, FolderInput)
    samples = list(src)
    keys = [s.key for s in samples]
    assert len(samples) == 3 and len(set(keys)) == 3 and all(is_key(k) for k in keys)
    assert [s.record["file"] for s in samples] == ["a.jpg", "a.png", "Sub Dir/Pic.0001.PNG"]
    assert keys == [s.key for s in open_input(root)]  # same input → same keys
    assert samples[0].read() == (images12 / "tadne_r0c1.jpg").read_bytes()


def test_dataset_folder_reports_missing_files(tmp_path):
    with Dataset.create(tmp_path / "ds") as ds:
        rows = [ds.add(f"k{i}", png_bytes(drawn_image(i)), "png", {"width": 96, "height": 80, "source": "t"})
                for i in range(3)]
    (tmp_path / "ds" / rows[1]["path"]).unlink()
    src = open_input(tmp_path / "ds")
    assert isinstance(src, DatasetInput)
    samples = list(src)
    assert [s.key for s in samples] == ["k0", "k2"]
    assert samples[0].sha256 == rows[0]["sha256"] and samples[0].record["source"] == "t"
    assert len(src.problems) == 1 and "missing on disk" in src.problems[0].reason


def test_img2dataset_style_tar_is_read(tmp_path, images12):
    jpg = (images12 / "tadne_r1c0.jpg").read_bytes()
    meta = {"url": "http://example.com/1.jpg", "key": "000000001", "status": "success", "width": 512, "height": 512}
    shards = tmp_path / "i2d"
    shards.mkdir()
    tar_of(shards / "00000.tar", [("000000001.jpg", jpg), ("000000001.json", json.dumps(meta).encode()),
                                ("000000002.jpg", jpg[:100]), ("000000002.json", b"{broken")])
    src = open_input(shards)
    assert isinstance(src, TarInput)
    samples = list(src)
    assert [s.key for s in samples] == ["000000001", "000000002"]
    assert samples[0].record["url"] == meta["url"] and samples[0].read() == jpg
    assert samples[0].record["shard"] == "00000.tar"
    assert any("invalid JSON" in p.reason for p in src.problems)


def test_dotted_and_slashed_tar_keys_become_safe(tmp_path):
    png = png_bytes(drawn_image(1))
    path = tar_of(tmp_path / "x.tar", [("dir/Sample.seg.png", png), ("dir/Sample.seg.cls", b"3")])
    samples = list(open_input(path))
    assert len(samples) == 1 and is_key(samples[0].key) and samples[0].record["cls"] == 3


def test_unreadable_and_truncated_tars_are_problems_not_crashes(tmp_path):
    good = tar_of(tmp_path / "good.tar", [(f"k{i}.png", png_bytes(drawn_image(i))) for i in range(4)])
    data = good.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tar").write_bytes(b"this is not a tar file at all" * 40)
    src = open_input(str(tmp_path / "{good,cut,junk}.tar"))
    samples = list(src)
    from_good = [s for s in samples if s.record["shard"] == "good.tar"]
    from_cut = [s for s in samples if s.record["shard"] == "cut.tar"]
    assert len(from_good) == 4 and len(from_cut) < 4
    for s in from_cut:  # what comes out of a damaged tar is whole
        assert s.read() == png_bytes(drawn_image(int(s.key[1:])))
    reasons = {Path(p.origin).name: p.reason for p in src.problems}
    assert "damaged" in reasons["cut.tar"] or "readable" in reasons["cut.tar"]
    assert "not a readable tar" in reasons["junk.tar"]


def test_bad_input_paths_give_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_input(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        open_input(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        open_input(tmp_path / "file.txt")
    with pytest.raises(UserError, match="does not exist"):
        open_input(str(tmp_path / "s-{000000..000003}.tar"))
    with pytest.raises(UserError, match="only local paths"):
        open_input("https://example.com/s-{000000..000003}.tar")


def test_most_processed_stage_is_found(tmp_path):
    data = tmp_path / "data"
    for stage, inputs in (("raw", []), ("faces", [str(data / "anime" / "raw")])):
        with Dataset.create(data / "anime" / stage) as ds:
            ds.add("k", png_bytes(drawn_image(1)), "png", {"width": 96, "height": 80, "source": "t"})
            ds.write_stats({"stage": "test", "inputs": inputs})
    with Dataset.create(data / "bitmoji" / "raw") as ds:
        ds.add("k", png_bytes(drawn_image(1)), "png", {"width": 96, "height": 80, "source": "t"})
    (data / "notes").mkdir()
    found = dataset_stage_folders(data)
    assert found == {"anime": data / "anime" / "faces", "bitmoji": data / "bitmoji" / "raw"}
