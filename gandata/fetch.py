"""The asynchronous download engine every network source shares.

A source turns its site into :class:`Job` objects (key, URL, the fields to record); the engine knows only HTTP:

* one aiohttp session; a global cap on requests in flight, a cap per host, and a pacing rate per host;
* a total deadline per request (connect + read);
* retries: 429 honours ``Retry-After`` (seconds or an HTTP date) and pauses the whole host, otherwise
  exponential backoff with jitter; 5xx, 408, timeouts, resets and truncated bodies are retried; 400/403/404/410
  (and other 4xx) are permanent and recorded;
* every body is validated off the event loop (magic bytes and every byte decoded, a JPEG at 1/8 scale, in a thread
  pool: ``images.verify``): HTML error pages,
  truncated or corrupt bodies never reach the dataset; bytes after the image's own end are not stored; identical
  bodies (same sha256) are stored once;
* memory is bounded by a byte budget (``memory``, ``--memory``), not by requests in flight × the largest body:
  bodies being read and checked, and the pixels a check decodes, all reserve room in it before they take it;
* ``X-Robots-Tag`` opt-outs (``noai``, ``noimageai``, ``noindex``, ``noimageindex``) are honoured and recorded;
* a circuit breaker stops the run when nearly all recent attempts fail, naming the endpoint and what was seen;
* writes go through :class:`~gandata.datasets.Dataset` (atomic files; a manifest row only once its file is on disk,
  the fsyncs batched off the worker threads: ``durability``), so any kill is safe and a re-run skips every key
  already stored (and every key that failed permanently);
* Ctrl-C stops new requests, lets the writes in flight finish, and still writes ``stats.json``.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import hashlib
import random
import signal
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from . import USER_AGENT, images
from .compact import StringMap
from .datasets import Dataset
from .declarations import ENGINE_KEYS, FETCH_URLS
from .errors import UserError, named
from .options import check_call
from .progress import Progress
from .storage import unfetchable  # noqa: F401 (the engine's rule for what it asks for)
from .summary import Summary

OPT_OUT = ("noai", "noimageai", "noindex", "noimageindex")
PERMANENT = {400, 401, 403, 404, 405, 410, 414, 415, 422, 451}
RETRYABLE = {408, 425, 429, 500, 502, 503, 504, 509, 520, 521, 522, 523, 524}
EXT_OF = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tiff"}


RESERVED = {"key", "path", "sha256", "source", "url", "width", "height", "format", "bytes", "http_status",
            "content_type", "trailing_bytes"}  # fields the engine and the dataset fill in


def with_overrides(options: FetchOptions, overrides: dict | None) -> FetchOptions:
    """``options`` with the non-None values of ``overrides`` (e.g. the CLI's --rate) put in. A new ``concurrency``
    is also the new ``per_host`` unless that is given too (a source's requests mostly go to one host)."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "concurrency" in given:
        given.setdefault("per_host", given["concurrency"])
    return replace(options, **given)


DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: str) -> str:
    """The host a URL's requests are paced as: its name in lower case without a trailing dot, and its port unless
    it is the scheme's default — ``LOCALHOST.``, ``localhost`` and ``localhost:80`` are one host, on both
    engines (:func:`gandata.sources.urls.host_group` deals hosts to Ray tasks by this key)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return host if port in (None, DEFAULT_PORTS.get(parts.scheme.lower())) else f"{host}:{port}"


def rebase(url: str, base_url: str | None) -> str:
    """Replace the scheme, host and port of ``url`` with those of ``base_url`` (the path and query stay)."""
    if not base_url:
        return url
    base = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed address stays as it is: the engine records it as an invalid URL
        return url
    if parts.scheme.lower() not in ("http", "https"):  # file:, data:… are never rebased onto a server
        return url
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def opted_out(header_values: list[str], agent: str = "gandata") -> str | None:
    """The X-Robots-Tag directive that forbids using the image, or None. Directives may be scoped to a user agent
    (``otherbot: noai``); those scoped to another agent are ignored."""
    for value in header_values:
        scope = None
        for part in value.split(","):
            part = part.strip().lower()
            if ":" in part:
                maybe_scope, rest = part.split(":", 1)
                if maybe_scope.strip() and " " not in maybe_scope.strip():
                    scope, part = maybe_scope.strip(), rest.strip()
            if part in OPT_OUT and scope in (None, agent):
                return part
    return None


@dataclass
class Job:
    """One thing to download: its dataset key, its URL, and the source fields its manifest row records.

    ``fallbacks`` are tried in order when the URL before them is permanently missing (404/410), e.g. other image
    sizes. ``lane`` names the politeness group the requests count against (default: the URL's host)."""

    key: str
    url: str
    record: dict = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)
    headers: dict = field(default_factory=dict)
    lane: str | None = None


class PageRetry(Exception):
    """Raised by a page check: the page says "slow down" (e.g. a quota page served with status 200)."""

    def __init__(self, label: str, wait: float):
        super().__init__(label)
        self.label, self.wait = label, wait


class PageStop(Exception):
    """Raised by a page check: the run cannot go on (e.g. a browser challenge); the message says what to do."""


class PageError(Exception):
    """A page could not be had after all retries; ``str(e)`` is the reason, ``status`` the HTTP status if any."""

    def __init__(self, label: str, status: int | None = None):
        super().__init__(label)
        self.status = status


class Stopped(Exception):
    """The run is stopping (breaker, Ctrl-C, a PageStop): sources end their crawl when they see it."""


@dataclass
class FetchOptions:
    concurrency: int = 64  # requests in flight, all hosts together
    per_host: int = 16  # requests in flight to one host (set with concurrency unless given: with_overrides)
    rate: float | None = None  # requests per second per host (None or 0: no pacing)
    retries: int = 4  # further attempts after a retryable failure
    timeout: float = 30.0  # seconds per request, connect + read
    backoff: float = 1.0  # first backoff in seconds; doubles each attempt, with jitter
    max_backoff: float = 120.0
    max_wait: float = 900.0  # longest Retry-After waited out (--max-wait); a longer one defers the job
    max_bytes: int = 50_000_000
    memory: int = 512  # MiB held at once by bodies and the pixels their checks decode
    durability: str = "batch"  # batch | file | none: how stored files reach the disk (Dataset.create)
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    breaker_window: int = 200  # the circuit breaker looks at this many recent attempts …
    breaker_ratio: float = 0.9  # … and stops the run when this share of them failed
    respect_opt_out: bool = True
    user_agent: str = USER_AGENT
    headers: dict = field(default_factory=dict)
    validate_threads: int = 0  # 0: one per core
    lanes: dict = field(default_factory=dict)  # lane → {"concurrency": n, "rate": r} overriding per_host and rate

    def validate(self) -> None:
        # the engine's declared options (--rate, --retries …), declared alike for every source
        check_call(FETCH_URLS, **{k: getattr(self, k) for k in ENGINE_KEYS})
        if self.per_host < 1:
            raise UserError("per_host must be at least 1")


_CLIENT_ERRORS = (TimeoutError, aiohttp.ClientError, ConnectionError, ValueError)


def _outcome_of(e: BaseException) -> _Outcome:
    """What a failed request means for its job: worth another try (timeouts, resets, a cut body) or not (bad
    addresses, redirect loops or redirects off http)."""
    if isinstance(e, TimeoutError):
        return _Outcome("timeout", True)
    if isinstance(e, aiohttp.ClientPayloadError):
        return _Outcome("truncated body", True)
    if isinstance(e, aiohttp.TooManyRedirects):
        return _Outcome("too many redirects", False, permanent=True)
    if isinstance(e, aiohttp.NonHttpUrlRedirectClientError):  # a redirect to file:, ftp:, javascript:…
        return _Outcome("redirect to a non-http URL", False, permanent=True)
    if isinstance(e, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError)):
        return _Outcome("invalid URL", False, permanent=True)
    if isinstance(e, (aiohttp.ClientConnectionError, ConnectionError)):
        return _Outcome(_connection_label(e), True)
    if isinstance(e, aiohttp.ClientResponseError):
        return _Outcome(f"bad response ({e.message})", True)
    raise e


class _Decoder:
    """A response body's ``Content-Encoding`` (gzip, deflate or none) undone as the body arrives, in pieces of at
    most :data:`STEP` bytes, so that the caller counts decoded bytes against its caps before more are made."""

    STEP = 1 << 16

    def __init__(self, encoding: str | None):
        enc = (encoding or "identity").strip().lower()
        self.z = None
        self.raw_deflate_tried = enc != "deflate"
        if enc in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self.z = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as the RFC says; raw deflate if it is not
        elif enc not in ("", "identity"):
            raise _Outcome(f"unsupported Content-Encoding {encoding!r}", False, permanent=True, status=200)

    def pieces(self, chunk: bytes):
        if self.z is None:
            yield chunk
            return
        data = chunk
        while data:
            try:
                out = self.z.decompress(data, self.STEP)
            except zlib.error:
                if self.raw_deflate_tried:
                    raise _Outcome("body does not decompress", False, permanent=True, status=200) from None
                self.raw_deflate_tried = True  # servers that send raw deflate under "deflate"
                self.z = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self.raw_deflate_tried = True
            yield out
            data = self.z.unconsumed_tail

    def finish(self) -> None:
        if self.z is not None and not self.z.eof:
            raise _Outcome("truncated body", True)

    @classmethod
    def whole(cls, encoding: str | None, raw: bytes, limit: int) -> bytes:
        """At most ``limit`` decoded bytes of a short body (an error page); the raw bytes when it does not decode."""
        out, size = [], 0
        try:
            for piece in cls(encoding).pieces(raw):
                out.append(piece[: limit - size])
                size += len(out[-1])
                if size >= limit:
                    break
        except _Outcome:
            return raw[:limit]
        return b"".join(out)


class _Outcome(Exception):
    """How one attempt ended when it did not end with an accepted image."""

    def __init__(self, label: str, retryable: bool, permanent: bool = False, status: int | None = None,
                 wait: float | None = None):
        super().__init__(label)
        self.label, self.retryable, self.permanent, self.status, self.wait = label, retryable, permanent, status, wait
        self.detail: str | None = None
        self.body: bytes | None = None


class _Host:
    def __init__(self, per_host: int, rate: float | None):
        self.sem = asyncio.Semaphore(per_host)
        self.interval = 1.0 / rate if rate else 0.0
        self.next_slot = 0.0
        self.paused_until = 0.0


class _Budget:
    """The bytes that bodies and their checks hold at once, all requests together. A request asks for room before it
    takes it (a body's Content-Length at once, a body of unknown length a step at a time, then the pixels its check
    decodes) and waits, first come first served, while there is none. When every request holding room is itself
    waiting for more, none would ever give any back: the one that has held room longest is let over the budget, so
    memory peaks at the budget plus one request's body and pixels."""

    STEP = 1 << 20

    def __init__(self, limit: int):
        self.limit, self.used, self.peak = limit, 0, 0
        self.holders = 0  # requests holding room
        self.queue: deque[tuple[_Hold, int, asyncio.Future]] = deque()
        self._seq = 0

    def _grant(self, hold: _Hold, n: int) -> None:
        if hold.n == 0:
            self.holders += 1
            self._seq += 1
            hold.seq = self._seq
        hold.n += n
        self.used += n
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self.queue:
            hold, n, fut = self.queue[0]
            if fut.done():  # cancelled while waiting
                self.queue.popleft()
                continue
            if self.used + n <= self.limit or self.used == 0:
                self.queue.popleft()
            else:
                waiting = [e for e in self.queue if e[0].n > 0 and not e[2].done()]
                if len(waiting) < self.holders:
                    return  # a holder is still working: it will give room back
                entry = min(waiting, key=lambda e: e[0].seq)
                self.queue.remove(entry)
                hold, n, fut = entry
            self._grant(hold, n)
            fut.set_result(None)

    async def take(self, hold: _Hold, n: int) -> None:
        if not self.queue and (self.used + n <= self.limit or self.used == 0):
            self._grant(hold, n)
            return
        fut = asyncio.get_running_loop().create_future()
        self.queue.append((hold, n, fut))
        self._wake()
        await fut  # cancelled: _wake drops the entry; a grant that raced the cancel is held, and given back below

    def give(self, hold: _Hold, n: int) -> None:
        """Give back part of a hold (a body's chunks, once joined)."""
        n = min(n, hold.n - 1)  # a hold stays a hold until give_back
        if n > 0:
            hold.n -= n
            self.used -= n
            self._wake()

    def give_back(self, hold: _Hold) -> None:
        if hold.n:
            self.used -= hold.n
            self.holders -= 1
            hold.n = 0
        self._wake()


class _Hold:
    """One request's room in the :class:`_Budget`."""

    def __init__(self) -> None:
        self.n = 0
        self.seq = 0


class Fetcher:
    """Runs jobs into a dataset. Use :func:`fetch` unless you are already inside an event loop."""

    def __init__(self, dataset: Dataset, source: str, options: FetchOptions | None = None, progress: bool = False):
        self.ds = dataset
        self.source = source
        self.opts = options or FetchOptions()
        self.opts.validate()
        self.progress = progress
        self.stop = asyncio.Event()
        self.stop_reason: str | None = None
        self.counts: Counter = Counter()
        self.failures: Counter = Counter()
        self.window: deque[tuple[bool, str, str]] = deque(maxlen=self.opts.breaker_window)
        self._window_failed = 0
        self.bytes = 0
        self._hosts: dict[str, _Host] = {}
        # sha256 of every stored body (as bytes) → its key: worker threads add to it, under _sha_lock
        self._shas = StringMap(text_keys=False)
        self._sha_lock = threading.Lock()
        self._skip: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self.deferred: list[Job] = []  # jobs whose server asked for a wait over max_wait
        self.budget = _Budget(self.opts.memory << 20)

    # ---- one request

    def _host(self, lane: str) -> _Host:
        if lane not in self._hosts:
            limits = self.opts.lanes.get(lane, {})
            self._hosts[lane] = _Host(limits.get("concurrency", self.opts.per_host), limits.get("rate", self.opts.rate))
        return self._hosts[lane]

    async def _attempt(self, url: str, headers: dict, host: _Host, keep_error_body: bool = False,
                       hold: _Hold | None = None) -> tuple[bytes, dict]:
        """One GET, in the host's turn. Raises :class:`_Outcome` unless the answer is 200 with an acceptable body;
        with ``keep_error_body`` the outcome of a non-200 answer carries its body (a page's check may recognise it).
        With ``hold``, the body's bytes are reserved in the budget before they are read."""
        async with host.sem:
            await self._turn(host)
            try:
                async with (asyncio.timeout(self.opts.timeout) as deadline,
                            self._session.get(url, headers=headers or None, allow_redirects=True,
                                              max_redirects=5) as resp):
                    if resp.status != 200:
                        raise await self._refusal(resp, host, keep_error_body)
                    self._check_opt_out(resp)
                    meta = {"http_status": resp.status, "content_type": resp.headers.get("Content-Type")}
                    return await self._body(resp, deadline, hold), meta
            except _Outcome:
                raise
            except _CLIENT_ERRORS as e:
                raise _outcome_of(e) from None

    async def _turn(self, host: _Host) -> None:
        """Wait for the host's next request slot (its rate, and any pause a 429 asked for)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, host.next_slot, host.paused_until)
        host.next_slot = slot + host.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _refusal(self, resp: aiohttp.ClientResponse, host: _Host, keep_body: bool) -> _Outcome:
        """The outcome of a non-200 answer: retryable or not, the wait it asks for (a 429 also pauses its host)."""
        status = resp.status
        wait = parse_retry_after(resp.headers.get("Retry-After")) if status in (429, 503) else None
        if status == 429:
            pause = min(wait if wait is not None else self._backoff(1), self.opts.max_wait)
            host.paused_until = max(host.paused_until, asyncio.get_running_loop().time() + pause)
        retryable = status in RETRYABLE or (500 <= status < 600 and status not in (501, 505))
        out = _Outcome(f"HTTP {status}", retryable, permanent=not retryable, status=status, wait=wait)
        if keep_body:
            out.body = _Decoder.whole(resp.headers.get("Content-Encoding"), await resp.content.read(1 << 20), 1 << 20)
        return out

    def _check_opt_out(self, resp: aiohttp.ClientResponse) -> None:
        if self.opts.respect_opt_out:
            directive = opted_out(resp.headers.getall("X-Robots-Tag", []))
            if directive:
                raise _Outcome(f"opted out (X-Robots-Tag: {directive})", False, permanent=True, status=200)

    async def _body(self, resp: aiohttp.ClientResponse, deadline: asyncio.Timeout, hold: _Hold | None) -> bytes:
        """The answer's body, decoded, at most ``max_bytes``; with ``hold``, room for it taken from the budget as it
        grows (a known length at once)."""
        length = resp.headers.get("Content-Length")
        decoder = _Decoder(resp.headers.get("Content-Encoding"))
        if length and length.isdigit() and int(length) > self.opts.max_bytes:
            raise _Outcome(f"body too large ({int(length)} bytes)", False, permanent=True, status=200)
        if length and length.isdigit() and decoder.z is None:
            if hold is None:
                return await resp.read()
            await self._room(deadline, hold, 2 * int(length))  # the chunks, and their join
            body = await resp.read()
            self.budget.give(hold, int(length))
            return body
        chunks, size = [], 0  # decoded bytes: a 1 MB gzip of 1 GiB stops at max_bytes, as it grows
        async for chunk in resp.content.iter_chunked(1 << 16):
            for piece in decoder.pieces(chunk):
                size += len(piece)
                if size > self.opts.max_bytes:
                    raise _Outcome(f"body too large (over {self.opts.max_bytes} bytes"
                                   f"{' decoded' if decoder.z else ''})", False, True, 200)
                while hold is not None and 2 * size > hold.n:  # the body and the join's copy
                    await self._room(deadline, hold, _Budget.STEP)
                chunks.append(piece)
        decoder.finish()
        body = b"".join(chunks)
        if hold is not None:
            self.budget.give(hold, max(0, hold.n - len(body)))
        return body

    async def _room(self, deadline: asyncio.Timeout, hold: _Hold, n: int) -> None:
        """Wait for room in the memory budget; the wait does not count against the request's --timeout (the server
        is not the one keeping us waiting, and aiohttp stops reading the socket meanwhile)."""
        loop = asyncio.get_running_loop()
        left = deadline.when() - loop.time()
        deadline.reschedule(None)
        await self.budget.take(hold, n)
        deadline.reschedule(loop.time() + left)

    def _backoff(self, attempt: int) -> float:
        return min(self.opts.max_backoff, self.opts.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _note(self, ok: bool, label: str, url: str) -> None:
        w = self.window
        if len(w) == w.maxlen and not w[0][0]:
            self._window_failed -= 1  # the oldest entry, a failure, drops out
        w.append((ok, label, url))
        self._window_failed += not ok
        if len(w) == w.maxlen and not self.stop.is_set() and self._window_failed >= self.opts.breaker_ratio * len(w):
            failed = [x for x in w if not x[0]]
            seen = Counter(label for _, label, _ in failed).most_common(4)
            hosts = Counter(host_key(u) for _, _, u in failed).most_common(1)[0][0]
            example = failed[-1][2]
            self.stop_reason = (
                f"stopped: {len(failed)} of the last {len(w)} requests to {hosts} failed "
                f"({', '.join(f'{k} ×{n}' for k, n in seen)}; e.g. {example}). The endpoint may have moved or be "
                f"refusing us: check the URL templates in the source's manifest (manifests/*.toml) or "
                f"{named('base_url')}, lower {named('rate')} or {named('concurrency')}, or try later. Everything "
                "fetched so far is kept; run the same command again to continue."
            )
            self.stop.set()

    async def _run_job(self, pool: ThreadPoolExecutor, job: Job, prog: Progress, deferred: bool = False) -> None:
        """One job to its end: accepted, or recorded as given up on. Its URL is tried, then its fallbacks while the
        answer is 404 or 410; an address the engine does not ask for is a permanent failure."""
        last: _Outcome | None = None
        tried: list[str] = []
        attempts = 0
        for url in [job.url, *job.fallbacks]:
            tried.append(url)
            refused = unfetchable(url)
            if refused:  # never asked: a permanent, recorded failure (a re-run skips it)
                last, attempts = _Outcome(refused, False, permanent=True), 0
                continue
            ended, last, attempts = await self._try_url(pool, job, url, prog, deferred)
            if ended:
                return
            if last is None or last.status not in (404, 410):
                break  # only a missing file sends us on to the next fallback
        if last is not None and not self.stop.is_set():
            await self._give_up(pool, job, last, attempts, tried, prog)

    async def _try_url(self, pool: ThreadPoolExecutor, job: Job, url: str, prog: Progress,
                       deferred: bool) -> tuple[bool, _Outcome | None, int]:
        """Ask for ``url`` until it is accepted or not worth another try: ``(ended, last failure, attempts)``. The
        job has ended when its body was taken (or was a duplicate), when the run is stopping, or when a server asks
        (Retry-After) for a longer wait than ``max_wait`` (``--max-wait``): the first time the job goes to the end of
        the run (``self.deferred``); the second time it is a failure that a later run tries again."""
        host = self._host(job.lane or host_key(url))
        last: _Outcome | None = None
        for attempt in range(1, self.opts.retries + 2):
            if self.stop.is_set():
                return True, last, attempt
            try:
                result, body = await self._fetch_and_accept(pool, job, url, host)
            except _Outcome as out:
                last = out
                self._note(False, out.label, url)
                if out.wait is not None and out.wait > self.opts.max_wait:
                    if not deferred:
                        self.deferred.append(job)
                        self.counts["deferred"] += 1
                        return True, last, attempt
                    last = _Outcome(f"asked to wait {out.wait:.0f} s (over the max_wait of {self.opts.max_wait:g} s)",
                                    True, status=out.status)
                    return False, last, attempt
                if out.retryable and attempt <= self.opts.retries and not self.stop.is_set():
                    self.counts["retries"] += 1
                    prog.advance(0, retry=1)
                    await asyncio.sleep(min(out.wait if out.wait is not None else self._backoff(attempt),
                                            self.opts.max_wait))
                    continue
                return False, last, attempt
            self._taken(result, body, url, prog)
            return True, None, attempt
        return False, last, self.opts.retries + 1

    async def _fetch_and_accept(self, pool: ThreadPoolExecutor, job: Job, url: str,
                                host: _Host) -> tuple[tuple, bytes]:
        """One GET of ``url`` and the check of its body (in ``pool``), with the body's room in the memory budget
        given back before this returns — before any backoff sleep. A body that fails its check (an error page with
        status 200, a damaged image) is an outcome worth another try."""
        hold = _Hold()
        try:
            body, meta = await self._attempt(url, job.headers, host, hold=hold)
            await self.budget.take(hold, _check_cost(body))
            result = await asyncio.get_running_loop().run_in_executor(pool, self._accept, job, url, body, meta)
        finally:
            self.budget.give_back(hold)
        if result[0] == "bad":
            out = _Outcome(result[1].split(" (")[0], True, status=200)
            out.detail = result[1]
            raise out
        return result, body

    def _taken(self, result: tuple, body: bytes, url: str, prog: Progress) -> None:
        """Count a body the check took: stored, known already, or a duplicate of another URL's (a server answering
        one placeholder for everything trips the breaker)."""
        if result[0] == "duplicate":
            self._note(False, "duplicate body", url)
            self.counts["duplicate_bodies"] += 1
            self.failures["duplicate body"] += 1
            prog.advance(0, duplicate=1)
            return
        self._note(True, "ok", url)
        if result[1] is not None:
            self.counts["accepted"] += 1
            self.bytes += len(body)
            prog.advance(1)

    async def _give_up(self, pool: ThreadPoolExecutor, job: Job, last: _Outcome, attempts: int, tried: list[str],
                       prog: Progress) -> None:
        """Record the job as given up on (failures.jsonl), so that this run does not ask for it again."""
        self.failures[last.label] += 1
        self.counts["permanent_failures" if last.permanent else "failures"] += 1
        info = {"url": job.url, "permanent": last.permanent, "attempts": attempts}
        if len(tried) > 1:
            info["tried"] = tried
        if last.status is not None:
            info["status"] = last.status
        if last.detail:
            info["detail"] = last.detail
        await asyncio.get_running_loop().run_in_executor(pool, lambda: self.ds.fail(job.key, last.label, **info))
        self._skip.add(job.key)  # the list naming it again later in this run does not ask again
        prog.advance(0, failed=1)

    async def page(self, url: str, lane: str | None = None, headers: dict | None = None,
                   check: Callable[[str], None] | None = None) -> str:
        """GET an HTML/text page through the same session, lanes, retries and breaker as the images.

        ``check(text)`` may raise :class:`PageRetry` (wait, then ask again) or :class:`PageStop` (end the run).
        Raises :class:`PageError` when the page cannot be had, :class:`Stopped` when the run is stopping."""
        host = self._host(lane or host_key(url))
        for attempt in range(1, self.opts.retries + 2):
            if self.stop.is_set():
                raise Stopped()
            try:
                try:
                    body, meta = await self._attempt(url, headers or {}, host, keep_error_body=True)
                except _Outcome as out:  # a throttle or challenge page may come with any status: let the check see it
                    if check is not None and out.body:
                        check(out.body.decode("utf-8", errors="replace"))
                    raise
                text = body.decode("utf-8", errors="replace")
                if check is not None:
                    check(text)
                self._note(True, "ok", url)
                self.counts["pages"] += 1
                return text
            except PageStop as e:
                self._note(False, "stopped by the site", url)
                self.stop_reason = str(e)
                self.stop.set()
                raise Stopped() from None
            except PageRetry as e:
                self._note(False, e.label, url)
                if attempt > self.opts.retries:
                    raise PageError(e.label, 200) from None
                self.counts["retries"] += 1
                host.paused_until = max(
                    host.paused_until, asyncio.get_running_loop().time() + e.wait * 2 ** (attempt - 1)
                )
            except _Outcome as out:
                self._note(False, out.label, url)
                if not out.retryable or attempt > self.opts.retries:
                    raise PageError(out.label, out.status) from None
                self.counts["retries"] += 1
                await asyncio.sleep(
                    min(out.wait if out.wait is not None else self._backoff(attempt), self.opts.max_wait)
                )
        raise PageError("no answer")

    def _accept(self, job: Job, url: str, body: bytes, meta: dict) -> tuple:
        """In a worker thread: cut bytes after the image's end, check the rest (``images.verify``), then store it unless
        the same bytes are stored.

        Returns ``("bad", reason)``, ``("duplicate", first_key)`` or ``("ok", manifest_row_or_None)``."""
        end = images.image_end(body)
        trailing = len(body) - end
        if trailing:  # junk after the image's end (a server's padding, an appended payload) is not stored
            body = body[:end]
        try:
            fmt, w, h = images.verify(body, self.opts.max_pixels)
        except images.ImageError as e:
            return ("bad", str(e))
        sha = hashlib.sha256(body).hexdigest()
        with self._sha_lock:
            first = self._shas.setdefault(bytes.fromhex(sha), job.key)
        if first != job.key:
            self.ds.fail(job.key, "duplicate body", detail=f"same bytes as {first}", url=url, permanent=True)
            return ("duplicate", first)
        record = {**job.record, "source": self.source, "url": url, "width": w, "height": h, "format": fmt,
                  "bytes": len(body), **meta, **({"trailing_bytes": trailing} if trailing else {})}
        return ("ok", self.ds.add(job.key, body, EXT_OF.get(fmt, fmt), record, sha256=sha))

    # ---- the run

    async def run(self, jobs: Iterable[Job] | AsyncIterable[Job], target: int | None = None,
                  total_hint: int | None = None) -> dict:
        """Fetch ``jobs`` until the dataset holds ``target`` images (all jobs when None). Returns the stats."""
        t0 = time.monotonic()
        for row in self.ds.rows():
            try:
                self._shas.setdefault(bytes.fromhex(row["sha256"]), row["key"])
            except (KeyError, TypeError, ValueError):  # a row without a readable sha256: nothing to compare with
                pass
        self._skip = {k for k, f in self.ds.open_failures().items() if f.get("permanent")}
        start_total = len(self.ds)
        if target is not None and start_total >= target:
            return self._stats(t0, start_total, target, 0)
        pool = ThreadPoolExecutor(max_workers=self.opts.validate_threads or None, thread_name_prefix="fetch")
        connector = aiohttp.TCPConnector(limit=self.opts.concurrency, limit_per_host=self.opts.per_host,
                                         ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None)  # each request's --timeout is its own deadline (_attempt)
        headers = {"User-Agent": self.opts.user_agent, **self.opts.headers}
        want = None if target is None else target - start_total
        label = f"fetch {self.source}"
        tasks: set[asyncio.Task] = set()
        skipped = 0
        stopper = asyncio.create_task(self.stop.wait())

        async def settle(until_below: int | None) -> None:
            """Wait for tasks to finish until fewer than ``until_below`` are left (None: all), or a stop."""
            while tasks and (until_below is None or len(tasks) >= until_below) and not self.stop.is_set():
                done, _ = await asyncio.wait(tasks | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in done & tasks:
                    tasks.discard(t)
                    t.result()

        try:
            # bodies are decoded here (_Decoder), counted as they grow: aiohttp's own decoding inflates a whole
            # gzip body at once, past every cap; only the encodings _Decoder reads are offered
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                             headers={"Accept-Encoding": "gzip, deflate", **headers}) as session:
                self._session = session
                with Progress(label, want if want is not None else total_hint, enabled=self.progress) as prog:
                    in_flight_keys: set[str] = set()
                    async for job in _each(jobs):
                        if job.key in self.ds or job.key in self._skip or job.key in in_flight_keys:
                            skipped += 1
                            continue
                        await settle(self.opts.concurrency)
                        while (want is not None and tasks and not self.stop.is_set()
                               and self.counts["accepted"] + len(tasks) >= want):
                            await settle(len(tasks))  # enough in flight to reach the target: wait for one
                        if self.stop.is_set() or (want is not None and self.counts["accepted"] >= want):
                            break
                        in_flight_keys.add(job.key)
                        task = asyncio.create_task(self._run_job(pool, job, prog))
                        task.add_done_callback(lambda _t, k=job.key: in_flight_keys.discard(k))
                        tasks.add(task)
                    await settle(None)
                    # the jobs a server asked to come back to much later: once more, at the end of the run
                    while self.deferred and not self.stop.is_set():
                        if want is not None and self.counts["accepted"] >= want:
                            break
                        job = self.deferred.pop(0)
                        await settle(self.opts.concurrency)
                        tasks.add(asyncio.create_task(self._run_job(pool, job, prog, deferred=True)))
                    await settle(None)
        finally:
            stopper.cancel()
            for t in tasks:  # stopped: abandon requests and backoff sleeps; a write that started finishes in its thread
                t.cancel()
            await asyncio.gather(stopper, *tasks, return_exceptions=True)
            pool.shutdown(wait=True)  # every write that started is finished
        self.counts["skipped_known"] = skipped
        return self._stats(t0, start_total, target, len(self.ds) - start_total)

    def _stats(self, t0: float, start_total: int, target: int | None, added: int) -> dict:
        seconds = time.monotonic() - t0
        total = start_total + added
        return {
            "source": self.source,
            "accepted": added,
            "total": total,
            "target": target,
            "complete": target is None or total >= target,
            "failures": dict(self.failures.most_common()),
            "retries": self.counts["retries"],
            "pages": self.counts["pages"],
            "duplicate_bodies": self.counts["duplicate_bodies"],
            "skipped_known": self.counts["skipped_known"],
            "deferred": self.counts["deferred"],
            "bytes": self.bytes,
            "memory_peak": self.budget.peak,
            "seconds": round(seconds, 3),
            "rate": round(added / seconds, 1) if seconds > 0 else None,
            "stopped": self.stop_reason,
        }


async def _each(jobs: Iterable[Job] | AsyncIterable[Job]) -> AsyncIterator[Job]:
    """Jobs from a plain or an async iterable; a source's crawl ending with :class:`Stopped` just ends the jobs."""
    try:
        if hasattr(jobs, "__aiter__"):
            async for job in jobs:
                yield job
        else:
            for job in jobs:
                yield job
    except Stopped:
        return
    finally:
        if hasattr(jobs, "aclose"):
            await jobs.aclose()


def _connection_label(e: BaseException) -> str:
    if type(e).__name__ == "ClientConnectorDNSError":
        return "DNS lookup failed"
    if isinstance(e, aiohttp.ClientConnectorError):
        return "connection refused" if getattr(e, "errno", None) == errno.ECONNREFUSED else "cannot connect"
    return "connection reset"


def _check_cost(body: bytes) -> int:
    """Bytes of pixels that checking ``body`` decodes at once (:func:`images.verify`: JPEGs at 1/8 scale)."""
    fmt, pixels = images.pixel_count(body)  # 0 when the header is refused: the check ends there
    return pixels * 4 // (64 if fmt == "jpeg" else 1)


@dataclass
class FetchSummary(Summary):
    """A fetch run: what the engine counted, and what the run was (this is what lands in stats.json)."""

    source: str
    accepted: int  # new images stored by this run
    total: int  # images the dataset now holds
    target: int | None
    complete: bool
    failures: dict[str, int]  # given up on, by reason
    retries: int
    pages: int
    duplicate_bodies: int
    skipped_known: int  # keys already stored or refused by an earlier run
    bytes: int
    seconds: float
    rate: float | None
    stopped: str | None  # why the run ended early (None: it ended normally)
    interrupted: bool
    stage: str
    out: str
    inputs: list[str]
    provenance: dict  # where the items came from (catalogues with their sha256, lists, manifests)
    options: dict  # every setting, the source's and the engine's
    deferred: int = 0  # jobs a server asked to wait longer than --max-wait for: tried again at the end
    memory_peak: int = 0  # most bytes bodies and their checks held at once (bounded by --memory + one body)
    extra: dict = field(default_factory=dict)  # the source's own counts (bricklink's crawl, …), shown at top level

    def to_json(self) -> dict:
        out = super().to_json()
        out.update(out.pop("extra"))
        return out

    def lines(self) -> list[str]:
        target = f" of {self.target}" if self.target else ""
        out = [f"fetched {self.accepted} new images into {self.out} (it now holds {self.total}{target}) "
               f"in {self.seconds} s ({self.rate or 0}/s)"]
        if self.failures:
            fails = ", ".join(f"{k} ×{v}" for k, v in list(self.failures.items())[:6])
            out.append(f"  given up on: {fails} (each listed in {self.out}/failures.jsonl)")
        out.append(f"  {self.retries} retries, {self.duplicate_bodies} duplicate bodies, "
                   f"{self.skipped_known} already done or refused earlier; stats in {self.out}/stats.json")
        return out

    def brief(self) -> str:
        return f"{self.accepted} new images, {self.total} in all; {sum(self.failures.values())} given up on"

    def failure(self) -> tuple[int, str] | None:
        if self.interrupted:
            return 130, "interrupted; run the same command again to continue"
        if self.stopped:
            return 1, self.stopped
        return None


def describe_run(stats: dict, stage: str, out: object, provenance: dict, settings: dict) -> FetchSummary:
    """A source's fetch stats (from :func:`fetch`) completed with what the run was: its stage, output folder,
    where the items came from, and every setting (the source's and the engine's)."""
    engine = stats.pop("options", {})
    return FetchSummary(**stats, stage=stage, out=str(out), inputs=[], provenance=provenance,
                        options={**settings, **engine})


def fetch(
    dataset: Dataset,
    source: str,
    jobs: Iterable[Job] | AsyncIterable[Job] | Callable[[Fetcher], AsyncIterable[Job]],
    target: int | None = None,
    options: FetchOptions | None = None,
    progress: bool = False,
    total_hint: int | None = None,
) -> dict:
    """Run ``jobs`` into ``dataset`` (blocking). ``jobs`` may be a function of the :class:`Fetcher` returning an
    async iterable, for sources that crawl pages (``fetcher.page``) while images download.
    Ctrl-C stops cleanly: the stats then say ``interrupted``."""

    async def main() -> dict:
        fetcher = Fetcher(dataset, source, options, progress)
        loop = asyncio.get_running_loop()
        interrupted = False

        def on_sigint() -> None:
            nonlocal interrupted
            interrupted = True
            fetcher.stop_reason = "interrupted; run the same command again to continue"
            fetcher.stop.set()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread, or no signals here
            pass
        try:
            stats = await fetcher.run(jobs(fetcher) if callable(jobs) else jobs, target, total_hint)
        finally:
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (RuntimeError, ValueError, NotImplementedError):
                pass
        stats["interrupted"] = interrupted
        stats["options"] = {k: v for k, v in asdict(fetcher.opts).items() if k != "headers"}
        return stats

    return asyncio.run(main())
