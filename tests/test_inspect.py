"""`gandata inspect`: counts, sizes, labels, failures, and a contact sheet."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import drawn_image, png_bytes
from PIL import Image

from gandata.datasets import Dataset
from gandata.inspection import inspect_path
from gandata.shard import ShardOptions, shard


def test_inspect_a_dataset_folder(tmp_path):
    root = tmp_path / "raw"
    with Dataset.create(root) as ds:
        for i in range(6):
            size = (96, 80) if i < 4 else (50, 50)
            ds.add(f"k{i}", png_bytes(drawn_image(i, size)), "png",
                   {"width": size[0], "height": size[1], "source": "t", "category": "hat" if i % 2 else "hair"})
        ds.fail("k7", "HTTP 404", url="u7")
        ds.fail("k8", "HTTP 404", url="u8")
        ds.fail("k9", "not an image: an HTML page, not an image", url="u9")
        ds.fail("k0", "timeout")  # later accepted: not an open failure
        ds.write_stats({"stage": "fetch test", "accepted": 6})
    grid = tmp_path / "grid.png"
    r = inspect_path(root, grid=grid, label_field="category", grid_n=4, cell=64)
    assert r.kind == "dataset" and r.samples == 6
    assert r.sizes == [{"width": 96, "height": 80, "count": 4}, {"width": 50, "height": 50, "count": 2}]
    assert r.labels == {"hair": 3, "hat": 3}
    assert r.failures == {"HTTP 404": 2, "not an image: an HTML page, not an image": 1}
    assert r.last_run["stage"] == "fetch test"
    sheet = Image.open(grid)
    assert sheet.size == (2 * 68 + 4, 22 + 2 * (64 + 14 + 4) + 4)  # 4 cells, 2×2, with title and captions


def test_inspect_shards_with_labels_and_a_plain_folder_with_a_bad_file(tmp_path, images12_copy):
    (images12_copy / "broken.jpg").write_bytes(b"<html>oops</html>")
    r = inspect_path(images12_copy)
    assert r.kind == "folder" and r.samples == 12 and r.unreadable == 1
    assert r.sizes == [{"width": 512, "height": 512, "count": 12}]
    assert "HTML" in r.bad[0]["reason"]

    root = tmp_path / "raw"
    with Dataset.create(root) as ds:
        for i in range(10):
            ds.add(f"k{i}", png_bytes(drawn_image(i)), "png", {"width": 96, "height": 80, "source": "t",
                                                                "category": ["bald", "hat"][i % 2]})
    shard([root], tmp_path / "shards", "s", ShardOptions(size=32, label_field="category", val_fraction=0.3))
    grid = tmp_path / "sheet.png"
    r = inspect_path(tmp_path / "shards", grid=grid)
    assert r.kind == "shards" and r.samples == 10 and r.warning is None
    assert r.labels == {"bald": 5, "hat": 5}
    assert sum(r.splits.values()) == 10
    assert r.sizes == [{"width": 32, "height": 32, "count": 10}]
    assert Image.open(grid).mode == "RGB"


def test_the_contact_sheet_keeps_thumbnails_not_images(tmp_path, monkeypatch):
    """inspect --grid holds one full-size image at a time: each cell is a thumbnail by the time the next is read,
    and the cells are read a band's row at a time while the sheet is written."""
    from gandata import images as images_module
    from gandata.inspection import inspect_path

    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (1600 + i, 1200), (40 * i, 80, 120)).save(folder / f"{i}.png")
    seen = []
    real = images_module.sheet_bands

    def bands(cells, layout, *args):
        def watched():
            for im, caption in cells:
                seen.append(im.size)
                yield im, caption

        return real(watched(), layout, *args)

    monkeypatch.setattr(images_module, "sheet_bands", bands)
    r = inspect_path(folder, grid=tmp_path / "g.png", cell=64)
    assert r.samples == 4 and len(seen) == 4 and all(max(size) <= 64 for size in seen)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_a_contact_sheet_of_any_size_in_bounded_memory(tmp_path):
    """inspect --grid-n 400 --cell 512: a 10 324 × 10 626 sheet (329 MB of pixels; 507 MB peak when it was drawn
    whole) written a band at a time: the process's peak stays far below the sheet's own size, and the PNG holds
    every cell."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(400):
        Image.new("RGB", (24, 24), (i % 256, 7 * i % 256, 90)).save(folder / f"{i:03d}.png")
    grid = tmp_path / "g.png"
    # the peak of this process's own memory (VmHWM: getrusage's maxrss would carry the forking parent's over exec)
    probe = ("from gandata.inspection import inspect_path; "
             f"inspect_path({str(folder)!r}, grid={str(grid)!r}, grid_n=400, cell=512); "
             "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    peak_mb = int(r.stdout.split()[-1]) / 1024
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # a big sheet on purpose: no bomb warning
    try:
        with Image.open(grid) as im:
            assert im.size == (20 * 516 + 4, 22 + 20 * 530 + 4)
            pixels = 3 * im.width * im.height / 2**20
            px = im.getpixel((4 + 19 * 516 + 256, 22 + 4 + 19 * 530 + 256))  # the last cell's middle
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert px == (399 % 256, 7 * 399 % 256, 90)
    assert peak_mb < pixels / 2, (peak_mb, pixels)
