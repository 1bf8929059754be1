"""Near duplicates: the pinned hash, the multi-index search against brute force, clusters on real images."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import png_bytes
from PIL import Image, ImageEnhance

from gandata import dedupe as dd
from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.shard import ShardOptions, shard


def _flip(h: int, bits: list[int]) -> int:
    for b in bits:
        h ^= 1 << b
    return h


@pytest.mark.parametrize("threshold", [0, 1, 3, 5, 8, 10, 13])
def test_search_agrees_with_brute_force(threshold):
    """Every plan the search can take (3 blocks of 21-22 bits, 4 of 16, 8 of 8 bits: crowded buckets, 13 of 4-5
    bits, and the planner's own, brute force at this size) finds exactly the brute-force pairs."""
    rng = np.random.default_rng(threshold)
    base = [int(x) for x in rng.integers(0, 2**63, 600, dtype=np.uint64)]
    hashes = list(base)
    for h in base[:150]:  # planted: exactly at the threshold, one past it, and inside it
        hashes.append(_flip(h, list(rng.choice(64, threshold, replace=False))))
        hashes.append(_flip(h, list(rng.choice(64, threshold + 1, replace=False))))
        hashes.append(_flip(h, list(rng.choice(64, rng.integers(0, threshold + 1), replace=False))))
    hashes += base[:20]  # repeated hashes
    arr = np.array(hashes, dtype=np.uint64)
    want = dd.brute_pairs(arr, threshold)
    assert len(want) >= 150
    for blocks in (None, 3, 4, 8, 13):
        assert np.array_equal(dd.near_pairs(arr, threshold, blocks=blocks), want), blocks
    d = np.bitwise_count(arr[want[:, 0]] ^ arr[want[:, 1]])
    assert (d == threshold).any() and d.max() <= threshold


def test_components_and_representatives():
    keys = ["b", "a", "c", "d", "e"]
    far = (2**64 - 1) ^ 0xFF  # 56 bits away from the others
    hashes = [0b0, 0b1, 0b111, far, far ^ (1 << 63)]  # b–a 1 bit, a–c 2 bits, b–c 3 bits; d–e 1 bit
    areas = [100, 100, 50, 10, 20]
    found = dd.clusters(keys, hashes, areas, 2)
    assert found["c"] == {"cluster": "a", "representative": "a", "distance": 2}  # a: largest area, smallest key
    assert found["b"]["cluster"] == "a"  # b and c are 3 bits apart, joined through a
    assert found["b"]["representative"] == "a" and found["d"]["representative"] == "e"


def test_the_hash_is_pinned_and_follows_its_documented_recipe(anime_dir):
    import cv2

    data = (anime_dir / "tadne_r0c1.jpg").read_bytes()
    assert dd.to_hex(dd.phash_of(data)[0]) == "ea4fc961c90d2733"  # stored hashes stay comparable across versions
    assert dd.phash_of(data)[1:] == (512, 512)
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (128, 128))  # the recipe: this 512² JPEG at the DCT scale 2/8 (libjpeg's, as Pillow's draft)
    assert im.size == (128, 128)
    assert dd.phash(im.convert("RGBA")) == dd.phash(im)
    # the recipe of the module docstring, with the DCT-II written out instead of cv2.dct
    grey = np.asarray(im.convert("RGB").convert("L"), dtype=np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    k = np.arange(32)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 64) * np.sqrt(2 / 32)
    basis[0] /= np.sqrt(2)
    coeffs = (basis @ small @ basis.T)[:8, :8].ravel()
    bits = "".join("1" if c > np.median(coeffs[1:]) else "0" for c in coeffs)
    assert int(bits, 2) == dd.phash(im) == dd.phash_of(data)[0]


def _jpeg(im: Image.Image, q: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def edited_copies(anime_dir, folder):
    """The 12 originals plus, for each, copies resized, recompressed, slightly cropped and brightness-shifted."""
    folder.mkdir()
    for p in sorted(anime_dir.glob("*.jpg")):
        im = Image.open(p).convert("RGB")
        (folder / p.name).write_bytes(p.read_bytes())
        (folder / f"{p.stem}_small.png").write_bytes(png_bytes(im.resize((128, 128), Image.Resampling.BOX)))
        (folder / f"{p.stem}_q30.jpg").write_bytes(_jpeg(im, 30))
        (folder / f"{p.stem}_crop.png").write_bytes(png_bytes(im.crop((10, 10, 502, 502))))
        (folder / f"{p.stem}_bright.png").write_bytes(png_bytes(ImageEnhance.Brightness(im).enhance(1.1)))
        (folder / f"{p.stem}_dark.jpg").write_bytes(_jpeg(ImageEnhance.Brightness(im).enhance(0.9), 85))
    return folder


def test_edited_copies_cluster_with_their_originals_and_originals_stay_apart(tmp_path, anime_dir):
    folder = edited_copies(anime_dir, tmp_path / "imgs")
    report = tmp_path / "dups.jsonl"
    summary = dd.dedupe([folder], report=report, grid=tmp_path / "dups.png")
    assert summary.samples == 72 and summary.clusters == 12 and summary.near_duplicates == 60
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(rows) == 72
    for r in rows:
        original = r["key"].split("_")[0] + "_" + r["key"].split("_")[1]  # tadne_r0c1_q30 → tadne_r0c1
        assert r["representative"] == original  # the largest source, then the smallest key
        assert r["kept"] == (r["key"] == original) and (r["reason"] is None) == r["kept"]
        assert r["distance"] <= dd.DEFAULT_THRESHOLD
    assert Image.open(tmp_path / "dups.png").mode == "RGB"
    apart = dd.dedupe([anime_dir])
    assert apart.clusters == 0  # the 12 distinct originals never merge


def test_shard_dedupe_near(tmp_path, anime_dir):
    folder = edited_copies(anime_dir, tmp_path / "imgs")
    summary = shard([folder], tmp_path / "shards", "anime", ShardOptions(size=32, dedupe="near", val_fraction=0))
    assert summary.counts["total"] == 12 and summary.removed["near_duplicate"] == 60
    report = [json.loads(line) for line in (tmp_path / "shards" / "rejected.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in report} == {"near_duplicate"} and all(
        "near duplicate of tadne_" in r["reason"] for r in report
    )
    import webdataset as wds

    for s in wds.WebDataset(str(next((tmp_path / "shards").rglob("anime-train-000000.tar"))), shardshuffle=False):
        meta = json.loads(s["json"])
        assert meta["cluster"] == meta["key"] and len(meta["phash"]) == 16
    with pytest.raises(UserError, match="--dedupe"):
        shard([folder], tmp_path / "x", "anime", ShardOptions(dedupe="fuzzy"))


def test_hashes_are_cached_and_inputs_are_never_written(tmp_path, images12, monkeypatch):
    root = tmp_path / "raw"
    with Dataset.create(root) as ds:
        for p in sorted(images12.glob("*.jpg")):
            ds.add(p.stem, p.read_bytes(), "jpg", {"width": 512, "height": 512, "source": "test"})
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    first = dd.dedupe([root])
    assert dd.HashCache().path.exists() and first.samples == 12
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before  # changes nothing
    calls = []
    monkeypatch.setattr(dd, "_hash_sample", lambda data: calls.append(1) or "should not be called")
    again = dd.dedupe([root])
    assert again.samples == 12 and not calls and again.clusters == first.clusters == 0
    plain = dd.dedupe([images12])  # the cache is by content: the same files in a plain folder are hits too
    assert plain.samples == 12 and not calls


def test_shard_fills_the_hash_cache_that_dedupe_reads(tmp_path, images12, monkeypatch):
    shard([images12], tmp_path / "shards", "anime", ShardOptions(size=32))
    calls = []
    monkeypatch.setattr(dd, "_hash_sample", lambda data: calls.append(1) or "should not be called")
    r = dd.dedupe([images12])
    assert r.samples == 12 and not calls


def test_a_torn_or_foreign_hash_cache_line_is_skipped(tmp_path):
    cache = dd.HashCache(tmp_path / "h.jsonl")
    cache.put("a" * 64, 5, 10, 20)
    cache.close()
    with open(tmp_path / "h.jsonl", "a") as f:
        f.write('{"sha256": "b", "hash": "other-hash", "phash": "00", "width": 1, "height": 1}\n{"sha256": "c", "ha')
    again = dd.HashCache(tmp_path / "h.jsonl")
    assert again.get("a" * 64) == (5, 10, 20) and again.get("b") is None and again.get("c") is None


def test_bad_threshold(tmp_path, images12):
    with pytest.raises(UserError, match="--threshold"):
        dd.dedupe([images12], threshold=40)


def test_the_contact_sheet_shows_every_member_of_a_large_cluster(tmp_path, anime_dir, monkeypatch):
    """A cluster of 12: the row shows the representative and its 7 nearest members — each with its picture (the
    images loaded used to be the first 8 in input order, not the 8 shown)."""
    base = Image.open(sorted(anime_dir.glob("*.jpg"))[0]).convert("RGB")
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a_original.png").write_bytes(png_bytes(base))
    for i in range(11):  # a-keys sort first but are the farthest; z-keys are the nearest
        name = f"{'a' if i < 6 else 'z'}_{i:02d}.jpg"
        (folder / name).write_bytes(_jpeg(ImageEnhance.Brightness(base).enhance(1.25 if i < 6 else 1.02), 60 + i))
    cells = []
    monkeypatch.setattr(dd.images, "contact_sheet", lambda c, **kw: cells.extend(c) or Image.new("RGB", (8, 8)))
    summary = dd.dedupe([folder], threshold=16, grid=tmp_path / "sheet.png")
    assert summary.largest == 12
    row = cells[:8]
    assert row[0][1].startswith("KEEP") and all(picture is not None for picture, _ in row), [c for _, c in row]


def test_a_near_dedupe_that_removes_most_of_a_set_says_so_loudly(tmp_path):
    """60 avatars drawn from one template in other colours: at the default threshold they are 'near duplicates' of
    one another. The run says so in its summary — the biggest clusters, a contact sheet, a threshold that keeps
    more — instead of a quiet 'removed 59'."""
    from PIL import Image, ImageDraw

    from gandata.shard import NEAR_SHEET, ShardOptions, shard

    src = tmp_path / "avatars"
    src.mkdir()
    for i in range(60):
        im = Image.new("RGB", (64, 64), (255, 255, 255))
        d = ImageDraw.Draw(im)
        d.ellipse((12, 8, 52, 48), fill=(40 + 3 * i, 200 - 2 * i, 90 + i))  # the head: same place, other colour
        d.rectangle((24, 36 + i % 3, 40, 44 + i % 3), fill=(10 + i, 10, 10))  # the mouth: a pixel or two lower
        im.save(src / f"a{i:02d}.png")
    s = shard([src], tmp_path / "s", "a", ShardOptions(size=32, dedupe="near", min_shards=1, val_fraction=0.0))
    assert s.removed["near_duplicate"] > 30
    [warning] = [w for w in s.warnings if w.startswith("near-duplicate removal took")]
    assert "of 60 images" in warning and "the biggest clusters hold" in warning
    assert "--threshold" in warning or "--dedupe exact" in warning
    sheet = tmp_path / "s" / NEAR_SHEET
    assert sheet.exists() and Image.open(sheet).size[0] > 96 * 8
    assert any(line.startswith("  warning: near-duplicate removal took") for line in s.lines())
    again = shard([src], tmp_path / "s", "a", ShardOptions(size=32, dedupe="exact", min_shards=1,
                                                           val_fraction=0.0))
    assert again.counts["total"] == 60 and not sheet.exists()  # exact dedupe keeps them, and the sheet goes
