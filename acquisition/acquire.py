"""`acquire`: the one place that wires source -> shards -> executor -> state.

Items stream from the sources in shards of `shard_size`. An executor (local worker processes, or
Ray tasks on a cluster: acquisition/executors.py) runs each shard: fetch, verify and store on
threads, returning one outcome row per item (acquisition/shard.py). This driver alone writes the
state DB, one transaction per finished shard (its outcomes and its `done` mark together), so a kill
at any moment leaves every URL either finished or still pending. URLs a shard hands back (hung or
timed out) go out again in straggler batches; their shard is marked done once they are settled,
and the last batch leaves only when every fresh shard is back. Everything a rerun needs is in
`state.sqlite`; `pool.csv` and `acquisition.json` are rewritten from it at the end of every run.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pocketml.acquisition import store
from pocketml.acquisition.executors import Executor, make_executor
from pocketml.acquisition.pool import POOL_COLUMNS, POOL_FILE
from pocketml.acquisition.shard import LOCAL_SOURCES, ShardResult, ShardTask
from pocketml.acquisition.sources import Source, SourceItem, make_source
from pocketml.acquisition.state import OK, Outcome, State, item_key

from pocketml.configs.acquire import AcquireConfig
from pocketml.console import print_table, progress
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_output, atomic_write_json, sha256_file

SUMMARY_FILE = "acquisition.json"  # the run summary acquire returns, rewritten at the end of every run
STRAGGLER_BATCH = 64  # handed-back URLs per straggler task: they mostly wait, so all of a batch run at once


def acquire(config: AcquireConfig, out_dir: Path) -> dict:
    """Fetch, verify and store every source item; returns the summary written to acquisition.json."""
    out_dir = Path(out_dir).absolute()
    sources = [make_source(table, f"acquire.sources[{i}]") for i, table in enumerate(config.sources)]
    if not sources:
        raise PocketMLError("[acquire] has no sources; add e.g. sources = [{type = \"urls\", path = \"urls.txt\"}]")
    out_dir.mkdir(parents=True, exist_ok=True)
    store.remove_partials(out_dir)
    state = State(out_dir / "state.sqlite")
    started = time.monotonic()
    try:
        reopened = state.reopen_retryable() if config.retry_failed else 0
        reopened += state.reopen_changed(local_bytes(sources))
        run = _run(config, sources, state, out_dir)
    finally:
        state.close()
    state = State(out_dir / "state.sqlite")
    try:
        write_pool(state, out_dir / POOL_FILE, listed_local(sources))
        summary = _summary(state, out_dir, run, time.monotonic() - started, reopened, config.executor)
    finally:
        state.close()
    atomic_write_json(out_dir / SUMMARY_FILE, summary)
    print_summary(summary)
    if run.failed:
        raise PocketMLError(f"{len(run.failed)} shard(s) lost their worker {config.max_retries + 1} times "
                            f"({', '.join(run.failed[:5])}); their URLs are still pending: rerun to resume")
    return summary


def shards(sources: list[Source], size: int) -> Iterator[tuple[str, list[SourceItem]]]:
    """(shard id, items) in a deterministic order, so a rerun names the same shards."""
    for index, source in enumerate(sources):
        # A local folder's shards are named by its contents: a photo added or replaced lands in shards
        # no earlier run finished, so it is read (unchanged photos are still finished URLs, not redone).
        version = f"-{source.listing_digest()[:12]}" if hasattr(source, "listing_digest") else ""
        stream = iter(source.items())
        number = 0
        while chunk := list(islice(stream, size)):
            yield f"{index:02d}-{source.name}-{number:06d}{version}", chunk
            number += 1


class _RunStats:
    """What this run did, for the summary: counts, CPU of the shard tasks, and the tail."""

    def __init__(self) -> None:
        self.processed = 0
        self.task_cpu_s = 0.0
        self.first_start: float | None = None
        self.busy_until = 0.0  # time.time() of the last outcome that was real work (not a timeout)
        self.finished = 0.0
        self.failed: list[str] = []

    def add(self, result: ShardResult) -> None:
        self.processed += len(result.outcomes)
        self.task_cpu_s += result.cpu_s
        self.first_start = min(self.first_start or result.started, result.started)
        self.busy_until = max(self.busy_until, result.busy_until)
        self.finished = max(self.finished, result.finished)


class _LazyExecutor:
    """The executor, started on the first shard that has work: a rerun with nothing left to do
    never starts worker processes or joins a Ray cluster."""

    def __init__(self, config: AcquireConfig, out_dir: Path):
        self.config, self.out_dir = config, out_dir
        self.executor: Executor | None = None

    def get(self) -> Executor:
        if self.executor is None:
            self.executor = make_executor(self.config, str(self.out_dir))
        return self.executor

    def in_flight(self) -> int:
        return self.executor.in_flight() if self.executor else 0

    def close(self, cancel: bool) -> list[str]:
        if self.executor is None:
            return []
        self.executor.close(cancel)
        return self.executor.failed


class _Stragglers:
    """URLs fresh shards handed back (timed out, or still hanging when the shard stopped waiting),
    batched into straggler tasks. A shard is marked done only once its handed-back URLs are settled,
    so a kill before that leaves them pending for the next run."""

    def __init__(self) -> None:
        self.waiting: list[SourceItem] = []
        self.owner: dict[str, tuple[str, int]] = {}  # URL key -> (its shard, attempts spent before)
        self.outstanding: Counter[str] = Counter()  # shard -> handed-back URLs not yet settled
        self.batches: set[str] = set()
        self.running = 0  # straggler batches in flight

    def defer(self, shard: str, deferred: list[tuple[SourceItem, int]]) -> None:
        for item, attempts in deferred:
            self.owner[item_key(item)] = (shard, attempts)
            self.outstanding[shard] += 1
            self.waiting.append(item)

    def settle(self, key: str, outcome: Outcome) -> tuple[str, Outcome]:
        shard, before = self.owner.pop(key)
        self.outstanding[shard] -= 1
        return shard, Outcome(**{**outcome.__dict__, "attempts": before + outcome.attempts})

    def take(self, everything: bool) -> list[SourceItem] | None:
        """A batch when a full one is waiting (or, at the end, whatever is left)."""
        if len(self.waiting) < STRAGGLER_BATCH and not (everything and self.waiting):
            return None
        batch, self.waiting = self.waiting[:STRAGGLER_BATCH], self.waiting[STRAGGLER_BATCH:]
        return batch


def _run(config: AcquireConfig, sources: list[Source], state: State, out_dir: Path) -> _RunStats:
    lazy = _LazyExecutor(config, out_dir)
    stats, stragglers = _RunStats(), _Stragglers()
    cancel = False

    def collect(bar, task_id) -> None:
        result = lazy.get().next_result()
        if result is None:  # given up on after max_retries: its URLs stay pending for the next run
            return
        settled = []
        stragglers.running -= result.shard in stragglers.batches
        for key, outcome in result.outcomes:
            if result.shard in stragglers.batches:
                shard, outcome = stragglers.settle(key, outcome)
                settled.append(shard)
            state.record(key, outcome)
        stragglers.defer(result.shard, result.deferred)
        owners = settled if result.shard in stragglers.batches else [result.shard]
        for shard in dict.fromkeys(owners):
            if not stragglers.outstanding[shard]:
                state.finish_shard(shard)  # commits its outcomes and its done mark in one transaction
        state.commit()
        stats.add(result)
        bar.advance(task_id, len(result.outcomes))

    def submit(bar, task_id, task: ShardTask) -> None:
        executor = lazy.get()
        while executor.in_flight() >= executor.slots:
            collect(bar, task_id)
        executor.submit(task)

    def submit_stragglers(bar, task_id, everything: bool) -> None:
        while (batch := stragglers.take(everything)) is not None:
            name = f"stragglers-{len(stragglers.batches):06d}"
            stragglers.batches.add(name)
            stragglers.running += 1
            submit(bar, task_id, ShardTask(name, batch, str(out_dir), config.download, config.verify,
                                           len(batch), straggler=True))

    try:
        with progress() as bar:
            task_id = bar.add_task("acquire", total=None)
            for shard, items in shards(sources, config.shard_size):
                if state.shard_done(shard):
                    continue
                todo = state.open_shard(shard, items)
                if not todo:
                    state.finish_shard(shard)
                    continue
                submit_stragglers(bar, task_id, everything=False)
                submit(bar, task_id, ShardTask(shard, todo, str(out_dir), config.download, config.verify,
                                               config.download.threads))
            while lazy.in_flight() or stragglers.waiting:
                if stragglers.waiting and lazy.in_flight() == stragglers.running:
                    # Every fresh shard is back: what is left goes out at once, not shard by shard.
                    submit_stragglers(bar, task_id, everything=True)
                else:
                    collect(bar, task_id)
    except BaseException:
        cancel = True
        raise
    finally:
        state.commit()
        stats.failed = lazy.close(cancel)
    return stats


def local_bytes(sources: list[Source]) -> dict[str, str]:
    """{URL: sha256 of the file now} for every photo a local source lists (a few ms per photo; read
    only when acquire runs, which for a folder means its listing changed)."""
    return {item.url: sha256_file(Path(url2pathname(urlparse(item.url).path)))
            for source in sources if source.name in LOCAL_SOURCES for item in source.items()}


def listed_local(sources: list[Source]) -> set[str]:
    """URLs a local source lists now (a photo removed from its folder is no longer among them)."""
    return {item.url for source in sources if source.name in LOCAL_SOURCES for item in source.items()}


def write_pool(state: State, path: Path, listed: set[str] | None = None) -> int:
    """pool.csv: one row per stored image (the contract curation reads); a local source's image
    only while its folder still lists it, when `listed` is given."""
    count = 0
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(POOL_COLUMNS)
        for row in state.stored_rows():
            if listed is not None and row[3] in LOCAL_SOURCES and row[4] not in listed:
                continue
            writer.writerow(row)
            count += 1
    return count


def _summary(state: State, out_dir: Path, run: _RunStats, seconds: float, reopened: int, executor: str) -> dict:
    by_status = state.status_counts()
    done, seen = state.shard_counts()
    work_s = (run.finished - run.first_start) if run.first_start else 0.0
    busy_s = max(0.0, run.busy_until - run.first_start) if run.first_start else 0.0
    return {
        "out_dir": str(out_dir),
        "urls": sum(by_status.values()),
        "images": by_status.get(OK, 0),
        "by_status": by_status,
        "by_label": state.label_counts(),
        "repeated_urls": state.repeated_urls(),
        "shards": {"done": done, "seen": seen},
        "this_run": {"executor": executor, "processed": run.processed, "retried_failed": reopened,
                     "seconds": round(seconds, 3),
                     "per_second": round(run.processed / seconds, 2) if seconds > 0 else None,
                     # From the first shard's start: until the last real outcome, and the wait after it.
                     "busy_s": round(busy_s, 3), "tail_s": round(max(0.0, work_s - busy_s), 3),
                     "task_cpu_s": round(run.task_cpu_s, 3), "lost_shards": run.failed},
        "pool": POOL_FILE,
    }


def print_summary(summary: dict) -> None:
    """One row per status, one column per label: statuses are many, labels usually few."""
    labels = sorted(summary["by_label"])
    rows = [[status, *(summary["by_label"][lb].get(status, 0) for lb in labels), total]
            for status, total in summary["by_status"].items()]
    rows.append(["all", *(sum(summary["by_label"][lb].values()) for lb in labels), summary["urls"]])
    print_table(f"acquire: {summary['images']} images in {summary['out_dir']}", ["status", *labels, "total"], rows)
