"""Shards over http(s) from a server that misbehaves mid-transfer: it stalls, trickles, answers its headers a byte
at a time, or cuts the connection. Every command that reads shards ends in one line, in bounded time (the deadlines
are made small here with ``GANDATA_STORE_TIMEOUT``); a server that is merely slower than the reader, or a reader
slower than the server, reads every byte. The servers are raw sockets on 127.0.0.1; each gives up after a minute,
so that a reader without a deadline fails its test instead of hanging it."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import drawn_image, png_bytes, tar_of

from gandata import shardset
from gandata.export import export

GIVE_UP = 60.0  # seconds after which a test server ends a transfer it was told to hold (a hang fails the test)


class ShardServer:
    """Serves ``body`` as a tar at ``/x.tar`` (with its Content-Length) to every request, as ``mode`` says:
    ``whole``; ``stall`` (the first ``head`` bytes, then nothing); ``trickle`` (the first ``head`` bytes, then one
    byte every ``pause`` seconds); ``headers`` (the answer's header one byte every ``pause`` seconds); ``cut`` (the
    first ``head`` bytes, then the connection closed)."""

    def __init__(self, body: bytes, mode: str, head: int = 0, pause: float = 0.1):
        self.body, self.mode, self.head, self.pause = body, mode, head, pause
        self.closed = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x.tar"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        header = (f"HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {len(self.body)}\r\n"
                  "Connection: close\r\n\r\n").encode()
        give_up = time.monotonic() + GIVE_UP
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                more = conn.recv(4096)
                if not more:
                    return
                request += more
            if self.mode == "headers":
                for i in range(len(header)):
                    if self.closed.wait(self.pause) or time.monotonic() > give_up:
                        return
                    conn.sendall(header[i:i + 1])
            else:
                conn.sendall(header)
            if self.mode == "whole":
                conn.sendall(self.body)
                return
            conn.sendall(self.body[:self.head])
            if self.mode == "trickle":
                for i in range(self.head, len(self.body)):
                    if self.closed.wait(self.pause) or time.monotonic() > give_up:
                        return
                    conn.sendall(self.body[i:i + 1])
            elif self.mode == "stall":
                self.closed.wait(GIVE_UP)
        except OSError:  # the reader gave up and closed: what the test wants
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture(scope="module")
def shard_tar(tmp_path_factory) -> Path:
    """A 3 MB tar of 40 samples (more than the reading thread's buffer holds): drawn PNGs and noise beside them."""
    base = tmp_path_factory.mktemp("tar")
    members = []
    for i in range(40):
        members += [(f"s{i:03d}.png", png_bytes(drawn_image(i, (32, 32)))),
                    (f"s{i:03d}.bin", hashlib.sha256(str(i).encode()).digest() * 2400)]
    return tar_of(base / "x.tar", members)


@pytest.fixture
def short_deadlines(monkeypatch):
    monkeypatch.setenv("GANDATA_STORE_TIMEOUT", "0.5")
    monkeypatch.setattr(shardset, "HTTP_TRIES", 1)


def _samples(url: str) -> list:
    with shardset.open_shard(url) as f:
        return list(shardset.samples(f, url))


def test_a_shard_over_http_reads_whole_however_slowly_the_reader_takes_it(shard_tar, short_deadlines):
    """The reading thread fills its buffer and waits for the reader; that wait is not the server's slowness."""
    server = ShardServer(shard_tar.read_bytes(), "whole")
    try:
        with open(shard_tar, "rb") as f:
            expected = list(shardset.samples(f, str(shard_tar)))
        assert _samples(server.url) == expected
        with shardset.open_shard(server.url) as f:
            first = f.read(512)
            time.sleep(1.5)  # three times the deadline, with the buffer full
            assert first + f.read() == shard_tar.read_bytes()
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["stall", "trickle", "headers", "cut"])
def test_a_server_that_stalls_trickles_or_cuts_is_one_line(mode, shard_tar, short_deadlines):
    """Once a stall was a urllib3 traceback after 30 s, and a trickle (a byte a second: every read answered within
    its timeout) hung export and train with no line at all."""
    server = ShardServer(shard_tar.read_bytes(), mode, head=600_000)
    try:
        with pytest.raises(shardset.Unreachable, match=f"^{server.url}: .*try again later"):
            _samples(server.url)
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["trickle", "headers"])
def test_export_the_trainers_and_eval_end_in_one_line_on_such_a_server(mode, shard_tar, short_deadlines, monkeypatch,
                                                                        tmp_path):
    """Every reader of shards, while the body comes (a trickle) and while the answer does (its headers): export's
    error, and the trainers' and eval's loader (:func:`gandata.trainers.data.tar_samples`, which reads a failed shard
    again before it stops)."""
    from gandata.trainers import data as tdata

    monkeypatch.setattr(tdata, "SHARD_TRIES", 2)
    server = ShardServer(shard_tar.read_bytes(), mode, head=600_000)
    try:
        with pytest.raises(shardset.Unreachable, match=f"^{server.url}: "):
            export(server.url, tmp_path / "x.zip")
        with pytest.raises(tdata.DataError, match=f"^{server.url} could not be read after 2 tries .*try again later"):
            list(tdata.in_order([server.url], 8))
    finally:
        server.close()


def _gandata(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANDATA_STORE_TIMEOUT": "0.5", "GANDATA_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=GIVE_UP * 2)


@pytest.mark.slow
def test_every_command_that_reads_shards_says_one_line_on_a_trickling_server(shard_tar, tmp_path):
    """The commands as a user runs them: export and train end in one line naming the shard (train after reading it
    again, as it does a store's); inspect and shard, which read only local and object-store shards, say so."""
    server = ShardServer(shard_tar.read_bytes(), "trickle", head=600_000)
    try:
        for args in (["export", server.url, "--out", "x.zip"],
                     ["train", "dcgan", "--shards", server.url, "--out", "run", "--kimg", "1", "--batch", "4",
                      "--workers", "0", "--device", "cpu"],
                     ["inspect", server.url],
                     ["shard", server.url, "--out", "set"]):
            r = _gandata(*args, cwd=tmp_path)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
            assert lines[-1].startswith(f"gandata: error: {server.url}"), (args[0], lines[-1])
    finally:
        server.close()


@pytest.fixture
def store_at(monkeypatch):
    """s3:// URLs answered by a :class:`ShardServer` standing in for an S3-compatible store."""
    pytest.importorskip("s3fs", reason="needs the s3 extra: pip install -e '.[s3]'")
    import s3fs

    def at(server: ShardServer) -> str:
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url.rsplit("/", 1)[0])
        for k, v in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        return "s3://bucket/x.tar"

    yield at
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_shard_in_a_store_reads_whole_however_slowly_the_reader_takes_it(shard_tar, short_deadlines, store_at):
    server = _server_of(shard_tar, "whole")
    try:
        url = store_at(server)
        with open(shard_tar, "rb") as f:
            expected = list(shardset.samples(f, str(shard_tar)))
        assert _samples(url) == expected
        with shardset.open_shard(url) as f:
            first = f.read(512)
            time.sleep(1.5)  # three times the deadline, with the buffer full
            assert first + f.read() == shard_tar.read_bytes()
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["stall", "trickle", "headers", "cut"])
def test_a_store_that_stalls_trickles_or_cuts_is_one_line(mode, shard_tar, short_deadlines, store_at):
    """An S3-compatible store's answer, or its body, under the same deadlines as an http(s) shard's: a trickle (a
    byte every 0.1 s, each read answered within the store's per-read timeout) once kept a trainer waiting for ever."""
    server = _server_of(shard_tar, mode)
    try:
        url = store_at(server)
        t = time.monotonic()
        with pytest.raises(shardset.Unreachable, match=f"^{url}: .*try again later"):
            _samples(url)
        assert time.monotonic() - t < GIVE_UP / 2
    finally:
        server.close()


def _server_of(tar: Path, mode: str) -> ShardServer:
    return ShardServer(tar.read_bytes(), mode, head=600_000)
