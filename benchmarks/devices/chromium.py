"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): the
browser's own file descriptors 3 (commands in) and 4 (events and replies out), NUL-terminated JSON.
No Python dependency (no Playwright, no websocket client), and no port another process could reach.

Used by the web device (a verdict and latency in the browser) and by the tests that screenshot the
pages; the browser is the system's (`/usr/bin/chromium` from Debian's `chromium` package).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from pocketml.errors import PocketMLError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--mute-audio", "--hide-scrollbars",
    # Timers and rAF of a page in a headless window are not throttled: latency is the page's own.
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--enable-unsafe-webgpu",  # headless offers WebGPU only behind this flag (a software adapter)
    # A test photo from a file chooser or the camera: the fake device instead of a real one.
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
)


def chromium_path() -> Path | None:
    """The browser binary: $POCKETML_CHROMIUM, else the first of CANDIDATES on PATH."""
    given = os.environ.get("POCKETML_CHROMIUM")
    if given:
        return Path(given) if Path(given).is_file() else None
    found = next((shutil.which(name) for name in CANDIDATES if shutil.which(name)), None)
    return Path(found) if found else None


def chromium_version(path: Path) -> str:
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or done.stderr.strip()


class BrowserError(PocketMLError):
    """The browser or a page failed: the message is the browser's (or the page's) own, one line."""


class Chromium:
    """One headless browser and one tab in it; `with Chromium() as browser:` closes both."""

    def __init__(self, binary: Path | None = None, window: tuple[int, int] = (1200, 900)):
        binary = binary or chromium_path()
        if binary is None:
            raise BrowserError("no Chromium found; install Debian's `chromium` package (apt-get install chromium) "
                               "or set POCKETML_CHROMIUM to the browser binary")
        self.profile = tempfile.mkdtemp(prefix="pocketml-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def browser_fds() -> None:
            # In the child: the command pipe on fd 3, the reply pipe on fd 4 (copies first, so neither
            # dup2 overwrites the other's source). dup2 clears close-on-exec; Python's other fds keep it.
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [str(binary), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                f"--window-size={window[0]},{window[1]}", "about:blank"]
        self.log = open(Path(self.profile) / "chromium.log", "wb")  # noqa: SIM115 (closed in close())
        try:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                            close_fds=False, preexec_fn=browser_fds)
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._events: list[dict] = []
        self._lock = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.console: list[str] = []  # the page's console lines and uncaught exceptions, for messages
        self.session = self._open_tab()

    # -- the pipe -------------------------------------------------------------------------------
    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                with self._lock:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._on_event(message)
                    self._lock.notify_all()

    def _on_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}"[:500])
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}"[:500])
        else:
            self._events.append(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 120) -> dict:
        """One DevTools command; its result, or BrowserError with the browser's message."""
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
        message = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while call_id not in self._replies:
                if self._closed:
                    raise BrowserError(f"Chromium exited during {method} (log: {self.log.name})")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"Chromium did not answer {method} within {timeout:g} s")
                self._lock.wait(left)
            reply = self._replies.pop(call_id)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _open_tab(self) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable"):
            self.send(domain, session=session)
        return session

    # -- what callers use ------------------------------------------------------------------------
    def goto(self, url: str, timeout: float = 60) -> None:
        """Open `url` and wait until its document has loaded (module scripts included)."""
        reply = self.send("Page.navigate", {"url": url}, session=self.session, timeout=timeout)
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str, timeout: float = 300):
        """The value of a JavaScript expression in the page (promises awaited); BrowserError with the
        page's exception if it throws."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                               "returnByValue": True, "timeout": int(timeout * 1000)},
                          session=self.session, timeout=timeout + 10)
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            raise BrowserError(f"the page failed: {text.splitlines()[0] if text else 'exception'}")
        return reply["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 60) -> None:
        """Poll a JavaScript condition until it holds (the page's own progress, e.g. a result set)."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({condition})", timeout=timeout):
            if time.monotonic() > deadline:
                tail = "; ".join(self.console[-3:])
                raise BrowserError(f"the page did not reach `{condition}` within {timeout:g} s"
                                   + (f" (console: {tail})" if tail else ""))
            time.sleep(0.1)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose `paths` in the page's <input type=file> at `selector`, as a person picking photos does."""
        document = self.send("DOM.getDocument", session=self.session)["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": document, "selector": selector}, session=self.session)
        if not node.get("nodeId"):
            raise BrowserError(f"the page has no {selector}")
        self.send("DOM.setFileInputFiles", {"files": [str(Path(p).resolve()) for p in paths],
                                            "nodeId": node["nodeId"]}, session=self.session)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the window)."""
        metrics = self.send("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}},
            session=self.session)
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                with contextlib.suppress(BrowserError):  # it is exiting already; wait() below reaps it
                    self.send("Browser.close", timeout=10)
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):  # already closed by an earlier close()
                    os.close(fd)
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
