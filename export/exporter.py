"""`export_model`: one Keras classifier -> every requested format x precision in EXPORT_DIR, each
judged once against the original on the evaluation images, all recorded in EXPORT_DIR/manifest.json.

Bad input (model, labels, formats, precisions, image folders) fails before anything is written. A
converter that crashes on one variant is recorded as `failed` with its reason and the other
variants still export; each file appears only complete (pocketml.fsutil.atomic_output). The export
stage is the only writer of EXPORT_DIR: app bundles are assembled from it by `pocketml package`.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

import numpy as np
from pocketml.export.judge import Judge, artifact_verdict, judge_for
from pocketml.export.keras_model import KerasPredictor
from pocketml.export.model_source import ModelSource, load_source
from pocketml.export.registry import Converted, check_formats, format_module, format_names

import pocketml
from pocketml.artifact import (
    EXPORTED,
    FAILED,
    MANIFEST_FILE,
    PRECISIONS,
    SKIPPED,
    Artifact,
    ExportManifest,
    ModelRecord,
    Parity,
    file_problem,
)
from pocketml.config import from_settings
from pocketml.configs.export import ExportConfig
from pocketml.console import console, library_output, print_table, progress, step_done
from pocketml.dataset import ImageSet, agreement_set, choose_images, readable_images
from pocketml.errors import PocketMLError, reason_of
from pocketml.fsutil import atomic_output, sha256_bytes, sha256_file, tree_bytes

ARTIFACT_STEM = "model"  # tflite/model-fp16.tflite: stable names bench, package and apps rely on


def format_modules(formats: list[str], skipped: list[str]) -> dict[str, ModuleType]:
    """The modules of `formats` (default: every format this machine can convert to; the others are
    named in `skipped`). A format asked for by name that cannot be converted here is a one-line error."""
    modules = {}
    for fmt in check_formats(formats or format_names()):
        try:
            module = format_module(fmt)
        except ModuleNotFoundError as exc:
            raise PocketMLError(f"format {fmt!r} is not available here ({exc}); choose from the others") from exc
        why = module.unavailable()
        if why and formats:
            raise PocketMLError(f"format {fmt!r}: {why}")
        if why:
            skipped.append(f"{fmt} skipped: {why}")
        else:
            modules[fmt] = module
    return modules


def planned_variants(
    modules: dict[str, ModuleType], precisions: list[str], has_calibration: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """(format, precision) pairs to export in order, and notes about precisions left out."""
    offered = sorted({p for m in modules.values() for p in m.PRECISIONS}, key=_precision_order)
    unknown = [p for p in precisions if p not in offered]
    if unknown:
        raise PocketMLError(
            f"unknown precision(s) {', '.join(unknown)} for formats {', '.join(modules)}; accepted: {', '.join(offered)}"
        )
    if precisions:
        pairs = [(f, p) for f, m in modules.items() for p in m.PRECISIONS if p in precisions]
        uncalibrated = [f"{f} {p}" for f, p in pairs if p in modules[f].NEEDS_CALIBRATION and not has_calibration]
        if uncalibrated:
            raise PocketMLError(f"{', '.join(uncalibrated)} need(s) calibration images; pass --calibration DIR "
                                "(a folder of the images the model will see) or leave that precision out")
        return pairs, []
    pairs, notes = [], []
    for fmt, module in modules.items():
        for precision in module.PRECISIONS:
            if precision in module.NEEDS_CALIBRATION and not has_calibration:
                notes.append(f"{fmt} {precision} skipped: it needs calibration images (--calibration DIR)")
            else:
                pairs.append((fmt, precision))
    return pairs, notes


def check_config(config: ExportConfig, has_calibration: bool) -> list[tuple[str, str]]:
    """The (format, precision) pairs an [export] section asks for, every name checked before anything runs."""
    return planned_variants(format_modules(config.formats, []), config.precisions, has_calibration)[0]


def _precision_order(precision: str) -> tuple[int, str]:
    return (PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS), precision)


def artifact_path(module: ModuleType, precision: str) -> str:
    """Path of a variant relative to the export directory."""
    return f"{module.FORMAT}/{ARTIFACT_STEM}-{precision}{module.SUFFIX}"


def _convert_options(module: ModuleType, config: ExportConfig, judge: Judge | None) -> dict:
    """Settings a module's convert() accepts by name (deployment target, opset, the judge a
    quantisation search uses)."""
    wanted = {"minimum_deployment_target": config.minimum_deployment_target, "opset": config.opset, "judge": judge}
    accepted = inspect.signature(module.convert).parameters
    return {k: v for k, v in wanted.items() if k in accepted}


def export_variant(
    source: ModelSource,
    module: ModuleType,
    precision: str,
    out_dir: Path,
    calibration: np.ndarray | None,
    config: ExportConfig,
    judge: Judge | None = None,
) -> Artifact:
    """One converted file, or an Artifact with status failed and the converter's reason."""
    artifact = Artifact(format=module.FORMAT, precision=precision, path=artifact_path(module, precision))
    target = out_dir / artifact.path
    start = time.perf_counter()
    try:
        with atomic_output(target) as tmp:
            result = module.convert(source.model, source.spec, precision, tmp, calibration,
                                    **_convert_options(module, config, judge))
    except Exception as exc:  # any converter crash is recorded for this variant; the others go on
        artifact.status = FAILED
        artifact.reason = reason_of(exc)
        artifact.parity.reason = "not exported"
        return artifact
    converted = result if isinstance(result, Converted) else Converted(list(result or []))
    artifact.convert_seconds = round(time.perf_counter() - start, 3)
    artifact.notes, artifact.details = converted.notes, converted.details
    artifact.sha256 = sha256_file(target)
    artifact.bytes = tree_bytes(target)
    return artifact


def model_record(source: ModelSource, config: ExportConfig) -> ModelRecord:
    """The manifest's `model` entry: the spec, where the original is, and how it was exported."""
    return ModelRecord(source.spec, str(source.path.resolve()) if source.path else None, list(source.notes),
                       config.minimum_deployment_target, config.opset)


def image_sets(config: ExportConfig) -> tuple[ImageSet | None, ImageSet | None, ImageSet | None]:
    """Calibration, evaluation and agreement-only images as the config asks (the last two only when
    validating): agreement is also measured on every other image of the folders given that did not
    calibrate."""
    calibration, evaluation = choose_images(config.calibration, config.validation_images,
                                            config.calibration_images, config.evaluation_images)
    if evaluation is None or not config.validate:
        return calibration, None, None
    others = agreement_set([config.validation_images, config.calibration], calibration, evaluation,
                           config.agreement_images)
    return calibration, evaluation, others


def export_model(model: str | Path, out_dir: str | Path, config: ExportConfig | None = None) -> ExportManifest:
    """Export `model` (.keras or a directory with model.keras) into `out_dir`; returns the manifest."""
    config = config or ExportConfig()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PocketMLError(f"--out {out_dir} is a file; give a directory (new or one written by `pocketml export`)")
    # Every check that can reject the input runs before the first write.
    unavailable: list[str] = []
    modules = format_modules(config.formats, unavailable)
    calibration_set, evaluation_set, agreement = image_sets(config)
    variants, skipped = planned_variants(modules, config.precisions, calibration_set is not None)
    with library_output(out_dir):
        source = load_source(model, labels=config.labels, image_size=config.image_size,
                             preprocess=config.normalization)
        size = source.spec.image_size
        calibration = None
        if calibration_set is not None:  # unreadable files are skipped, named in a note and the manifest
            calibration_set, calibration = readable_images(calibration_set, size)
        judge = None
        if evaluation_set is not None:
            judge = judge_for(evaluation_set, KerasPredictor(source.model, size), list(source.spec.labels), agreement)
            evaluation_set, agreement = judge.image_set, judge.agreement_set
        image_notes = [n for s in (calibration_set, evaluation_set, agreement) if s is not None for n in s.notes]
        for note in [*source.notes, *unavailable, *skipped, *image_notes]:
            console.print(f"note: {note}", markup=False)
        manifest = ExportManifest(model=model_record(source, config), images={
            "calibration": calibration_set.to_dict() if calibration_set else None,
            "evaluation": evaluation_set.to_dict() if evaluation_set else None,
            "agreement": agreement.to_dict() if agreement else None,
        }, planned=len(variants))
        manifest.inputs = inputs_digest(manifest, config)
        names = [f"{fmt}-{precision}" for fmt, precision in variants]
        manifest.artifacts = [a for a in finished_artifacts(out_dir, manifest.inputs) if a.name in names]
        if manifest.artifacts:
            console.print(f"note: kept {len(manifest.artifacts)} file(s) judged by an earlier export of the same "
                          f"model, settings and images ({', '.join(a.name for a in manifest.artifacts)}); "
                          f"delete {out_dir} to convert them again")
        # Written before the first file is replaced: an interrupted export never leaves an earlier
        # manifest vouching for files this one has overwritten.
        manifest.save(out_dir)
        kept = {a.name for a in manifest.artifacts}
        with progress() as bar:
            task = bar.add_task("export", total=len(variants))
            for fmt, precision in variants:
                if f"{fmt}-{precision}" not in kept:
                    bar.update(task, description=f"export {fmt} {precision}")
                    artifact = export_variant(source, modules[fmt], precision, out_dir, calibration, config, judge)
                    artifact.parity = artifact_verdict(out_dir, artifact, judge)
                    manifest.artifacts.append(artifact)
                    manifest.save(out_dir)  # each finished file is recorded: a rerun resumes after it
                    finished_line(artifact)
                bar.advance(task)
        manifest.artifacts.sort(key=lambda a: names.index(a.name))
        manifest.save(out_dir)
    print_export_summary(manifest, judge)
    return manifest


def inputs_digest(manifest: ExportManifest, config: ExportConfig) -> str | None:
    """sha256 over what decides every file and verdict: the model (by content), the settings and each
    image (path, size, mtime). None for a keras.Model from Python, which has no content hash to compare."""
    if not manifest.model.spec.source_sha256:
        return None
    settings = {k: v for k, v in asdict(config).items() if k not in ("formats", "precisions")}
    stamps = {}
    for role, image_set in manifest.images.items():
        for path in (image_set or {}).get("images", []):
            stat = Path(path).stat() if Path(path).exists() else None
            stamps[f"{role}:{path}"] = (stat.st_size, stat.st_mtime_ns) if stat else None
    record = {"model": manifest.model.to_dict(), "settings": settings, "images": manifest.images, "stamps": stamps,
              "pocketml": pocketml.__version__}
    return sha256_bytes(json.dumps(record, sort_keys=True, default=str).encode())


def finished_artifacts(out_dir: Path, inputs: str | None) -> list[Artifact]:
    """Files an earlier export of the same inputs finished and judged, each still the file it judged."""
    if inputs is None or not (out_dir / MANIFEST_FILE).is_file():
        return []
    try:
        earlier = ExportManifest.read(out_dir)
    except PocketMLError:  # not a manifest this version can read: export everything again
        return []
    if earlier.inputs != inputs:
        return []
    return [a for a in earlier.artifacts if a.status == EXPORTED and a.parity.status != SKIPPED
            and file_problem(out_dir, a) is None]


def finished_line(artifact: Artifact) -> None:
    verdict = artifact.status if artifact.status != EXPORTED else artifact.parity.status
    step_done(f"exported {artifact.path}: {verdict} ({artifact.convert_seconds or 0:.1f} s)")


def print_export_summary(manifest: ExportManifest, judge: Judge | None = None) -> None:
    if judge is not None:
        console.print(f"verdicts on {len(judge.images)} images from {judge.where}")
    rows = [
        (
            a.name,
            a.status if a.status != EXPORTED else a.parity.status,
            round(a.bytes / 1e6, 3) if a.bytes else None,
            a.convert_seconds,
            _agreement(a.parity),
            a.parity.max_abs_diff,
            a.parity.accuracy_drop_points,
            a.reason if a.status != EXPORTED else a.parity.reason,
        )
        for a in manifest.artifacts
    ]
    print_table("export", ("artifact", "verdict", "MB", "convert s", "agree", "max|dp|", "drop pts", "reason"), rows)
    for artifact in manifest.artifacts:
        for note in artifact.notes:
            named = note.startswith(f"{artifact.format} {artifact.precision}")
            console.print(f"note: {note}" if named else f"note: {artifact.name}: {note}", style="yellow", markup=False)


def _agreement(parity: Parity) -> str | None:
    """'0.9920 (1/125 flipped, 1 ambiguous)': the rate and the flips behind it."""
    if parity.top1_agreement is None:
        return None
    ambiguous = f", {parity.ambiguous_flips} ambiguous" if parity.ambiguous_flips else ""
    return f"{parity.top1_agreement:.4f} ({parity.flips}/{parity.images} flipped{ambiguous})"


def export(
    model,
    out_dir: str | Path,
    *,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    calibration: str | Path | None = None,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    **settings,
) -> ExportManifest:
    """Convert `model` (a .keras/.h5 file, a SavedModel or model directory, or a keras.Model) to every
    format x precision asked for, each judged against it on held-out images: the train split of
    `calibration` calibrates, the test/val split of `images` (default: of `calibration`) judges.
    This is `pocketml.export(...)`; settings are ExportConfig's fields."""
    options = {"formats": formats, "precisions": precisions, "calibration": _path_or_none(calibration),
               "validation_images": _path_or_none(images), "labels": _path_or_none(labels), **settings}
    return export_model(model, Path(out_dir), from_settings(ExportConfig, options, "export"))


def _path_or_none(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
