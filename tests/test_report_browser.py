"""Open the HTML report in a real headless browser: no console error, the equity chart shown.

Why the DevTools protocol rather than ``chromium --dump-dom``: ``--dump-dom`` only proves the
markup parsed; console messages reach stderr only with verbose logging whose format changes
between releases. Over the protocol we subscribe to exactly the events that count, then ask the
page itself whether the chart image decoded:

* ``Runtime.exceptionThrown`` (an uncaught script error),
* ``Runtime.consoleAPICalled`` with type ``error`` or ``assert``,
* ``Log.entryAdded`` with level ``error`` (browser-side errors: a Content-Security-Policy
  violation, i.e. an external reference, or a resource that failed to load).

Chromium (Debian package ``chromium``) is started with ``--remote-debugging-port=0``; it writes
the port it chose into ``DevToolsActivePort`` in its profile directory, and we talk to it over
loopback only (trio-websocket for the protocol, httpx for the target list). The browser gets a
throwaway profile and every background-network feature off; the report loads from ``file://``.

A control test feeds the same harness a page with a script error, a ``console.error`` and an
external image, and checks that all three are caught, so a silent harness cannot pass.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

pytest.importorskip("matplotlib", reason="the report charts need matplotlib")

from backtest.report import write_report
from tests.test_report import make_result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` package "
                       "(apt-get install chromium) for the headless-browser report test"),
]

TIMEOUT = 60  # generous: a cold chromium start on a busy 2-core CI machine takes seconds


def _flags(profile: Path) -> list[str]:
    return [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--mute-audio",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "about:blank",
    ]


class Cdp:
    """A minimal DevTools protocol client: numbered commands, events kept in order."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def _next(self) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(await self._ws.get_message())
        if "method" in msg:
            self.events.append(msg)
        return msg

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self._ids)
        await self._ws.send_message(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = await self._next()
            if msg.get("id") == n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result

    async def wait_event(self, method: str) -> dict[str, Any]:
        seen = len(self.events)
        while True:
            for ev in self.events[seen:]:
                if ev["method"] == method:
                    return ev
            seen = len(self.events)
            await self._next()

    def errors(self) -> list[str]:
        out = []
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"uncaught: {p['exceptionDetails'].get('text')} "
                           f"{p['exceptionDetails'].get('exception', {}).get('description')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log ({p['entry'].get('source')}): {p['entry'].get('text')}")
        return out


@asynccontextmanager
async def open_browser(tmp: Path) -> AsyncIterator[Cdp]:
    """Start chromium, yield a DevTools client attached to its page, stop it on exit."""
    assert CHROMIUM is not None
    profile = tmp / "profile"
    profile.mkdir()
    log = (tmp / "chromium.log").open("wb")
    proc = await trio.lowlevel.open_process([CHROMIUM, *_flags(profile)],
                                            stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        with trio.fail_after(TIMEOUT):
            port_file = profile / "DevToolsActivePort"
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None:
                    raise AssertionError("chromium exited: "
                                         + (tmp / "chromium.log").read_text()[-2000:])
                await trio.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            async with httpx.AsyncClient(trust_env=False) as http:
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            assert url.startswith("ws://127.0.0.1:")
            async with open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws:
                cdp = Cdp(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await cdp.call(f"{domain}.enable")
                yield cdp
    finally:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.poll() is None:
            proc.kill()
            await proc.wait()
        log.close()


async def load(cdp: Cdp, page: Path) -> None:
    with trio.fail_after(TIMEOUT):
        await cdp.call("Page.navigate", url=page.as_uri())  # tmp_path is absolute
        await cdp.wait_event("Page.loadEventFired")
        # One round trip more, so messages logged during load are in before we look.
        await cdp.call("Runtime.evaluate", expression="1")


async def evaluate(cdp: Cdp, expression: str) -> Any:
    with trio.fail_after(TIMEOUT):
        reply = await cdp.call("Runtime.evaluate", expression=expression, returnByValue=True)
    assert "exceptionDetails" not in reply, reply
    return reply["result"].get("value")


async def test_report_opens_without_console_errors(tmp_path: Path) -> None:
    page = write_report(make_result(), tmp_path / "report")
    async with open_browser(tmp_path) as cdp:
        await load(cdp, page)
        chart = await evaluate(cdp, """(() => {
            const img = document.getElementById("equity-chart");
            if (!img) return null;
            const box = img.getBoundingClientRect();
            return {tag: img.tagName, complete: img.complete, w: img.naturalWidth,
                    h: img.naturalHeight, shown: box.width > 0 && box.height > 0};
        })()""")
        broken = await evaluate(cdp, "[...document.images].filter("
                                     "i => !i.complete || i.naturalWidth === 0).length")
        rows = await evaluate(cdp, "document.querySelectorAll('#trades-table tbody tr').length")
        title = await evaluate(cdp, "document.title")
        errors = cdp.errors()
    assert errors == []
    assert chart == {"tag": "IMG", "complete": True, "w": 1000, "h": 400, "shown": True}
    assert broken == 0
    assert rows == 4
    assert title == "Backtest report"


async def test_harness_catches_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        # The same policy as the report: the external image is blocked, never fetched.
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; script-src 'unsafe-inline'\"></head><body>"
        "<img src='https://example.invalid/x.png'>"
        "<script>console.error('boom'); undefined_function();</script>"
        "</body></html>")
    async with open_browser(tmp_path) as cdp:
        await load(cdp, bad)
        assert await evaluate(cdp, "document.getElementById('equity-chart')") is None
        errors = cdp.errors()
    text = "\n".join(errors)
    assert "console.error: boom" in text
    assert "undefined_function" in text
    assert "example.invalid" in text  # the CSP violation of the external reference


def test_chromium_is_debian_package() -> None:
    # Documents the dependency: the CI installs the Debian package `chromium`.
    assert CHROMIUM is not None
    assert os.access(CHROMIUM, os.X_OK)
