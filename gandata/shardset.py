"""The shard-set format — the one module that knows it. Everything else (shard, inspect, the trainers, eval) calls
this.

A shard set is a folder of WebDataset tars, ``<name>-<split>-<NNNNNN>.tar``, each sample stored as consecutive
members ``<key>.<ext>`` (``png``/``jpg``/``webp``, ``json``, ``cls``), and ``dataset.json``: the resolution, counts
per split, every shard's name, sample count, byte size and sha256, the label names and counts, and where the data
came from. The tars of one set lie in a **generation** folder named by their content (``gen-<16 hex digits>/``, a
digest of their names and sha256s) and ``dataset.json`` names them there (``gen-…/x-train-000000.tar``): a set
replaced by another is written into a new generation beside it, and the one atomic write of ``dataset.json``
switches readers from the old set to the new — a reader sees one whole set or the other, never a mix, on a disk
and on an object store alike. (Sets written before generations name their tars at the top; they are read as they
are.)

Here: writing a reproducible tar (:func:`write_tar`) and the description (:func:`write_info`); generations
(:func:`generation`, :func:`remove_leftovers`); reading the description (:class:`ShardSet`); resolving a user's
shard spec to tar URLs (:func:`resolve`, :func:`local_tars`); reading tars as samples (:func:`tar_members`, which
requires the end-of-archive marker, and :func:`samples`, which compares a shard's samples with its description);
and checking a set against its description (:func:`verify`; one shard as it is read, :func:`checked`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import braceexpand

from . import storage
from .declarations import SHARD
from .errors import FormatError, UserError, hint
from .fileio import atomic_file, json_bytes
from .options import COLOR, Color

INFO = "dataset.json"
SPLITS = ("train", "val")
TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z: fixed so that tars are byte-reproducible
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
MAX_MEMBER_BYTES = 256 << 20  # one image file or tar member; anything larger is refused before it is read
URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*:")  # https://…, pipe:…, s3://… (a Windows drive letter is not lower-case)
_MEMBER_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset's rule: key = path up to the basename's first dot
_SHARD_RE = re.compile(r"^(.*-)(\d{6})(\.tar)$")
GENERATION_RE = re.compile(r"^gen-[0-9a-f]{16}$")


def shard_name(name: str, split: str, index: int) -> str:
    return f"{name}-{split}-{index:06d}.tar"


def stale_shard_re(name: str) -> re.Pattern:
    """Tars of the set ``name`` (to remove those a new write no longer lists)."""
    return re.compile(rf"^{re.escape(name)}-(train|val)-\d{{6}}\.tar$")


def generation(shards: list[tuple[str, str]]) -> str:
    """The generation folder of a set's tars, ``[(file name, sha256)]`` in the description's order: ``gen-`` and 16
    hex digits of their digest — the same tars make the same folder, on any engine, machine or run."""
    return "gen-" + hashlib.sha256(json.dumps(shards).encode()).hexdigest()[:16]


def leftovers(folder: str | Path, info: dict) -> list[str]:
    """What a set's folder holds of the set's other generations: the tars of every generation folder the
    description does not name, and top-level tars of the set's name it does not name (a set written before
    generations) — left by the swap to this one, or by a swap that was interrupted."""
    named = {s["name"] for v in info["splits"].values() for s in v.get("shards", [])}
    gens = {n.split("/", 1)[0] for n in named if "/" in n}
    found = [storage.join(folder, g, f) for g in storage.folders(folder) if GENERATION_RE.match(g) and g not in gens
             for f in storage.names(storage.join(folder, g))]
    flat = stale_shard_re(info.get("name", ""))
    return found + [storage.join(folder, f) for f in storage.names(folder) if flat.match(f) and f not in named]


def remove_leftovers(folder: str | Path, info: dict) -> None:
    """Remove :func:`leftovers` (and the emptied generation folders of a local set)."""
    for path in leftovers(folder, info):
        storage.remove(path)
    if not storage.is_url(folder):
        for g in storage.folders(folder):
            if GENERATION_RE.match(g):
                with contextlib.suppress(OSError):  # a generation still in use is not empty
                    os.rmdir(Path(folder) / g)


def brace_pattern(names: list[str]) -> str | None:
    """``a-train-{000000..000007}.tar`` for consecutive shard names (None for none)."""
    if not names:
        return None
    if len(names) == 1:
        return names[0]
    m1, m2 = _SHARD_RE.match(names[0]), _SHARD_RE.match(names[-1])
    return f"{m1.group(1)}{{{m1.group(2)}..{m2.group(2)}}}{m1.group(3)}" if m1 and m2 else None


def split_member(name: str) -> tuple[str, str] | None:
    """A member name → (key, extension in lower case), or None for a name without an extension."""
    m = _MEMBER_RE.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


# ------------------------------------------------------------------------------------------------- writing


class _HashingWriter:
    def __init__(self, f: Any):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)
        return len(b)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        self.f.flush()


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> tuple[int, str]:
    """Write a reproducible tar atomically (fixed mtime, owner and mode; members in the order given); returns
    (bytes, sha256). POSIX pax format: a member name over USTAR's 100 bytes gets a pax header, and every other
    member is the plain USTAR header it always was (the same bytes)."""
    with atomic_file(path) as f:
        hw = _HashingWriter(f)
        with tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in members:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), TAR_MTIME, 0o444
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                tf.addfile(ti, io.BytesIO(data))
    return hw.n, hw.h.hexdigest()


def write_info(folder: str | Path, info: dict) -> None:
    """``dataset.json``, written last: one atomic write (a renamed temporary, or one object PUT)."""
    storage.put(storage.join(folder, INFO), json_bytes(info, indent=2) + b"\n")


# ------------------------------------------------------------------------------------------------- reading


@dataclass
class ShardSet:
    """A shard folder's ``dataset.json``, read."""

    folder: Path | str  # a local folder, or an object-store prefix (s3://bucket/shards)
    info: dict
    _by_url: dict[str, dict] | None = field(default=None, repr=False, compare=False)

    @property
    def resolution(self) -> int | None:
        return self.info.get("resolution")

    @property
    def total(self) -> int | None:
        return (self.info.get("counts") or {}).get("total")

    def samples_in(self, split: str) -> int:
        return int((self.info["splits"].get(split) or {}).get("samples", 0))

    def shards(self, split: str | None = None) -> list[dict]:
        """``[{name, samples, bytes, sha256}]`` of one split, or of all."""
        return [s for sp, v in self.info["splits"].items() if split in (None, sp) for s in v.get("shards", [])]

    def tars(self, split: str | None = None) -> list[Path]:
        """Each shard's path (its URL, for a set in object storage)."""
        if storage.is_url(self.folder):
            return [storage.join(self.folder, s["name"]) for s in self.shards(split)]
        return [Path(self.folder) / s["name"] for s in self.shards(split)]

    def shard_of(self, url: str | Path) -> dict | None:
        """The description of the shard at ``url`` (as :meth:`tars` names it): ``{name, samples, bytes, sha256}``;
        None for a tar that is not one of its shards."""
        if self._by_url is None:
            self._by_url = {str(t): s for t, s in zip(self.tars(), self.shards())}
        return self._by_url.get(str(url))

    def samples_of(self, url: str | Path) -> int | None:
        """How many samples the description says the shard at ``url`` (as :meth:`tars` names it) holds; None for
        a tar that is not one of its shards."""
        described = self.shard_of(url)
        return described.get("samples") if described else None

    @property
    def labels(self) -> dict | None:
        """``{"field", "names", "counts"}`` of a labelled set, else None."""
        return self.info.get("labels") or None

    @property
    def label_names(self) -> list[str] | None:
        return self.labels["names"] if self.labels else None

    def how_made(self) -> tuple[list[str], dict[str, Any]]:
        """What ``gandata shard`` is given to make this set again — ``(its sources, {"out": this folder, "name":
        its name, each option it was made with that is not the default})``, from its description — for a hint that
        makes it again with one option changed (:func:`gandata.errors.hint`'s ``args`` and ``given``): a bare
        ``gandata shard --size 64`` shards every dataset under ./data into their own folders, not this set. No
        sources when the description names none, or one is not where it was recorded (a relative path written from
        another folder): the hint's SRC is then the reader's to fill in."""
        sources = [s.get("path") for s in self.info.get("sources") or [] if isinstance(s, dict)]
        if not all(isinstance(p, str) and (storage.is_url(p) or Path(p).exists()) for p in sources):
            sources = []
        recorded = self.info.get("options") or {}
        given: dict[str, Any] = {"out": str(self.folder), "name": self.info.get("name")}
        for o in SHARD.options:
            value = recorded.get(o.key)
            if not o.cli or o.argument or value is None:
                continue
            if o.type == COLOR:  # recorded as its RGB
                if not isinstance(value, list) or value == list(Color.parse(o.default).rgb):
                    continue
                value = ",".join(str(v) for v in value)
            elif value == o.default:
                continue
            given[o.key] = value
        return sources, given


class BadInfo(FormatError):
    """A ``dataset.json`` that cannot be trusted: damaged, or naming files outside its folder."""


# a plain file name in the folder or in one generation folder: no other path, no dot first
_SHARD_FILE = re.compile(r"^(?:gen-[0-9a-f]{16}/)?[A-Za-z0-9][A-Za-z0-9_.-]*\.tar$")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 53


def check_info(info: Any, where: str) -> None:
    """A ``dataset.json``'s whole shape, or one :class:`BadInfo` line naming the file and the field: splits with
    whole sample counts and shards that are plain file names in the folder, a resolution that is a size or null,
    counts that are whole numbers, labels that are ``{field, names: [text…], counts}`` or null."""

    def bad(field: str, what: str) -> BadInfo:
        return BadInfo(f"{where}: {field} {what}; make the set again with gandata shard")

    if not isinstance(info, dict):
        raise bad("the description", "is not a JSON object")
    splits = info.get("splits")
    if not isinstance(splits, dict):
        raise bad("'splits'", "is missing or not an object: this is not a shard set's description")
    for split, v in splits.items():
        if not isinstance(v, dict) or not isinstance(v.get("shards", []), list):
            raise bad(f"splits.{split}", "is not an object with a list of shards")
        if not _count(v.get("samples", 0)):
            raise bad(f"splits.{split}.samples", f"must be a whole number (got {v.get('samples')!r})")
        for i, s in enumerate(v.get("shards", [])):
            if not isinstance(s, dict) or not isinstance(s.get("name"), str):
                raise bad(f"splits.{split}.shards[{i}]", "has no file name")
            if not _SHARD_FILE.match(s["name"]):
                raise BadInfo(f"{where} names the shard {s['name']!r}, which is not a file in its folder; refusing "
                              "to read it (a shard set names only its own tars)")
            for key in ("samples", "bytes"):
                if key in s and not _count(s[key]):
                    raise bad(f"splits.{split}.shards[{i}].{key}", f"must be a whole number (got {s[key]!r})")
    res = info.get("resolution")
    if res is not None and not (_count(res) and 0 < res <= 1 << 16):
        raise bad("'resolution'", f"must be a size in pixels or null (got {res!r})")
    counts = info.get("counts", {})
    if not isinstance(counts, dict) or not all(_count(c) for c in counts.values()):
        raise bad("'counts'", f"must map splits to whole numbers (got {counts!r:.80})")
    labels = info.get("labels")
    if labels:
        if not isinstance(labels, dict) or not isinstance(labels.get("names"), list) \
                or not all(isinstance(n, str) for n in labels["names"]):
            raise bad("'labels'", "must be {\"field\", \"names\": [text…], \"counts\"} or null")
        if not isinstance(labels.get("counts", {}), dict) \
                or not all(_count(c) for c in labels.get("counts", {}).values()):
            raise bad("'labels.counts'", "must map label names to whole numbers")


def read(folder: str | Path) -> ShardSet | None:
    """The shard set in ``folder``; None when the folder has no ``dataset.json``. A description that is damaged or
    names a shard outside its folder (``../x.tar``, ``/etc/…``, ``sub/x.tar``) raises :class:`BadInfo`."""
    folder = str(folder).rstrip("/") if storage.is_url(folder) else Path(folder)
    try:
        info = json.loads(storage.read_bytes(storage.join(folder, INFO)).decode("utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise BadInfo(f"{storage.join(folder, INFO)} cannot be read ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadInfo(f"{storage.join(folder, INFO)} is damaged ({str(e)[:120]}); make the set again with gandata "
                      "shard") from None
    check_info(info, f"{storage.join(folder, INFO)}")
    return ShardSet(folder, info)


def unfinished(folder: Path) -> bool:
    """A folder that ``gandata shard`` writes into but whose first set is not whole yet: no ``dataset.json`` (written
    last, once its tars are whole), but shard's own traces."""
    return not (folder / INFO).exists() and ((folder / ".work").is_dir() or (folder / "rejected.jsonl").exists())


def _refuse_unfinished(folder: Path) -> None:
    if unfinished(folder):
        raise NoShards(f"{folder} has no {INFO}: gandata shard did not finish writing this set; run the same gandata "
                       "shard command again")


def local_tars(spec: str, splits: Iterable[str] | None = None) -> list[Path]:
    """Local tar files named by ``spec``: a folder of shards (with or without dataset.json), a tar, or a brace
    pattern such as ``data/x/shards/x-train-{000000..000019}.tar``. ``splits`` restricts ours to those splits."""
    path = Path(spec)
    if path.is_dir():
        _refuse_unfinished(path)
        ss = read(path)
        if ss is not None:
            wanted = set(splits) if splits else set(ss.info["splits"])
            return [t for sp in ss.info["splits"] if sp in wanted for t in ss.tars(sp)]
        return _folder_tars(path)
    return [Path(p) for p in braceexpand.braceexpand(spec)]


def _folder_tars(path: Path) -> list[Path]:
    """Every tar of a folder without a description (another tool's set), hidden ones (temporaries) left out."""
    return sorted(p for p in path.iterdir() if p.suffix == ".tar" and not p.name.startswith("."))


class NoShards(FileNotFoundError):
    """A shard spec that names nothing, or nothing whole (its message says what to do)."""


# ------------------------------------------------------------------------------------- expanding and opening


def expand(spec: str) -> list[str]:
    """Every name a shard spec stands for: its ``::``-joined parts, each brace pattern expanded — what is checked
    before anything is opened (``{pipe:cmd,a}.tar`` is the command ``pipe:cmd.tar`` and the file ``a.tar``)."""
    return [u for part in spec.split("::") for u in braceexpand.braceexpand(part)]


def is_command(url: str) -> bool:
    """A name that runs a shell command when WebDataset opens it (``pipe:…``, also after blanks or in capitals, as
    ``urllib.parse`` reads a scheme)."""
    return urlparse(url).scheme == "pipe" or url.strip().lower().startswith("pipe:")


class CommandRefused(UserError):
    """A shard spec that would run a shell command where that is not allowed (a pipeline file without
    ``allow_commands = true``; a library call that did not ask for it)."""


def refuse_commands(names: Iterable[str], where: str) -> None:
    """Raise :class:`CommandRefused` naming the first command among ``names`` (shard names or specs, expanded
    here). ``where`` says whose value it is (``--shards``, ``[train] shards``…)."""
    for name in names:
        bad = next((u for u in expand(name) if is_command(u)), None)
        if bad is not None:
            raise CommandRefused(f"{where} = {name!r} runs a shell command ({bad!r}); on the command line that is "
                                 "allowed, in a pipeline file only with allow_commands = true in [pipeline]")


class Unreachable(UserError):
    """A shard's server that did not answer, or answered 429/5xx, through every try, or stalled, trickled or cut the
    connection while sending the shard: worth trying again later, unlike a 404 or content that is not a tar."""


HTTP_TRIES = 4  # a connection error or a 429/5xx is tried again after 1, 2, 4 s
HTTP_MIN_RATE = 4 << 10  # bytes/s a shard's server must send, on average over every timeout's length of waiting
HTTP_CHUNK = 256 << 10  # the most one read of the connection takes; the reading thread keeps up to 4 ahead


def open_shard(url: str, commands: bool = False):
    """A readable binary stream of one shard, and where every reader of shards as training data (the trainers, eval,
    export) opens one: a local path; an object-store
    URL through fsspec; ``http(s)://`` streamed with bounded retries and deadlines (:class:`_HttpBody`; no ``curl``
    in a subprocess);
    ``pipe:`` only when ``commands`` (the user's own command line, or a pipeline that says ``allow_commands``).
    Anything else is one line."""
    if is_command(url):
        if not commands:
            raise CommandRefused(f"{url!r} runs a shell command, which is not allowed here (in a pipeline file: "
                                 "allow_commands = true in [pipeline])")
        import webdataset as wds

        return wds.gopen(url.strip())
    if storage.is_url(url):
        if storage.streams(url):
            return io.BufferedReader(_StoreBody(url), HTTP_CHUNK)
        return storage.open_stream(url)
    scheme = urlparse(url).scheme.lower() if URL_RE.match(url) else ""
    if scheme in ("http", "https"):
        return io.BufferedReader(_HttpBody(url), HTTP_CHUNK)
    if scheme and not Path(url).exists():
        raise UserError(f"{url}: cannot open {scheme}: addresses; give a path, http(s)://, s3:// or gs://")
    try:
        return open(url, "rb")
    except FileNotFoundError:
        raise UserError(f"{url} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{url} is a folder, not a tar") from None
    except PermissionError:
        raise UserError(f"{url}: permission denied") from None


def _request(url: str, timeout: float):
    """The response to ``GET url`` (status 200, the body not read yet), with bounded retries: a connection error, a
    timeout or a 408/429/5xx is tried again, :data:`HTTP_TRIES` times in all; anything else is one line."""
    import requests

    transient = True
    for attempt in range(HTTP_TRIES):
        try:
            resp = requests.get(url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"})
        except (requests.ConnectionError, requests.Timeout) as e:
            why = "timed out" if isinstance(e, requests.Timeout) else "cannot connect"
        except requests.RequestException as e:
            raise UserError(f"{url}: {type(e).__name__}") from None
        else:
            if resp.status_code == 200:
                resp.raw.decode_content = False
                return resp
            resp.close()
            why = f"HTTP {resp.status_code}"
            if resp.status_code not in (408, 429) and resp.status_code < 500:
                transient = False
                break
        if attempt + 1 < HTTP_TRIES:
            time.sleep(2 ** attempt)
    raise (Unreachable if transient else UserError)(f"{url}: {why}; check the address (it must serve the .tar "
                                                     "itself)")


class _HttpBody(io.RawIOBase):
    """One shard over http(s), fetched by a thread of its own into a small buffer, so that the reader's every wait
    ends in bounded time whatever the server does. A per-read timeout alone never fires on a server that sends a
    byte a second, and urllib3's read of n bytes waits for all n. Deadlines, with T = ``GANDATA_STORE_TIMEOUT``
    (:func:`gandata.storage.timeout`, 30 s): the answer — status and headers, through every try — within
    ``HTTP_TRIES × 2T`` plus the pauses between tries; then at least :data:`HTTP_MIN_RATE` bytes a second, on
    average over every T seconds spent waiting for the server (time the buffer is full, waiting for the reader,
    does not count): a stall or a trickle ends within two windows. Each is one :class:`Unreachable` line naming the
    shard; so is a connection reset or cut short. Opening waits for the answer (an HTTP error is raised there)."""

    def __init__(self, url: str):
        super().__init__()
        self.url, self.timeout = url, storage.timeout()
        self._cond = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._answered = self._closing = False
        self._error: BaseException | None = None
        self._received = 0
        self._waiting_since: float | None = None  # the thread waits for the server since then
        self._window = [0.0, 0]  # seconds spent waiting for the server, bytes received: in this window
        start = time.monotonic()
        threading.Thread(target=self._fetch, name="gandata-http-shard", daemon=True).start()
        budget = HTTP_TRIES * 2 * self.timeout + sum(2 ** a for a in range(HTTP_TRIES - 1))
        with self._cond:
            while not self._answered and self._error is None:
                left = start + budget - time.monotonic()
                if left <= 0:
                    self._stop()
                    raise Unreachable(f"{url}: no answer in {budget:g} s ({HTTP_TRIES} tries); try again later")
                self._cond.wait(left)
            if self._error is not None:
                self._stop()
                raise self._failure()

    def _fetch(self) -> None:
        """The thread: the request, then the body into the buffer, chunk by chunk, until the end, an error or
        :meth:`close`."""
        close = None
        try:
            read, close = self._open()
            with self._cond:
                self._answered = True
                self._cond.notify_all()
            while True:
                with self._cond:
                    while self._buffered >= 4 * HTTP_CHUNK and not self._closing:
                        self._cond.wait()
                    if self._closing:
                        return
                    self._waiting_since = time.monotonic()
                chunk = read(HTTP_CHUNK)
                with self._cond:
                    self._window[0] += time.monotonic() - self._waiting_since
                    self._window[1] += len(chunk)
                    self._waiting_since = None
                    self._received += len(chunk)
                    self._chunks.append(chunk)  # b"": the end
                    self._buffered += len(chunk)
                    self._cond.notify_all()
                if not chunk:
                    return
        except Exception as e:  # noqa: BLE001 (handed to the reader, which raises it as one line)
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            if close is not None:
                close()

    def _open(self) -> tuple[Callable[[int], bytes], Callable[[], None]]:
        """The request: its body's ``read(n)`` (what has arrived, up to n bytes; b"" at the end) and ``close()``."""
        resp = _request(self.url, self.timeout)
        return getattr(resp.raw, "read1", resp.raw.read), resp.close  # read1: what one receive brings (urllib3 2)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 (a writable buffer)
        with self._cond:
            while not self._chunks:
                if self._error is not None:
                    self._stop()
                    raise self._failure()
                self._check_pace()
                self._cond.wait(max(0.05, self.timeout - self._waited()))
            chunk = self._chunks.popleft()
            if not chunk:
                self._chunks.appendleft(chunk)  # the end stays the end
                return 0
            n = min(len(b), len(chunk))
            b[:n] = chunk[:n]
            if n < len(chunk):
                self._chunks.appendleft(chunk[n:])
            self._buffered -= n
            self._cond.notify_all()
            return n

    def _waited(self) -> float:
        """Seconds spent waiting for the server in this window (the lock held)."""
        since = self._waiting_since
        return self._window[0] + (time.monotonic() - since if since is not None else 0.0)

    def _check_pace(self) -> None:
        """At the end of each window (T seconds of waiting for the server): too few bytes is one line; else a new
        window starts."""
        if self._waited() < self.timeout:
            return
        if self._window[1] < HTTP_MIN_RATE * self.timeout:
            self._stop()
            got = f"{self._window[1]} bytes" if self._window[1] else "nothing"
            raise Unreachable(f"{self.url}: the server sent {got} in {self.timeout:g} s after {self._received} "
                              f"bytes (a shard must come at {HTTP_MIN_RATE >> 10} KiB/s or more); try again later, "
                              "or allow more time with GANDATA_STORE_TIMEOUT=SECONDS")
        self._window = [0.0, 0]
        if self._waiting_since is not None:
            self._waiting_since = time.monotonic()

    def _failure(self) -> BaseException:
        """The thread's error as the reader raises it: one line for the network's, the error itself otherwise."""
        e = self._error
        if isinstance(e, (UserError, FileNotFoundError)):  # a store's missing object stays what its readers test for
            return e
        if isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("urllib3", "requests", "http", "botocore",
                                                                          "aiobotocore", "aiohttp"):
            cause = e.args[-1] if e.args and isinstance(e.args[-1], BaseException) else e  # urllib3 wraps it
            if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
                why = f"nothing came for {self.timeout:g} s"
            elif type(cause).__name__ == "IncompleteRead":
                why = "the server closed it before the end"
            else:
                why = type(cause).__name__
            return Unreachable(f"{self.url}: the connection failed after {self._received} bytes ({why}); try "
                               "again later")
        return e

    def _stop(self) -> None:
        """The thread stops at its next step (a read under way ends with its timeout at the latest)."""
        self._closing = True
        self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stop()
        super().close()


class _StoreBody(_HttpBody):
    """One shard in an S3-compatible store, as one streamed GET under the deadlines of :class:`_HttpBody` (the
    store's per-read timeout alone never fires on a connection that trickles; the answer comes through the store's
    own bounded retries)."""

    def _open(self) -> tuple[Callable[[int], bytes], Callable[[], None]]:
        return storage.open_body(self.url)


def resolve(spec: str, split: str = "train") -> tuple[list[str], ShardSet | None]:
    """The shard URLs of a trainer's ``spec`` — a folder (its ``split`` when it has dataset.json, else its tars), a
    tar, a brace pattern, or anything WebDataset opens (``https://…``, ``pipe:…``); several joined with ``::`` —
    and the set's description when a folder has one."""
    urls: list[str] = []
    ss = None
    for part in spec.split("::"):
        path = Path(part)
        if storage.is_url(part) and not part.endswith(".tar") and "{" not in part:  # a set in object storage
            found = read(part)
            if found is None:
                raise NoShards(f"{part} has no {INFO}; name its tars (s3://…/x-train-{{000000..000007}}.tar) or "
                               f"write the set there with {hint('out', part, command='shard SRC')}")
            ss = found
            urls += [str(t) for t in found.tars(split)]
        elif path.is_dir():
            _refuse_unfinished(path)
            found = read(path)
            if found is not None:
                ss = found
                urls += [str(t) for t in found.tars(split)]
            elif (path / "manifest.jsonl").exists():
                raise NoShards(f"{part} is a dataset folder, not shards; shard it first (gandata shard {part}) and "
                               "give the folder it writes")
            else:
                urls += [str(p) for p in _folder_tars(path)]
        elif URL_RE.match(part) and not path.exists():
            urls += list(braceexpand.braceexpand(part))
        else:
            named = list(braceexpand.braceexpand(part))
            missing = [u for u in named if not Path(u).exists() and not URL_RE.match(u)]
            if missing:
                raise NoShards(f"{missing[0]} does not exist")
            urls += named
    if not urls:
        if ss is not None and ss.total:  # a set whose every sample is in the other split
            raise NoShards(_empty_split(spec, split, ss))
        raise NoShards(f"{spec} names no shards (for a folder: its {INFO} has no {split!r} split, or it holds no "
                       ".tar files); make them with gandata shard")
    return urls, ss


def _empty_split(spec: str, split: str, ss: ShardSet) -> str:
    """Why a set with samples gives ``split`` none: every one of them is in the other split, as its ``val_fraction``
    put them — and, for the train split, the shard command that makes it again with some to train on."""
    counts = ", ".join(f"{ss.samples_in(sp)} in {sp}" for sp in ss.info["splits"] if sp != split)
    fraction = (ss.info.get("options") or {}).get("val_fraction")
    if split != "train" or not isinstance(fraction, (int, float)):
        return f"{spec} has an empty {split} split (0 samples; {counts})"
    lower = SHARD.defaults()["val_fraction"]
    lower = lower if fraction > lower else 0  # the default, or every sample in train where the default did it
    sources, given = ss.how_made()
    return (f"{spec} has an empty {split} split (0 samples; {counts}: sharded with a val fraction of {fraction}); "
            f"make it again with {hint('val_fraction', lower, command='shard SRC', args=sources, given=given)}")


def set_of(tar: str) -> ShardSet | None:
    """The shard set whose tar ``tar`` is (as :func:`resolve` names it: in a generation folder of the set's folder,
    or at its top), read from its description; None for a tar its folder's description does not name, or a
    description that cannot be read (what called this is saying something else)."""
    if not storage.is_url(tar) and URL_RE.match(str(tar)):  # https://…, pipe:…: nothing to read a description from
        return None
    folder = str(tar).rpartition("/")[0]
    if GENERATION_RE.match(folder.rpartition("/")[2]):
        folder = folder.rpartition("/")[0]
    try:
        ss = read(folder or ".")
    except (UserError, OSError):
        return None
    if ss is None or ss.samples_of(tar if storage.is_url(tar) else Path(tar)) is None:
        return None  # a tar of no described set, or one its folder's description does not name
    return ss


def _read_exact(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            raise EOFError("tar ends in the middle of a member")
        data += more
    return data


def _skip(f: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            raise EOFError("tar ends in the middle of a member")
        n -= len(chunk)


_ZERO_BLOCK = b"\0" * 512
CUT = ("it ends without the end-of-archive marker (two zero blocks): it was cut short, by an interrupted copy or "
       "download")


def _block(f: IO[bytes]) -> bytes:
    """The next 512-byte block, or b"" at the end of the stream (a block cut in the middle raises ``EOFError``)."""
    data = f.read(512)
    while 0 < len(data) < 512:
        more = f.read(512 - len(data))
        if not more:
            raise EOFError(CUT)
        data += more
    return data


def tar_members(f: IO[bytes], url: str) -> Iterator[tuple[str, bytes | None]]:
    """(name, bytes) of every regular file in a tar stream. A lean reader for USTAR, GNU long names and pax paths,
    several times faster than ``tarfile`` per member; header checksums are verified (``ValueError`` on a bad
    header). A tar must end with its end-of-archive marker, two zero blocks, as POSIX and every writer make it: a
    stream that stops anywhere else — in a member, or between two members, where a copy or a download cut short
    leaves a tar that would otherwise read as complete — raises ``EOFError``. A member over
    :data:`MAX_MEMBER_BYTES` comes as (name, None), unread."""
    long_name = None
    while True:
        header = _block(f)
        if not header:
            raise EOFError(CUT)
        if header == _ZERO_BLOCK:
            if _block(f) != _ZERO_BLOCK:
                raise EOFError(CUT)
            return
        try:
            stored = int(header[148:156].strip(b"\0 "), 8)
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            stored = size = -1
        if stored < 0 or size < 0 or sum(header[:148]) + 256 + sum(header[156:]) != stored:
            raise ValueError(f"{url}: not a tar file, or damaged (bad header)")
        kind = header[156:157]
        if size > MAX_MEMBER_BYTES:  # a sparse or hostile tar: skipped in chunks, never held in memory
            _skip(f, size + (-size % 512))
            if kind in (b"0", b"\0", b"7"):
                yield (long_name or header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")), None
            long_name = None
            continue
        data = _read_exact(f, size) if size else b""
        if size % 512:
            _read_exact(f, 512 - size % 512)
        if kind == b"L":  # GNU long name for the next member
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":  # pax header: a "path" record names the next member
            for record in data.decode("utf-8", "replace").split("\n"):
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue
        name = long_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix.decode("utf-8") + "/" + name
        long_name = None
        yield name, data


REPEATED = "__repeated__"  # in a sample's fields: the extensions whose member came again (the first copy is kept)


def samples(f: IO[bytes], url: str, expected: int | None = None) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """(key, {extension: bytes}) for every sample of one tar stream: consecutive members grouped by key (an
    oversized member's bytes are None; a member repeated within a sample keeps its first copy and is listed under
    :data:`REPEATED`). ``expected``: the samples its set's description says it holds
    (:meth:`ShardSet.samples_of`); another number raises ``ValueError`` once the tar is read."""
    key, fields, n = None, {}, 0
    for name, data in tar_members(f, url):
        split = split_member(name)
        if split is None:
            continue
        k, ext = split
        if k != key:
            if fields:
                n += 1
                yield key, fields
            key, fields = k, {}
        if ext in fields:  # the same member twice: the first is kept, the repeat is reported
            fields.setdefault(REPEATED, []).append(ext)
            continue
        fields[ext] = data
    if fields:
        n += 1
        yield key, fields
    if expected is not None and n != expected:
        raise ValueError(f"it holds {n} samples where {INFO} says {expected}: it is not the shard that was written")


# ---------------------------------------------------------------------------------------------- verifying


class ChangedShard(UserError):
    """A shard whose bytes are not the ones its set's description records: it changed after it was written (a
    damaged copy or disk, an edit), so what it holds is not what shard wrote."""


class _HashingReader:
    """A stream's bytes counted and hashed (sha256) as they are read."""

    def __init__(self, f: IO[bytes]):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        self.n += len(data)
        return data

    def drained(self) -> tuple[int, str]:
        """Bytes and sha256 of the whole stream: what is left is read (a tar's padding after its end marker)."""
        for _ in iter(lambda: self.read(1 << 20), b""):
            pass
        return self.n, self.h.hexdigest()


@contextlib.contextmanager
def checked(f: IO[bytes], url: str, described: dict | None) -> Iterator[IO[bytes]]:
    """A shard's stream (``f``, as :func:`open_shard` opens it) checked against its description (``described``:
    :meth:`ShardSet.shard_of`) in the same pass as it is read: once the block has read what it needs, the rest is
    read, and a size or sha256 other than the recorded one raises :class:`ChangedShard` naming the tar and what to
    do. A shard described without a sha256 (or not at all) is ``f`` itself, unchecked. A block that raises is not
    checked."""
    if not described or not described.get("sha256"):
        yield f
        return
    hashing = _HashingReader(f)
    yield hashing
    size, digest = hashing.drained()
    if size != described.get("bytes") or digest != described["sha256"]:
        what = (f"it has {size} bytes, {INFO} says {described.get('bytes')}" if size != described.get("bytes")
                else f"its sha256 is not the one {INFO} records")
        raise ChangedShard(f"{url}: {what}: the tar changed after it was written (a damaged copy or disk); copy the "
                           "set again from a whole copy, or make it again with gandata shard")


def verify(folder: str | Path | ShardSet, checksums: bool = True) -> list[str]:
    """What is wrong with a shard set against its ``dataset.json`` (a folder, or a set already read): missing tars,
    other sizes, other sha256 (with ``checksums``), sample counts that do not add up. An empty list means it is
    whole."""
    ss = folder if isinstance(folder, ShardSet) else read(folder)
    if ss is None:
        return [f"{folder} has no readable {INFO}; make the set with gandata shard"]
    problems = []
    for split, v in ss.info["splits"].items():
        if sum(s.get("samples", 0) for s in v.get("shards", [])) != v.get("samples", 0):
            problems.append(f"{split}: the shards' sample counts do not add up to {v.get('samples')}")
    remote = storage.is_url(ss.folder)
    for s in ss.shards():
        path = storage.join(ss.folder, s["name"])
        try:
            size = storage.info(path)["size"] if remote else os.stat(path).st_size
        except FileNotFoundError:
            problems.append(f"{s['name']} is missing")
            continue
        if size != s.get("bytes"):
            problems.append(f"{s['name']} has {size} bytes, {INFO} says {s.get('bytes')}")
        elif checksums:
            with open_shard(path) if remote else open(path, "rb") as f:
                digest = _HashingReader(f).drained()[1]
            if digest != s.get("sha256"):
                problems.append(f"{s['name']}: sha256 differs from {INFO}")
    return problems
