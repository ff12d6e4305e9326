"""The downloader against a hostile server: every misbehaviour ends in the right status, on time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pocketml.acquisition.downloader import Downloader, _retry_after

from pocketml.configs.acquire import DownloadConfig
from tests.acquisition.hostile_http import HostileServer, bomb_png

FAST = DownloadConfig(threads=8, per_host=4, connect_timeout=2, read_timeout=1, total_timeout=2,
                      max_bytes=2_000_000, retries=3, backoff=0.05, backoff_max=0.2, max_retry_after=5, max_redirects=5)


@pytest.fixture()
def server(photo_folder):
    images = sorted((photo_folder / "train" / "cat").glob("*.jpg"))[:8]
    with HostileServer(images) as srv:
        yield srv


def test_real_jpeg_is_fetched_byte_for_byte(server):
    got = Downloader(FAST).fetch(server.url("/img/3"))
    assert got.status == "ok" and got.attempts == 1
    assert got.data == server.images[3]


def test_slow_drip_is_cut_at_the_total_time_cap(server):
    start = time.monotonic()
    got = Downloader(FAST).fetch(server.url("/drip"))
    elapsed = time.monotonic() - start
    assert got.status == "timeout", got
    assert elapsed < FAST.total_timeout + 1.0  # cut by the watchdog, not by the 40 s the drip would take


def test_headers_dripped_byte_by_byte_are_cut_at_the_total_time_cap(server):
    start = time.monotonic()
    got = Downloader(FAST).fetch(server.url("/drip-headers"))
    assert got.status == "timeout", got
    assert time.monotonic() - start < FAST.total_timeout + 1.0  # each byte beats read_timeout; the cap still holds


def test_endless_body_stops_at_the_byte_cap(server):
    got = Downloader(FAST).fetch(server.url("/endless"))
    assert got.status in ("too_large", "timeout"), got
    assert got.status == "too_large"  # locally the cap is reached long before the time cap


def test_lying_content_length_is_truncated(server):
    got = Downloader(FAST).fetch(server.url("/lying"))
    assert got.status == "truncated" and "promised" in got.error


def test_redirect_loop_hits_the_cap_and_redirects_are_followed(server):
    assert Downloader(FAST).fetch(server.url("/loop/a")).status == "too_many_redirects"
    moved = Downloader(FAST).fetch(server.url("/redirect/5"))
    assert moved.status == "ok" and moved.final_url.endswith("/img/5") and moved.data == server.images[5]


def test_429_retry_after_is_honoured(server):
    start = time.monotonic()
    got = Downloader(FAST).fetch(server.url("/busy/2"))
    assert got.status == "ok" and got.attempts == 2
    assert time.monotonic() - start >= 1.0  # waited the server's Retry-After, not the 0.05 s backoff


def test_retry_after_beyond_the_cap_gives_up_at_once(server):
    start = time.monotonic()
    got = Downloader(FAST).fetch(server.url("/busy-forever"))
    assert got.status == "http_error" and got.http_status == 503 and "max_retry_after" in got.error
    assert time.monotonic() - start < 2


def test_500s_recover_on_retry_with_backoff(server):
    got = Downloader(FAST).fetch(server.url("/flaky/1"))
    assert got.status == "ok" and got.attempts == 3 and got.data == server.images[1]


def test_connection_reset_is_retried_then_reported(server):
    got = Downloader(FAST).fetch(server.url("/reset"))
    assert got.status == "connection_error" and got.attempts == FAST.retries + 1
    assert server.hits["/reset"] >= FAST.retries + 1


def test_404_is_not_retried(server):
    got = Downloader(FAST).fetch(server.url("/missing"))
    assert got.status == "http_error" and got.http_status == 404 and got.attempts == 1
    assert server.hits["/missing"] == 1


def test_only_http_and_https_unless_local_files_are_allowed(tmp_path):
    local = tmp_path / "x.png"
    local.write_bytes(bomb_png())
    assert Downloader(FAST).fetch("ftp://example.com/a.jpg").status == "bad_url"
    assert Downloader(FAST).fetch(local.as_uri()).status == "bad_url"
    assert Downloader(FAST).fetch(local.as_uri(), allow_file=True).data == local.read_bytes()


def test_user_agent_is_sent(server):
    seen = {}

    def route_ua(self, args, n):
        seen["ua"] = self.headers.get("User-Agent")
        self.send_bytes(server.images[0])

    server.httpd.RequestHandlerClass.route_ua = route_ua
    assert Downloader(FAST).fetch(server.url("/ua")).status == "ok"
    assert seen["ua"].startswith("pocketml/")


def test_per_host_limit_bounds_concurrency(server):
    downloader = Downloader(FAST)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(downloader.fetch, [server.url(f"/slow/{i}") for i in range(16)]))
    assert all(r.status == "ok" for r in results)
    assert server.peak == FAST.per_host  # 16 threads asked, the host saw at most per_host at once


def test_retry_after_accepts_seconds_and_http_dates():
    assert _retry_after("7") == 7.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert _retry_after("soon") is None


def test_kept_alive_connection_serves_many_requests_first_time(server):
    downloader = Downloader(FAST)
    results = [downloader.fetch(server.url(f"/img/{i}")) for i in range(10)]
    assert [r.attempts for r in results] == [1] * 10  # no request needed a retry on the reused connection
    assert [r.data for r in results] == [server.images[i % len(server.images)] for i in range(10)]


def test_urls_from_the_wild_are_encoded_or_refused_not_crashed(server):
    downloader = Downloader(FAST)
    assert downloader.fetch(server.url("/missing/hot dog ü.jpg")).status == "http_error"  # sent, percent-encoded
    assert server.hits["/missing/hot%20dog%20%C3%BC.jpg"] == 1
    assert downloader.fetch("http://127.0.0.1:99999/a.jpg").status == "bad_url"
    assert downloader.fetch(server.url("/img/2") + "?size=large&v=1").data == server.images[2]


def test_a_redirect_never_reaches_local_files(server, tmp_path):
    def route_to_file(self, args, n):
        self.send_bytes(b"", "text/plain", 302, {"Location": (tmp_path / "secret.jpg").as_uri()})

    (tmp_path / "secret.jpg").write_bytes(server.images[0])
    server.httpd.RequestHandlerClass.route_to_file = route_to_file
    assert Downloader(FAST).fetch(server.url("/to-file"), allow_file=True).status == "bad_url"
