"""`export_model`: one Keras classifier -> every requested format x precision, as app bundles
with a manifest, then checked against the original.

Bad input (model, labels, formats, precisions, calibration folder) fails before anything is
written. A converter that crashes on one variant is recorded as `failed` with its reason and
the other variants still export; each file appears only complete (pocketml.fsutil.atomic_output).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from export.bundles import bundle_dir, write_bundle_labels, write_bundle_readmes
from export.calibration import CalibrationSet, load_calibration
from export.registry import format_module
from export.source import Source, load_source
from pocketml.artifact import EXPORTED, FAILED, PRECISIONS, Artifact, ExportManifest
from pocketml.configs.export import ExportConfig
from pocketml.console import console, print_table, progress
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_output, sha256_file, tree_bytes
from pocketml.spec import ModelSpec

ARTIFACT_STEM = "model"  # android/model-fp16.tflite: stable names the bench stage and apps can rely on


def format_modules(formats: list[str]) -> dict[str, ModuleType]:
    modules = {}
    for fmt in formats:
        try:
            modules[fmt] = format_module(fmt)
        except ModuleNotFoundError as exc:
            raise PocketMLError(f"format {fmt!r} is not available here ({exc}); choose from the others") from exc
    return modules


def planned_variants(
    modules: dict[str, ModuleType], precisions: list[str], has_calibration: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """(format, precision) pairs to export in order, and notes about precisions left out."""
    offered = sorted({p for m in modules.values() for p in m.PRECISIONS}, key=PRECISIONS.index)
    unknown = [p for p in precisions if p not in offered]
    if unknown:
        raise PocketMLError(
            f"unknown precision(s) {', '.join(unknown)} for formats {', '.join(modules)}; accepted: {', '.join(offered)}"
        )
    if precisions:
        return [(f, p) for f, m in modules.items() for p in m.PRECISIONS if p in precisions], []
    pairs, notes = [], []
    for fmt, module in modules.items():
        for precision in module.PRECISIONS:
            if precision in module.NEEDS_CALIBRATION and not has_calibration:
                notes.append(f"{fmt} {precision} skipped: it needs calibration images (--calibration DIR)")
            else:
                pairs.append((fmt, precision))
    return pairs, notes


def artifact_path(fmt: str, module: ModuleType, precision: str) -> str:
    """Path of a variant relative to the export directory."""
    return f"{bundle_dir(Path(), fmt).as_posix()}/{ARTIFACT_STEM}-{precision}{module.SUFFIX}"


def _convert_options(module: ModuleType, config: ExportConfig) -> dict:
    """Format-specific settings a module's convert() accepts by name (deployment target, opset)."""
    wanted = {"minimum_deployment_target": config.minimum_deployment_target, "opset": config.opset}
    accepted = inspect.signature(module.convert).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def export_variant(
    source: Source, module: ModuleType, precision: str, out_dir: Path, calibration: np.ndarray | None, config: ExportConfig
) -> Artifact:
    """One converted file, or an Artifact with status failed and the converter's reason."""
    artifact = Artifact(format=module.FORMAT, precision=precision, path=artifact_path(module.FORMAT, module, precision))
    target = out_dir / artifact.path
    start = time.perf_counter()
    try:
        with atomic_output(target) as tmp:
            notes = module.convert(source.model, source.spec, precision, tmp, calibration, **_convert_options(module, config))
    except Exception as exc:  # any converter crash is recorded for this variant; the others go on
        artifact.status = FAILED
        artifact.reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        artifact.parity.reason = "not exported"
        return artifact
    artifact.convert_seconds = round(time.perf_counter() - start, 3)
    artifact.notes = list(notes or [])
    artifact.sha256 = sha256_file(target)
    artifact.bytes = tree_bytes(target)
    return artifact


def model_record(source: Source, calibration: CalibrationSet | None, config: ExportConfig) -> dict:
    """The manifest's `model` entry: the spec, where the original is, and which images calibrated it."""
    return {
        **source.spec.to_dict(),
        "source": str(source.path.resolve()),
        "notes": source.notes,
        "calibration": calibration.to_dict() if calibration else None,
        "minimum_deployment_target": config.minimum_deployment_target,
        "opset": config.opset,
    }


def spec_from_record(model: dict) -> ModelSpec:
    """The ModelSpec inside a manifest's `model` entry (its extra keys: source, notes, calibration...)."""
    fields = set(ModelSpec.__dataclass_fields__)
    return ModelSpec.from_dict({k: v for k, v in model.items() if k in fields})


def export_model(model: str | Path, out_dir: str | Path, config: ExportConfig | None = None) -> ExportManifest:
    """Export `model` (.keras or a directory with model.keras) into `out_dir`; returns the manifest."""
    config = config or ExportConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PocketMLError(f"--out {out_dir} is a file; give a directory (new or one written by `pocketml export`)")
    # Every check that can reject the input runs before the first write.
    modules = format_modules(config.formats)
    source = load_source(model, labels=config.labels, image_size=config.image_size, preprocess=config.normalization)
    calibration = (
        load_calibration(config.calibration, source.spec.image_size, config.calibration_images)
        if config.calibration is not None
        else None
    )
    variants, skipped = planned_variants(modules, config.precisions, calibration is not None)
    for note in [*source.notes, *skipped]:
        console.print(f"note: {note}")

    images = calibration.images if calibration is not None else None
    manifest = ExportManifest(model=model_record(source, calibration, config))
    with progress() as bar:
        task = bar.add_task("export", total=len(variants))
        for fmt, precision in variants:
            bar.update(task, description=f"export {fmt} {precision}")
            manifest.artifacts.append(export_variant(source, modules[fmt], precision, out_dir, images, config))
            bar.advance(task)
    write_bundle_labels(out_dir, manifest)
    write_bundle_readmes(out_dir, manifest)
    manifest.save(out_dir)
    print_export_summary(manifest)

    if config.validate:
        manifest = validate_after_export(out_dir, manifest, config)
    return manifest


def validate_after_export(out_dir: Path, manifest: ExportManifest, config: ExportConfig) -> ExportManifest:
    from export.validate import validate

    if config.validation_images is None and manifest.model.get("calibration") is None:
        console.print(f"note: not validated (no images); run `pocketml validate {out_dir} --images PATH`")
        return manifest
    manifest = validate(out_dir, images=config.validation_images)
    write_bundle_readmes(out_dir, manifest)  # the READMEs show each file's parity status
    return manifest


def print_export_summary(manifest: ExportManifest) -> None:
    rows = [
        (
            a.name,
            a.status,
            round(a.bytes / 1e6, 3) if a.bytes else None,
            a.convert_seconds,
            a.path if a.status == EXPORTED else a.reason,
        )
        for a in manifest.artifacts
    ]
    print_table("export", ("artifact", "status", "MB", "convert s", "path / reason"), rows)
    for artifact in manifest.artifacts:
        for note in artifact.notes:
            named = note.startswith(f"{artifact.format} {artifact.precision}")
            console.print(f"note: {note}" if named else f"note: {artifact.name}: {note}", style="yellow", markup=False)
