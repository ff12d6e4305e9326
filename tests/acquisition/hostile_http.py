"""A hostile image server on 127.0.0.1 for the acquisition tests: real JPEGs under many URLs, and
every way a real web server misbehaves (slow drip, endless body, lying Content-Length, HTML as
image/jpeg, truncated JPEG, decompression bomb, redirect loop, 429 + Retry-After, connection
reset, 500s that recover). Counts requests per path so tests can prove what was (not) redone.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageDraw


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def placeholder_png() -> bytes:
    """Like Flickr's 'photo no longer available': flat grey with a line of text."""
    image = Image.new("RGB", (500, 374), (230, 230, 230))
    ImageDraw.Draw(image).text((150, 180), "This photo is no longer available", fill=(120, 120, 120))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


class HostileServer:
    def __init__(self, images: list[Path], latency: float = 0.0):
        self.images = [p.read_bytes() for p in images]
        self.latency = latency
        self.hits: Counter[str] = Counter()
        self.files: dict[str, bytes] = {}  # extra content by path (/file/...), set by a test
        self.json_pages: dict[str, bytes] = {}  # JSON bodies by full path with query (/json?...)
        self.seen_headers: list[dict[str, str]] = []
        self.active = self.peak = 0  # concurrent requests inside /slow (per-host limit test)
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"app": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path: str) -> int:
        with self.lock:
            self.hits[path] += 1
            return self.hits[path]


class _Handler(BaseHTTPRequestHandler):
    app: HostileServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real image hosts

    def log_message(self, *args) -> None:  # keep test output clean
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path
        n = self.app.count(path)
        if self.app.latency:
            time.sleep(self.app.latency)
        parts = path.split("?")[0].strip("/").split("/")
        route = getattr(self, "route_" + parts[0].replace("-", "_"), None)
        try:
            if route is None:
                self.send_bytes(b"not found", "text/plain", 404)
            else:
                route(parts[1:], n)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_bytes(self, data: bytes, ctype: str = "image/jpeg", status: int = 200, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def image(self, index: str | int) -> bytes:
        return self.app.images[int(index) % len(self.app.images)]

    def route_img(self, args: list[str], n: int) -> None:
        self.send_bytes(self.image(args[0]))

    def route_slow(self, args: list[str], n: int) -> None:  # 0.2 s of thinking, counted while it lasts
        with self.app.lock:
            self.app.active += 1
            self.app.peak = max(self.app.peak, self.app.active)
        time.sleep(0.2)
        with self.app.lock:
            self.app.active -= 1
        self.send_bytes(self.image(args[0]))

    def route_dup(self, args: list[str], n: int) -> None:  # the same bytes under many URLs
        self.send_bytes(self.image(0))

    def route_drip(self, args: list[str], n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        for byte in self.image(0)[:400]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def route_drip_headers(self, args: list[str], n: int) -> None:  # even the headers come a byte at a time
        self.close_connection = True
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"x" * 400:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.1)

    def route_endless(self, args: list[str], n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.close_connection = True
        block = b"\xff" * 65536
        for _ in range(100_000):  # ~6.5 GB: far past any byte cap
            self.wfile.write(block)

    def route_lying(self, args: list[str], n: int) -> None:
        data = self.image(1)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data) * 3))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def route_html(self, args: list[str], n: int) -> None:
        self.send_bytes(b"<!DOCTYPE html><html><body>Access denied</body></html>", "image/jpeg")

    def route_truncated(self, args: list[str], n: int) -> None:
        data = self.image(2)
        self.send_bytes(data[: len(data) // 2])

    def route_bomb(self, args: list[str], n: int) -> None:
        self.send_bytes(bomb_png(), "image/png")

    def route_loop(self, args: list[str], n: int) -> None:
        target = "/loop/b" if args and args[0] == "a" else "/loop/a"
        self.send_bytes(b"", "text/plain", 302, {"Location": target})

    def route_redirect(self, args: list[str], n: int) -> None:
        self.send_bytes(b"", "text/plain", 301, {"Location": "/img/" + args[0]})

    def route_busy(self, args: list[str], n: int) -> None:  # 429 once, then the image
        if n == 1:
            self.send_bytes(b"slow down", "text/plain", 429, {"Retry-After": "1"})
        else:
            self.send_bytes(self.image(args[0]))

    def route_busy_forever(self, args: list[str], n: int) -> None:
        self.send_bytes(b"come back tomorrow", "text/plain", 503, {"Retry-After": "86400"})

    def route_reset(self, args: list[str], n: int) -> None:
        # SO_LINGER 0: close() sends RST instead of FIN, like a crashing proxy.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def route_flaky(self, args: list[str], n: int) -> None:  # two 500s, then the image
        if n <= 2:
            self.send_bytes(b"oops", "text/plain", 500)
        else:
            self.send_bytes(self.image(args[0]))

    def route_gone(self, args: list[str], n: int) -> None:  # Flickr's redirect for removed photos
        self.send_bytes(b"", "text/plain", 302, {"Location": "/placeholder/photo_unavailable.png"})

    def route_placeholder(self, args: list[str], n: int) -> None:
        self.send_bytes(placeholder_png(), "image/png")

    def route_flat(self, args: list[str], n: int) -> None:  # a placeholder at an innocent URL
        self.send_bytes(placeholder_png(), "image/png")

    def route_tiny(self, args: list[str], n: int) -> None:
        self.send_bytes(tiny_jpeg())

    def route_json(self, args: list[str], n: int) -> None:  # for the search provider tests
        self.app.seen_headers.append(dict(self.headers))
        body = self.app.json_pages.get(self.path)
        if body is None:
            self.send_bytes(b"{}", "application/json", 404)
        else:
            self.send_bytes(body, "application/json")

    def route_file(self, args: list[str], n: int) -> None:
        body = self.app.files.get(self.path)
        if body is None:
            self.send_bytes(b"no such file", "text/plain", 404)
        else:
            self.send_bytes(body, "application/octet-stream")


# URL path -> the status a correct acquirer records for it.
EXPECTED = {
    "/img/3": "ok",
    "/img/4": "ok",
    "/redirect/5": "ok",
    "/busy/6": "ok",
    "/flaky/7": "ok",
    "/dup/a": "ok",
    "/dup/b": "duplicate_bytes",
    "/drip": "timeout",
    "/endless": "too_large",
    "/lying": "truncated",
    "/html": "not_image",
    "/truncated": "truncated",
    "/bomb": "decompression_bomb",
    "/loop/a": "too_many_redirects",
    "/busy-forever": "http_error",
    "/reset": "connection_error",
    "/missing": "http_error",
    "/gone": "placeholder",
    "/flat": "placeholder",
    "/tiny": "too_small",
}
