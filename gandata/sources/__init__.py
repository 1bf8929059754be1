"""One module per source: what to request and how to read the answer. Sources never open connections: they
produce :class:`gandata.fetch.Job` objects for the shared engine. Their addresses live in ``manifests/*.toml``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from ..fetch import FetchOptions

# the checkout's manifests/ (editable installs, tests), else the copy a wheel installs as gandata/manifests
_CHECKOUT = Path(__file__).resolve().parents[2] / "manifests"
MANIFESTS = _CHECKOUT if (_CHECKOUT / "bitmoji.toml").exists() else Path(__file__).resolve().parents[1] / "manifests"


def load_manifest(name: str, path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """The source description ``manifests/<name>.toml`` (or the file given), and the path it was read from.

    ``$GANDATA_MANIFESTS`` names another folder of manifests."""
    if path is None:
        folder = Path(os.environ.get("GANDATA_MANIFESTS", MANIFESTS))
        path = folder / f"{name}.toml"
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), str(path)
    except FileNotFoundError:
        raise UserError(f"the {name} manifest {path} is missing; give one with --manifest FILE") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(
            f"the manifest {path} is not valid TOML ({e}); fix it or give another with --manifest"
        ) from None


def politeness(manifest: dict) -> FetchOptions:
    """The engine options a manifest's ``[politeness]`` table sets (concurrency, rate, retries, timeout)."""
    from ..fetch import FetchOptions

    p = manifest.get("politeness", {})
    conc = int(p.get("concurrency", 8))
    return FetchOptions(concurrency=conc, per_host=conc, rate=p.get("rate"), retries=int(p.get("retries", 5)),
                        timeout=float(p.get("timeout", 30.0)), max_retry_after=float(p.get("max_wait", 900.0)))
