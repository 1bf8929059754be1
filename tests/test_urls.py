"""`gandata fetch urls`: lists in txt, csv, tsv and jsonl; columns kept; bad lists refused clearly."""

from __future__ import annotations

import json

import pytest
from renderserver import RenderServer
from test_fetch import check_dataset

from gandata.errors import UserError
from gandata.sources.urls import fetch_urls, read_url_list


@pytest.fixture
def server():
    s = RenderServer(catalogues=False)
    yield s
    s.close()


def test_list_formats(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nhttp://x/1.png\n\n  http://x/2.png  \n")
    assert list(read_url_list(tmp_path / "a.txt")) == [("http://x/1.png", {}), ("http://x/2.png", {})]
    (tmp_path / "a.csv").write_text('image,title,width\nhttp://x/1.png,"Rem, smiling",512\n')
    assert list(read_url_list(tmp_path / "a.csv", "image")) == [
        ("http://x/1.png", {"title": "Rem, smiling", "width": "512"})
    ]
    (tmp_path / "a.tsv").write_text("url\tartist\nhttp://x/1.png\tme\n")
    assert list(read_url_list(tmp_path / "a.tsv")) == [("http://x/1.png", {"artist": "me"})]
    (tmp_path / "a.jsonl").write_text('{"url": "http://x/1.png", "tags": ["a", "b"], "score": 3}\n\n')
    assert list(read_url_list(tmp_path / "a.jsonl")) == [("http://x/1.png", {"tags": ["a", "b"], "score": 3})]
    with pytest.raises(UserError, match=r"no 'url' column \(columns: image, title, width\)"):
        list(read_url_list(tmp_path / "a.csv"))
    (tmp_path / "b.jsonl").write_text('{"url": "http://x/1.png"}\nnot json\n')
    with pytest.raises(UserError, match="line 2"):
        list(read_url_list(tmp_path / "b.jsonl"))


def test_fetch_a_csv_list(server, tmp_path):
    lst = tmp_path / "list.csv"
    rows = ["url,title,width"] + [f"{server.url}/img/{i}.png,pic {i},999" for i in range(30)]
    rows += [f"{server.url}/img/3.png,again,1", "not a url,junk,1"]
    lst.write_text("\n".join(rows) + "\n")
    out = tmp_path / "raw"
    stats = fetch_urls(lst, "anime", out, overrides={"backoff": 0.01, "retries": 1})
    assert stats.accepted == 30 and stats.skipped_known == 1
    assert stats.failures == {"invalid URL": 1}
    got = check_dataset(out)
    assert {r["title"] for r in got} == {f"pic {i}" for i in range(30)}
    assert all(r["list_width"] == "999" and r["width"] == 48 and r["key"].startswith("anime-") for r in got)
    assert json.loads((out / "stats.json").read_text())["stage"] == "fetch urls"
    again = fetch_urls(lst, "anime", out, limit=10)
    assert again.accepted == 0 and again.complete


def test_bad_lists(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        fetch_urls(tmp_path / "nope.txt", "x", tmp_path / "out")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(UserError, match="holds no URLs"):
        fetch_urls(tmp_path / "empty.txt", "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing created for a bad list
