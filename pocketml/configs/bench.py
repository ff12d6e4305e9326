"""`[bench]`: how `pocketml bench` measures quality, latency, size and memory of every exported file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BenchConfig:
    threads: list[int] = field(default_factory=lambda: [1, 4])  # CPU threads per latency run (phones use 1-4)
    min_time_s: float = 2.0  # seconds of timed runs per artifact and thread count, at least
    min_runs: int = 10  # timed runs per artifact and thread count, at least (percentiles need samples)
    max_runs: int = 5000  # cap on timed runs so a very fast model does not run forever
    warmup_runs: int = 5  # untimed runs first: caches, lazy allocation and kernel selection settle
    block_runs: int = 5  # runs per interleaved bare/harness block of the overhead check
    max_overhead_pct: float = 5.0  # harness overhead above this vs a bare runtime loop is flagged
    budget_points: float = 1.0  # accuracy drop (percentage points vs Keras) a recommendation may cost
    min_agreement: float = 0.99  # top-1 agreement with Keras a recommended artifact needs (fraction)
    recommend_by: Literal["latency", "size"] = "latency"  # among artifacts within budget: fastest or smallest
    measure_memory: bool = True  # peak RSS per artifact in a fresh subprocess (a few seconds each)
    memory_runs: int = 5  # inferences the memory probe runs after loading
    probe_peak: bool = True  # matmul probe of this machine's peak GFLOP/s per thread count
    keras_model: str | None = None  # the Keras original; None: the manifest's model.source
    # Devices that also run every file they can: "arm64" (emulated cortex-a76), "arm64:neoverse-n1", "web".
    # Each adds its verdict and cost per file; the platforms it stands for are then ranked by its cost.
    devices: list[str] = field(default_factory=list)
