"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (no port, no websocket, no
dependency): Chromium reads commands from its fd 3 and writes responses and events to its fd 4, one JSON
message per NUL-terminated record. Enough to open a page, wait for its load event, evaluate JavaScript,
and take a screenshot, collecting every event (exceptions, console and log entries, network requests).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: flags known to work with Debian's chromium in this sandbox, as root, without network
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)

Message = dict[str, Any]


class CdpError(Exception):
    pass


def _above_4(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


@dataclass
class Page:
    browser: Browser
    session_id: str
    #: every event of this page's session, in arrival order
    events: list[Message] = field(default_factory=list)

    def send(self, method: str, params: Message | None = None) -> Message:
        return self.browser.send(method, params, session_id=self.session_id)

    def wait_for_event(self, method: str, after: int = 0) -> Message:
        return self.browser.wait_for_event(method, self.session_id, after)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-able); a thrown exception is a `CdpError`."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression[:60]}...: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def screenshot(self, path: Path, width: int) -> Path:
        """A PNG of the whole page at `width` CSS pixels."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        reply = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(reply["data"]))
        return path

    def errors(self) -> list[str]:
        """Script exceptions, console errors and error log entries (CSP violations among them)."""
        out = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log: {params['entry'].get('text')}")
        return out

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]


class Browser:
    """Headless Chromium driven over the pipe. Every wait is bounded by `timeout_s` and ends early on
    the awaited message; a Chromium that dies fails the wait at once with its log."""

    def __init__(self, executable: str, user_data_dir: Path, *, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        commands_read, self._commands = os.pipe()  # Chromium's fd 3: it reads our commands
        self._replies, replies_write = os.pipe()  # Chromium's fd 4: it writes replies and events
        # Move the browser's ends above 4, so putting them on 3 and 4 cannot clobber one another.
        commands_read, replies_write = (_above_4(fd) for fd in (commands_read, replies_write))
        self.log_path = user_data_dir / "chromium.log"
        user_data_dir.mkdir(parents=True, exist_ok=True)
        # bash puts the pipe ends on fds 3 and 4 of the browser, whatever their numbers are here.
        wrapper = f'exec "$@" 3<&{commands_read} 4>&{replies_write} {commands_read}<&- {replies_write}>&-'
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    "bash",
                    "-c",
                    wrapper,
                    "chromium",
                    executable,
                    *HEADLESS_FLAGS,
                    f"--user-data-dir={user_data_dir}",
                    "--remote-debugging-pipe",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(commands_read, replies_write),
            )
        os.close(commands_read)
        os.close(replies_write)
        self._inbox: queue.Queue[Message | None] = queue.Queue(maxsize=100_000)
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self._next_id = 0
        self._pages: dict[str, Page] = {}
        self._unrouted: list[Message] = []
        self._closed = False

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._replies, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                buffer += chunk
                *records, buffer = buffer.split(b"\0")
                for record in records:
                    self._inbox.put(json.loads(record))
        self._inbox.put(None)  # the browser closed its end: it exited

    def _next(self) -> Message:
        try:
            message = self._inbox.get(timeout=self.timeout_s)
        except queue.Empty:
            raise CdpError(f"no message from Chromium within {self.timeout_s} s") from None
        if message is None:
            raise CdpError(f"Chromium exited (code {self.process.wait()}); log:\n{self._log_tail()}")
        if "method" in message:
            page = self._pages.get(message.get("sessionId", ""))
            (page.events if page is not None else self._unrouted).append(message)
        return message

    def _until(self, done: Callable[[Message], bool]) -> Message:
        while True:
            message = self._next()
            if done(message):
                return message

    def send(self, method: str, params: Message | None = None, *, session_id: str | None = None) -> Message:
        self._next_id += 1
        command: Message = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id is not None:
            command["sessionId"] = session_id
        os.write(self._commands, json.dumps(command).encode() + b"\0")
        wanted = self._next_id
        reply = self._until(lambda m: m.get("id") == wanted)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: Message = reply.get("result", {})
        return result

    def wait_for_event(self, method: str, session_id: str, after: int = 0) -> Message:
        """The first `method` event of the session at or after index `after` of its events."""
        page = self._pages[session_id]
        seen = after
        while True:
            for event in page.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(page.events)
            self._next()

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        return page

    def open(self, url: str) -> Page:
        """A new page at `url`, returned once its document has loaded (its load event has fired and it
        is the document at `url`, not the blank page it replaced)."""
        page = self.new_page()
        reply = page.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"navigating to {url}: {reply['errorText']}")
        while True:
            seen = len(page.events)
            if page.evaluate("[document.URL, document.readyState]") == [url, "complete"]:
                return page
            page.wait_for_event("Page.loadEventFired", after=seen)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(CdpError):  # it may exit before it answers
            self.send("Browser.close")
        try:
            self.process.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        self._reader.join(timeout=self.timeout_s)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
