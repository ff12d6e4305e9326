"""`[acquire]`: where images come from, how they are downloaded and what is kept.

Every field has a default so `AcquireConfig()` works; sources are tables validated by their own
module's CONFIG dataclass (see acquisition/sources/__init__.py), so a typo in a source key is
reported with that source's accepted keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXECUTORS = ("local", "ray")  # where acquire's shards and curate's decoding and near-duplicate search run
RESAMPLE_FILTERS = ("area", "bilinear", "lanczos")
DEFAULT_USER_AGENT = "pocketml/0.1 (+https://github.com/pocketml/pocketml; image dataset builder)"


def executor_problem(executor: str, ray_address: str) -> str | None:
    """Why an executor / ray_address pair is not accepted (acquire and curate share it), or None."""
    if executor not in EXECUTORS:
        return f"executor = {executor!r} is not accepted; expected one of {', '.join(EXECUTORS)}"
    if ray_address and executor != "ray":
        return (f"ray_address = {ray_address!r} is given but executor = {executor!r}; "
                "set executor = \"ray\" (or --executor ray)")
    return None


@dataclass
class DownloadConfig:
    threads: int = 16  # URLs in flight at once in one shard task (a worker process or Ray task runs one)
    per_host: int = 4  # concurrent requests to one host from one shard task (politeness)
    connect_timeout: float = 5.0  # seconds to open a TCP/TLS connection
    read_timeout: float = 10.0  # seconds of silence tolerated between two reads
    total_timeout: float = 30.0  # seconds one attempt may take in all (stops slow-drip servers)
    # Seconds a shard waits, once its last fresh URL has started, before it cuts the URLs still in flight
    # and hands them back (with those that timed out) for a straggler batch: no shard idles on a hung host.
    defer_after: float = 2.0
    # Seconds for the one more attempt each handed-back URL gets in a straggler batch. The run ends at most
    # defer_after + late_retry_timeout after its last fresh URL started (the tail).
    late_retry_timeout: float = 10.0
    max_bytes: int = 20_000_000  # bytes one response may have before it is abandoned as too_large
    retries: int = 3  # extra attempts after a retryable failure (5xx, 429, reset, timeout)
    backoff: float = 0.5  # seconds before the first retry; doubles each attempt, with jitter
    backoff_max: float = 30.0  # seconds: no single backoff sleeps longer than this
    max_retry_after: float = 60.0  # seconds: a longer Retry-After gives up instead of stalling a thread
    max_redirects: int = 5  # redirects followed before the URL is marked too_many_redirects
    user_agent: str = DEFAULT_USER_AGENT  # sent with every request; many hosts refuse blank agents

    def __post_init__(self) -> None:
        for name in ("threads", "per_host", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)} is not accepted; expected an integer >= 1")
        for name in ("connect_timeout", "read_timeout", "total_timeout", "late_retry_timeout", "defer_after"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)} is not accepted; expected seconds > 0")
        if self.retries < 0 or self.max_redirects < 0:
            raise ValueError("retries and max_redirects must be >= 0")


@dataclass
class VerifyConfig:
    formats: list[str] = field(default_factory=lambda: ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])  # Pillow names accepted
    max_pixels: int = 80_000_000  # width*height above this is a decompression bomb, refused before decoding
    min_side: int = 32  # pixels: a shorter side than this is too_small (icons, tracking pixels)
    max_aspect: float = 4.0  # long side / short side above this is refused (banners, strips)
    max_side: int = 0  # pixels: resize so the long side is at most this (0 keeps the size)
    resample: str = "area"  # downscaling filter for max_side: area (box average, fast) | bilinear | lanczos (sharpest, ~4x CPU)
    jpeg_quality: int = 92  # quality of the re-encoded JPEG stored under images/
    low_info_entropy: float = 2.0  # bits: grey-level entropy below this is a placeholder (flat/blank image)
    placeholder_dhashes: list[str] = field(default_factory=list)  # 16-hex dHashes of known placeholder images
    placeholder_distance: int = 4  # Hamming distance within which a dHash counts as that placeholder
    # Final URLs that mean "the photo is gone" (Flickr redirects removed photos to photo_unavailable.*).
    placeholder_url_markers: list[str] = field(default_factory=lambda: ["photo_unavailable", "image_unavailable"])

    def __post_init__(self) -> None:
        bad = [h for h in self.placeholder_dhashes if len(h) != 16 or any(c not in "0123456789abcdefABCDEF" for c in h)]
        if bad:
            raise ValueError(f"placeholder_dhashes = {bad!r} is not accepted; expected 16 hex digits each")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample = {self.resample!r} is not accepted; expected one of {', '.join(RESAMPLE_FILTERS)}")
        if self.min_side < 1 or self.max_aspect < 1 or self.max_pixels < 1 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError("min_side and max_pixels must be >= 1, max_aspect >= 1, jpeg_quality 1..100")


@dataclass
class AcquireConfig:
    # Source tables, each with `type` (a key of acquisition.sources.SOURCE_MODULES: urls, folder, glyphs, ...)
    # plus that source's own keys.
    sources: list[dict] = field(default_factory=list)
    shard_size: int = 1000  # items per shard: the unit of work (and of resume) handed to an executor
    executor: str = "local"  # local: worker processes on this machine | ray: one Ray task per shard
    ray_address: str = ""  # Ray cluster to join ("HOST:6379", "ray://HOST:10001"); empty starts a local instance
    # Local: worker processes, each running one shard at a time (0 = two per CPU core, so one computes
    # while the other waits on its slowest hosts). Ray without ray_address: CPUs of the local instance.
    workers: int = 0
    cpus_per_shard: float = 0.5  # Ray: CPUs one shard task reserves (0.5: two shards per core, as locally)
    max_retries: int = 3  # times a shard is rerun after its worker process or node died
    # Rerun the URLs whose last outcome was retryable (timeout, connection error, HTTP 5xx/408/425/429),
    # leaving every other finished URL alone.
    retry_failed: bool = False
    download: DownloadConfig = field(default_factory=DownloadConfig)  # network behaviour
    verify: VerifyConfig = field(default_factory=VerifyConfig)  # what counts as a usable image

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.workers < 0:
            raise ValueError(f"shard_size = {self.shard_size} must be >= 1 and workers = {self.workers} >= 0")
        problem = executor_problem(self.executor, self.ray_address)
        if problem:
            raise ValueError(problem)
        if not 0 < self.cpus_per_shard <= 64 or self.max_retries < 0:
            raise ValueError(f"cpus_per_shard = {self.cpus_per_shard} must be in (0, 64] and max_retries >= 0")
