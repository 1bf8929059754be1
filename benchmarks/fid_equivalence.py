"""Is gandata's FID Inception (trainers/inception.py) the same function as pytorch-fid's? Run in an environment that has
pytorch-fid and torchvision (not gandata's: torchvision is not a dependency):

    python -m venv /tmp/fidvenv && /tmp/fidvenv/bin/pip install torch==2.13.0 numpy scipy pillow
    /tmp/fidvenv/bin/pip install --no-deps torchvision==0.28.0 pytorch-fid==0.3.0
    /tmp/fidvenv/bin/python benchmarks/fid_equivalence.py

The real weight file cannot be downloaded on the development machines, so both networks get the same *random* weight
file (every conv, batch-norm statistic and the fc layer drawn at random), placed where pytorch-fid looks for its
download. If the layouts, pools, resize and scaling agree, the 2 048-d features agree to float rounding for every
input size; any structural difference (a pool counting its padding, a swapped branch) shows as an O(1) error.
Then both Fréchet-distance implementations run on the same features.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

# torchvision's CUDA wheel next to CPU torch: its compiled ops do not load; pytorch-fid needs only the Python layers
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))

from gandata.trainers.inception import WEIGHTS_NAME, FIDInception  # noqa: E402
from gandata.trainers.metrics import frechet_distance, gaussian_stats  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    ours = FIDInception()
    state = ours.state_dict()
    for name, t in state.items():  # random statistics too, so that batch norm is not the identity
        if name.endswith("running_var"):
            state[name] = torch.rand_like(t) + 0.5
        elif name.endswith("running_mean") or name.endswith(".bias"):
            state[name] = torch.randn_like(t) * 0.1
        elif t.is_floating_point():
            state[name] = torch.randn_like(t) * (2.0 / max(1, t[0].numel())) ** 0.5
    ours.load_state_dict(state)
    ours.eval()

    home = Path(tempfile.mkdtemp())
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, home / "hub" / "checkpoints" / WEIGHTS_NAME)
    os.environ["TORCH_HOME"] = str(home)
    from pytorch_fid import fid_score
    from pytorch_fid.inception import InceptionV3

    theirs = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True).eval()
    n_ours = sum(t.numel() for t in ours.state_dict().values())
    n_theirs = sum(t.numel() for t in theirs.state_dict().values())
    print(f"state-dict elements: ours {n_ours}, pytorch-fid's blocks {n_theirs} (+ the unused fc: "
          f"{ours.fc.weight.numel() + ours.fc.bias.numel()})")
    worst = 0.0
    feats = {}
    for size in (32, 64, 96, 128, 299, 350):
        x = torch.rand(6, 3, size, size)
        with torch.no_grad():
            a = ours(x).double()
            b = theirs(x)[0].flatten(1).double()
        err = float((a - b).abs().max() / b.abs().max())
        worst = max(worst, err)
        feats[size] = (a.numpy(), b.numpy())
        print(f"{size:4d} px: features {tuple(a.shape)}, max |feature| {float(b.abs().max()):.3g}, "
              f"max |ours - pytorch-fid| / max |feature| = {err:.2e}")
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(3000, 64))
    x2 = rng.normal(size=(3000, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.2
    m1, s1 = gaussian_stats(x1)
    m2, s2 = gaussian_stats(x2)
    fd_ours = frechet_distance(m1, s1, m2, s2)
    fd_theirs = fid_score.calculate_frechet_distance(m1, s1, m2, s2)
    print(f"Fréchet distance on 64-d features: ours {fd_ours:.9f}, pytorch-fid {fd_theirs:.9f}, "
          f"relative difference {abs(fd_ours - fd_theirs) / fd_theirs:.1e}")
    print("SAME FUNCTION" if worst < 1e-4 else "DIFFERENT")


if __name__ == "__main__":
    main()
