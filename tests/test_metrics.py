"""FID and KID: the numerics against closed forms, the eval path with a tiny random extractor on a tiny run, the
real-statistics cache, the weights lookup and its offline message, the weights download."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gandata.trainers import inception
from gandata.trainers.metrics import (
    EvalError,
    FeatureStats,
    TinyRandom,
    evaluate,
    fetch_weights,
    find_weights,
    frechet_distance,
    gaussian_stats,
    kid,
    load_extractor,
    verify_weights,
)
from gandata.trainers.options import TrainOptions
from gandata.trainers.train import train
from test_train import TINY, labelled_shards  # noqa: F401 (a fixture)

from gandata.assets import cache_dir
from gandata.localserver import LocalServer

pytestmark = pytest.mark.slow  # trains, starts processes, or runs Ray

# ------------------------------------------------------------------------------------------ closed forms


def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 50), rng.uniform(0.1, 3, 50)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_non_commuting_2d_gaussians_is_the_closed_form():
    # for 2×2: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) when M's eigenvalues are non-negative (M = S1 S2)
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
        s1, s2 = a @ a.T + 0.1 * np.eye(2), b @ b.T + 0.1 * np.eye(2)
        m = s1 @ s2
        tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_frechet_distance_of_a_set_with_itself_is_zero_even_when_rank_deficient():
    x = np.random.default_rng(2).normal(size=(10, 64))  # 10 samples in 64-d: covariance of rank 9
    mu, sigma = gaussian_stats(x)
    # the square roots of the ~1e-16 rounding eigenvalues of the null space add ~1e-8 each: zero relative to the trace
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_frechet_distance_of_samples_converges_to_the_gaussians():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3, 3))
    s2 = a @ a.T + 0.2 * np.eye(3)
    m2 = np.array([1.0, -0.5, 0.2])
    x, y = rng.multivariate_normal(np.zeros(3), np.eye(3), 100_000), rng.multivariate_normal(m2, s2, 100_000)
    w, v = np.linalg.eigh(s2)
    exact = m2 @ m2 + 3 + np.trace(s2) - 2 * np.sum(np.sqrt(w))  # Σ₁ = I: tr sqrt(Σ₂) from its eigenvalues
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(exact, rel=0.02)


def _poly_kernel_expectation(p: tuple, q: tuple, d: int) -> float:
    """E k(x, y) for independent Gaussians x ~ p, y ~ q and k = (x·y/d + 1)³, from their first three moments."""
    (m1, s1), (m2, s2) = p, q

    def moments(m, s):
        third = (np.einsum("i,j,k->ijk", m, m, m) + np.einsum("i,jk->ijk", m, s) + np.einsum("j,ik->ijk", m, s)
                 + np.einsum("k,ij->ijk", m, s))
        return s + np.outer(m, m), third

    (sq1, t1), (sq2, t2) = moments(m1, s1), moments(m2, s2)
    return 1 + 3 * (m1 @ m2) / d + 3 * np.sum(sq1 * sq2) / d**2 + np.sum(t1 * t2) / d**3


def test_kid_matches_the_closed_form_mmd_of_two_gaussians():
    d = 3
    rng = np.random.default_rng(1)
    a = rng.normal(size=(d, d))
    p, q = (np.zeros(d), np.eye(d)), (np.full(d, 0.5), a @ a.T * 0.5 + 0.5 * np.eye(d))
    exact = (
        _poly_kernel_expectation(p, p, d) + _poly_kernel_expectation(q, q, d) - 2 * _poly_kernel_expectation(p, q, d)
    )
    x, y = rng.multivariate_normal(*p, 20_000), rng.multivariate_normal(*q, 20_000)
    value, std = kid(x, y)
    assert value == pytest.approx(exact, rel=0.05) and std > 0
    same, same_std = kid(x, rng.multivariate_normal(*p, 20_000))
    assert abs(same) < 3 * same_std / np.sqrt(10)  # unbiased: around 0, negative values allowed


def test_kid_is_deterministic_per_seed_and_refuses_fewer_than_two_samples():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 1
    v1, s1 = kid(x, y, seed=0)
    v2, s2 = kid(x, y, seed=0)
    assert (v1, s1) == (v2, s2) and v1 > 0
    with pytest.raises(ValueError):
        kid(x[:1], y)


def test_streamed_statistics_equal_the_batch_ones_and_the_kid_pool_is_a_sample():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2500, 8)).astype(np.float32) * 3 + 1
    st = FeatureStats(8, pool=1000)
    for i in range(0, 2500, 64):
        st.add(x[i:i + 64])
    mu, cov = st.mean_cov()
    mu_ref, cov_ref = gaussian_stats(x)
    assert np.allclose(mu, mu_ref, atol=1e-9) and np.allclose(cov, cov_ref, atol=1e-8)
    pool = st.kid_pool()
    assert pool.shape == (1000, 8)
    rows = {r.tobytes() for r in x}
    assert all(r.tobytes() in rows for r in pool) and len({r.tobytes() for r in pool}) == 1000


# ------------------------------------------------------------------------------------------- the network


def test_fid_inception_has_pytorch_fids_parameters_and_gives_2048_features():
    net = inception.FIDInception().eval()
    state = net.state_dict()
    # the numbers pytorch-fid's module has (benchmarks/fid_equivalence.py): 21 820 094 + the fc's 2 065 392
    assert sum(t.numel() for t in state.values()) == 23_885_486
    assert "Mixed_7c.branch3x3dbl_3b.bn.running_var" in state and state["fc.weight"].shape == (1008, 2048)
    with torch.no_grad():
        f = net(torch.rand(2, 3, 48, 48))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()


# ----------------------------------------------------------------------------------------------- weights


def test_no_weights_offline_is_one_line_naming_the_file_and_both_ways_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GANDATA_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(EvalError) as e:
        find_weights()
    msg = str(e.value)
    assert "\n" not in msg
    for part in (inception.WEIGHTS_NAME, inception.WEIGHTS_SIZE, inception.WEIGHTS_SHA1,
                 "gandata fetch weights inception", "--inception-weights", "GANDATA_INCEPTION_WEIGHTS"):
        assert part in msg


def test_a_wrong_weights_file_is_refused_and_the_path_order_holds(tmp_path, monkeypatch):
    bad = tmp_path / "fake.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(EvalError, match="not the FID Inception weight file") as e:
        find_weights(bad)
    # the user's own file (it could be /etc/passwd): never "delete it"; what to give instead
    assert "delete" not in str(e.value) and f"--inception-weights must name {inception.WEIGHTS_NAME}" in str(e.value)
    with pytest.raises(EvalError, match="give another --out") as e:  # fetch weights --out onto a file of theirs
        fetch_weights("http://127.0.0.1:9/none", bad)
    assert "delete" not in str(e.value) and bad.read_bytes() == b"not the weights"
    monkeypatch.setenv("GANDATA_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(EvalError, match="GANDATA_INCEPTION_WEIGHTS names .*missing.pth"):
        find_weights()
    with pytest.raises(EvalError, match="not the FID Inception"):  # the option wins over the variable
        find_weights(bad)
    # the rest of the order: the variable, then gandata's cache, then torch.hub's (each file is checked, and the one
    # looked at first is the one refused)
    from gandata.trainers.metrics import _torch_hub_path, weights_cache_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for place in (weights_cache_path(), _torch_hub_path()):
        place.parent.mkdir(parents=True, exist_ok=True)
        place.write_bytes(b"a damaged copy")
    monkeypatch.setenv("GANDATA_INCEPTION_WEIGHTS", str(bad))
    with pytest.raises(EvalError, match=f"{bad} is not the FID"):  # the variable before both caches
        find_weights()
    monkeypatch.delenv("GANDATA_INCEPTION_WEIGHTS")
    with pytest.raises(EvalError, match=f"{weights_cache_path()} is not the FID"):  # gandata's cache before torch's
        find_weights()
    weights_cache_path().unlink()
    with pytest.raises(EvalError, match=f"{_torch_hub_path()} is not the FID"):
        find_weights()


def test_the_cli_says_the_offline_line_and_exits_1(tmp_path, tiny_run, labelled_shards):  # noqa: F811
    env = {"TORCH_HOME": str(tmp_path / "torch"), "GANDATA_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "eval", str(tiny_run), "--real", str(labelled_shards)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gandata: error: FID and KID need the Inception weights")


class _Files:
    """A file server that honours ``Range: bytes=N-`` (what a resumed download asks for)."""

    body = b""
    ranges: list = []

    @classmethod
    async def get(cls, request):
        from aiohttp import web

        rng = request.headers.get("Range")
        cls.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        return web.Response(status=206 if rng else 200, body=cls.body[start:])


@pytest.fixture
def file_server():
    with LocalServer([("GET", "/{name}", _Files.get)]) as server:
        yield server


def test_fetch_weights_resumes_verifies_and_never_leaves_a_bad_file(tmp_path, file_server):
    body = bytes(range(256)) * 4000
    _Files.body, _Files.ranges = body, []
    url = f"{file_server.url}/{inception.WEIGHTS_NAME}"
    dest = tmp_path / "w" / inception.WEIGHTS_NAME
    dest.parent.mkdir()
    (dest.parent / (dest.name + ".part")).write_bytes(body[:300_000])  # an interrupted earlier download
    sha1 = hashlib.sha1(body).hexdigest()
    r = fetch_weights(url, dest, sha1=sha1, sha256_prefix="x", progress=False)
    assert dest.read_bytes() == body and _Files.ranges == ["bytes=300000-"]
    assert r.sha256 == hashlib.sha256(body).hexdigest()
    assert verify_weights(dest, sha1=sha1, sha256_prefix="x") == r.sha256
    other = tmp_path / "w" / "other.pth"
    with pytest.raises(EvalError, match="wrong checksum"):
        fetch_weights(url, other, progress=False)  # the real checksum: these bytes are not the weights
    assert not other.exists() and not (tmp_path / "w" / "other.pth.part").exists()


# ---------------------------------------------------------------------------------------- the eval path


@pytest.fixture(scope="module")
def tiny_run(labelled_shards, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("run") / "wgan-gp"
    train(TrainOptions(kind="wgan-gp", shards=str(labelled_shards), out=str(out), kimg=0.1, batch=8, snap_kimg=0.05,
                       **TINY), progress=False)
    return out


def test_eval_with_a_tiny_extractor_records_everything_and_reuses_the_cache(tiny_run, labelled_shards):  # noqa: F811
    (tiny_run / "eval.jsonl").unlink(missing_ok=True)
    [line] = evaluate(
        tiny_run, str(labelled_shards), n=120, extractor="tiny-random", device="cpu", progress=False
    ).results
    assert np.isfinite(line["fid"]) and line["fid"] > 0 and np.isfinite(line["kid"])
    assert line["n_gen"] == 120 and line["n_real"] == 96 and line["kid_subset_size"] == 96
    assert line["extractor"].startswith("tiny-random") and line["resize"] == "bilinear-32"
    assert len(line["weights_sha256"]) == 64 and line["kid_subsets"] == 100 and line["metrics"] == ["fid", "kid"]
    assert line["checkpoint"] == sorted(tiny_run.glob("checkpoint-*.pt"))[-1].name
    stats = list(cache_dir().glob("fid-stats/*.npz"))  # the test's private cache
    assert len(stats) == 1
    # again: nothing recomputed, nothing appended
    stats[0].touch()
    before = stats[0].stat().st_mtime_ns
    [again] = evaluate(
        tiny_run, str(labelled_shards), n=120, extractor="tiny-random", device="cpu", progress=False
    ).results
    assert again["reused"] and again["fid"] == line["fid"] and stats[0].stat().st_mtime_ns == before
    assert len((tiny_run / "eval.jsonl").read_text().splitlines()) == 1
    # every checkpoint: the newest is reused, the others computed; the real statistics come from the cache
    lines = evaluate(tiny_run, str(labelled_shards), n=120, extractor="tiny-random", every=True, device="cpu",
                     progress=False).results
    assert len(lines) == len(list(tiny_run.glob("checkpoint-*.pt"))) >= 2 and sum("reused" in x for x in lines) == 1
    # a different N generated is a different result, not a reuse
    [other] = evaluate(
        tiny_run, str(labelled_shards), n=60, extractor="tiny-random", device="cpu", progress=False
    ).results
    assert "reused" not in other and other["n_gen"] == 60


def test_real_statistics_are_keyed_by_the_extractor(tiny_run, labelled_shards, monkeypatch):  # noqa: F811
    from gandata.trainers import metrics

    evaluate(tiny_run, str(labelled_shards), n=50, extractor="tiny-random", device="cpu", progress=False)
    calls = []
    real = metrics.real_stats
    monkeypatch.setattr(metrics, "real_stats", lambda *a, **k: calls.append(a[1].id) or real(*a, **k))
    other = metrics.Extractor("another", 16, "0" * 64, "bilinear-32", TinyRandom(seed=1).eval(), torch.device("cpu"))
    line = evaluate(tiny_run, str(labelled_shards), n=50, extractor=other, device="cpu", progress=False).results[0]
    assert calls and line["extractor"] == "another"
    assert len(list(cache_dir().glob("fid-stats/*.npz"))) == 2


def test_eval_cli_and_the_pluggable_extractor(tiny_run, labelled_shards, tmp_path):  # noqa: F811
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "eval", str(tiny_run), "--real", str(labelled_shards),
                        "--n", "40", "--metrics", "kid", "--extractor", "tiny-random", "--device", "cpu", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [line] = json.loads(r.stdout)["results"]
    assert "kid" in line and "fid" not in line and line["n_gen"] == 40
    bad = subprocess.run([sys.executable, "-m", "gandata.cli", "eval", str(tiny_run), "--real", str(labelled_shards),
                          "--metrics", "is", "--extractor", "tiny-random"], capture_output=True, text=True)
    assert bad.returncode == 2 and "choose from fid, kid" in bad.stderr  # a bad option value: a usage error (2)
    with pytest.raises(EvalError, match="no_such"):
        load_extractor("gandata.trainers.metrics:no_such", device="cpu")


def test_an_extractor_from_a_python_file(tiny_run, labelled_shards, tmp_path):  # noqa: F811
    """``--extractor path/to/file.py:function`` (how benchmarks/quality.py's classifier plugs into gandata eval)."""
    plugin = tmp_path / "my_features.py"
    plugin.write_text("from gandata.trainers.metrics import Extractor, TinyRandom\n"
                      "def features(device):\n"
                      "    return Extractor('my-features', 16, 'x' * 64, 'bilinear-32', TinyRandom(seed=3), device)\n")
    [line] = evaluate(tiny_run, str(labelled_shards), n=40, metrics="fid", extractor=load_extractor(
        f"{plugin}:features", device="cpu"), device="cpu", progress=False).results
    assert line["extractor"] == "my-features" and line["fid"] >= 0
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "eval", str(tiny_run), "--real", str(labelled_shards),
                        "--n", "40", "--metrics", "fid", "--extractor", f"{plugin}:features", "--device", "cpu",
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["results"][0]["extractor"] == "my-features", r.stderr
    with pytest.raises(EvalError, match="no such file"):
        load_extractor(f"{tmp_path / 'missing.py'}:features", device="cpu")


def test_training_evaluates_at_each_snapshot_when_asked(labelled_shards, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train(TrainOptions(kind="cdcgan", shards=str(labelled_shards), out=str(out), kimg=0.1, batch=8, snap_kimg=0.05,
                       eval="fid,kid", eval_n=48, eval_extractor="tiny-random", **TINY), progress=False)
    lines = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert len(lines) == len(list(out.glob("checkpoint-*.pt"))) >= 2
    assert all(x["n_gen"] == 48 and x["n_real"] == 96 and np.isfinite(x["fid"]) for x in lines)


def test_training_with_eval_and_no_weights_stops_before_the_first_step(labelled_shards, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "run"
    with pytest.raises(EvalError, match="need the Inception weights"):
        train(TrainOptions(kind="wgan-gp", shards=str(labelled_shards), out=str(out), kimg=0.1, batch=8,
                           eval="fid", **TINY), progress=False)
    assert not list(out.glob("checkpoint-*.pt"))
