"""`acquire`: the one place that wires source -> shards -> downloader -> verifier -> store -> state.

Threads fetch (network waits release the GIL); worker processes decode and verify (CPU); the main
thread alone writes the state DB, in batched transactions. Items stream from the sources in
shards of `shard_size`; several shards overlap so one slow URL never idles the others, and a
shard is marked done once all its outcomes are committed. Everything a rerun needs is in
`state.sqlite`; `pool.csv` and `acquisition.json` are rewritten from it at the end of every run.
"""

from __future__ import annotations

import csv
import hashlib
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import islice
from pathlib import Path

from acquisition import store
from acquisition.downloader import Downloader, Fetched
from acquisition.sources import Source, SourceItem, make_source
from acquisition.state import OK, Outcome, State, item_key
from acquisition.verify import Verified, verify_and_store
from pocketml.configs.acquire import AcquireConfig
from pocketml.console import print_table, progress
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_output, atomic_write_json

# The contract's seven columns, then `split`: a source's own split (ImageFolder train/val), or empty.
POOL_COLUMNS = ("sha256", "path", "label", "source", "source_url", "width", "height", "split")
LOCAL_SOURCES = frozenset({"folder"})  # the only sources whose items may be file:// URLs
COMMIT_EVERY = 256  # outcomes per transaction: fewer fsyncs, and a kill loses at most this many
COMMIT_SECONDS = 1.0  # ...or this much time, whichever comes first


def acquire(config: AcquireConfig, out_dir: Path) -> dict:
    """Fetch, verify and store every source item; returns the summary written to acquisition.json."""
    out_dir = Path(out_dir)
    sources = [make_source(table, f"acquire.sources[{i}]") for i, table in enumerate(config.sources)]
    if not sources:
        raise PocketMLError("[acquire] has no sources; add e.g. sources = [{type = \"urls\", path = \"urls.txt\"}]")
    out_dir.mkdir(parents=True, exist_ok=True)
    store.remove_partials(out_dir)
    state = State(out_dir / "state.sqlite")
    started = time.monotonic()
    try:
        processed = _run(config, sources, state, out_dir)
    finally:
        state.close()
    state = State(out_dir / "state.sqlite")
    try:
        write_pool(state, out_dir / "pool.csv")
        summary = _summary(state, out_dir, processed, time.monotonic() - started)
    finally:
        state.close()
    atomic_write_json(out_dir / "acquisition.json", summary)
    print_summary(summary)
    return summary


def shards(sources: list[Source], size: int) -> Iterator[tuple[str, list[SourceItem]]]:
    """(shard id, items) in a deterministic order, so a rerun names the same shards."""
    for index, source in enumerate(sources):
        stream = iter(source.items())
        number = 0
        while chunk := list(islice(stream, size)):
            yield f"{index:02d}-{source.name}-{number:06d}", chunk
            number += 1


class _Pipeline:
    """Items in, outcomes out: fetch on threads, verify in processes, results on a queue."""

    def __init__(self, config: AcquireConfig, out_dir: Path):
        workers = config.workers or os.cpu_count() or 1
        self.config = config
        self.out_dir = str(out_dir)
        self.cpu = ProcessPoolExecutor(workers, mp_context=_worker_context(), initializer=_exit_with_parent,
                                       initargs=(os.getpid(),))
        # With fork, the pool starts all its workers on the first submit: do it before this process
        # has any fetch or watchdog thread, so no child inherits a lock some thread was holding.
        self.cpu.submit(os.getpid).result()
        self.downloader = Downloader(config.download)
        self.net = ThreadPoolExecutor(config.download.threads, thread_name_prefix="fetch")
        self.results: queue.Queue[tuple[str, str, Future]] = queue.Queue()
        self.in_flight = 0

    def submit(self, shard: str, item: SourceItem) -> None:
        future = self.net.submit(self._process, item)
        key = item_key(item)
        future.add_done_callback(lambda f: self.results.put((shard, key, f)))
        self.in_flight += 1

    def next_result(self) -> tuple[str, str, Outcome]:
        shard, key, future = self.results.get()
        self.in_flight -= 1
        return shard, key, future.result()

    def close(self, cancel: bool = False) -> None:
        self.net.shutdown(wait=not cancel, cancel_futures=cancel)
        self.cpu.shutdown(wait=not cancel, cancel_futures=cancel)
        if not cancel:
            self.downloader.close()

    def _process(self, item: SourceItem) -> Outcome:
        if item.data is not None:
            fetched = Fetched("ok", item.data, item.url, 0)
        else:
            fetched = self.downloader.fetch(item.url, allow_file=item.source in LOCAL_SOURCES)
        if fetched.status != OK:
            return Outcome(fetched.status, fetched.error, fetched.attempts, fetched.http_status, final_url=fetched.final_url)
        data = fetched.data or b""
        raw_sha = hashlib.sha256(data).hexdigest()
        verified: Verified = self.cpu.submit(verify_and_store, data, self.config.verify, self.out_dir,
                                             fetched.final_url, item.box, item.rotation).result()
        return Outcome(verified.status, verified.error, fetched.attempts, fetched.http_status, len(data), raw_sha,
                       verified.sha256 or None, verified.path or None, verified.width or None,
                       verified.height or None, fetched.final_url)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave when the parent is gone. A forked worker holds the pipe ends its
    parent held, so after a kill -9 of the parent it would wait on the task queue forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_context() -> multiprocessing.context.BaseContext:
    """fork on Linux (fast start, works from any __main__); the platform default elsewhere (macOS
    system libraries are not fork-safe)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _run(config: AcquireConfig, sources: list[Source], state: State, out_dir: Path) -> int:
    pipeline = _Pipeline(config, out_dir)
    max_in_flight = max(4 * config.download.threads, 2 * config.shard_size)
    remaining: dict[str, int] = {}
    processed = 0
    last_commit = time.monotonic()
    cancel = False

    def drain_one() -> None:
        nonlocal processed, last_commit
        shard, key, outcome = pipeline.next_result()
        state.record(key, outcome)
        processed += 1
        bar.advance(task)
        remaining[shard] -= 1
        if remaining[shard] == 0 or processed % COMMIT_EVERY == 0 or time.monotonic() - last_commit > COMMIT_SECONDS:
            state.commit()
            last_commit = time.monotonic()
        if remaining[shard] == 0:
            state.finish_shard(shard)
            del remaining[shard]

    try:
        with progress() as bar:
            task = bar.add_task("acquire", total=None)
            for shard, items in shards(sources, config.shard_size):
                if state.shard_done(shard):
                    continue
                todo = state.open_shard(shard, items)
                if not todo:
                    state.finish_shard(shard)
                    continue
                remaining[shard] = len(todo)
                for item in todo:
                    while pipeline.in_flight >= max_in_flight:
                        drain_one()
                    pipeline.submit(shard, item)
            while pipeline.in_flight:
                drain_one()
    except BaseException:
        cancel = True
        raise
    finally:
        state.commit()  # every outcome already known is kept
        pipeline.close(cancel)
    return processed


def write_pool(state: State, path: Path) -> int:
    """pool.csv: one row per stored image (the contract curation reads)."""
    count = 0
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(POOL_COLUMNS)
        for row in state.stored_rows():
            writer.writerow(row)
            count += 1
    return count


def _summary(state: State, out_dir: Path, processed: int, seconds: float) -> dict:
    by_status = state.status_counts()
    done, seen = state.shard_counts()
    return {
        "out_dir": str(out_dir),
        "urls": sum(by_status.values()),
        "images": by_status.get(OK, 0),
        "by_status": by_status,
        "by_label": state.label_counts(),
        "repeated_urls": state.repeated_urls(),
        "shards": {"done": done, "seen": seen},
        "this_run": {"processed": processed, "seconds": round(seconds, 3),
                     "per_second": round(processed / seconds, 2) if seconds > 0 else None},
        "pool": "pool.csv",
    }


def print_summary(summary: dict) -> None:
    """One row per status, one column per label: statuses are many, labels usually few."""
    labels = sorted(summary["by_label"])
    rows = [[status, *(summary["by_label"][lb].get(status, 0) for lb in labels), total]
            for status, total in summary["by_status"].items()]
    rows.append(["all", *(sum(summary["by_label"][lb].values()) for lb in labels), summary["urls"]])
    print_table(f"acquire: {summary['images']} images in {summary['out_dir']}", ["status", *labels, "total"], rows)
