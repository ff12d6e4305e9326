"""Fetch one URL's bytes with hard limits, so no server can hang or flood the run.

Every fetch returns a `Fetched` with a status (`ok` or why not) instead of raising: a failed
image is a row with a status, not an exception. Limits: a connect timeout, a read timeout
between reads, a total time cap per attempt enforced by a watchdog that shuts the socket (so a
server dripping one byte a second, even inside its headers, is cut off on time), a byte cap,
a redirect cap, http/https only (file:// only where the caller allows it). Retries back off
exponentially with jitter and honour Retry-After on 429/503. Connections are kept alive per
thread and host, and a per-host semaphore bounds how hard one host is hit.
"""

from __future__ import annotations

import email.utils
import heapq
import http.client
import itertools
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

from pocketml.acquisition.state import RETRYABLE_HTTP

from pocketml.configs.acquire import DownloadConfig
from pocketml.errors import reason_of

READ_CHUNK = 1 << 16
STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Fetched:
    status: str  # ok | http_error | timeout | too_large | connection_error | too_many_redirects | bad_url | truncated
    data: bytes | None = None
    final_url: str = ""
    attempts: int = 0
    error: str = ""
    http_status: int | None = None


class _Failure(Exception):
    """One attempt's outcome when it is not a body: a status, and whether another try may help."""

    def __init__(self, status: str, error: str, retryable: bool = False, retry_after: float | None = None,
                 http_status: int | None = None):
        super().__init__(error)
        self.status, self.error, self.retryable = status, error, retryable
        self.retry_after, self.http_status = retry_after, http_status


class _Watchdog:
    """One thread that shuts sockets whose attempt ran past its deadline: a blocked recv() returns."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, dict]] = []
        self._cv = threading.Condition()
        self._stopped = False
        self._ids = itertools.count()
        threading.Thread(target=self._run, name="download-watchdog", daemon=True).start()

    def arm(self, deadline: float, sock: socket.socket) -> dict:
        token = {"sock": sock, "active": True, "fired": False}
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._ids), token))
            self._cv.notify()
        return token

    @staticmethod
    def disarm(token: dict | None) -> None:
        if token is not None:
            token["active"] = False

    def fire_all(self) -> None:
        """Cut every armed attempt now, as if each had reached its deadline."""
        with self._cv:
            tokens = [token for _, _, token in self._heap if token["active"]]
        for token in tokens:
            token["fired"] = True
            _shutdown(token["sock"])

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                deadline, _, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
            if token["active"]:
                token["fired"] = True
                _shutdown(token["sock"])


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return  # already closed by its owner: nothing left to interrupt


class Downloader:
    """Thread-safe fetcher; call `fetch(url)` from many threads at once."""

    def __init__(self, config: DownloadConfig | None = None):
        self.config = config or DownloadConfig()
        self._host_slots: dict[str, threading.Semaphore] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._watchdog = _Watchdog()
        self._ssl: ssl.SSLContext | None = None  # made on the first https URL: loading CA certs takes ~0.1 s
        self._cut = threading.Event()

    def close(self) -> None:
        """Stop the watchdog thread (call once no fetch is running)."""
        self._watchdog.stop()

    def cut(self) -> None:
        """End every fetch in flight now with status timeout, and any later one at once: the caller
        gave up waiting on them (a shard handing its stragglers back)."""
        self._cut.set()
        self._watchdog.fire_all()

    def fetch(self, url: str, allow_file: bool = False, budget: float | None = None,
              retry_timeouts: bool = True) -> Fetched:
        """The body of `url` (status ok) or the reason it could not be had, after retries.

        `budget`: seconds one attempt may take in all, when less than total_timeout (a late retry).
        `retry_timeouts=False` returns a timeout at once instead of retrying it here, so the caller
        can reschedule it behind other work rather than hold a thread for attempts x total_timeout.
        """
        cfg = self.config
        limit = cfg.total_timeout if budget is None else min(budget, cfg.total_timeout)
        attempts = 0
        while True:
            attempts += 1
            try:
                if self._cut.is_set():
                    raise _Failure("timeout", "cut: the shard stopped waiting for it")
                data, final_url = self._attempt(url, allow_file, limit)
                return Fetched("ok", data, final_url, attempts)
            except _Failure as fail:
                if fail.status == "timeout" and not retry_timeouts:
                    return Fetched(fail.status, None, url, attempts, fail.error, fail.http_status)
                if not fail.retryable or attempts > cfg.retries:
                    return Fetched(fail.status, None, url, attempts, fail.error, fail.http_status)
                if fail.retry_after is not None and fail.retry_after > cfg.max_retry_after:
                    error = f"{fail.error}; Retry-After {fail.retry_after:.0f}s exceeds max_retry_after"
                    return Fetched(fail.status, None, url, attempts, error, fail.http_status)
                self._cut.wait(self._backoff(attempts, fail.retry_after))  # a cut ends the wait too

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1 * self.config.backoff)
        base = min(self.config.backoff_max, self.config.backoff * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)  # jitter: clients that failed together do not retry together

    def _attempt(self, url: str, allow_file: bool, limit: float) -> tuple[bytes, str]:
        deadline = time.monotonic() + limit  # for the whole attempt: the wait for a slot, every redirect
        for hop in range(self.config.max_redirects + 1):
            try:
                parts = urlsplit(url)
                port = parts.port  # raises on a port like :99999
            except ValueError as exc:
                raise _Failure("bad_url", f"malformed URL {url[:200]!r}: {exc}") from exc
            if parts.scheme == "file" and allow_file and hop == 0:  # never by redirect
                return self._read_file(parts.path), url
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _Failure("bad_url", f"unsupported URL {url[:200]!r}; only http and https are fetched")
            host = _ascii_host(parts.hostname, url)
            slot = self._slot(host)
            # Waiting for one of the host's per_host connections counts against the attempt's time too,
            # so a dead host with many URLs cannot queue them past their caps.
            if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise _Failure("timeout", f"no free connection to {host} within {limit:.1f}s (per_host={self.config.per_host})")
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Failure("timeout", f"took longer than its time cap ({limit:.1f}s)")
                location = self._request(parts.scheme, host, port, _target(parts), url, left)
            finally:
                slot.release()
            if isinstance(location, bytes):
                return location, url
            url = urljoin(url, location)
        raise _Failure("too_many_redirects", f"more than {self.config.max_redirects} redirects")

    def _slot(self, host: str) -> threading.Semaphore:
        with self._lock:
            if host not in self._host_slots:
                self._host_slots[host] = threading.BoundedSemaphore(self.config.per_host)
            return self._host_slots[host]

    def _read_file(self, path: str) -> bytes:
        file = Path(unquote(path))
        try:
            if file.stat().st_size > self.config.max_bytes:
                raise _Failure("too_large", f"{file} is larger than max_bytes={self.config.max_bytes}")
            return file.read_bytes()
        except OSError as exc:
            raise _Failure("not_found", f"cannot read {file}: {exc.strerror or exc}") from exc

    def _request(self, scheme: str, host: str, port: int | None, target: str, url: str,
                 limit: float) -> bytes | str:
        """The body, or the Location of a redirect; the whole attempt takes at most `limit` seconds."""
        cfg = self.config
        conn = self._connection(scheme, host, port)
        deadline = time.monotonic() + limit
        token = None
        reused = conn.sock is not None
        try:
            if conn.sock is None:
                conn.timeout = min(cfg.connect_timeout, limit)
                conn.connect()  # under connect_timeout (the connection's timeout)
            conn.sock.settimeout(cfg.read_timeout)
            token = self._watchdog.arm(deadline, conn.sock)
            if self._cut.is_set():  # cut between the check in fetch() and arming: do not wait it out
                token["fired"] = True
                _shutdown(conn.sock)
            conn.request("GET", target, headers=self._headers())
            resp = conn.getresponse()
            result = self._response(resp, url)
            if token["fired"]:  # the watchdog's shutdown can look like a normal end of body
                raise _Failure("timeout", f"took longer than its time cap (total_timeout={cfg.total_timeout}s)")
            if resp.will_close:
                conn.close()
            return result
        except _Failure as fail:
            conn.close()
            raise self._timed_out(token) or fail from None
        except TimeoutError as exc:
            conn.close()
            raise _Failure("timeout", f"no data for {cfg.read_timeout}s ({exc})", retryable=True) from exc
        except http.client.IncompleteRead as exc:
            conn.close()
            raise self._timed_out(token) or _Failure(
                "truncated", f"body ended early: {len(exc.partial)} bytes read, {exc.expected} more promised"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if self._timed_out(token):
                raise self._timed_out(token) from exc
            if reused and isinstance(exc, STALE_ERRORS):
                # The server closed an idle kept-alive connection: not the URL's fault, try a fresh one.
                return self._request(scheme, host, port, target, url, max(0.1, deadline - time.monotonic()))
            retry = not isinstance(exc, (socket.gaierror, ssl.SSLCertVerificationError))
            raise _Failure("connection_error", reason_of(exc), retryable=retry) from exc
        finally:
            self._watchdog.disarm(token)

    def _timed_out(self, token: dict | None) -> _Failure | None:
        if token is not None and token["fired"]:
            return _Failure("timeout", f"took longer than its time cap (total_timeout={self.config.total_timeout}s)")
        return None

    def _response(self, resp: http.client.HTTPResponse, url: str) -> bytes | str:
        status = resp.status
        if status in REDIRECTS and resp.getheader("Location"):
            self._drain(resp)
            return resp.getheader("Location")
        if status != 200:
            self._drain(resp)
            retry_after = _retry_after(resp.getheader("Retry-After")) if status in (429, 503) else None
            raise _Failure("http_error", f"HTTP {status} {resp.reason}", retryable=status in RETRYABLE_HTTP,
                           retry_after=retry_after, http_status=status)
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > self.config.max_bytes:
            raise _Failure("too_large", f"Content-Length {length} exceeds max_bytes={self.config.max_bytes}")
        return self._body(resp)

    def _body(self, resp: http.client.HTTPResponse) -> bytes:
        chunks, size = [], 0
        # read1 returns whatever one recv brings, so the watchdog and read timeout stay in charge.
        while resp.length != 0 and (chunk := resp.read1(READ_CHUNK)):
            size += len(chunk)
            if size > self.config.max_bytes:
                raise _Failure("too_large", f"body exceeds max_bytes={self.config.max_bytes}")
            chunks.append(chunk)
        if resp.length:  # the server closed before sending what its Content-Length promised
            raise _Failure("truncated", f"body ended after {size} bytes, {resp.length} more were promised")
        resp.close()  # read1 does not mark a fully read response closed; the kept-alive connection needs it
        return b"".join(chunks)

    @staticmethod
    def _drain(resp: http.client.HTTPResponse) -> None:
        """Read a small error/redirect body so the kept-alive connection can be reused."""
        resp.read(READ_CHUNK + 1)
        if not resp.isclosed():
            resp.will_close = True  # unread bytes left on the socket: the connection cannot be reused

    def _headers(self) -> dict[str, str]:
        return {"User-Agent": self.config.user_agent, "Accept": "image/*,*/*;q=0.8", "Accept-Encoding": "identity"}

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        """This thread's kept-alive connection to the host (one per thread, so never shared)."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        key = (scheme, host, port)
        conn = pool.get(key)
        if conn is None:
            timeout = self.config.connect_timeout
            if scheme == "https":
                with self._lock:
                    self._ssl = self._ssl or ssl.create_default_context()
                conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            pool[key] = conn
        return conn


def _target(parts) -> str:
    """The request target, percent-encoded: lists from the wild hold spaces and non-ASCII paths."""
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return f"{path}?{query}" if query else path


def _ascii_host(host: str, url: str) -> str:
    try:
        return host.encode("idna").decode("ascii")  # bücher.example -> xn--bcher-kva.example
    except UnicodeError as exc:
        raise _Failure("bad_url", f"host of {url[:200]!r} cannot be encoded: {exc}") from exc


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
