"""`pocketml bench`: every exported file side by side with the Keras original — accuracy,
agreement, latency, size, memory — and the one to ship per platform.

One row per artifact in the export manifest plus the Keras model as the baseline row. A row that
cannot be measured keeps its place with a status and the reason (failed / skipped), and the run
carries on: a broken variant must not hide the figures of the others.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import cost, estimates, latency, peak, quality, recommend, report
from benchmarks.common import machine_info
from pocketml.artifact import FAILED, Artifact, ExportManifest
from pocketml.configs.bench import BenchConfig
from pocketml.console import progress
from pocketml.errors import PocketMLError, RuntimeUnavailable

PASSED = "passed"
FAILED_VALIDATION = "exported but failed validation"
ROW_FAILED = "failed"
SKIPPED = "skipped"
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "onnx", "coremltools", "numpy")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


RUNTIMES = {
    "keras": "TensorFlow/Keras, model called eagerly through its Predictor (TensorFlow's own thread pool)",
    "tflite": "LiteRT Interpreter(num_threads=N) with its default XNNPACK delegate (Android's CPU path)",
    "onnx": "ONNX Runtime CPUExecutionProvider, intra_op_num_threads=N, inter_op_num_threads=1",
    "coreml": "Core ML through coremltools on macOS; elsewhere accuracy only, via export's reference executor",
}


def check_config(config: BenchConfig) -> None:
    if not config.threads or any(t < 1 for t in config.threads):
        raise PocketMLError(f"threads {config.threads} is not accepted; give thread counts >= 1, e.g. 1,4")
    if config.min_time_s < 0 or config.min_runs < 1 or config.max_runs < config.min_runs or config.block_runs < 1:
        raise PocketMLError("min_time_s >= 0, min_runs >= 1, max_runs >= min_runs and block_runs >= 1 are required")
    if config.budget_points < 0:
        raise PocketMLError(f"budget_points {config.budget_points} is not accepted; give 0 or more percentage points")


def keras_path(export_dir: Path, manifest: ExportManifest, config: BenchConfig) -> Path | None:
    """The Keras original: the config's, else the manifest's model.source (relative to the export dir)."""
    given = config.keras_model or manifest.model.get("source")
    if not given:
        return None
    path = Path(given)
    if not path.is_absolute() and not path.exists():
        path = export_dir / path
    return path


def mark_export_validation(row: dict, artifact: Artifact) -> None:
    """A file `pocketml validate` failed stays failed here, even if this run's images happen to pass:
    bench and validate must never tell a user opposite things about one file."""
    if artifact.parity.status != "failed":
        return
    reason = f"export validation on {artifact.parity.images} images: {artifact.parity.reason}"
    row.update(status=FAILED_VALIDATION, reason="; ".join(filter(None, [row["reason"], reason])))


def new_row(name: str, fmt: str, precision: str, path: str) -> dict:
    return {
        "name": name,
        "format": fmt,
        "precision": precision,
        "path": path,
        "status": PASSED,
        "reason": None,
        "bytes": None,
        "zip_bytes": None,
        "params": None,
        "macs": None,
        "images": 0,
        "accuracy": None,
        "accuracy_drop_points": None,
        "top1_agreement": None,
        "max_abs_diff": None,
        "mean_abs_diff": None,
        "latency": {},
        "latency_note": None,  # why latency is absent (e.g. no Core ML runtime off macOS)
        "throughput": {},
        "memory": None,
        "estimates": [],
        "recommended": [],
        "notes": [],
        "runtime": RUNTIMES.get(fmt, "the format's Predictor"),
    }


def short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class Bench:
    """The shared state of one run: the images, the Keras reference outputs, MACs and parameters."""

    def __init__(self, export_dir: Path, manifest: ExportManifest, evalset: quality.EvalSet, config: BenchConfig):
        self.export_dir, self.manifest, self.evalset, self.config = export_dir, manifest, evalset, config
        self.size = tuple(int(x) for x in manifest.model["image_size"])
        self.image = evalset.images[:1]  # batch 1: one camera frame
        self.reference: np.ndarray | None = None
        self.reference_accuracy: float | None = None
        self.macs: int | None = None
        self.params: int | None = None
        self.devices = estimates.load_devices()
        self.peaks: dict[str, float] = {}

    def probe_peaks(self) -> None:
        """Probe peak GFLOP/s again and keep the best: one busy moment must not set the bar."""
        if self.config.probe_peak:
            for key, value in peak.peak_table(self.config.threads).items():
                self.peaks[key] = max(value, self.peaks.get(key, 0.0))

    # -- the Keras baseline -------------------------------------------------------------
    def keras_row(self) -> dict:
        path = keras_path(self.export_dir, self.manifest, self.config)
        row = new_row("keras", "keras", "fp32", str(path) if path else "")
        if path is None or not path.exists():
            row.update(status=ROW_FAILED, reason=f"Keras original not found ({path}); pass --model MODEL.keras")
            return row
        try:
            from export.keras_model import load_keras_predictor

            predictor = load_keras_predictor(path, self.size)
            self.macs, self.params = cost.count_macs(predictor.model), cost.count_params(predictor.model)
            self.reference = predictor.predict(self.evalset.images)
        except Exception as exc:  # a broken original is a row with a reason; artifacts are still measured
            row.update(status=ROW_FAILED, reason=short_reason(exc))
            return row
        row.update(cost.file_sizes(path), macs=self.macs, params=self.params)
        row.update(quality.quality(self.reference, self.reference, self.evalset.targets))
        self.reference_accuracy = row["accuracy"]
        self.time_predictor(row, predictor)
        self.measure_memory(row, "keras", path)
        return row

    # -- one exported artifact ----------------------------------------------------------
    def artifact_row(self, artifact: Artifact) -> dict:
        row = new_row(artifact.name, artifact.format, artifact.precision, artifact.path)
        path = self.export_dir / artifact.path
        if artifact.status == FAILED:
            row.update(status=ROW_FAILED, reason=f"export failed: {artifact.reason}")
            return row
        if not path.exists():
            row.update(status=ROW_FAILED, reason=f"file {artifact.path} is missing from {self.export_dir}")
            return row
        row.update(cost.file_sizes(path), macs=self.macs, params=self.params)
        row["estimates"] = estimates.device_estimates(artifact.format, artifact.precision, self.macs, self.devices)
        predictor = self.measure_quality(row, artifact.format, path)
        if row["status"] == ROW_FAILED:
            return row
        mark_export_validation(row, artifact)
        self.time_artifact(row, artifact.format, path, predictor)
        self.measure_memory(row, artifact.format, path)
        return row

    def measure_quality(self, row: dict, fmt: str, path: Path) -> Any:
        from export.registry import format_module

        try:
            predictor = format_module(fmt).load(path)
            probs = predictor.predict(self.evalset.images)
        except RuntimeUnavailable as exc:
            row.update(status=SKIPPED, reason=latency.NO_COREML if fmt == "coreml" else str(exc))
            return None
        except Exception as exc:  # a runtime crash on this file: recorded, the run goes on
            row.update(status=ROW_FAILED, reason=short_reason(exc))
            return None
        row.update(quality.quality(probs, self.reference, self.evalset.targets))
        row["accuracy_drop_points"] = quality.accuracy_drop_points(row["accuracy"], self.reference_accuracy)
        failures = quality.tolerance_failures(row["precision"], row, self.reference_accuracy)
        if failures:
            row.update(status=FAILED_VALIDATION, reason="; ".join(failures))
        return predictor

    # -- latency --------------------------------------------------------------------------
    def timed(self, run: latency.Run, threads: int | str) -> dict:
        c = self.config
        figures = latency.measure(run, c.min_time_s, c.min_runs, c.max_runs, c.warmup_runs, c.block_runs)
        figures["threads"] = threads
        figures["overhead_ok"] = latency.overhead_ok(figures, c.max_overhead_pct)
        return figures

    def time_artifact(self, row: dict, fmt: str, path: Path, predictor: Any) -> None:
        if fmt == "coreml" and platform.system() != "Darwin":
            row["latency_note"] = latency.NO_COREML
            return
        if fmt not in ("tflite", "onnx"):
            if predictor is not None:
                self.time_predictor(row, predictor)
            return
        for threads in self.config.threads:
            try:
                row["latency"][str(threads)] = self.timed(latency.runtime_runner(fmt, path, self.image, threads), threads)
            except Exception as exc:  # one thread setting failing must not hide the others
                row["notes"].append(f"latency at {threads} threads failed: {short_reason(exc)}")
        self.flag_overhead(row)

    def time_predictor(self, row: dict, predictor: Any) -> None:
        """Runtimes timed through their Predictor keep their own thread pool (TensorFlow's, Core ML's)."""
        key = "tf-default" if row["format"] == "keras" else "runtime-default"
        try:
            row["latency"][key] = self.timed(latency.predictor_runner(predictor, self.image), key)
        except Exception as exc:  # the row keeps its quality figures
            row["notes"].append(f"latency failed: {short_reason(exc)}")
        self.flag_overhead(row)

    def flag_overhead(self, row: dict) -> None:
        for key, figures in row["latency"].items():
            if not figures["overhead_ok"]:
                row["notes"].append(
                    f"harness overhead {figures['overhead_pct']:.1f}% at {key} threads exceeds "
                    f"{self.config.max_overhead_pct:g}%: the call is too short for per-call timing to be exact"
                )

    # -- memory -----------------------------------------------------------------------------
    def measure_memory(self, row: dict, fmt: str, path: Path) -> None:
        if not self.config.measure_memory:
            return
        if fmt == "coreml" and platform.system() != "Darwin":
            return
        try:
            row["memory"] = cost.peak_memory(fmt, path, self.size, self.config.memory_runs)
        except Exception as exc:  # memory is context; its failure does not fail the row
            row["notes"].append(f"peak memory not measured: {short_reason(exc)}")


def timed_row(measure_row, *args) -> dict:
    start = time.perf_counter()
    row = measure_row(*args)
    row["bench_seconds"] = round(time.perf_counter() - start, 2)  # what measuring this row cost
    return row


def add_throughput(rows: list[dict], peaks: dict[str, float]) -> None:
    for row in rows:
        for key, figures in row["latency"].items():
            row["throughput"][key] = peak.achieved(row["macs"], figures["p50_ms"], peaks.get(key))
            share = row["throughput"][key]["peak_share"]
            if share is not None and share > 1:
                row["notes"].append(
                    f"above the probed peak at {key} threads ({share:.0%}): the probe met a busy machine, "
                    "or the runtime uses wider vector units than numpy's BLAS"
                )


def max_overhead(rows: list[dict]) -> float | None:
    """The largest harness overhead over every timed row and thread count (the issue's budget: 5 %)."""
    values = [f["overhead_pct"] for row in rows for f in row["latency"].values()]
    return max(values) if values else None


def bench(export_dir: str | Path, data: str | Path, out_dir: str | Path, config: BenchConfig | None = None) -> dict:
    """Measure every artifact in `export_dir` on `data`; write results.json/csv and report.html to
    `out_dir`, mark the recommended artifacts in the export manifest, return the results.
    """
    config = config or BenchConfig()
    check_config(config)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    started = time.time()
    manifest = ExportManifest.load(export_dir)
    if "labels" not in manifest.model or "image_size" not in manifest.model:
        raise PocketMLError(f"{export_dir}/manifest.json has no model labels/image_size; re-run `pocketml export`")
    size = tuple(int(x) for x in manifest.model["image_size"])
    evalset = quality.evaluation_set(data, list(manifest.model["labels"]), size, config.max_images)
    run = Bench(export_dir, manifest, evalset, config)
    rows: list[dict] = []
    with progress() as bar:
        task = bar.add_task("bench", total=len(manifest.artifacts) + 1)
        rows.append(timed_row(run.keras_row))
        bar.advance(task)
        for artifact in manifest.artifacts:
            bar.update(task, description=f"bench {artifact.name}")
            run.probe_peaks()
            rows.append(timed_row(run.artifact_row, artifact))
            bar.advance(task)
    run.probe_peaks()
    peaks = run.peaks
    add_throughput(rows, peaks)
    choices = recommend.choose(rows, manifest, config.budget_points, config.recommend_by, config.min_agreement)
    notes = recommend.mark_manifest(export_dir, manifest, choices)
    for row in rows:
        row["recommended"] = sorted(p for p, c in choices.items() if c["artifact"] == row["name"])
    results = {
        "export_dir": str(export_dir),
        "data": {"source": evalset.source, "split": evalset.split, "images": int(len(evalset.images))},
        "machine": machine_info(),
        "libraries": library_versions(),
        "config": asdict(config),
        "peak_gflops": peaks,
        "rows": rows,
        "recommendations": choices,
        "notes": notes,
        "harness_overhead_pct_max": max_overhead(rows),
        "seconds": time.time() - started,
    }
    report.write_all(results, out_dir)
    report.print_summary(results)
    return results
