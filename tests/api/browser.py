"""One headless Chromium for every console test, driven over the DevTools protocol.

A ``chromium --dump-dom`` per page costs a browser start (seconds on a busy
machine) and a virtual-time budget that stalls on every open fetch. Here the
browser starts once; each page is a new tab, and the test's own assertions are
retried on the page's DOM until they pass (or a deadline passes and the last
failure is raised), so a test waits exactly as long as the page needs, with no
fixed sleep.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from core.waiting import wait_until

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (path := shutil.which(name))), None)

#: A check of a page's DOM: raises AssertionError until the page shows what the test expects.
Check = Callable[[str], None]


class Tab:
    """One page of the browser, over its own DevTools websocket."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def dom(self) -> str:
        """The page's DOM as ``chromium --dump-dom`` prints it."""
        answer = self.call("Runtime.evaluate", expression="document.documentElement.outerHTML",
                           returnByValue=True)
        return str(answer["result"].get("value", ""))

    def settle(self, check: Check, timeout_s: float) -> str:
        """The DOM once ``check`` passes on it; after ``timeout_s``, the last AssertionError."""
        deadline = time.monotonic() + timeout_s
        while True:
            dom = self.dom()
            try:
                check(dom)
                return dom
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        """A PNG of the viewport into ``path``."""
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


class Browser:
    """A headless Chromium started once; :meth:`tab` opens a page in it."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.profile = profile
        self.process = subprocess.Popen(
            [binary, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
             "--no-first-run", "--window-size=1400,1500", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = profile / "DevToolsActivePort"
        if not wait_until(lambda: active.exists() and len(active.read_text().splitlines()) >= 2, 60,
                          interval_s=0.1, abandon=self._exited):
            self.close()
            raise RuntimeError("Chromium did not open its DevTools port within 60 s")
        self.endpoint = f"http://127.0.0.1:{active.read_text().splitlines()[0]}"

    def _exited(self) -> str | None:
        code = self.process.poll()
        return None if code is None else f"Chromium exited with {code}"

    @contextmanager
    def tab(self, url: str, width: int = 1400, height: int = 1500) -> Iterator[Tab]:
        """A new tab loading ``url`` in a ``width`` x ``height`` viewport, closed after the block."""
        target = httpx.put(f"{self.endpoint}/json/new?about:blank", timeout=30).json()
        try:
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
                tab = Tab(socket)
                tab.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                         deviceScaleFactor=1, mobile=False)
                tab.call("Page.navigate", url=url)
                yield tab
        finally:
            httpx.get(f"{self.endpoint}/json/close/{target['id']}", timeout=30)

    def close(self) -> None:
        """Stop the browser."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
