"""Where a path may be an object-store URL: ``s3://bucket/prefix``, ``gs://…``, ``file://…`` (fsspec), or a local path.

The one owner of reading and writing through fsspec. Object stores have no directories and no rename, so:

* a file is written whole, as one object (``put``): an S3 PUT, or a multipart upload completed in one call, becomes
  visible all at once or not at all — the object store's atomic write, as a rename is the local disk's;
* nothing relies on a "folder" existing: listing a prefix is how its objects are found;
* a local path is written with :func:`gandata.fileio.atomic_write` (temporary name, fsync, rename).

fsspec and the store's driver are imported only when a URL is used (``pip install 'gandata[s3]'`` or
``'gandata[gcs]'``); a local path never needs them.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from .errors import UserError
from .fileio import atomic_file, atomic_write

# a scheme fsspec reads (not https:// or pipe:, which WebDataset opens itself; not a Windows drive letter)
_URL_RE = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|file|memory)://")
_EXTRA = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


def is_url(path: str | os.PathLike) -> bool:
    """A path fsspec must open (an object store, ``file://``, fsspec's ``memory://``)."""
    return bool(_URL_RE.match(str(path)))


def unfetchable(url: str) -> str | None:
    """Why the engine will not ask for ``url`` (None: it will). Only http and https with a host are fetched — no
    ``file:``, ``ftp:``, ``data:``, ``javascript:``, ``mailto:`` — and a redirect may only lead to http(s) too
    (any host: CDNs redirect across hosts; at most 5 hops)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "invalid URL"
    if not parts.scheme:
        return "invalid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL ({parts.scheme}:)"
    if not parts.hostname:
        return "invalid URL (no host)"
    return None


def filesystem(url: str):
    """``(fsspec filesystem, path within it)`` for an object-store URL, or a one-line error naming the extra."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise UserError(f"{url}: reading object storage needs fsspec; pip install 'gandata[s3]' (or [gcs])") from None
    scheme = url.split("://", 1)[0]
    try:
        fs, path = url_to_fs(url, **_options(scheme))
    except ImportError as e:
        extra = _EXTRA.get(scheme, scheme)
        raise UserError(f"{url}: {scheme}:// needs its fsspec driver ({e}); pip install 'gandata[{extra}]'") from None
    if scheme in ("s3", "s3a") and isinstance(getattr(fs, "retries", None), int):
        fs.retries = 2  # s3fs's own retries of a failed call (5 by default), on top of botocore's: bounded waits
    return fs, path


def timeout() -> float:
    """Seconds an object store may take to connect or to answer one read (``GANDATA_STORE_TIMEOUT``, default 30):
    a store that stopped answering is an error in bounded time, never a hang."""
    try:
        return max(0.5, float(os.environ.get("GANDATA_STORE_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def _options(scheme: str) -> dict:
    """Connection options: timeouts and bounded retries (botocore's two attempts), and from the
    environment ``AWS_ENDPOINT_URL`` (MinIO, a local test server, any S3-compatible store), which s3fs does not
    read itself in every version."""
    if scheme not in ("s3", "s3a"):
        return {}
    t = timeout()
    opts: dict = {"config_kwargs": {"connect_timeout": t, "read_timeout": t,
                                    "retries": {"max_attempts": 2, "mode": "standard"}}}
    if os.environ.get("AWS_ENDPOINT_URL"):
        opts["client_kwargs"] = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return opts


class StoreError(UserError):
    """An object store that refused or could not be reached, in one line: which URL, why, what to check."""


def _why(e: BaseException) -> str:
    name = type(e).__name__
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the store's default endpoint"
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return ("no credentials for the store; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile) on "
                "every machine that runs gandata")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError") \
            or isinstance(e, (ConnectionError, TimeoutError)):
        return f"cannot reach {endpoint} ({name}); check AWS_ENDPOINT_URL and the network"
    if isinstance(e, PermissionError):
        return "access denied; check the credentials' rights on this bucket"
    first = (str(e).splitlines() or [""])[0][:200]
    return f"{name}: {first}"


def _store_errors(write: bool, arg: int = 0):
    """Errors of an object store as one :class:`StoreError` line. A missing object stays ``FileNotFoundError`` for
    readers (they test for it); for a write it means the bucket is missing."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            url = args[arg]
            if not is_url(url):
                return fn(*args, **kwargs)
            try:
                return fn(*args, **kwargs)
            except UserError:
                raise
            except (FileNotFoundError, NotADirectoryError) as e:
                if not write:
                    raise
                raise StoreError(f"{url}: the bucket does not exist ({str(e)[:120]}); create it, or check the "
                                 "name") from None
            except Exception as e:  # botocore's and the driver's own types: none is a user's traceback
                raise StoreError(f"{url}: {_why(e)}") from None

        return wrapper

    return deco


def absolute(path: str | os.PathLike) -> str:
    """An object-store URL as it is; a local path made absolute (``~`` expanded) — what a task on another machine,
    started from another folder, must be given."""
    return str(path) if is_url(path) else os.path.abspath(os.path.expanduser(str(path)))


def join(base: str | os.PathLike, *names: str) -> str:
    """``base/name`` for a URL or a local path."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base, *names))


@_store_errors(write=False)
def exists(path: str | os.PathLike) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = filesystem(str(path))
    return fs.exists(p)


@_store_errors(write=False)
def info(url: str) -> dict:
    """An object's metadata (``size``, and the store's ETag or modification time)."""
    fs, p = filesystem(url)
    return fs.info(p)


@_store_errors(write=False)
def read_bytes(path: str | os.PathLike, start: int | None = None, end: int | None = None) -> bytes:
    """A file's bytes, or the range ``[start, end)`` of them (one ranged GET on an object store)."""
    if not is_url(path):
        with open(path, "rb") as f:
            f.seek(start or 0)
            return f.read() if end is None else f.read(end - (start or 0))
    fs, p = filesystem(str(path))
    return fs.cat_file(p, start=start, end=end)


@_store_errors(write=True)
def put(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``, atomically: one object on a store, a renamed temporary locally."""
    if not is_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        return
    fs, p = filesystem(str(path))
    fs.pipe_file(p, data)


@_store_errors(write=True)
def put_from(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """``write(f)``'s bytes as the whole of ``path``, atomically, without holding them in memory: a renamed
    temporary locally, a temporary file uploaded as one object on a store."""
    if not is_url(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            write(f)
        return
    with tempfile.TemporaryDirectory(prefix="gandata-put-") as tmp:
        local = Path(tmp) / "object"
        with open(local, "wb") as f:
            write(f)
        fs, p = filesystem(str(path))
        fs.put_file(str(local), p)


@_store_errors(write=True, arg=1)
def put_file(local: str | os.PathLike, path: str | os.PathLike) -> None:
    """Upload a finished local file as the object ``path`` (atomic: visible only when the upload completes)."""
    if not is_url(path):
        raise ValueError("put_file is for object-store destinations")
    fs, p = filesystem(str(path))
    fs.put_file(str(local), p)


@_store_errors(write=True)
def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``src`` to ``dst`` whole: a rename on a local disk; on an object store a server-side copy (``dst`` appears
    whole or not at all), then ``src`` is deleted."""
    if not is_url(src):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return
    fs, p = filesystem(str(src))
    _, q = filesystem(str(dst))
    fs.copy(p, q)
    fs.rm_file(p)


@_store_errors(write=True)
def remove(path: str | os.PathLike) -> None:
    """Delete a file or object; nothing when it is not there."""
    if not is_url(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, p = filesystem(str(path))
    try:
        fs.rm_file(p)
    except FileNotFoundError:
        pass


@_store_errors(write=False)
def names(prefix: str | os.PathLike) -> list[str]:
    """The file names directly under a folder or prefix (sorted; none when it does not exist)."""
    return _entries(prefix, folders=False)


@_store_errors(write=False)
def folders(prefix: str | os.PathLike) -> list[str]:
    """The names of the folders (on a store: the common prefixes) directly under a folder or prefix (sorted; none
    when it does not exist)."""
    return _entries(prefix, folders=True)


def _entries(prefix: str | os.PathLike, folders: bool) -> list[str]:
    if not is_url(prefix):
        try:
            return sorted(e.name for e in os.scandir(prefix)
                          if (e.is_dir(follow_symlinks=False) if folders else e.is_file()))
        except (FileNotFoundError, NotADirectoryError):
            return []
    fs, p = filesystem(str(prefix))
    try:
        found = fs.ls(p.rstrip("/"), detail=True, refresh=True)
    except FileNotFoundError:
        return []
    kind = "directory" if folders else "file"
    return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in found if e.get("type") == kind)


@_store_errors(write=False)
def tags(prefix: str) -> dict[str, str]:
    """Every object under a store's prefix, by its path below it: its size and ETag (or another checksum the store
    keeps, else its date) — what names an object's content without reading it (a new PUT gets a new ETag). One
    listing request per thousand objects."""
    fs, p = filesystem(prefix)
    root = p.rstrip("/") + "/"
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {name[len(root):]: tag(e) for name, e in found.items() if name.startswith(root)}


def tag(info: dict) -> str:
    """An object's size and content tag from its metadata (``info``, a listing's entry)."""
    mark = next((info[k] for k in ("ETag", "etag", "md5Hash", "crc32c", "LastModified", "mtime") if info.get(k)), "")
    return f"{info.get('size')}:{str(mark).strip(chr(34))}"


def streams(url: str) -> bool:
    """Whether :func:`open_body` streams ``url`` as one request (an S3-compatible store), rather than reading it a
    block at a time."""
    return urlsplit(str(url)).scheme.lower() in ("s3", "s3a")


@_store_errors(write=False)
def open_body(url: str) -> tuple[Callable[[int], bytes], Callable[[], None]]:
    """The object ``url`` of an S3-compatible store as one streamed GET (the store's bounded retries until it
    answers): ``read(n)`` returns what has arrived, up to ``n`` bytes (b"" at the end; a body cut short raises),
    ``close()`` lets the connection go. A missing object is ``FileNotFoundError``."""
    from fsspec.asyn import sync

    fs, p = filesystem(url)
    bucket, key, version = fs.split_path(p)
    answer = fs.call_s3("get_object", Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))
    body = answer["Body"]
    return (lambda n: sync(fs.loop, body.read, n)), (lambda: fs.loop.call_soon_threadsafe(body.close))


@_store_errors(write=False)
def open_stream(url: str):
    """A readable binary stream of the object ``url`` (the trainers' tar reader takes it as it comes)."""
    fs, p = filesystem(url)
    return fs.open(p, "rb", block_size=8 << 20)
