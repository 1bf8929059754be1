"""Run-time assets (trait catalogues, templates, cascades, CSVs, weight files): downloaded once from their real
address, verified, and cached; or taken from a local file the user names. The one owner of one-off HTTP downloads
(the crawl and image downloads go through the asynchronous engine in ``fetch.py`` instead).

The cache lives in ``$GANDATA_CACHE`` (default ``$XDG_CACHE_HOME/gandata``, i.e. ``~/.cache/gandata``). A cached
copy is keyed by its URL, so a mirror given with ``--base-url`` never mixes with the real site's copy.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from . import USER_AGENT
from .errors import UserError, hint, named
from .fileio import atomic_write


def cache_dir() -> Path:
    env = os.environ.get("GANDATA_CACHE")
    if env:
        return Path(os.path.abspath(os.path.expanduser(env)))  # absolute: a Ray task elsewhere gets the same path
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gandata"


def failure(e: requests.RequestException) -> str:
    """What went wrong with a request, in a few words (``HTTP 404``, ``ConnectionError``)."""
    answer = getattr(e, "response", None)  # a Response is falsy for 4xx/5xx: compare with None
    return f"HTTP {answer.status_code}" if answer is not None else type(e).__name__


def download(url: str, part: Path, label: str, progress: bool = False, timeout: float = 60.0) -> None:
    """Stream ``url`` into ``part``, continuing a partial ``part`` with a Range request (a server that ignores it
    sends the whole file, which is then written from the start). The caller verifies and renames the file.
    Raises ``requests.RequestException`` (see :func:`failure`)."""
    from .progress import Progress

    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416:  # the partial file is already whole
            return
        resp.raise_for_status()
        if resp.status_code != 206:
            have = 0
        total = int(resp.headers.get("Content-Length", 0)) + have or None
        with open(part, "ab" if have else "wb") as f, Progress(label, total, enabled=progress) as bar:
            bar.advance(have)
            for chunk in resp.iter_content(1 << 20):
                f.write(chunk)
                bar.advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())


MAX_ASSET_BYTES = 64 << 20  # a cascade is 247 KB, a trait catalogue a few MB: anything far larger is a mistake


def asset(
    what: str,
    url: str,
    option: str,
    local: str | os.PathLike | None = None,
    sha256: str | None = None,
    parse: Callable[[bytes], Any] | None = None,
    refresh: bool = False,
    timeout: float = 60.0,
) -> tuple[Any, dict]:
    """An asset — its bytes, or what ``parse`` made of them — and where it came from (``{"path"|"url", "sha256"}``).

    ``what`` names it in messages ("Bitmoji trait catalogue"), ``option`` is the option that points at a local
    copy (its key, ``traits``; a flag, ``--cascade``, is taken as its key), named in the form that works where the
    message is shown (:func:`~gandata.errors.hint`). ``sha256`` pins the exact file; ``parse`` reads content that
    has no fixed checksum and raises ValueError with the reason when it is not usable. Problems end in a
    :class:`UserError` that says both ways out.
    """
    option = option.removeprefix("--").replace("-", "_")
    give = hint(option, "FILE")

    def verify(data: bytes, origin: str) -> tuple[Any, str]:
        digest = hashlib.sha256(data).hexdigest()
        if sha256 and digest != sha256.lower():
            raise UserError(f"{what} from {origin} has sha256 {digest}, expected {sha256}; "
                            f"delete it or give the right file with {give}")
        if parse is None:
            return data, digest
        try:
            return parse(data), digest
        except ValueError as e:
            raise UserError(f"{what} from {origin} is not usable ({e}); give a good copy with {give}") from None

    if local is not None:
        path = Path(local).expanduser()
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO, a folder: never read whole
                raise UserError(f"{named(option, path)} is not a regular file; give the {what} file itself")
            if st.st_size > MAX_ASSET_BYTES:
                raise UserError(f"{named(option, path)} has {st.st_size} bytes, more than any {what} "
                                f"({MAX_ASSET_BYTES >> 20} MiB at most); check the path")
            data = path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {what} {path} ({e.strerror}); check the path given to {named(option)}") \
                from None
        value, digest = verify(data, str(path))
        return value, {"path": str(path), "sha256": digest}

    cached = cache_dir() / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{Path(url.split('?')[0]).name or 'asset'}"
    if cached.is_file() and not refresh:
        try:
            value, digest = verify(cached.read_bytes(), str(cached))
            return value, {"url": url, "cached": str(cached), "sha256": digest}
        except UserError:
            cached.unlink()  # a bad cached copy is fetched again
    try:
        resp = requests.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT}, stream=True)
        resp.raise_for_status()
        body = bytearray()
        for chunk in resp.iter_content(1 << 20):
            body += chunk
            if len(body) > MAX_ASSET_BYTES:
                raise UserError(f"the {what} at {url} is over {MAX_ASSET_BYTES >> 20} MiB, more than it can be; "
                                f"check the address, or give a local copy with {give}")
        resp._content = bytes(body)
    except requests.RequestException as e:
        raise UserError(
            f"could not download the {what} from {url} ({failure(e)}); give a local copy with {give}, "
            "or run once with network access so that it is cached"
        ) from None
    value, digest = verify(resp.content, url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(cached, resp.content)
    return value, {"url": url, "cached": str(cached), "sha256": digest}
