"""Helpers every benchmark script shares: where the real data is, what machine ran it, and the
closing `RESULT {json}` line.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POCKETML_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or exit with a clear message when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        sys.exit(f"benchmark needs {path} (the shared test data); set POCKETML_SHARED_DATA to its location")
    return path


def cpu_flags() -> list[str]:
    """The SIMD flags that decide which kernels the runtimes pick (AVX2, AVX-512, VNNI...)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "sse4_2")
    return [f for f in wanted if f in flags]


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def print_result(figures: dict) -> None:
    """The one line every benchmark ends with; figures should include `machine`."""
    print("RESULT " + json.dumps(figures, sort_keys=True, default=str), flush=True)
