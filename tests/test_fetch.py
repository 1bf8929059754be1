"""The fetch engine against a local fault-injecting server: retries, Retry-After, validation, opt-outs,
duplicates, the circuit breaker, pacing, Ctrl-C and SIGKILL."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import kill_when, lines_in, wait_for
from renderserver import RenderServer

from gandata import images
from gandata.datasets import Dataset
from gandata.fetch import FetchOptions, Job, fetch, opted_out, parse_retry_after, rebase


@pytest.fixture
def server():
    s = RenderServer(catalogues=False)
    yield s
    s.close()


def fast(**kw) -> FetchOptions:
    """Options for tests: tiny backoffs so that retries take milliseconds."""
    base = dict(concurrency=8, per_host=8, retries=3, timeout=5.0, backoff=0.01, max_backoff=0.05)
    base.update(kw)
    return FetchOptions(**base)


def img_jobs(server: RenderServer, n: int, start: int = 0) -> list[Job]:
    return [Job(f"img{i:04d}", f"{server.url}/img/{i}.png", {"n": i}) for i in range(start, start + n)]


def check_dataset(root: Path) -> list[dict]:
    ds = Dataset.open(root)
    rows = list(ds.rows())
    keys = [json.loads(line)["key"] for line in (root / "manifest.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)), "a key was stored twice"
    assert len({r["sha256"] for r in rows}) == len(rows), "a body was stored twice"
    for r in rows:
        data = ds.read_bytes(r)
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        im = images.decode(data)
        assert (im.width, im.height) == (r["width"], r["height"])
    return rows


def test_helpers():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert opted_out(["noai"]) == "noai"
    assert opted_out(["noindex, nofollow"]) == "noindex"
    assert opted_out(["otherbot: noai"]) is None and opted_out(["gandata: noimageai"]) == "noimageai"
    assert opted_out(["nofollow", "none"]) is None
    assert rebase("https://preview.bitmoji.com/a/b?x=1", "http://127.0.0.1:9") == "http://127.0.0.1:9/a/b?x=1"


def test_plain_fetch_stores_valid_images(server, tmp_path):
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 40), options=fast())
    assert stats["accepted"] == 40 and stats["failures"] == {} and stats["complete"]
    rows = check_dataset(tmp_path / "ds")
    assert {r["n"] for r in rows} == set(range(40))
    assert all(r["source"] == "test" and r["url"].startswith(server.url) and r["format"] == "png" for r in rows)
    assert len(server.requests_for("/img/")) == 40
    (ua,) = server.user_agents  # the engine names itself and its homepage
    assert ua.startswith("gandata/") and "http" in ua
    with Dataset.create(tmp_path / "ds") as ds:  # a re-run fetches nothing
        again = fetch(ds, "test", img_jobs(server, 40), options=fast())
    assert again["accepted"] == 0 and again["skipped_known"] == 40 and len(server.requests_for("/img/")) == 40


def test_transient_faults_are_retried_and_permanent_ones_recorded(server, tmp_path):
    def fault(req, attempt):
        n = int(req.match_info["name"].split(".")[0])
        if n % 10 == 0 and attempt == 1:
            return ("status", 500, {})
        if n % 10 == 1 and attempt == 1:
            return "reset"
        if n % 10 == 2 and attempt <= 2:
            return "truncate"
        if n % 10 == 3 and attempt == 1:
            return "html"
        if n % 10 == 4 and attempt == 1:
            return ("status", 429, {})  # no Retry-After: exponential backoff
        if n % 10 == 5:
            return ("status", 404, {})
        if n % 10 == 6:
            return ("status", 400, {})
        if n % 10 == 7 and attempt == 1:
            return ("slow", 3.0)
        return None

    server.fault = fault
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 40), options=fast(timeout=1.0))
    assert stats["accepted"] == 32
    assert stats["failures"] == {"HTTP 404": 4, "HTTP 400": 4}
    rows = check_dataset(tmp_path / "ds")
    assert sorted(r["n"] % 10 for r in rows) == sorted([0, 1, 2, 3, 4, 7, 8, 9] * 4)
    fails = {f["key"]: f for f in Dataset.open(tmp_path / "ds").failures()}
    assert {f["status"] for f in fails.values()} == {400, 404}
    assert all(f["permanent"] and f["attempts"] == 1 for f in fails.values())  # permanent: asked once
    attempts = Counter(p for p in server.requests_for("/img/"))
    assert attempts["/img/5.png"] == 1 and attempts["/img/2.png"] == 3 and attempts["/img/0.png"] == 2
    # a second run does not ask again for what failed permanently
    with Dataset.create(tmp_path / "ds") as ds:
        again = fetch(ds, "test", img_jobs(server, 40), options=fast())
    assert again["accepted"] == 0 and again["skipped_known"] == 40


def test_retries_run_out_on_a_persistent_error_page(server, tmp_path):
    server.fault = lambda req, attempt: "html" if req.match_info["name"] == "3.png" else None
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 5), options=fast(retries=2))
    assert stats["accepted"] == 4 and stats["failures"] == {"an HTML page, not an image": 1}
    f = next(Dataset.open(tmp_path / "ds").failures())
    assert f["attempts"] == 3 and f["permanent"] is False and f["status"] == 200
    assert server.attempts["/img/3.png"] == 3
    # not permanent: a later run tries it again (and now it works)
    server.fault = None
    with Dataset.create(tmp_path / "ds") as ds:
        assert fetch(ds, "test", img_jobs(server, 5), options=fast())["accepted"] == 1


JITTER = 0.04  # how late a request may arrive after the moment the client released it (the machine's scheduling)


def arrivals(server, prefix: str) -> list[float]:
    """When the server saw each request under ``prefix``: a request arrives at or after its slot, never before, so
    gaps measured from the first arrival are at least the client's, less the first request's own lateness."""
    return [t for t, p, _ in server.log if p.startswith(prefix)]


def paced(times: list[float], gap: float) -> bool:
    return all(t - times[0] >= i * gap - JITTER for i, t in enumerate(times))


def test_retry_after_is_honoured_for_the_whole_host(server, tmp_path):
    def fault(req, attempt):
        if req.match_info["name"] == "0.png" and attempt == 1:
            return ("status", 429, {"Retry-After": "1"})
        return None

    server.fault = fault
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 6), options=fast(concurrency=1, per_host=1))
    assert stats["accepted"] == 6 and stats["retries"] == 1
    times = arrivals(server, "/img/")
    assert len(times) == 7 and times[1] - times[0] >= 1.0 - JITTER  # nothing was sent to the host during the pause


def test_pacing_rate_per_host(server, tmp_path):
    with Dataset.create(tmp_path / "ds") as ds:
        fetch(ds, "test", img_jobs(server, 11), options=fast(rate=20.0))
    times = sorted(arrivals(server, "/img/"))
    assert len(times) == 11 and paced(times, 0.05)  # 20/s, never faster (unpaced, 11 arrive within ~20 ms)


def test_opt_out_and_duplicate_bodies(server, tmp_path):
    def fault(req, attempt):
        name = req.match_info["name"]
        if name == "1.png":
            return ("robots", "noai, noindex")
        if name == "2.png":
            return ("robots", "otherbot: noai")  # not for us
        if name in ("3.png", "4.png"):
            return ("same", "/img/0.png")
        return None

    server.fault = fault
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 6), options=fast(concurrency=1, per_host=1))
    assert stats["accepted"] == 3 and stats["duplicate_bodies"] == 2
    assert stats["failures"] == {"duplicate body": 2, "opted out (X-Robots-Tag: noai)": 1}
    assert {r["n"] for r in check_dataset(tmp_path / "ds")} == {0, 2, 5}


def test_circuit_breaker_stops_a_dead_host(server, tmp_path):
    served = Counter()

    def fault(req, attempt):
        served["n"] += 1
        return ("status", 503, {}) if served["n"] > 30 else None

    server.fault = fault
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 5000), target=5000,
                      options=fast(retries=1, breaker_window=40, concurrency=4, per_host=4))
    assert 26 <= stats["accepted"] <= 30 and not stats["complete"]
    msg = stats["stopped"]
    assert "HTTP 503" in msg and f"127.0.0.1:{server.port}" in msg and "run the same command again" in msg
    assert len(server.requests_for("/img/")) < 120  # it did not grind through 5000 dead URLs
    check_dataset(tmp_path / "ds")


def test_circuit_breaker_when_nothing_answers(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    jobs = [Job(f"k{i}", f"http://127.0.0.1:{port}/img/{i}.png") for i in range(1000)]
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", jobs, options=fast(retries=0, breaker_window=30))
    assert stats["accepted"] == 0 and "connection refused" in stats["stopped"]


WORKER = """
import sys
sys.path.insert(0, {tests!r})
from gandata.datasets import Dataset
from gandata.fetch import FetchOptions, Job, fetch
jobs = (Job("img%05d" % i, "{url}/img/%d.png" % i) for i in range(100000))
with Dataset.create({root!r}) as ds:
    stats = fetch(ds, "test", jobs, target={target}, options=FetchOptions(concurrency=4, per_host=4, rate={rate}))
import json; print(json.dumps(stats))
"""


def _script(server, root, target, rate):
    return WORKER.format(tests=str(Path(__file__).parent), url=server.url, root=str(root), target=target, rate=rate)


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_exact_count_with_few_refetches(server, tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _script(server, root, 200, 100.0)], stdout=subprocess.DEVNULL)
    kill_when(proc, lambda: lines_in(root / "manifest.jsonl") >= 60)
    before = len(list(Dataset.open(root).rows()))
    # files the killed run stored whose rows its group commit had not written yet: on disk, not listed (how many
    # depends on when the kill lands in the batch's second, so it is counted, not assumed)
    unlisted = sum(1 for p in (root / "images").rglob("*.png")) - before
    run = subprocess.run([sys.executable, "-c", _script(server, root, 200, 1000.0)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)
    rows = check_dataset(root)
    assert len(rows) == 200 and stats["total"] == 200 and stats["accepted"] == 200 - before
    requests = Counter(server.requests_for("/img/"))
    refetched = sum(n - 1 for n in requests.values())
    # nothing listed is asked again: at most the unlisted files and the requests in flight when it was killed
    assert refetched <= unlisted + 4, (refetched, unlisted)
    assert unlisted <= 100  # one group-commit second at the killed run's --rate 100


@pytest.mark.slow
def test_ctrl_c_finishes_writes_and_records_stats(server, tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(server, root, 100000, 50.0)], stdout=subprocess.PIPE, text=True
    )
    wait_for(proc, lambda: lines_in(root / "manifest.jsonl") >= 20)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    stats = json.loads(out)
    assert stats["interrupted"] and stats["stopped"].startswith("interrupted")
    rows = check_dataset(root)
    assert stats["total"] == len(rows) >= 20
    assert (root / "manifest.jsonl").read_bytes().endswith(b"\n")


def test_a_retry_after_over_max_wait_defers_the_url_to_the_end_of_the_run(server, tmp_path):
    """Retry-After: 99999 once (a later answer is fine) and always (never fine): neither makes the run sleep; the
    first is fetched at the end of the run, the second is recorded for a later run (not permanent)."""

    def fault(req, attempt):
        name = req.match_info["name"]
        if name == "2.png" and attempt == 1 or name == "4.png":
            return ("status", 503, {"Retry-After": "99999"})
        return None

    server.fault = fault
    with Dataset.create(tmp_path / "ds") as ds:
        stats = fetch(ds, "test", img_jobs(server, 8), options=fast(concurrency=1, per_host=1, max_wait=2.0))
    assert stats["accepted"] == 7 and stats["deferred"] == 2
    order = [p.rsplit("/", 1)[1] for p in server.requests_for("/img/")]  # one at a time: the order they were sent
    assert order[-2:] in (["2.png", "4.png"], ["4.png", "2.png"]) and order.count("4.png") == 2
    fail = next(Dataset.open(tmp_path / "ds").failures())
    assert fail["key"] == "img0004" and fail["permanent"] is False
    assert fail["error"] == "asked to wait 99999 s (over the max_wait of 2 s)"  # a record: no flag (issue 37)
