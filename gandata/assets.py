"""Run-time assets (trait catalogues, templates, cascades, CSVs): downloaded once from their real address,
verified, and cached; or taken from a local file the user names.

The cache lives in ``$GANDATA_CACHE`` (default ``$XDG_CACHE_HOME/gandata``, i.e. ``~/.cache/gandata``). A cached
copy is keyed by its URL, so a mirror given with ``--base-url`` never mixes with the real site's copy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import requests

from .errors import UserError
from .fetch import USER_AGENT
from .fileio import atomic_write


def cache_dir() -> Path:
    env = os.environ.get("GANDATA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gandata"


def asset(
    what: str,
    url: str,
    option: str,
    local: str | os.PathLike | None = None,
    sha256: str | None = None,
    check: Callable[[bytes], None] | None = None,
    refresh: bool = False,
    timeout: float = 60.0,
) -> tuple[bytes, dict]:
    """The bytes of an asset and where they came from (``{"path"|"url", "sha256"}``).

    ``what`` names it in messages ("Bitmoji trait catalogue"), ``option`` is the CLI option that points at a local
    copy. ``sha256`` pins the exact file; ``check`` validates content that has no fixed checksum (raise ValueError
    with the reason). Problems end in a :class:`UserError` that says both ways out.
    """

    def verify(data: bytes, origin: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if sha256 and digest != sha256.lower():
            raise UserError(f"{what} from {origin} has sha256 {digest}, expected {sha256}; "
                            f"delete it or give the right file with {option} FILE")
        if check is not None:
            try:
                check(data)
            except ValueError as e:
                raise UserError(f"{what} from {origin} is not usable ({e}); give a good copy with {option} FILE") from None
        return digest

    if local is not None:
        path = Path(local).expanduser()
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {what} {path} ({e.strerror}); check the path given to {option}") from None
        return data, {"path": str(path), "sha256": verify(data, str(path))}

    cached = cache_dir() / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{Path(url.split('?')[0]).name or 'asset'}"
    if cached.is_file() and not refresh:
        data = cached.read_bytes()
        try:
            return data, {"url": url, "cached": str(cached), "sha256": verify(data, str(cached))}
        except UserError:
            cached.unlink()  # a bad cached copy is fetched again
    try:
        resp = requests.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT})
        resp.raise_for_status()
    except requests.RequestException as e:
        reason = type(e).__name__ if not getattr(e, "response", None) else f"HTTP {e.response.status_code}"
        raise UserError(
            f"could not download the {what} from {url} ({reason}); give a local copy with {option} FILE, "
            "or run once with network access so that it is cached"
        ) from None
    data = resp.content
    digest = verify(data, url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, data)
    return data, {"url": url, "cached": str(cached), "sha256": digest}
