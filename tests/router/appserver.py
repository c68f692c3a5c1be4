"""The router's aiohttp app served on loopback from a thread of its own, for plain sync tests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import requests
from aiohttp import web


class AppClient:
    """Serves ``app`` on 127.0.0.1 (a free port) until ``close``; ``get``/``post`` call it."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._main, name="app-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._failed is not None or not self.port:
            raise RuntimeError(f"the app did not start: {self._failed!r}")
        self.url = f"http://127.0.0.1:{self.port}"
        self.session = requests.Session()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except BaseException as exc:  # reported to the constructor
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET ``path`` on the app (no redirects followed)."""
        return self.session.get(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST ``path`` on the app."""
        return self.session.post(self.url + path, timeout=10, allow_redirects=False, **kwargs)

    def close(self) -> None:
        """Stop serving (the app's cleanup runs) and join the thread."""
        self.session.close()
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
