"""`gandata fetch bitmoji`: the real catalogues, avatar sampling, and whole runs against a local render server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import fixture_path, kill_when, lines_in
from renderserver import RenderServer
from test_fetch import check_dataset

from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.sources import load_manifest
from gandata.sources.bitmoji import TraitCatalogue, avatar_jobs, fetch_bitmoji, parse_templates, read_avatar_ids


@pytest.fixture
def server():
    s = RenderServer()
    yield s
    s.close()




@pytest.fixture
def catalogue() -> TraitCatalogue:
    return TraitCatalogue.parse(fixture_path("sources/libmoji_assets_2018.json").read_bytes())


FAST = {"backoff": 0.01, "max_backoff": 0.05, "rate": 0, "concurrency": 8, "per_host": 8}


def test_real_trait_catalogue_parses(catalogue):
    assert len(catalogue.categories[(1, 5)]) == 27 and len(catalogue.categories[(2, 5)]) == 26
    assert len(catalogue.categories[(1, 1)]) == 26 and len(catalogue.categories[(1, 4)]) == 20
    assert len(catalogue.categories[(1, 5)]["hat"]) == 125 and -1 in catalogue.categories[(1, 5)]["hat"]
    assert len(catalogue.categories[(1, 5)]["skin_tone"]) == 40
    assert sum(map(len, catalogue.outfits[1])) == 360 and sum(map(len, catalogue.outfits[2])) == 356
    with pytest.raises(ValueError, match="traits"):
        TraitCatalogue.parse(b'{"imoji": []}')
    with pytest.raises(ValueError, match="not JSON"):
        TraitCatalogue.parse(b"<html>")


def test_real_templates_catalogues_parse():
    t17 = parse_templates(fixture_path("sources/bitmoji_templates_2017_excerpt.json").read_bytes())
    t21 = parse_templates(fixture_path("sources/bitmoji_templates_2021_excerpt.json").read_bytes())
    assert t17[0]["src"].startswith("https://render.bitstrips.com/v2/cpanel/") and len(t17) == 25
    assert t21[0] == {"comic_id": "20028688", "template_id": "22324", "tags": t21[0]["tags"],
                      "src": "https://sdk.bitmoji.com/render/panel/20028688-%s-v1.png?transparent=1&palette=1"}
    ids = json.loads(fixture_path("sources/linma2472_all_templates.json").read_text())
    assert [t["comic_id"] for t in t17] == list(dict.fromkeys(ids))[: len(t17)]  # the order LINMA2472 used


def test_avatar_ids_file(tmp_path):
    avatar = json.loads(fixture_path("sources/bitmoji_avatar_2017.json").read_text())
    f = tmp_path / "ids.txt"
    f.write_text(f"# my avatars\n{avatar['id']}\n\n{avatar['avatar_version_uuid']}-v1\n{avatar['id']}\n")
    assert read_avatar_ids(f) == ["280531978_2-s1", f"{avatar['avatar_version_uuid']}-v1"]
    f.write_text("https://evil/?x=1\n")
    with pytest.raises(UserError, match="line 1"):
        read_avatar_ids(f)


def test_avatar_sampling_is_seeded_and_honours_none_probabilities(catalogue):
    manifest, _ = load_manifest("bitmoji")
    a = [j for _, j in zip(range(300), avatar_jobs(catalogue, manifest, "head", 3, None))]
    b = [j for _, j in zip(range(300), avatar_jobs(catalogue, manifest, "head", 3, None))]
    c = [j for _, j in zip(range(300), avatar_jobs(catalogue, manifest, "head", 4, None))]
    assert [j.url for j in a] == [j.url for j in b] and [j.key for j in a] != [j.key for j in c]
    assert len({j.key for j in a}) == 300
    hats = sum(j.record["traits"]["hat"] == -1 for j in a) / len(a)
    assert 0.78 <= hats <= 0.92  # manifest: hat none with p = 0.85 (libmoji's uniform draw would give 1/125)
    glasses = sum(j.record["traits"]["glasses"] == -1 for j in a) / len(a)
    assert 0.65 <= glasses <= 0.85
    assert Counter(j.record["gender"] for j in a).keys() == {"male", "female"}
    url = urlsplit(a[0].url)
    assert url.netloc == "preview.bitmoji.com" and url.path == "/bm-preview/v3/avatar/head"
    q = parse_qs(url.query)
    assert q["style"] == ["5"] and q["hat"] == [str(a[0].record["traits"]["hat"])] and "outfit" in q
    assert set(a[0].record["traits"]) <= set(q)


def test_fetch_avatars_exact_count_then_more(server, tmp_path):
    out = tmp_path / "raw"
    stats = fetch_bitmoji(out, 40, base_url=server.url, overrides=FAST)
    assert stats.accepted == stats.total == 40 and stats.complete and stats.stopped is None
    rows = check_dataset(out)
    assert all(r["key"].startswith("bitmoji-") and r["mode"] == "avatars" and r["view"] == "head" for r in rows)
    assert all(r["url"].startswith(f"{server.url}/bm-preview/v3/avatar/head?") for r in rows)
    assert all(isinstance(r["traits"], dict) and r["traits"] for r in rows)
    assert stats.provenance["traits"]["url"] == f"{server.url}/avatar-builder-v3/assets"
    saved = json.loads((out / "stats.json").read_text())
    assert saved["stage"] == "fetch bitmoji" and saved["total"] == 40 and saved["options"]["count"] == 40
    # --count counts what is there: asking for 55 fetches 15 more, none of the first 40 again
    more = fetch_bitmoji(out, 55, base_url=server.url, overrides=FAST)
    assert more.accepted == 15 and more.total == 55
    previews = server.requests_for("/bm-preview/")
    assert len(previews) == len(set(previews)) == 55
    assert len(server.requests_for("/avatar-builder-v3/assets")) == 1  # the catalogue came from the cache


def test_permanent_400_for_some_combinations_still_gives_the_exact_count(server, tmp_path):
    def fault(req, attempt):
        if req.path.startswith("/bm-preview/"):
            traits = req.query
            if int(traits.get("hair", 0)) % 4 == 0:
                return ("status", 400, {})  # "400 errors on random configurations"
            if attempt == 1 and int(traits.get("nose", 0)) % 5 == 0:
                return ("status", 503, {"Retry-After": "0"})
        return None

    server.fault = fault
    stats = fetch_bitmoji(tmp_path / "raw", 60, base_url=server.url, overrides=FAST)
    assert stats.total == 60 and stats.failures.get("HTTP 400", 0) > 0
    assert all(int(r["traits"]["hair"]) % 4 for r in check_dataset(tmp_path / "raw"))
    fails = list(Dataset.open(tmp_path / "raw").failures())
    assert all(f["status"] == 400 and f["permanent"] and f["url"] for f in fails)


def test_a_moved_endpoint_falls_back_to_the_older_preview_form(server, tmp_path):
    server.fault = lambda req, attempt: ("status", 404, {}) if req.path.startswith("/bm-preview/") else None
    stats = fetch_bitmoji(tmp_path / "raw", 20, base_url=server.url, overrides=FAST)
    rows = check_dataset(tmp_path / "raw")
    assert stats.total == 20 and stats.failures == {}
    assert all("/avatar-builder-v3/preview/head?" in r["url"] for r in rows)
    assert len(server.requests_for("/bm-preview/")) == len(server.requests_for("/avatar-builder-v3/preview/")) == 20


def test_comics_mode_substitutes_ids_into_the_catalogue_src(server, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("280531978_2-s1\n934d9900-892a-4515-8beb-202d6c42a6ee-v1\n")
    stats = fetch_bitmoji(tmp_path / "raw", 30, mode="comics", avatar_ids=ids, base_url=server.url, overrides=FAST)
    assert stats.total == 30
    rows = check_dataset(tmp_path / "raw")
    for r in rows:
        assert r["mode"] == "comics" and r["avatar_id"] in ids.read_text()
        assert r["url"] == f"{server.url}/render/panel/{r['comic_id']}-{r['avatar_id']}-v1.png?transparent=1&palette=1"
    assert len({(r["comic_id"], r["avatar_id"]) for r in rows}) == 30
    # asking for more than exist: all of them, and a clear word about it
    every = fetch_bitmoji(tmp_path / "raw", 10_000, mode="comics", avatar_ids=ids, base_url=server.url,
                          overrides=FAST)
    assert every.total == 50 and "only 50 comics × avatars exist" in every.stopped


def test_offline_without_a_catalogue_says_both_ways_out(tmp_path):
    with pytest.raises(UserError, match=r"could not download the Bitmoji trait catalogue .*--traits FILE"):
        fetch_bitmoji(tmp_path / "raw", 5, base_url="http://127.0.0.1:9")
    with pytest.raises(UserError, match="not usable"):
        bad = tmp_path / "bad.json"
        bad.write_text('{"traits": {}}')
        fetch_bitmoji(tmp_path / "raw", 5, traits=bad, base_url="http://127.0.0.1:9")
    with pytest.raises(UserError, match="--avatar-ids"):
        fetch_bitmoji(tmp_path / "raw", 5, mode="comics", base_url="http://127.0.0.1:9")


def test_a_missing_catalogue_names_the_http_status(server, tmp_path):
    from gandata import assets

    with pytest.raises(UserError, match=r"\(HTTP 404\); give a local copy with --traits FILE"):
        assets.asset("Bitmoji trait catalogue", f"{server.url}/no/such/assets", "--traits")


def test_local_traits_file_and_a_dead_render_host_stop_clearly(tmp_path):
    traits = fixture_path("sources/libmoji_assets_2018.json")
    stats = fetch_bitmoji(tmp_path / "raw", 1000, traits=traits, base_url="http://127.0.0.1:9",
                          overrides={**FAST, "retries": 0})
    assert stats.total == 0 and "connection refused" in stats.stopped
    assert stats.provenance["traits"]["path"] == str(traits)


def _cli(server, out, count, *extra):
    return [sys.executable, "-m", "gandata.cli", "fetch", "bitmoji", "--count", str(count), "--out", str(out),
            "--base-url", server.url, "--json", *extra]


@pytest.mark.slow
def test_cli_sigkill_mid_run_then_resume(server, tmp_path):
    out = tmp_path / "raw"
    proc = subprocess.Popen(
        _cli(server, out, 150, "--rate", "60"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    kill_when(proc, lambda: lines_in(out / "manifest.jsonl") >= 50)
    run = subprocess.run(_cli(server, out, 150, "--rate", "1000"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["total"] == 150
    assert len(check_dataset(out)) == 150
    previews = Counter(server.requests_for("/bm-preview/"))
    assert sum(n - 1 for n in previews.values()) <= 8  # only what was in flight at the kill
    again = subprocess.run(_cli(server, out, 150), capture_output=True, text=True)
    assert again.returncode == 0 and json.loads(again.stdout)["accepted"] == 0


@pytest.mark.slow
def test_cli_dead_host_exits_non_zero_with_one_line(tmp_path):
    traits = fixture_path("sources/libmoji_assets_2018.json")
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "fetch", "bitmoji", "--count", "500", "--out",
                        str(tmp_path / "raw"), "--traits", str(traits), "--base-url", "http://127.0.0.1:9",
                        "--retries", "0", "--rate", "0"], capture_output=True, text=True)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("gandata: error:")]
    assert len(errors) == 1 and "connection refused" in errors[0] and "127.0.0.1:9" in errors[0]
    assert "fetched 0 new images" in r.stdout
