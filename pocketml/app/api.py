"""The Python API: what the CLI does, as functions a notebook calls. Each takes the same settings
as its command (validated the same way: an unknown or bad setting is one PocketMLError naming it
and what is accepted) and returns the typed result of its stage, not a dict.

    import pocketml
    manifest = pocketml.export("runs/demo/model", "out/export", calibration="runs/demo/dataset")
    model = pocketml.load("out/export/tflite/model-fp16.tflite")
    model.classify("photo.jpg")  # [("A", 0.98), ("E", 0.01), ("F", 0.004)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pocketml.artifact import ExportManifest, load_recommendations
from pocketml.config import from_settings
from pocketml.configs.acquire import AcquireConfig
from pocketml.configs.bench import BenchConfig
from pocketml.configs.curate import CurateConfig
from pocketml.configs.train import TrainConfig
from pocketml.results import AcquireResult, BenchResults, BenchRow, CurateResult, PackageResult


def _config(cls, settings: dict, section: str):
    return from_settings(cls, settings, section)


def acquire(out_dir: str | Path, sources: list[dict], **settings: Any) -> AcquireResult:
    """Fetch, verify and store the images of `sources` ([{"type": "urls", ...}, ...]) into `out_dir`;
    a rerun resumes. Returns what the dataset holds (out_dir/acquisition.json says the same)."""
    from pocketml.acquisition.acquire import acquire as run_acquire
    from pocketml.acquisition.sources import check_sources

    config = _config(AcquireConfig, {"sources": sources, **settings}, "acquire")
    check_sources(config.sources)
    return AcquireResult.from_summary(run_acquire(config, Path(out_dir)))


def curate(dataset_dir: str | Path, **settings: Any) -> CurateResult:
    """Duplicates, near-duplicates, label conflicts, quality flags and leakage-free splits of an
    acquired dataset; writes manifest.csv and report/. Returns what was kept and removed, and why."""
    from pocketml.acquisition.curate import curate as run_curate

    report = run_curate(Path(dataset_dir), _config(CurateConfig, settings, "curate"))
    return CurateResult.from_report(Path(dataset_dir), report)


def train(dataset_dir: str | Path, out_dir: str | Path, **settings: Any) -> Path:
    """Fine-tune a backbone (settings: TrainConfig's fields, e.g. backbone="efficientnet_lite0",
    image_size=224) on a dataset directory or ImageFolder; returns the model directory."""
    from pocketml.training.train import train as run_train

    return Path(run_train(Path(dataset_dir), Path(out_dir), _config(TrainConfig, settings, "train")))


def validate(export_dir: str | Path, images: str | Path | None = None, strict: bool = False) -> ExportManifest:
    """Judge every file of an export again (on the recorded evaluation images, or on `images`'
    held-out split); with strict, raise ValidationFailed when any is outside tolerance."""
    from pocketml.export.validate import validate as run_validate

    return run_validate(Path(export_dir), images=_path(images), strict=strict)


def bench(target: str | Path | list[str | Path], out_dir: str | Path, *, data: str | Path | None = None,
          reference: Any = None, labels: str | Path | None = None, **settings: Any) -> BenchResults:
    """Latency, size and memory of every file in an export directory beside its verdict, and the
    one to ship per platform (settings: BenchConfig's fields, e.g. threads=[1, 4]). `target` may
    also be model files from elsewhere: accuracy on `data`'s held-out split, a verdict against the
    Keras `reference`, labels from the files or `labels`."""
    from pocketml.benchmarks.bench import bench as run_bench
    from pocketml.benchmarks.bench import bench_files

    config = _config(BenchConfig, settings, "bench")
    if isinstance(target, (str, Path)) and (Path(target) / "manifest.json").is_file():
        results = run_bench(Path(target), Path(out_dir), config)
    else:
        files = [target] if isinstance(target, (str, Path)) else list(target)
        results = bench_files(files, Path(out_dir), config, data=data, reference=reference, labels=labels)
    rows = [BenchRow.from_dict(row) for row in results["rows"]]
    return BenchResults(Path(out_dir), rows, load_recommendations(out_dir), results)


def load(path: str | Path, labels: str | Path | None = None, image_size: str | tuple[int, int] | None = None):
    """Any model file — .tflite, .onnx, .mlpackage (Core ML on macOS, pocketml's reference executor
    elsewhere), .keras/.h5/SavedModel — with its labels: `.predict(images)` gives probabilities for
    uint8 [N,H,W,3] RGB 0..255, `.classify(image_or_path, top=3)` gives [(label, p), ...]."""
    from pocketml.export.predict import load as load_labelled

    return load_labelled(Path(path), labels=labels, image_size=image_size)


def package(export_dir: str | Path, out_dir: str | Path, bench_dir: str | Path | None = None) -> PackageResult:
    """ios/, android/, onnx/ bundles of the files that passed, the recommended one first; returns
    the bundles (platform -> the file names each carries)."""
    from pocketml.export.package import package as run_package

    return PackageResult(Path(out_dir), run_package(Path(export_dir), Path(out_dir), _path(bench_dir)))


def run(config: str | Path, run_dir: str | Path | None = None, *, from_stage: str | None = None,
        to_stage: str | None = None, only: str | None = None, force: bool = False) -> list:
    """The whole pipeline from a TOML file; stages whose config and inputs are unchanged are skipped.
    Returns one StageResult per stage considered."""
    from pocketml.app.pipeline import run_pipeline

    return run_pipeline(config, run_dir, from_stage=from_stage, only=only, force=force, to_stage=to_stage)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
