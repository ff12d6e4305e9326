"""`pocketml serve DIR`: a static file server for a web bundle (or any folder of pages) on this
machine, sending the two headers that make a page cross-origin isolated — COOP `same-origin` and
COEP `require-corp` — so the browser runtimes may use WASM threads (SharedArrayBuffer). Without
them (e.g. `python -m http.server`) the bundle still works, on one thread.

Given a run directory or a bundles directory, it also serves "try it" at /try/: drop a photo and see
each platform's bundled file's top-3 beside the Keras original's (computed here by the host runtimes,
as `pocketml predict` does) and the web bundle's (computed in the page by classify.js).
"""

from __future__ import annotations

import functools
import http.server
import json
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from pocketml.errors import PocketMLError
from pocketml.spec import LABELS_FILE

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


MAX_PHOTO_BYTES = 50_000_000
TRY_PAGE = "try.html"


class TryIt:
    """The models "try it" compares: Keras and the first (recommended) file of each bundle, loaded once."""

    def __init__(self, bundles: Path, keras: Path | None):
        self.bundles, self.keras = bundles, keras
        self.lock = threading.Lock()  # one prediction at a time: runtimes share this process's threads
        self.models: dict[str, object] = {}

    def columns(self) -> list[dict]:
        """[{name, file, where}] for Keras and every bundle with a file, in order; web runs in the page."""
        found = [{"name": "keras", "file": self.keras.name if self.keras else None, "where": "server"}]
        for folder in sorted(p for p in self.bundles.iterdir() if (p / "bundle.json").is_file()):
            files = json.loads((folder / "bundle.json").read_text()).get("files") or []
            if files:
                found.append({"name": folder.name, "file": files[0]["file"],
                              "where": "page" if folder.name == "web" else "server"})
        return found

    def model(self, column: dict):
        from pocketml.export.predict import load

        if column["name"] not in self.models:
            if column["name"] == "keras":
                self.models["keras"] = load(self.keras)
            else:
                folder = self.bundles / column["name"]
                labels = folder / LABELS_FILE
                self.models[column["name"]] = load(folder / column["file"], labels=labels if labels.is_file() else None)
        return self.models[column["name"]]

    def classify(self, photo: bytes, suffix: str) -> dict:
        """Per server-side column: {file, top: [{label, score}]} or {file, error}."""
        answers = {}
        with tempfile.TemporaryDirectory() as tmp, self.lock:
            path = Path(tmp) / f"photo{suffix}"
            path.write_bytes(photo)
            for column in self.columns():
                if column["where"] != "server" or column["file"] is None:
                    continue
                try:
                    top = self.model(column).classify(path, top=3)
                    answers[column["name"]] = {"file": column["file"], "top": [{"label": k, "score": p} for k, p in top]}
                except Exception as exc:  # one platform's runtime missing here (Core ML off macOS) is its cell
                    answers[column["name"]] = {"file": column["file"], "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return answers


class TryHandler(IsolatedHandler):
    """IsolatedHandler over a bundles directory, plus /try/ (the page), /try/columns and POST /try/classify."""

    try_it: TryIt

    def do_GET(self) -> None:
        if self.path in ("/try", "/try/"):
            return self.send_bytes(asset(TRY_PAGE).encode(), "text/html; charset=utf-8")
        if self.path == "/try/columns":
            return self.send_bytes(json.dumps(self.try_it.columns()).encode(), "application/json")
        return super().do_GET()

    def do_POST(self) -> None:
        if self.path.split("?")[0] != "/try/classify":
            return self.send_error(404, "POST goes to /try/classify")
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_PHOTO_BYTES:
            return self.send_error(413, f"send one photo of at most {MAX_PHOTO_BYTES} bytes")
        suffix = {"image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}.get(self.headers.get("Content-Type"), ".jpg")
        answers = self.try_it.classify(self.rfile.read(length), suffix)
        return self.send_bytes(json.dumps(answers).encode(), "application/json")

    def send_bytes(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def asset(name: str) -> str:
    from pocketml.export.web_bundle import asset_text

    return asset_text(name)


def what_to_serve(directory: Path, keras: Path | None) -> tuple[Path, type[IsolatedHandler]]:
    """A run directory (bundles/ and model/) or a bundles directory: the bundles with "try it";
    anything else (a single bundle, any folder): its files."""
    if not directory.is_dir():
        raise PocketMLError(f"{directory} is not a directory; give a web bundle, a bundles directory or a run directory")
    if (directory / "bundles").is_dir():
        keras = keras or (directory / "model" if (directory / "model").is_dir() else None)
        directory = directory / "bundles"
    if not any((p / "bundle.json").is_file() for p in directory.iterdir() if p.is_dir()):
        return directory, IsolatedHandler
    if keras is not None and not keras.exists():
        raise PocketMLError(f"Keras model {keras} does not exist; give --model MODEL.keras (or a model directory)")
    handler = type("BoundTryHandler", (TryHandler,), {"try_it": TryIt(directory, keras)})
    return directory, handler


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


def serve_forever(directory: str | Path, host: str, port: int, keras: Path | None = None) -> None:
    directory, handler = what_to_serve(Path(directory), keras)
    httpd = server(directory, host, port, handler)
    httpd.verbose = True
    url = f"http://{host}:{httpd.server_address[1]}/"
    print(f"serving {directory} at {url} (cross-origin isolated; Ctrl-C stops)")
    if handler is not IsolatedHandler:
        print(f"try it: {url}try/ (drop a photo: every bundle's file beside Keras)")
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
