"""Batch-1 latency the way a phone app runs a model: one camera frame at a time. The one timer:
bench's figures and the quantisation search's ranking of its candidates both come from `measure`.

The timed call is a Predictor's invoker (export/runtime.py): the runtime's own work on a prepared
frame, set up by the format module with an explicit thread count exactly as predict sets it up.
Timed runs alternate with blocks of the same call in a bare loop, which measures what the harness
itself adds (timestamps, bookkeeping) on this very machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

Run = Callable[[], Any]

def summary_ms(samples_ns: np.ndarray) -> dict:
    ms = samples_ns / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
        "min_ms": float(ms.min()),
        "runs": int(len(ms)),
    }


def _bare_block_ns(run: Run, n: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(n):
        run()
    return time.perf_counter_ns() - start


def _harness_block_ns(run: Run, n: int, samples: list[int]) -> int:
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(n):
        t0 = clock()
        run()
        samples.append(clock() - t0)
    return clock() - start


def block_size(run: Run, warmup_runs: int, block_runs: int) -> int:
    """Warm `run` up and return how many calls one block holds: about 20 ms, at most `block_runs`,
    so a slow model still gets enough blocks to compare.
    """
    last = 0
    for _ in range(max(warmup_runs, 1)):
        start = time.perf_counter_ns()
        run()
        last = time.perf_counter_ns() - start
    return max(1, min(block_runs, int(20e6 // max(last, 1))))


def measure(run: Run, min_time_s: float, min_runs: int, max_runs: int, warmup_runs: int, block_runs: int,
            bare: bool = True) -> dict:
    """Latency percentiles of `run` plus (with `bare`) the harness overhead vs a bare loop of the same call.

    The overhead is the harness's own cost per iteration (two clock reads and an append, measured
    around a no-op where nothing else can hide in it) divided by the bare call's time. Timed and
    bare blocks also alternate, and their direct ratio is reported too: on a quiet machine it
    agrees; on a busy one it shows how much noise, not harness, moves the figures.
    """
    n_block = block_size(run, warmup_runs, block_runs)
    samples: list[int] = []
    bare_blocks: list[float] = []
    harness_blocks: list[float] = []
    started = time.perf_counter()
    deadline = started + min_time_s
    while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() < deadline):
        n = min(n_block, max_runs - len(samples))
        if bare:
            bare_blocks.append(_bare_block_ns(run, n) / n)
        harness_blocks.append(_harness_block_ns(run, n, samples) / n)
    figures = summary_ms(np.asarray(samples, dtype=np.float64))
    if not bare:  # a quick figure (e.g. to rank candidates): no bare-loop comparison, half the calls
        return {**figures, "timed_seconds": time.perf_counter() - started}
    bare_ns = float(np.median(bare_blocks))
    figures.update(
        overhead_pct=float(clock_cost_ns() / max(bare_ns, 1.0) * 100),
        overhead_direct_pct=float((np.median(harness_blocks) / max(bare_ns, 1.0) - 1) * 100),
        bare_call_ms=bare_ns / 1e6,
        timed_seconds=time.perf_counter() - started,
    )
    return figures


def clock_cost_ns(batches: int = 20, n: int = 200) -> float:
    """What one harness iteration costs around a call that does nothing: its floor, free of noise.

    The least of several short batches: a batch that another process pre-empts says nothing about us.
    """
    samples: list[int] = []
    return min(_harness_block_ns(lambda: None, n, samples) / n for _ in range(batches))


def overhead_ok(figures: dict, max_overhead_pct: float) -> bool:
    return figures["overhead_pct"] <= max_overhead_pct
