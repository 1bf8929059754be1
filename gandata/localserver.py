"""An HTTP server on 127.0.0.1 in a background thread: what the demo serves its render server with, and what every
test server is built on (tests never leave the machine)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[..., Awaitable]


class LocalServer:
    """``routes`` — ``(method, path, handler)`` with aiohttp's path syntax — served on an ephemeral port of 127.0.0.1
    until :meth:`close` (``with LocalServer(routes) as s: … s.url …``)."""

    def __init__(self, routes: list[tuple[str, str, Handler]], name: str = "local-server") -> None:
        from aiohttp import web

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)
        self._thread.start()
        app = web.Application()
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)

        async def start() -> int:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
