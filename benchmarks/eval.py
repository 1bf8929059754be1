"""What FID/KID cost on this machine: the Inception forward pass (random weights: the speed is the same), the
Fréchet distance at 2 048-d against pytorch-fid's scipy ``sqrtm`` formulation (when scipy is installed), KID with
100 subsets of 1 000, and the real-statistics cache (first computation vs a cached read).

    python benchmarks/eval.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gandata.trainers.inception import FIDInception  # noqa: E402
from gandata.trainers.metrics import frechet_distance, gaussian_stats, kid  # noqa: E402


def random_inception(device):
    """The FID Inception with seeded random weights as an extractor
    (``--extractor benchmarks/eval.py:random_inception``): the speed of ``gandata eval`` where the real weights
    cannot be had (a machine with no network). Its numbers are meaningless."""
    from gandata.trainers import inception
    from gandata.trainers.metrics import Extractor, weights_sha256

    torch.manual_seed(0)
    net = FIDInception().eval().to(device)
    return Extractor("fid-inception-random-weights (speed only)", 2048, weights_sha256(net), inception.RESIZE, net,
                     torch.device(device))


def best(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    net = FIDInception().eval()
    x = torch.rand(32, 3, 64, 64)
    with torch.no_grad():
        net(x[:4])
        t, _ = best(lambda: net(x), 2)
    print(f"Inception forward, 64 px → 299, batch 32, {torch.get_num_threads()} threads: {32 / t:.1f} images/s")

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 2048)).astype(np.float32)
    b = (rng.normal(size=(4000, 2048)) * 1.1 + 0.05).astype(np.float32)
    (m1, s1), (m2, s2) = gaussian_stats(a), gaussian_stats(b)
    t_ours, fd = best(lambda: frechet_distance(m1, s1, m2, s2))
    print(f"Fréchet distance, 2048-d: ours {t_ours:.2f} s (FID {fd:.4f})")
    try:
        from scipy import linalg

        def scipy_fd():  # pytorch-fid's formulation
            covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
            covmean = covmean.real
            d = m1 - m2
            return d.dot(d) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)

        t_sp, fd_sp = best(scipy_fd)
        print(f"  scipy sqrtm (pytorch-fid): {t_sp:.2f} s (FID {fd_sp:.4f}); ours is {t_sp / t_ours:.1f}× faster, "
              f"relative difference {abs(fd - fd_sp) / fd_sp:.1e}")
    except ImportError:
        print("  (scipy not installed: no comparison)")
    t_kid, (k, s) = best(lambda: kid(a[:2000], b[:2000]), 1)
    print(f"KID, 100 subsets × 1000, 2048-d: {t_kid:.1f} s (KID {k:.4f} ± {s:.4f})")

    # the real-statistics cache, with the tiny extractor over 4 000 real 64-px images in 4 shards
    import cv2
    import webdataset as wds

    work = Path(tempfile.mkdtemp())
    os.environ["GANDATA_CACHE"] = str(work / "cache")
    from gandata.trainers.metrics import load_extractor, real_stats

    for s_i in range(4):
        with wds.TarWriter(str(work / f"r-{s_i:06d}.tar")) as w:
            for i in range(1000):
                img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                w.write({"__key__": f"s{s_i}i{i:04d}", "png": cv2.imencode(".png", img)[1].tobytes()})
    ext = load_extractor("tiny-random", device="cpu")
    t0 = time.perf_counter()
    first = real_stats(str(work), ext, progress=False)
    t1 = time.perf_counter()
    again = real_stats(str(work), ext, progress=False)
    t2 = time.perf_counter()
    assert again["cached"] and np.array_equal(first["mu"], again["mu"])
    print(f"real statistics of 4 000 images (tiny extractor): computed {t1 - t0:.2f} s, from the cache "
          f"{t2 - t1:.3f} s ({(t1 - t0) / (t2 - t1):.0f}×); with Inception the first pass costs 4 000 / the rate above")


if __name__ == "__main__":
    main()
