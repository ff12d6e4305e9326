"""How close each runtime gets to this machine's limit: a small float32 matmul probe of peak
GFLOP/s per thread count, and achieved GMAC/s per measured row.

The probe runs numpy's BLAS in a child process whose thread count is fixed by environment (BLAS
libraries read it once at start-up). A matmul is the best case for a CPU, so the share of peak
says how much of the machine a runtime's convolutions leave unused. 1 MAC = 2 FLOPs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pocketml.errors import one_line

_PROBE = r"""
import json, sys, time
import numpy as np
n, seconds = int(sys.argv[1]), float(sys.argv[2])
rng = np.random.default_rng(0)
a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
a @ b
best, deadline = float("inf"), time.perf_counter() + seconds
while time.perf_counter() < deadline:
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(json.dumps({"gflops": 2 * n**3 / best / 1e9}))
"""
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def peak_gflops(threads: int, size: int = 768, seconds: float = 0.5) -> float:
    """Best float32 GFLOP/s of an n×n matmul with `threads` BLAS threads (best run: least disturbed)."""
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(size), str(seconds)], capture_output=True, text=True, env=env, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"peak probe failed: {one_line(done.stderr, 'no output', last=True)}")
    return float(json.loads(done.stdout)["gflops"])


def peak_table(thread_counts: list[int]) -> dict[str, float]:
    return {str(t): peak_gflops(t) for t in thread_counts}


def achieved(macs: int | None, latency_ms: float | None, peak: float | None) -> dict:
    """GMAC/s a row reached at its median latency, and that as a share of the machine's peak FLOP/s."""
    if not macs or not latency_ms:
        return {"gmacs": None, "peak_share": None}
    gmacs = macs / (latency_ms / 1e3) / 1e9
    return {"gmacs": gmacs, "peak_share": (2 * gmacs / peak) if peak else None}
