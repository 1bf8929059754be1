"""Shared test helpers. Real fixtures are read from ../shared/fixtures (beside the checkout), never copied here."""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("GANDATA_FIXTURES", REPO.parent / "shared" / "fixtures"))


REQUIRE_FIXTURES = os.environ.get("GANDATA_REQUIRE_FIXTURES") == "1"  # CI: a missing corpus is a failure


def fixture_path(rel: str) -> Path:
    """A file of the real-fixture corpus. Absent (a fresh clone has no ../shared/fixtures): the test is skipped with
    the reason, unless GANDATA_REQUIRE_FIXTURES=1 (CI), where it fails."""
    path = FIXTURES / rel
    if not path.exists():
        reason = (f"needs the real-fixture corpus ({FIXTURES} is absent; put shared/fixtures beside the checkout or "
                  "set GANDATA_FIXTURES)")
        if REQUIRE_FIXTURES:
            pytest.fail(f"missing test fixture {path}: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own run-time asset cache: none reads or fills the user's ~/.cache/gandata."""
    monkeypatch.setenv("GANDATA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 with a bucket, and the environment that points s3fs at it — set before the
    Ray cluster starts, so that its workers inherit it as a real cluster's nodes have their own credentials.
    None when the s3 extra or moto's server is not installed."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()
    # moto keeps its buckets in the process, across servers: each module's server gets its own bucket
    bucket = f"gandata-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}).mkdir(bucket)
    yield f"s3://{bucket}"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def s3(s3_server):
    if s3_server is None:
        pytest.skip("needs the s3 extra and moto's server: pip install -e '.[s3]' 'moto[server]'")
    return s3_server


@pytest.fixture
def anime_dir() -> Path:
    """The 12 real 512×512 anime tiles."""
    d = fixture_path("anime")
    files = sorted(d.glob("tadne_r*c*.jpg"))
    if len(files) != 12:
        pytest.fail(f"expected 12 tadne_r*c*.jpg files in {d}, found {len(files)}")
    return d


@pytest.fixture(scope="session")
def images12(tmp_path_factory) -> Path:
    """12 distinct 512×512 JPEGs named like the anime tiles: the real tiles when the corpus is there, else drawn
    ones — for tests that need some real-sized photos, not these particular faces."""
    real = FIXTURES / "anime"
    if len(list(real.glob("tadne_r*c*.jpg"))) == 12:
        return real
    d = tmp_path_factory.mktemp("images12")
    for r in range(2):
        for c in range(6):
            drawn_image(100 + r * 6 + c, (512, 512)).save(d / f"tadne_r{r}c{c}.jpg", quality=90)
    return d


@pytest.fixture
def images12_copy(tmp_path: Path, images12: Path) -> Path:
    d = tmp_path / "anime"
    shutil.copytree(images12, d)
    return d


@pytest.fixture
def anime_copy(tmp_path: Path, anime_dir: Path) -> Path:
    """A writable copy of the anime tiles (for tests that add, damage or remove files)."""
    d = tmp_path / "anime"
    shutil.copytree(anime_dir, d)
    return d


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def drawn_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A distinct, deterministic RGB picture: a colour field with a few shapes."""
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        x1, y1 = x0 + rng.randrange(8, 40), y0 + rng.randrange(8, 40)
        d.ellipse((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))
    return im


def write_drawn_folder(folder: Path, n: int, start: int = 0, size: tuple[int, int] = (96, 80)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"img{i:05d}.png"
        drawn_image(i, size).save(p)
        paths.append(p)
    return paths


def labelled_set(base: Path, n: int, names: tuple[str, ...] = ("zebra", "ant", "moth"), field: str = "kind",
                 **shard_options) -> Path:
    """A real labelled shard set at ``base/set`` (from ``base/raw``: ``n`` drawn 40² images whose ``field`` cycles
    through ``names``), 32 px unless ``shard_options`` say otherwise."""
    from gandata.datasets import Dataset
    from gandata.shard import ShardOptions, shard

    with Dataset.create(base / "raw") as ds:
        for i in range(n):
            ds.add(f"k{i:03d}", png_bytes(drawn_image(i, (40, 40))), "png",
                   {"width": 40, "height": 40, "source": "t", field: names[i % len(names)]})
    options = {"size": 32, "label_field": field, "val_fraction": 0.2, "min_shards": 1, **shard_options}
    shard([base / "raw"], base / "set", "set", ShardOptions(**options))
    return base / "set"


def tar_of(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar of ``members`` (name, bytes), as any tool writes one: names are not checked here."""
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def lines_in(path: Path) -> int:
    """Whole lines written so far to a JSONL file (0 while it does not exist)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    """Wait until ``ready()``; fail if the process ended first (the test then interrupts nothing) or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail("the command finished before the interruption point; the test needs more work to interrupt")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the interruption point was not reached in time")
        time.sleep(0.005)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (see ``wait_for``)."""
    wait_for(proc, ready, timeout)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


# What a test run may leave in the checkout: caches of the tools themselves. Anything else is a test (or the code it
# runs) writing into the working directory — once a click option turned s3://bucket/x into a local s3:/bucket/x and
# a later commit took those files in.
_OWN_LITTER = ("__pycache__", ".pytest_cache", ".ruff_cache", ".egg-info", ".ci-venv", ".venv")


def _checkout_entries() -> set[str] | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=normal"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None  # not a git checkout (an unpacked sdist): nothing to compare
    return {line[3:] for line in out.stdout.splitlines()
            if line[:2] in ("??", "!!") and not any(m in line for m in _OWN_LITTER)}


COMPILE_CACHES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _precompiled_headers() -> Path:
    """Where inductor keeps its precompiled C++ header (150 MB): under the temporary folder whatever its cache
    variables say (torch._inductor.codecache._HEADER_DIR)."""
    import getpass

    return Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}" / "precompiled_headers"


def pytest_configure(config) -> None:
    """torch.compile's caches (inductor's C++ and Triton kernels: hundreds of MB) go to a folder of this run, in this
    process and every command it starts, and are removed when the run ends (pytest_unconfigure), as is the
    precompiled header inductor writes beside them when the run made it: the suite leaves nothing in the temporary
    folder but the folders of failed tests (pyproject.toml's retention)."""
    config._compile_cache = Path(tempfile.mkdtemp(prefix="gandata-tests-compile-"))
    for name in COMPILE_CACHES:
        os.environ[name] = str(config._compile_cache / name.split("_")[0].lower())
    if not hasattr(config, "workerinput"):  # the run itself, not an xdist worker (they end before it)
        config._headers_before = _precompiled_headers().exists()


def pytest_unconfigure(config) -> None:
    cache = getattr(config, "_compile_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    if getattr(config, "_headers_before", True) is False:
        headers = _precompiled_headers()
        shutil.rmtree(headers, ignore_errors=True)
        with contextlib.suppress(OSError):
            headers.parent.rmdir()  # the user's inductor folder, when this run made it and it holds nothing else


def pytest_sessionstart(session) -> None:
    session.config._checkout_before = _checkout_entries()


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run when the tests left files in the checkout (they must write under tmp_path only)."""
    before = getattr(session.config, "_checkout_before", None)
    after = _checkout_entries() if before is not None else None
    if before is None or after is None or getattr(session.config.option, "collectonly", False):
        return
    left = sorted(after - before)
    if left:
        print(f"\nthe tests left {len(left)} path(s) in the checkout (tests must write under tmp_path): "
              + ", ".join(left[:10]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    """Skips grouped by reason, one line each (a fresh clone skips the tests that need the real-fixture corpus)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{n} skipped: {reason}")
