"""`pocketml serve DIR`: a static file server for a web bundle (or any folder of pages) on this
machine, sending the two headers that make a page cross-origin isolated — COOP `same-origin` and
COEP `require-corp` — so the browser runtimes may use WASM threads (SharedArrayBuffer). Without
them (e.g. `python -m http.server`) the bundle still works, on one thread.
"""

from __future__ import annotations

import functools
import http.server
import threading
from contextlib import contextmanager
from pathlib import Path

from pocketml.errors import PocketMLError

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".tflite": "application/octet-stream", ".onnx": "application/octet-stream", ".json": "application/json"}


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Files of one folder, with the isolation headers, no caching (a re-packaged bundle shows at once),
    and WASM/ES-module types whatever the system's mime table says."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


def server(directory: str | Path, host: str = "127.0.0.1", port: int = 8000,
           handler: type[http.server.SimpleHTTPRequestHandler] = IsolatedHandler) -> http.server.ThreadingHTTPServer:
    directory = Path(directory)
    if not directory.is_dir():
        raise PocketMLError(f"{directory} is not a directory; give a bundle folder (e.g. runs/demo/bundles/web)")
    try:
        return http.server.ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(directory)))
    except OSError as exc:
        raise PocketMLError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc


@contextmanager
def serving(directory: str | Path, handler: type[http.server.SimpleHTTPRequestHandler] = IsolatedHandler):
    """A server on a free port of 127.0.0.1 in a thread, for as long as the block runs; yields its URL."""
    httpd = server(directory, port=0, handler=handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve_forever(directory: str | Path, host: str, port: int) -> None:
    httpd = server(directory, host, port)
    httpd.verbose = True
    print(f"serving {directory} at http://{host}:{httpd.server_address[1]}/ (cross-origin isolated; Ctrl-C stops)")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
