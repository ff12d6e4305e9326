"""Batch-1 latency the way a phone app runs a model: one camera frame at a time.

Each runtime is driven directly with an explicit thread count (LiteRT's Interpreter with its
default XNNPACK delegate, which is Android's CPU path; ONNX Runtime's CPU provider), so the timed
call is the runtime's own work. Timed runs alternate with blocks of the same call in a bare loop,
which measures what the harness itself adds (timestamps, bookkeeping) on this very machine.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pocketml.errors import RuntimeUnavailable

Run = Callable[[], Any]

NO_COREML = "n/a: no Core ML runtime on Linux" if platform.system() == "Linux" else "n/a: no Core ML runtime here"


def _tflite_input(image: np.ndarray, detail: dict) -> np.ndarray:
    """`image` (uint8 RGB) in the tensor's dtype; integer inputs are quantised with the tensor's scale."""
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(image / scale + zero), info.min, info.max).astype(dtype)
    return image.astype(dtype)


def tflite_runner(path: Path, image: np.ndarray, threads: int) -> Run:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = _tflite_input(image, inp)
    index, out_index = inp["index"], out["index"]

    def run() -> Any:
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out_index)

    return run


ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def onnx_runner(path: Path, image: np.ndarray, threads: int) -> Run:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one image, one graph: parallelism comes from intra-op threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = image.astype(ONNX_DTYPES.get(inp.type, np.float32))
    if len(inp.shape) == 4 and inp.shape[1] == 3 and inp.shape[-1] != 3:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # a channels-first graph
    feed = {inp.name: x}
    return lambda: session.run(None, feed)


def predictor_runner(predictor: Any, image: np.ndarray) -> Run:
    """Any Predictor (the Keras original, Core ML on macOS): its own threading, its own wrapper."""
    return lambda: predictor.predict(image)


def runtime_runner(fmt: str, path: Path, image: np.ndarray, threads: int) -> Run:
    if fmt == "tflite":
        return tflite_runner(path, image, threads)
    if fmt == "onnx":
        return onnx_runner(path, image, threads)
    raise RuntimeUnavailable(f"no direct runtime with a thread setting for {fmt}")


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


def measure(run: Run, min_time_s: float, min_runs: int, max_runs: int, warmup_runs: int, block_runs: int) -> dict:
    """Latency percentiles of `run` plus the harness overhead vs a bare loop of the same call.

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
        bare_blocks.append(_bare_block_ns(run, n) / n)
        harness_blocks.append(_harness_block_ns(run, n, samples) / n)
    figures = summary_ms(np.asarray(samples, dtype=np.float64))
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
