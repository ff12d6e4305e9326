"""`[bench]`: how `pocketml bench` measures quality, latency, size and memory of every exported file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pocketml.errors import PocketMLError


@dataclass
class BenchConfig:
    threads: list[int] = field(default_factory=lambda: [1, 4])  # CPU threads per latency run (phones use 1-4)
    min_time_s: float = 2.0  # seconds of timed runs per artifact and thread count, at least
    min_runs: int = 10  # timed runs per artifact and thread count, at least (percentiles need samples)
    max_runs: int = 5000  # cap on timed runs so a very fast model does not run forever
    warmup_runs: int = 5  # untimed runs first: caches, lazy allocation and kernel selection settle
    block_runs: int = 5  # runs per interleaved bare/harness block of the overhead check
    max_overhead_pct: float = 5.0  # harness overhead above this vs a bare runtime loop is flagged
    # Among files whose verdict passed (export/tolerances.py is the one budget): fastest or smallest.
    recommend_by: Literal["latency", "size"] = "latency"
    measure_memory: bool = True  # peak RSS per artifact in a fresh subprocess (a few seconds each)
    memory_runs: int = 5  # inferences the memory probe runs after loading
    probe_peak: bool = True  # matmul probe of this machine's peak GFLOP/s per thread count
    keras_model: str | None = None  # the Keras original; None: the manifest's model.source
    # Devices that also run every file they can: "arm64" (emulated cortex-a76), "arm64:neoverse-n1", "web".
    # Each adds its verdict and cost per file; the platforms it stands for are then ranked by its cost.
    devices: list[str] = field(default_factory=list)
    # A file whose outputs on a device differ from the host's is judged there on the images its outcome could
    # change ("guided", benchmarks/on_device.py; the others keep their host outputs) or on "all" of them.
    device_images: Literal["guided", "all"] = "guided"

    def __post_init__(self) -> None:
        if not self.threads or any(t < 1 for t in self.threads):
            raise PocketMLError(f"threads = {self.threads} is not accepted; give thread counts >= 1, e.g. [1, 4]")
        if self.min_time_s < 0 or self.min_runs < 1 or self.max_runs < self.min_runs or self.block_runs < 1:
            raise PocketMLError(f"min_time_s = {self.min_time_s}, min_runs = {self.min_runs}, max_runs = "
                                f"{self.max_runs}, block_runs = {self.block_runs}: need min_time_s >= 0, "
                                "min_runs >= 1, max_runs >= min_runs and block_runs >= 1")
        if self.device_images not in ("guided", "all"):
            raise PocketMLError(f"device_images = {self.device_images!r} is not accepted; give \"guided\" or \"all\"")
        if self.warmup_runs < 0 or self.memory_runs < 1:
            raise PocketMLError(f"warmup_runs = {self.warmup_runs} and memory_runs = {self.memory_runs}: "
                                "need warmup_runs >= 0 and memory_runs >= 1")
