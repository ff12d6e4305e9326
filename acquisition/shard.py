"""One shard's work, wherever it runs: fetch, verify and store its items on threads, return outcome rows.

`run_shard` is the unit an executor runs (a local worker process or a Ray task). It writes images
to the content-addressed store and nothing else: the outcome rows travel back to the driver, which
alone writes the state database. Running a shard twice (a worker died, the driver was killed) is
harmless: the store ignores bytes it already holds and the driver records each URL once.

Decoding, resizing and encoding run on the fetch threads (Pillow releases the GIL in its codecs and
resampling), so no image bytes cross a process boundary.

The tail: a URL that times out is not retried at once (that would hold a thread for attempts x
total_timeout). It goes to the back of the shard's queue and gets one late retry with a budget of
`late_retry_timeout`, cut so that no attempt runs past "queue drained + total_timeout". Every first
attempt starts before the queue drains and lasts at most total_timeout, so a shard ends at most one
total_timeout after its last fresh item started: a hung URL cannot stretch it further.
"""

from __future__ import annotations

import hashlib
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from acquisition.downloader import Downloader, Fetched
from acquisition.sources.base import SourceItem
from acquisition.state import OK, Outcome, item_key
from acquisition.verify import verify_and_store
from pocketml.configs.acquire import DownloadConfig, VerifyConfig

LOCAL_SOURCES = frozenset({"folder"})  # the only sources whose items may be file:// URLs
TIMEOUT = "timeout"
MIN_LATE_BUDGET = 0.5  # seconds: a late retry with less time left than this is not worth starting


@dataclass(frozen=True)
class ShardTask:
    shard: str
    items: list[SourceItem]  # the shard's items still to do, in order
    out_dir: str  # the run directory; the store is out_dir/images (must be reachable by the worker)
    download: DownloadConfig
    verify: VerifyConfig
    threads: int  # fetch threads inside this task
    late_retry_timeout: float  # seconds one late retry of a timed-out URL may take


@dataclass
class ShardResult:
    shard: str
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)  # (item key, outcome), one per item
    started: float = 0.0  # time.time() when the task began
    busy_until: float = 0.0  # time.time() of its last outcome that was not a timeout (real work)
    finished: float = 0.0  # time.time() when it returned
    cpu_s: float = 0.0  # CPU seconds of the task's process while it ran (user + system)


def run_shard(task: ShardTask) -> ShardResult:
    """Every item of the task, each with its final outcome."""
    cpu0, started = _cpu_seconds(), time.time()
    runner = _Runner(task)
    outcomes = runner.run()
    work = [at for outcome, at in zip(outcomes, runner.finished_at, strict=True) if outcome.status != TIMEOUT]
    return ShardResult(task.shard, [(item_key(item), o) for item, o in zip(task.items, outcomes, strict=True)],
                       started, max([started, *work]), time.time(), _cpu_seconds() - cpu0)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Runner:
    """The threads of one shard: a queue of first attempts, then late retries behind them."""

    def __init__(self, task: ShardTask):
        self.task = task
        self.downloader = Downloader(task.download)
        self.outcomes: list[Outcome | None] = [None] * len(task.items)
        self.finished_at = [0.0] * len(task.items)  # time.time() of each final outcome
        self.lock = threading.Lock()
        self.unstarted = len(task.items)  # first attempts not yet begun
        self.unfinished = len(task.items)
        self.drained_at: float | None = None  # monotonic time the last first attempt began
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> list[Outcome]:
        if not self.task.items:
            return []
        self.pool = ThreadPoolExecutor(max(1, min(self.task.threads, len(self.task.items))), thread_name_prefix="fetch")
        try:
            for index in range(len(self.task.items)):
                self.pool.submit(self._guarded, self._first, index)
            self.done.wait()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.downloader.close()
        if self.error is not None:
            raise self.error
        return list(self.outcomes)  # type: ignore[arg-type]

    def _guarded(self, step, index: int) -> None:
        try:
            step(index)
        except BaseException as exc:  # a bug: stop the shard and hand the traceback to the driver
            self.error = exc
            self.done.set()

    def _first(self, index: int) -> None:
        with self.lock:
            self.unstarted -= 1
            if self.unstarted == 0:
                self.drained_at = time.monotonic()
        outcome = self._process(self.task.items[index], None)
        if outcome.status == TIMEOUT:
            self.pool.submit(self._guarded, self._late, index)  # behind every fresh item still queued
            self.outcomes[index] = outcome
            return
        self._finish(index, outcome)

    def _late(self, index: int) -> None:
        first = self.outcomes[index]
        assert first is not None
        budget = self.task.late_retry_timeout
        if self.drained_at is not None:
            budget = min(budget, self.drained_at + self.task.download.total_timeout - time.monotonic())
        if budget < MIN_LATE_BUDGET:
            self._finish(index, _with_error(first, "; no late retry: the run had no time left for it"))
            return
        again = self._process(self.task.items[index], budget)
        attempts = first.attempts + again.attempts
        self._finish(index, Outcome(**{**again.__dict__, "attempts": attempts}))

    def _finish(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        self.finished_at[index] = time.time()
        with self.lock:
            self.unfinished -= 1
            if self.unfinished == 0:
                self.done.set()

    def _process(self, item: SourceItem, budget: float | None) -> Outcome:
        if item.data is not None:
            fetched = Fetched(OK, item.data, item.url, 0)
        else:
            fetched = self.downloader.fetch(item.url, allow_file=item.source in LOCAL_SOURCES, budget=budget,
                                            retry_timeouts=False)
        if fetched.status != OK:
            return Outcome(fetched.status, fetched.error, fetched.attempts, fetched.http_status,
                           final_url=fetched.final_url)
        data = fetched.data or b""
        verified = verify_and_store(data, self.task.verify, self.task.out_dir, fetched.final_url, item.box,
                                    item.rotation)
        return Outcome(verified.status, verified.error, fetched.attempts, fetched.http_status, len(data),
                       hashlib.sha256(data).hexdigest(), verified.sha256 or None, verified.path or None,
                       verified.width or None, verified.height or None, fetched.final_url)


def _with_error(outcome: Outcome, note: str) -> Outcome:
    return Outcome(**{**outcome.__dict__, "error": outcome.error + note})
