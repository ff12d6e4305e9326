"""One shard's work, wherever it runs: fetch, verify and store its items on threads, return outcome rows.

`run_shard` is the unit an executor runs (a local worker process or a Ray task). It writes images
to the content-addressed store and nothing else: the outcome rows travel back to the driver, which
alone writes the state database. Running a shard twice (a worker died, the driver was killed) is
harmless: the store ignores bytes it already holds and the driver records each URL once.

Decoding, resizing and encoding run on the fetch threads (Pillow releases the GIL in its codecs and
resampling), so no image bytes cross a process boundary.

The tail: a shard never waits on a hung host. A URL whose first attempt times out, and every URL
still in flight `defer_after` seconds after the shard's last fresh item started, is cut and handed
back as *deferred*; the driver gathers deferred URLs from all shards into straggler tasks, where
each gets one more attempt of at most `late_retry_timeout`, many at once. So a fresh shard ends at
most defer_after after its queue drains, and the run ends at most defer_after + late_retry_timeout
after its last fresh item started: wall - busy <= that (<= total_timeout with the defaults).
"""

from __future__ import annotations

import hashlib
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pocketml.acquisition.downloader import Downloader, Fetched
from pocketml.acquisition.sources.base import SourceItem
from pocketml.acquisition.state import OK, Outcome, item_key
from pocketml.acquisition.verify import verify_and_store

from pocketml.configs.acquire import DownloadConfig, VerifyConfig

LOCAL_SOURCES = frozenset({"folder"})  # the only sources whose items may be file:// URLs
TIMEOUT = "timeout"
MIN_BUDGET = 0.2  # seconds: a straggler attempt with less time left than this is not started


@dataclass(frozen=True)
class ShardTask:
    shard: str  # a shard id, or a straggler batch's own id
    items: list[SourceItem]  # the shard's items still to do, in order
    out_dir: str  # the run directory; the store is out_dir/images (must be reachable by the worker)
    download: DownloadConfig
    verify: VerifyConfig
    threads: int  # fetch threads inside this task
    straggler: bool = False  # a batch of deferred URLs: one attempt each of late_retry_timeout, final


@dataclass
class ShardResult:
    shard: str
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)  # (item key, outcome) of finished items
    # Cut, with the attempts spent on each so far: for a straggler batch to finish.
    deferred: list[tuple[SourceItem, int]] = field(default_factory=list)
    started: float = 0.0  # time.time() when the task began
    busy_until: float = 0.0  # time.time() of its last outcome that was not a timeout (real work)
    finished: float = 0.0  # time.time() when it returned
    cpu_s: float = 0.0  # CPU seconds of the task's process while it ran (user + system)


def run_shard(task: ShardTask) -> ShardResult:
    """Every item of the task with its final outcome, or deferred (fresh shards only)."""
    cpu0, started = _cpu_seconds(), time.time()
    runner = _Runner(task)
    outcomes = runner.run()
    result = ShardResult(task.shard, started=started)  # busy_until stays 0 when nothing but timeouts
    for index, (item, outcome) in enumerate(zip(task.items, outcomes, strict=True)):
        if index in runner.deferred:
            result.deferred.append((item, outcome.attempts))
            continue
        result.outcomes.append((item_key(item), outcome))
        if outcome.status != TIMEOUT:
            result.busy_until = max(result.busy_until, runner.finished_at[index])
    result.finished, result.cpu_s = time.time(), _cpu_seconds() - cpu0
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Runner:
    """The threads of one task; `deferred` holds the indices handed back (a fresh shard's timeouts)."""

    def __init__(self, task: ShardTask):
        self.task = task
        self.downloader = Downloader(task.download)
        self.outcomes: list[Outcome | None] = [None] * len(task.items)
        self.deferred: set[int] = set()
        self.finished_at = [0.0] * len(task.items)  # time.time() of each final outcome
        self.lock = threading.Lock()
        self.unstarted = len(task.items)
        self.unfinished = len(task.items)
        self.drained = threading.Event()  # every item has started
        self.done = threading.Event()  # every item has an outcome (or was deferred)
        self.error: BaseException | None = None
        # A straggler batch has one deadline for all its URLs, however long they queue for a host.
        self.deadline = time.monotonic() + task.download.late_retry_timeout if task.straggler else None

    def run(self) -> list[Outcome]:
        if not self.task.items:
            return []
        pool = ThreadPoolExecutor(max(1, min(self.task.threads, len(self.task.items))), thread_name_prefix="fetch")
        try:
            for index in range(len(self.task.items)):
                pool.submit(self._guarded, index)
            if not self.task.straggler:
                self.drained.wait()
                if not self.done.wait(self.task.download.defer_after):
                    self.downloader.cut()  # the stragglers: hand them back instead of waiting
            self.done.wait()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.downloader.close()
        if self.error is not None:
            raise self.error
        return self.outcomes  # type: ignore[return-value]  (done: every slot is filled)

    def _guarded(self, index: int) -> None:
        try:
            with self.lock:
                self.unstarted -= 1
                if self.unstarted == 0:
                    self.drained.set()
            outcome = self._process(self.task.items[index])
            if outcome.status == TIMEOUT and not self.task.straggler:
                self.deferred.add(index)  # one more attempt in a straggler batch, many at once
            self._finish(index, outcome)
        except BaseException as exc:  # a bug: stop the shard and hand the traceback to the driver
            self.error = exc
            self.done.set()

    def _finish(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        self.finished_at[index] = time.time()
        with self.lock:
            self.unfinished -= 1
            if self.unfinished == 0:
                self.done.set()

    def _process(self, item: SourceItem) -> Outcome:
        budget = None if self.deadline is None else self.deadline - time.monotonic()
        if item.data is not None:
            fetched = Fetched(OK, item.data, item.url, 0)
        elif budget is not None and budget < MIN_BUDGET:
            fetched = Fetched(TIMEOUT, None, item.url, 0, "no time left in its straggler batch")
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
