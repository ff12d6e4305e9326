"""Where shards run: worker processes on this machine ("local") or tasks on a Ray cluster ("ray").

An executor runs `shard.run_shard` on ShardTasks and hands back ShardResults; it never touches the
state database (the driver in acquire.py is its only writer). Both executors rerun a shard whose
worker died, up to `max_retries` times; a shard that still cannot finish is reported, not
recorded, so its URLs stay pending and the next run picks them up.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from pocketml.acquisition.shard import ShardResult, ShardTask, run_shard

from pocketml.configs.acquire import AcquireConfig


class Executor(Protocol):
    slots: int  # shards worth keeping in flight at once

    def submit(self, task: ShardTask) -> None: ...

    def in_flight(self) -> int: ...

    def next_result(self) -> ShardResult | None:
        """The next finished shard; None when a shard was given up on (see `failed`)."""

    @property
    def failed(self) -> list[str]: ...

    def close(self, cancel: bool = False) -> None: ...


def make_executor(config: AcquireConfig, out_dir: str) -> Executor:
    if config.executor == "ray":
        from pocketml.acquisition.ray_executor import RayExecutor  # ray is imported only when chosen

        return RayExecutor(config, out_dir)
    return LocalExecutor(config.workers or 2 * (os.cpu_count() or 1), config.max_retries)


class LocalExecutor:
    """A pool of worker processes, one shard per process at a time."""

    def __init__(self, processes: int, max_retries: int):
        self.slots = processes
        self.max_retries = max_retries
        self.futures: dict[Future, ShardTask] = {}
        self.tries: dict[str, int] = {}
        self._failed: list[str] = []
        self._given_up = 0
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.slots, mp_context=_worker_context(), initializer=_exit_with_parent,
                                   initargs=(os.getpid(),))
        # With fork the pool starts every worker on its first submit: do it now, before the caller
        # starts a progress thread, so no child inherits a lock some thread was holding.
        pool.submit(os.getpid).result()
        return pool

    @property
    def failed(self) -> list[str]:
        return list(self._failed)

    def submit(self, task: ShardTask) -> None:
        self.futures[self.pool.submit(run_shard, task)] = task

    def in_flight(self) -> int:
        return len(self.futures) + self._given_up

    def next_result(self) -> ShardResult | None:
        while True:
            if self._given_up:
                self._given_up -= 1
                return None
            done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
            future = next(iter(done))
            task = self.futures.pop(future)
            try:
                return future.result()
            except BrokenProcessPool:
                self._recover([task])

    def _recover(self, broken: list[ShardTask]) -> None:
        """A worker died (OOM killer, kill -9): every shard in flight is lost with the pool; rerun them."""
        broken += list(self.futures.values())
        self.futures.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        for task in broken:
            self.tries[task.shard] = self.tries.get(task.shard, 0) + 1
            if self.tries[task.shard] > self.max_retries:
                self._failed.append(task.shard)
                self._given_up += 1
            else:
                self.submit(task)

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


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

