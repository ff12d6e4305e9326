"""`pocketml bench`: every exported file side by side with the Keras original — the verdict the
export recorded (accuracy, agreement, |Δp| on the evaluation images), and what bench measures
itself: latency, size, memory — then the one to ship per platform, in BENCH_DIR.

One row per artifact in the export manifest plus the Keras model as the baseline row. A row that
cannot be measured keeps its place with a status and the reason (failed / skipped), and the run
carries on: a broken variant must not hide the figures of the others. bench never judges parity
again and never writes into the export directory.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.benchmarks import cost, on_device, peak, recommend, report
from pocketml.benchmarks.common import machine_info
from pocketml.benchmarks.report import NOT_VALIDATED, row_status
from pocketml.export.registry import format_module, format_names

from pocketml import latency
from pocketml.artifact import (
    EXPORTED,
    FAILED,
    PASSED,
    PRECISIONS,
    SKIPPED,
    Artifact,
    ExportManifest,
    ModelRecord,
    Parity,
    save_recommendations,
)
from pocketml.configs.bench import BenchConfig
from pocketml.console import library_output, progress, step_done
from pocketml.dataset import ImageSet, evaluation_set, load_images, readable_images
from pocketml.errors import PocketMLError, reason_of
from pocketml.fsutil import sha256_file, tree_bytes
from pocketml.spec import ModelSpec

LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "onnx", "coremltools", "numpy")
KERAS_RUNTIME = "TensorFlow/Keras, model called eagerly through its Predictor (TensorFlow's own thread pool)"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def check_devices(config: BenchConfig) -> None:
    """Every device [bench] names is known and prepared: a bad or unprepared one fails before the slow part."""
    for target in on_device.targets(config.devices):
        state = target.module.status(target.variant)
        if not state.ready:
            raise PocketMLError(f"device {target.label} is not ready ({state.missing[0]}); "
                                f"run `pocketml device setup {target.label}`")


def keras_path(export_dir: Path, manifest: ExportManifest, config: BenchConfig) -> Path | None:
    """The Keras original: the config's, else the manifest's model.source (relative to the export dir)."""
    given = config.keras_model or manifest.model.source
    if not given:
        return None
    path = Path(given)
    if not path.is_absolute() and not path.exists():
        path = export_dir / path
    return path


def new_row(name: str, fmt: str, precision: str, path: str, runtime: str) -> dict:
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
        "images": 0,  # agreement and |dp| are measured on these
        "held_out_images": 0,  # accuracy on these (the labelled held-out split, the first of `images`)
        "accuracy": None,
        "accuracy_drop_points": None,
        "top1_agreement": None,
        "flips": None,
        "ambiguous_flips": None,
        "images_needed": None,
        "max_abs_diff": None,
        "mean_abs_diff": None,
        "latency": {},
        "latency_note": None,  # why latency is absent (e.g. no Core ML runtime off macOS)
        "throughput": {},
        "memory": None,
        "estimates": [],  # milliseconds on named phones, from a device's cost (benchmarks/estimates.py)
        "devices": {},  # device label -> that device's verdict and cost (benchmarks/on_device.py)
        "recommended": [],
        "notes": [],
        "runtime": runtime,
    }


def verdict_figures(artifact: Artifact) -> dict:
    """A row's quality columns and status: the export's one verdict, copied, never recomputed."""
    parity = artifact.parity
    status = row_status(parity.status)
    return {
        "status": status,
        "reason": parity.reason,
        "images": parity.images,
        "held_out_images": parity.held_out_images,
        "accuracy": parity.accuracy,
        "accuracy_drop_points": parity.accuracy_drop_points,
        "top1_agreement": parity.top1_agreement,
        "flips": parity.flips,
        "ambiguous_flips": parity.ambiguous_flips,
        "images_needed": parity.images_needed,
        "max_abs_diff": parity.max_abs_diff,
        "mean_abs_diff": parity.mean_abs_diff,
    }


def latency_image(manifest: ExportManifest, size: tuple[int, int]) -> np.ndarray:
    """The frame latency is timed on: the first evaluation image (a real photo), else seeded noise."""
    recorded = manifest.images.get("evaluation")
    if recorded:
        first = [p for p in ImageSet.from_dict(recorded).paths[:1] if p.is_file()]
        if first:
            return load_images(first, size)
    return np.random.default_rng(0).integers(0, 256, (1, *size, 3), dtype=np.uint8)


class Bench:
    """The shared state of one run: the frame latency is timed on, MACs and parameters."""

    def __init__(self, export_dir: Path, manifest: ExportManifest, config: BenchConfig):
        self.export_dir, self.manifest, self.config = export_dir, manifest, config
        self.size = manifest.model.image_size
        self.image = latency_image(manifest, self.size)  # batch 1: one camera frame
        self.macs: int | None = None
        self.params: int | None = None
        self.keras_predictor = None  # the original, kept for the device verdicts
        self.peaks: dict[str, float] = {}

    def probe_peaks(self) -> None:
        """Probe peak GFLOP/s again and keep the best: one busy moment must not set the bar."""
        if self.config.probe_peak:
            for key, value in peak.peak_table(self.config.threads).items():
                self.peaks[key] = max(value, self.peaks.get(key, 0.0))

    # -- the Keras baseline -------------------------------------------------------------
    def keras_row(self) -> dict:
        path = keras_path(self.export_dir, self.manifest, self.config)
        row = new_row("keras", "keras", "fp32", str(path) if path else "", KERAS_RUNTIME)
        reference = next((a.parity for a in self.manifest.artifacts if a.parity.reference_accuracy is not None), None)
        if reference is not None:
            row.update(accuracy=reference.reference_accuracy, images=reference.images, top1_agreement=1.0,
                       flips=0, max_abs_diff=0.0, mean_abs_diff=0.0, accuracy_drop_points=0.0)
        if path is None:
            row.update(status=NOT_VALIDATED, reason="no Keras original given (--reference MODEL): no baseline row")
            return row
        if not path.exists():
            row.update(status=FAILED, reason=f"Keras original not found ({path}); pass --model MODEL.keras")
            return row
        try:
            from pocketml.export.keras_model import load_keras_predictor

            # The original as export shaped it, preprocessing export added included (what the files run).
            predictor = self.keras_predictor = load_keras_predictor(path, self.size, self.manifest.model.normalization)
            self.macs, self.params = cost.count_macs(predictor.model), cost.count_params(predictor.model)
        except Exception as exc:  # a broken original is a row with a reason; artifacts are still measured
            row.update(status=FAILED, reason=reason_of(exc))
            return row
        row.update(cost.file_sizes(path), macs=self.macs, params=self.params)
        self.time_runs(row, {"tf-default": predictor})
        self.measure_memory(row, "keras", path)
        return row

    # -- one exported artifact ----------------------------------------------------------
    def artifact_row(self, artifact: Artifact) -> dict:
        module = format_module(artifact.format)
        row = new_row(artifact.name, artifact.format, artifact.precision, artifact.path, module.RUNTIME)
        path = self.export_dir / artifact.path
        if artifact.status != EXPORTED:
            row.update(status=FAILED, reason=f"export failed: {artifact.reason}")
            return row
        if not path.exists():
            row.update(status=FAILED, reason=f"file {artifact.path} is missing from {self.export_dir}")
            return row
        row.update(verdict_figures(artifact))
        row.update(cost.file_sizes(path), macs=self.macs, params=self.params)
        unavailable = module.latency_unavailable()
        if unavailable:
            row["latency_note"] = unavailable
            return row
        self.time_artifact(row, module, path)
        self.measure_memory(row, artifact.format, path)
        return row

    # -- latency --------------------------------------------------------------------------
    def timed(self, run: latency.Run, threads: int | str) -> dict:
        c = self.config
        figures = latency.measure(run, c.min_time_s, c.min_runs, c.max_runs, c.warmup_runs, c.block_runs)
        figures["threads"] = threads
        figures["overhead_ok"] = latency.overhead_ok(figures, c.max_overhead_pct)
        return figures

    def time_artifact(self, row: dict, module: Any, path: Path) -> None:
        """One predictor per thread count, set up by the format module exactly as predict sets it up."""
        if not module.THREADED:  # e.g. Core ML schedules its own compute units
            self.time_runs(row, {"runtime-default": module.load(path)})
            return
        for threads in self.config.threads:
            try:
                self.time_runs(row, {str(threads): module.load(path, threads=threads)})
            except Exception as exc:  # one thread setting failing must not hide the others
                row["notes"].append(f"latency at {threads} threads failed: {reason_of(exc)}")

    def time_runs(self, row: dict, predictors: dict[str, Any]) -> None:
        for key, predictor in predictors.items():
            try:
                row["latency"][key] = self.timed(predictor.invoker(self.image), key)
            except Exception as exc:  # the row keeps its quality figures
                row["notes"].append(f"latency at {key} failed: {reason_of(exc)}")
        self.flag_overhead(row)

    def flag_overhead(self, row: dict) -> None:
        for key, figures in row["latency"].items():
            note = (f"harness overhead {figures['overhead_pct']:.1f}% at {key} threads exceeds "
                    f"{self.config.max_overhead_pct:g}%: the call is too short for per-call timing to be exact")
            if not figures["overhead_ok"] and note not in row["notes"]:
                row["notes"].append(note)

    # -- memory -----------------------------------------------------------------------------
    def measure_memory(self, row: dict, fmt: str, path: Path) -> None:
        if not self.config.measure_memory:
            return
        try:
            row["memory"] = cost.peak_memory(fmt, path, self.size, self.config.memory_runs)
        except Exception as exc:  # memory is context; its failure does not fail the row
            row["notes"].append(f"peak memory not measured: {reason_of(exc)}")


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


def bench(export_dir: str | Path, out_dir: str | Path, config: BenchConfig | None = None, summary: bool = True) -> dict:
    """Measure every artifact in `export_dir`; write results.json/csv, report.html and
    recommendations.json to `out_dir` (the bench stage's own directory); return the results.
    summary=False leaves the console table to the caller (`pocketml run` prints it once, at the end).
    """
    config = config or BenchConfig()
    check_devices(config)
    export_dir = Path(export_dir)
    manifest = ExportManifest.load(export_dir)  # its model record has labels and an image size, or it is refused
    return measure(export_dir, manifest, Path(out_dir), config, str(export_dir), summary)


def bench_files(paths: list[str | Path], out_dir: str | Path, config: BenchConfig | None = None,
                data: str | Path | None = None, reference: str | Path | None = None,
                labels: str | Path | None = None) -> dict:
    """Bench model files a user brought, with no export manifest: size, latency and memory always;
    accuracy on the held-out split of `data`; a verdict against the Keras `reference` on those images.

    The files are described the way an export describes its own — one in-memory manifest, judged by
    export's Judge when a reference is given — so every figure comes from the same code as for an
    export directory.
    """
    config = config or BenchConfig()
    check_devices(config)
    # Loading the files and the reference imports the runtimes, whose banners belong in the log too.
    with library_output(out_dir):
        manifest, models = files_manifest([Path(p) for p in paths], labels, reference)
        if data is not None:
            evaluation = evaluation_set(data)
            manifest.images["evaluation"] = evaluation.to_dict()
            judge_files(manifest, models, evaluation, reference)
        return measure(Path("/"), manifest, Path(out_dir), config, ", ".join(str(p) for p in paths))


def files_manifest(paths: list[Path], labels: str | Path | None, reference: str | Path | None):
    """An ExportManifest describing bare files (absolute paths), and their loaded LabelledModels."""
    from pocketml.export.predict import load as load_labelled

    if not paths:
        raise PocketMLError("no model files given; give .tflite, .onnx or .mlpackage files")
    for path in paths:
        if path.is_dir() and not path.name.endswith(tuple(format_module(n).SUFFIX for n in format_names())):
            raise PocketMLError(f"{path} has no manifest.json and is not a model file; give a directory written by "
                                "`pocketml export`, or .tflite / .onnx / .mlpackage files")
    models = {path: load_labelled(path, labels=labels) for path in paths}
    sizes = {m.input_size for m in models.values()}
    names = {m.labels for m in models.values()}
    if len(sizes) > 1 or len(names) > 1:
        raise PocketMLError(f"the files take different inputs or labels ({sorted(sizes)}, {sorted(names)}); "
                            "bench files of one model together")
    artifacts = []
    for path, model in models.items():
        if model.format == "keras":
            raise PocketMLError(f"{path} is a Keras model; bench it as --reference beside the exported files")
        precision = precision_of(path, format_module(model.format))
        artifacts.append(Artifact(model.format, precision, str(path.resolve()), sha256=sha256_file(path),
                                  bytes=tree_bytes(path)))
    if len({a.name for a in artifacts}) < len(artifacts):
        raise PocketMLError("two files have the same format and precision; bench them separately")
    spec = ModelSpec(labels=tuple(names.pop()), image_size=tuple(sizes.pop()))
    model = ModelRecord(spec, str(Path(reference).resolve()) if reference is not None else None)
    return ExportManifest(model=model, artifacts=artifacts), models


def precision_of(path: Path, module: Any) -> str:
    """The precision a file records (ONNX, Core ML metadata), else its pocketml name (model-fp16.tflite),
    else its file name: a file from elsewhere gets figures but no verdict."""
    recorded = module.read_precision(path)
    if recorded:
        return recorded
    named = path.name.removesuffix(module.SUFFIX).removeprefix("model-")
    return named if named in PRECISIONS else path.name.removesuffix(module.SUFFIX)


def judge_files(manifest: ExportManifest, models: dict, evaluation: ImageSet, reference: str | Path | None) -> None:
    """Each file's Parity on `evaluation`: the export's verdict against `reference`, else accuracy alone."""
    from pocketml.export.judge import accuracy, artifact_verdict, judge_for, label_indices
    from pocketml.export.keras_model import load_keras_predictor

    size, classes = manifest.model.image_size, list(manifest.model.labels)
    pairs = list(zip(manifest.artifacts, models.values(), strict=True))
    if reference is not None:
        judge = judge_for(evaluation, load_keras_predictor(reference, size), classes)
        for artifact, model in pairs:
            if artifact.precision in PRECISIONS:
                artifact.parity = artifact_verdict(Path("/"), artifact, judge)
            else:  # a file from elsewhere that does not say its precision: no tolerance to hold it to
                artifact.parity = judge.parity("fp32", model.predict(judge.images))
                artifact.parity.status, artifact.parity.reason = SKIPPED, "precision unknown: figures, no verdict"
        return
    evaluation, images = readable_images(evaluation, size)  # a file that does not decode is skipped, named
    manifest.images["evaluation"] = evaluation.to_dict()
    truth = label_indices(evaluation.labels, classes, f"images in {evaluation.source}")
    for artifact, model in pairs:
        artifact.parity = Parity(accuracy=accuracy(model.predict(images), truth), images=len(images), status=SKIPPED,
                                 reason="no --reference: accuracy only, no verdict")


def measure(export_dir: Path, manifest: ExportManifest, out_dir: Path, config: BenchConfig, what: str,
            summary: bool = True) -> dict:
    """Rows for the Keras original and every artifact of `manifest`, the recommendation, the files."""
    started = time.time()
    with library_output(out_dir):
        run = Bench(export_dir, manifest, config)
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
                step_done(f"bench {artifact.name}: {rows[-1]['status']} ({rows[-1]['bench_seconds']:.1f} s)")
        run.probe_peaks()
    add_throughput(rows, run.peaks)
    with library_output(out_dir):  # the host runtimes' banners while comparing with a device go to the log
        by_device, notes = on_device.measure_devices(config.devices, export_dir, manifest, rows,
                                                     run.keras_predictor, run.size, config.device_images == "all")
    choices = recommend.choose(rows, config.recommend_by, by_device)
    named = recommend.keyed(choices)
    for row in rows:
        row["recommended"] = sorted(name for name, c in named.items() if c.artifact == row["name"])
    evaluation = manifest.images.get("evaluation") or {}
    results = {
        "export_dir": what,
        "data": {"source": evaluation.get("source"), "split": evaluation.get("split"),
                 "images": evaluation.get("count", 0)},
        "machine": machine_info(),
        "libraries": library_versions(),
        "config": asdict(config),
        "peak_gflops": run.peaks,
        "rows": rows,
        "recommendations": {name: {"artifact": c.artifact, "reason": c.reason} for name, c in named.items()},
        "devices": list(dict.fromkeys(d for row in rows for d in row["devices"])),
        "notes": notes,
        "harness_overhead_pct_max": max_overhead(rows),
        "seconds": time.time() - started,
    }
    report.write_all(results, out_dir)
    save_recommendations(out_dir, choices)
    if summary:
        report.print_summary(results)
    return results
