"""A local HTTP server for the fetch tests: real URL shapes, deterministic PNGs, injectable faults.

Routes (the same paths as the real sites, so ``--base-url`` is all a test changes):

* ``/avatar-builder-v3/assets``            the real libmoji trait catalogue fixture
* ``/content/templates``                   the real 2021 templates catalogue fixture
* ``/bm-preview/v3/avatar/{view}``         a transparent PNG drawn from the query (trait preview, 2025 form)
* ``/avatar-builder-v3/preview/{view}``    the same (the 2018 form)
* ``/render/panel/{comic}-{avatar}-v1.png`` a PNG drawn from the path (comics)
* ``/img/{name}``                           a PNG drawn from the name (URL lists)

``server.fault`` is a function ``(request, attempt) -> action | None`` where ``attempt`` counts requests for the
same path and query (1 for the first). Actions: ``("status", code, headers)``, ``"reset"``, ``"truncate"``,
``"html"``, ``("slow", seconds)``, ``("robots", value)``, ``("same", name)`` (answer with another URL's image).
Every request is logged in ``server.log`` as ``(time, path_qs, status_or_action)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import time
from collections import Counter

from aiohttp import web
from conftest import fixture_path
from PIL import Image, ImageDraw

from gandata.localserver import LocalServer


def draw_png(seed_text: str, size: int = 48, transparent: bool = False) -> bytes:
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    im = Image.new("RGBA" if transparent else "RGB", (size, size), (0, 0, 0, 0) if transparent else (255, 255, 255))
    d = ImageDraw.Draw(im)
    skin = tuple(rng.randrange(120, 256) for _ in range(3))
    d.ellipse((6, 4, size - 6, size - 2), fill=skin + ((255,) if transparent else ()))
    for _ in range(6):
        x, y = rng.randrange(size - 8), rng.randrange(size - 8)
        d.rectangle((x, y, x + rng.randrange(2, 8), y + rng.randrange(2, 8)),
                    fill=tuple(rng.randrange(256) for _ in range(3)) + ((255,) if transparent else ()))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class RenderServer:
    def __init__(self, catalogues: bool = True) -> None:
        """``catalogues``: serve the real Bitmoji catalogues of the fixture corpus (the tests are skipped without
        it); image-only tests pass False and need no corpus."""
        if catalogues:
            for name in ("libmoji_assets_2018.json", "bitmoji_templates_2021_excerpt.json"):
                fixture_path(f"sources/{name}")
        self.fault = None
        self.log: list[tuple[float, str, str]] = []
        self.attempts: Counter = Counter()
        self.user_agents: Counter = Counter()
        self._cache: dict[str, bytes] = {}
        self._server = LocalServer(self._routes())
        self.port, self.url = self._server.port, self._server.url

    def _routes(self) -> list:
        return [
            ("GET", "/avatar-builder-v3/assets", self._fixture("libmoji_assets_2018.json", "application/json")),
            ("GET", "/content/templates", self._fixture("bitmoji_templates_2021_excerpt.json", "application/json")),
            ("GET", "/bm-preview/v3/avatar/{view}", self._image(transparent=True)),
            ("GET", "/avatar-builder-v3/preview/{view}", self._image(transparent=True)),  # the 2018 form
            ("GET", "/render/panel/{name}", self._image(transparent=True)),
            ("GET", "/img/{name}", self._image(transparent=False)),
        ]

    def _fixture(self, name: str, ctype: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            data = fixture_path(f"sources/{name}").read_bytes()
            self.log.append((time.monotonic(), request.path_qs, "200"))
            return web.Response(body=data, content_type=ctype)

        return handler

    def _body(self, key: str, transparent: bool) -> bytes:
        if key not in self._cache:
            self._cache[key] = draw_png(key, transparent=transparent)
        return self._cache[key]

    def _image(self, transparent: bool):
        async def handler(request: web.Request) -> web.StreamResponse:
            key = request.path_qs
            self.attempts[key] += 1
            self.user_agents[request.headers.get("User-Agent", "")] += 1
            action = self.fault(request, self.attempts[key]) if self.fault else None
            self.log.append((time.monotonic(), key, str(action if action is not None else 200)))
            body = self._body(key, transparent)
            if action is None:
                return web.Response(body=body, content_type="image/png")
            if action == "reset":
                request.transport.abort()
                return web.Response(body=b"")
            if action == "truncate":
                resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": str(len(body))})
                await resp.prepare(request)
                await resp.write(body[: len(body) // 2])
                request.transport.abort()
                return resp
            if action == "html":
                return web.Response(text="<!DOCTYPE html><html><body><h1>Error</h1>Try again later</body></html>",
                                    content_type="text/html")
            kind = action[0]
            if kind == "status":
                _, code, headers = action
                return web.Response(status=code, headers=headers, text=f"error {code}")
            if kind == "slow":
                await asyncio.sleep(action[1])
                return web.Response(body=body, content_type="image/png")
            if kind == "robots":
                return web.Response(body=body, content_type="image/png", headers={"X-Robots-Tag": action[1]})
            if kind == "same":
                return web.Response(body=self._body(action[1], transparent), content_type="image/png")
            raise AssertionError(f"unknown action {action!r}")

        return handler

    def requests_for(self, prefix: str) -> list[str]:
        return [p for _, p, _ in self.log if p.startswith(prefix)]

    def close(self) -> None:
        self._server.close()
