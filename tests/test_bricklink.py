"""`gandata fetch bricklink` and `gandata fetch rebrickable`: real fixtures for the parsers, a local look-alike
server (with SYNTHETIC listing pages, see brickserver.py) for crawls, throttling, challenges and kills."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from brickserver import BrickServer, catalog_items, listing_page
from conftest import fixture_path, kill_when, lines_in
from test_fetch import check_dataset

from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.shard import ShardOptions, shard
from gandata.sources.bricklink import (
    fetch_bricklink,
    parse_catalog_file,
    parse_categories_file,
    parse_listing,
)
from gandata.sources.rebrickable import fetch_rebrickable, parse_minifigs_csv

FAST = {"backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture
def server():
    s = BrickServer()
    yield s
    s.close()




@pytest.fixture
def quick_manifest(tmp_path) -> Path:
    """The real manifest with a short throttle wait and no image pacing, so that tests do not sit out minutes."""
    text = (Path(__file__).parents[1] / "manifests" / "bricklink.toml").read_text()
    path = tmp_path / "bricklink.toml"
    quick = text.replace("throttle_wait = 60.0", "throttle_wait = 0.05").replace("image_rate = 4.0", "image_rate = 0")
    assert "throttle_wait = 0.05" in quick and "image_rate = 0 " in quick  # the manifest still has these keys
    path.write_text(quick)
    return path


# ----------------------------------------------------------------------------------------- real fixtures


def test_real_catalog_download_parses():
    cats = parse_categories_file(fixture_path("sources/bricklink_categories.txt").read_text("utf-8"))
    assert len(cats) == 1150 and cats[65] == "Star Wars" and cats[746] == "Collectible Minifigures"
    items = list(parse_catalog_file(fixture_path("sources/bricklink_Minifigures_excerpt.txt").read_text("utf-8"), cats))
    assert len(items) == 81  # every non-blank row after the header and its two blank lines
    by_no = {it["item_no"]: it for it in items}
    assert by_no["sw0025"] == {
        "item_no": "sw0025",
        "name": "Padmé Naberrie (Amidala) (Yellow)",
        "category": "Star Wars",
        "category_path": "Star Wars / Star Wars Episode 1",
        "category_id": 65,
        "cat_string": "65.257",
        "year": 1999,
        "weight_g": 4.0,
    }
    assert "year" not in by_no["aqu010"] and by_no["aqu010"]["weight_g"] == 5.09  # year "?"
    assert by_no["trn047"]["name"] == "Red & White Stripes - Blue Legs, Brown Male Hair"
    assert by_no["adv023"]["name"] == "Señor Palomar / Señor Gomez {Senor}"
    assert {"sw0001a", "sw0001b", "sw0001c", "sw0001d"} <= set(by_no)
    # without the categories file the path is still there, the catString only to the top level
    bare = {it["item_no"]: it for it in parse_catalog_file(
        fixture_path("sources/bricklink_Minifigures_excerpt.txt").read_text("utf-8"))}
    assert bare["sw0025"]["cat_string"] == "65" and bare["sw0025"]["category_path"] == "Star Wars / Star Wars Episode 1"
    with pytest.raises(ValueError, match="header"):
        list(parse_catalog_file("<!doctype html><html>please log in</html>"))


def test_real_rebrickable_csv_parses():
    rows = parse_minifigs_csv(fixture_path("sources/rebrickable_minifigs_excerpt.csv").read_bytes())
    assert len(rows) == 100
    assert rows[2] == {"fig_num": "fig-000003", "name": "Assassin Droid, White", "num_parts": 8,
                       "img_url": "https://cdn.rebrickable.com/media/sets/fig-000003.jpg"}
    with pytest.raises(ValueError, match="fig_num"):
        parse_minifigs_csv(b"a,b\n1,2\n")


def test_synthetic_listing_page_parses():
    items = catalog_items()[40:45]
    page = parse_listing(listing_page(items, 81, 3, 9))
    assert (page["total"], page["page"], page["pages"]) == (81, 3, 9)
    assert [it["item_no"] for it in page["items"]] == [it["item_no"] for it in items]
    for got, want in zip(page["items"], items):
        assert got["name"] == want["name"] and got["category"] == want["category"]
        assert got["cat_string"] == want["cat_string"] and got["category_path"] == want["category_path"]


# --------------------------------------------------------------------------------------------- crawling


def _expected(server: BrickServer, cats: list[str]) -> set[str]:
    return {it["item_no"].lower() for c in cats for it in server.in_category(c)}


def test_crawl_categories_with_politeness_and_fallbacks(server, tmp_path, quick_manifest):
    server.page_size = 4
    server.missing_main = {"sw0001a", "aqu002"}
    server.missing_all = {"sw0002"}
    out = tmp_path / "raw"
    stats = fetch_bricklink(out, categories="65,54", base_url=server.url, delay=0.05, manifest=quick_manifest,
                            overrides=FAST)
    want = _expected(server, ["65", "54"])
    rows = check_dataset(out)
    got = {r["item_no"].lower() for r in rows}
    assert got == want - {"sw0002"} and stats.failures == {"HTTP 404": 1}
    by_no = {r["item_no"]: r for r in rows}
    assert by_no["sw0001a"]["url"].endswith("/ItemImage/ML/sw0001a.png")  # the main image was missing
    assert by_no["sw0003"]["url"].endswith("/ItemImage/MN/0/sw0003.png")
    assert by_no["sw0003"]["key"] == "bricklink-sw0003" and by_no["sw0003"]["category"] == "Star Wars"
    assert by_no["sw0003"]["cat_string"].startswith("65.") and by_no["sw0003"]["name"]
    fail = next(Dataset.open(out).failures())
    assert fail["key"] == "bricklink-sw0002" and len(fail["tried"]) == 3 and fail["status"] == 404
    # listing pages: one at a time, the pause kept, Referer set
    pages = [(t0, t1, p, ref) for t0, t1, p, ref in server.log if p.startswith("/catalogList.asp")]
    assert len(pages) == stats.extra["crawl"]["pages"] == 4 + 4  # 14 Star Wars in pages of 4, 14 Aquazone
    for (_, a1, _, _), (b0, _, _, _) in zip(pages, pages[1:]):
        assert b0 >= a1  # one page at a time: the next is asked only once the one before is answered
    asked = [t0 for t0, _, _, _ in pages]  # the delay: 50 ms between asks (a request arrives at or after its slot,
    assert all(t - asked[0] >= i * 0.05 - 0.04 for i, t in enumerate(asked))  # less the first one's lateness)
    image_refs = [ref for _, _, p, ref in server.log if p.startswith("/ItemImage/")]
    assert all("/catalogList.asp?" in ref for ref in image_refs)
    assert stats.extra["crawl"]["listed_total"] == {"65": 14, "54": 14}


@pytest.mark.parametrize("status", [200, 429, 503])
def test_throttle_page_is_waited_out(server, tmp_path, quick_manifest, status):
    server.throttle = 2  # every listing page answers "Quota Exceeded" twice before the real page
    server.throttle_status = status
    stats = fetch_bricklink(
        tmp_path / "raw", categories="771", base_url=server.url, delay=0, manifest=quick_manifest, overrides=FAST
    )
    assert stats.total == len(_expected(server, ["771"])) == 10 and stats.stopped is None
    assert stats.retries >= 2 and server.page_hits.most_common(1)[0][1] == 3


@pytest.mark.parametrize("status", [200, 202, 403])
def test_browser_challenge_stops_with_a_clear_message(server, tmp_path, quick_manifest, status):
    server.challenge = True
    server.challenge_status = status  # AWS WAF challenges come with 202 or 403 as well as 200
    stats = fetch_bricklink(
        tmp_path / "raw", base_url=server.url, delay=0, manifest=quick_manifest, overrides=FAST
    )
    assert stats.total == 0 and "browser check" in stats.stopped and "--catalog-file" in stats.stopped
    assert len(server.requests("/catalogList.asp")) == 1  # no grinding on
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "fetch", "bricklink", "--out", str(tmp_path / "cli"),
                        "--base-url", server.url, "--delay", "0", "--manifest", str(quick_manifest)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "gandata: error: BrickLink asked for a browser check" in r.stderr


def test_pages_past_the_end_repeat_and_the_guard_stops(server, tmp_path, quick_manifest):
    server.count_line = False
    server.page_size = 5
    stats = fetch_bricklink(
        tmp_path / "raw", categories="9", base_url=server.url, delay=0, manifest=quick_manifest, overrides=FAST
    )
    want = _expected(server, ["9"])
    assert {r["item_no"].lower() for r in check_dataset(tmp_path / "raw")} == want
    assert stats.extra["crawl"]["pages"] == -(-len(want) // 5)
    assert len(server.requests("/catalogList.asp")) == stats.extra["crawl"]["pages"] + 1  # one repeated page ends it


def test_catalog_file_is_preferred_and_filtered(server, tmp_path, quick_manifest):
    catalog = fixture_path("sources/bricklink_Minifigures_excerpt.txt")
    cats = fixture_path("sources/bricklink_categories.txt")
    stats = fetch_bricklink(tmp_path / "all", catalog_file=catalog, base_url=server.url, manifest=quick_manifest,
                            limit=30, overrides=FAST)
    assert stats.total == 30 and not server.requests("/catalogList.asp")  # no crawling at all
    sw = fetch_bricklink(tmp_path / "sw", catalog_file=catalog, categories_file=cats, categories="65.258",
                         base_url=server.url, manifest=quick_manifest, overrides=FAST)
    rows = check_dataset(tmp_path / "sw")
    assert sw.total == len(rows) == 8 and {r["category_path"] for r in rows} == {"Star Wars / Star Wars Episode 4/5/6"}
    with pytest.raises(UserError, match="needs --categories-file"):
        fetch_bricklink(tmp_path / "x", catalog_file=catalog, categories="65.258", base_url=server.url)
    with pytest.raises(UserError, match="--categories"):
        fetch_bricklink(tmp_path / "x", catalog_file=catalog, categories="star wars", base_url=server.url)
    bad = tmp_path / "login.txt"
    bad.write_text("<!doctype html><html>Please log in</html>")
    with pytest.raises(UserError, match="tab-delimited catalog download"):
        fetch_bricklink(tmp_path / "x", catalog_file=bad, base_url=server.url)


def test_labels_for_conditional_training(server, tmp_path, quick_manifest):
    catalog = fixture_path("sources/bricklink_Minifigures_excerpt.txt")
    fetch_bricklink(tmp_path / "raw", catalog_file=catalog, base_url=server.url, manifest=quick_manifest,
                    overrides=FAST)
    summary = shard([tmp_path / "raw"], tmp_path / "shards", "bricks",
                    ShardOptions(size=32, label_field="category", val_fraction=0.0))
    counts = summary.labels["counts"]
    assert counts["Castle"] == 26 and counts["Star Wars"] == 14 and sum(counts.values()) == summary.counts["total"]


@pytest.mark.slow
def test_sigkill_mid_crawl_then_rerun_loses_nothing_and_fetches_nothing_twice(server, tmp_path, quick_manifest):
    server.page_size = 3
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "gandata.cli", "fetch", "bricklink", "--out", str(out), "--categories", "9,65,54",
           "--base-url", server.url, "--manifest", str(quick_manifest), "--json"]
    proc = subprocess.Popen(cmd + ["--delay", "0.15"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: lines_in(out / "manifest.jsonl") >= 15)
    pages_before = Counter(server.requests("/catalogList.asp"))
    run = subprocess.run(cmd + ["--delay", "0"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    want = _expected(server, ["9", "65", "54"])
    rows = check_dataset(out)
    assert {r["item_no"].lower() for r in rows} == want  # nothing lost
    images = Counter(p for p in server.requests("/ItemImage/MN/"))
    assert sum(n - 1 for n in images.values()) <= 4  # only what was in flight at the kill was asked twice
    pages_after = Counter(server.requests("/catalogList.asp"))
    again = [p for p in pages_before if pages_after[p] > 1]
    assert len(again) <= 1  # a page read before the kill is not read again (but the one in flight may be)


# ------------------------------------------------------------------------------------------- rebrickable


def test_rebrickable_from_the_bulk_csv(server, tmp_path):
    stats = fetch_rebrickable(tmp_path / "rb", base_url=server.url, limit=25, overrides={**FAST, "rate": 0})
    rows = check_dataset(tmp_path / "rb")
    assert stats.total == 25 and all(r["key"].startswith("rebrickable-fig-") for r in rows)
    assert all(r["url"].startswith(f"{server.url}/media/sets/fig-") and r["name"] and r["num_parts"] > 0 for r in rows)
    assert stats.provenance["csv"]["url"] == f"{server.url}/media/downloads/minifigs.csv.gz"
    local = fetch_rebrickable(tmp_path / "rb2", csv=fixture_path("sources/rebrickable_minifigs_excerpt.csv"),
                              base_url=server.url, overrides={**FAST, "rate": 0})
    assert local.total == 100 and len(server.requests("/media/downloads/")) == 1
    with pytest.raises(UserError, match=r"could not download the Rebrickable minifigs CSV .*--csv FILE"):
        fetch_rebrickable(tmp_path / "rb3", base_url="http://127.0.0.1:9")
