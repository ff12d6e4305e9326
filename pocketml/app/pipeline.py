"""`pocketml run PIPELINE.toml`: acquire → curate → train → export → bench → package in one run directory.

Each stage reads only the directories of the stages before it and is skipped when nothing it
depends on changed. What it depends on is recorded after every run in `<run dir>/stages/<name>.json`
(the orchestrator's own directory; each stage directory has only its stage as writer):
the sha256 of the stage's config section (canonical JSON), of its input manifests and of its
primary outputs. Before running, the same hashes are recomputed; any difference (or a missing
record, e.g. after a crash) reruns the stage, and a rerun that changes its outputs makes the next
stage's inputs differ, so the change cascades exactly as far as it matters.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pocketml.acquisition.pool import POOL_FILE
from pocketml.artifact import MANIFEST_FILE, RECOMMENDATIONS_FILE
from pocketml.benchmarks.report import RESULTS_FILE
from pocketml.config import from_mapping, load_toml
from pocketml.dataset import DATASET_MANIFEST
from pocketml.errors import PocketMLError
from pocketml.export.package import BUNDLE_MANIFEST
from pocketml.paths import STAGES, RunPaths
from pocketml.spec import MODEL_FILE, SPEC_FILE

if TYPE_CHECKING:
    from pocketml.configs.acquire import AcquireConfig
    from pocketml.configs.pipeline import PipelineConfig

RAN, SKIPPED = "ran", "skipped"


@dataclass(frozen=True)
class StageResult:
    stage: str
    status: str  # ran | skipped
    seconds: float
    directory: Path
    reason: str  # why it ran or why it was skipped


@dataclass(frozen=True)
class Stage:
    name: str
    section: Callable[[PipelineConfig, RunPaths], object]  # the config the stage runs with
    inputs: Callable[[PipelineConfig, RunPaths], list[Path]]  # files whose content decides a rerun
    outputs: Callable[[RunPaths], list[Path]]  # files the stage makes that later stages never modify
    run: Callable[[PipelineConfig, RunPaths], object]
    # The stage's own complete check of its section (names from its registries, files it needs):
    # every stage's runs before the first stage starts, so a bad value is reported in the first second.
    check: Callable[[PipelineConfig], object]


# ---------------------------------------------------------------- the six stages


def _acquire(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.acquisition.acquire import acquire

    return acquire(config.acquire, paths.dataset)


def _curate(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.acquisition.curate import curate

    return curate(paths.dataset, config.curate)


def _train(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.training.train import train

    return train(paths.dataset, paths.model, config.train)


def _export(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.export.exporter import export_model

    return export_model(paths.model, paths.export, export_section(config, paths))


def _bench(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.benchmarks.bench import bench

    return bench(paths.export, paths.bench, config.bench, summary=False)  # printed once, in the closing summary


def _package(config: PipelineConfig, paths: RunPaths) -> object:
    from pocketml.export.package import package

    return package(paths.export, paths.bundles, paths.bench)


def _check_acquire(config: PipelineConfig) -> None:
    from pocketml.acquisition.sources import check_sources

    check_sources(config.acquire.sources)


def _check_train(config: PipelineConfig) -> None:
    from pocketml.training.backbones import check_config

    check_config(config.train)


def _check_export(config: PipelineConfig) -> None:
    from pocketml.export.exporter import check_config

    # The run's own dataset calibrates when [export] names no images (export_section).
    check_config(config.export, has_calibration=True)


def _checked_by_its_class(config: PipelineConfig) -> None:
    """[curate] and [bench] hold only values their config classes validate completely on construction."""


def export_section(config: PipelineConfig, paths: RunPaths) -> object:
    """[export] with the run's own curated dataset when no images are given: its train split
    calibrates, its test split (else val) judges."""
    if config.export.calibration is None and config.export.validation_images is None:
        return dataclasses.replace(config.export, calibration=paths.dataset)
    return config.export


def _export_inputs(config: PipelineConfig, paths: RunPaths) -> list[Path]:
    model = [paths.model / MODEL_FILE, paths.model / SPEC_FILE]
    section = export_section(config, paths)
    uses_dataset = paths.dataset in (section.calibration, section.validation_images)
    return model + ([paths.dataset / DATASET_MANIFEST] if uses_dataset else [])


PIPELINE: tuple[Stage, ...] = (
    Stage("acquire", lambda c, p: c.acquire, lambda c, p: [],
          lambda p: [p.dataset / POOL_FILE], _acquire, _check_acquire),
    Stage("curate", lambda c, p: c.curate, lambda c, p: [p.dataset / POOL_FILE],
          lambda p: [p.dataset / DATASET_MANIFEST], _curate, _checked_by_its_class),
    Stage("train", lambda c, p: c.train, lambda c, p: [p.dataset / DATASET_MANIFEST],
          lambda p: [p.model / MODEL_FILE, p.model / SPEC_FILE], _train, _check_train),
    # manifest.json names every exported file with its sha256, so hashing it covers them all.
    Stage("export", export_section, _export_inputs, lambda p: [p.export / MANIFEST_FILE], _export, _check_export),
    Stage("bench", lambda c, p: c.bench, lambda c, p: [p.export / MANIFEST_FILE],
          lambda p: [p.bench / RESULTS_FILE, p.bench / RECOMMENDATIONS_FILE], _bench, _checked_by_its_class),
    Stage("package", lambda c, p: {}, lambda c, p: [p.export / MANIFEST_FILE, p.bench / RECOMMENDATIONS_FILE],
          lambda p: [p.bundles / platform / BUNDLE_MANIFEST for platform in _bundle_platforms(p)], _package,
          _checked_by_its_class),
)
assert tuple(s.name for s in PIPELINE) == STAGES


def _bundle_platforms(paths: RunPaths) -> list[str]:
    """The bundles a package run left (their bundle.json files are its outputs)."""
    if not paths.bundles.is_dir():
        return ["(none)"]
    return sorted(d.name for d in paths.bundles.iterdir() if (d / BUNDLE_MANIFEST).is_file()) or ["(none)"]


# ---------------------------------------------------------------- the config


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """The pipeline TOML at `path`, validated; errors name the file, the key, the value and what is accepted."""
    data = load_toml(path)
    try:
        return pipeline_config_from_mapping(data)
    except PocketMLError as exc:
        raise PocketMLError(f"{path}: {exc}") from exc


def pipeline_config_from_mapping(data: dict, where: str = "") -> PipelineConfig:
    """A PipelineConfig whose every section is validated completely: its class's checks on construction,
    then each stage's own check (source keys, backbone and weights, formats and precisions)."""
    from pocketml.configs.pipeline import PipelineConfig

    config = from_mapping(PipelineConfig, data, where)
    for stage in PIPELINE:
        try:
            stage.check(config)
        except PocketMLError as exc:
            message = str(exc)
            raise PocketMLError(message if message.startswith("[") else f"[{stage.name}] {message}") from exc
    return config


# ---------------------------------------------------------------- fingerprints


def config_sha256(section: object) -> str:
    """sha256 of a config section as canonical JSON (sorted keys, paths as strings)."""
    data = dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_hashes(files: list[Path], root: Path) -> dict[str, str | None]:
    """{path relative to the run dir: sha256, or None when the file is missing}."""
    from pocketml.fsutil import sha256_file

    return {_relative(f, root): (sha256_file(f) if f.exists() else None) for f in files}


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def record_path(stage: Stage, paths: RunPaths) -> Path:
    return paths.records / f"{stage.name}.json"


def fingerprint(stage: Stage, config: PipelineConfig, paths: RunPaths) -> dict:
    inputs = file_hashes(stage.inputs(config, paths), paths.root)
    if stage.name == "acquire":  # a local folder's photos are acquire's inputs: added, removed or replaced
        inputs.update(folder_listings(config.acquire))
    return {"config_sha256": config_sha256(stage.section(config, paths)), "inputs": inputs}


def folder_listings(acquire: AcquireConfig) -> dict[str, str]:
    """{"folder <path>": digest of its images' names, sizes and mtimes} for each folder source."""
    from pocketml.acquisition.sources import make_source

    sources = [make_source(t, f"acquire.sources[{i}]") for i, t in enumerate(acquire.sources) if t.get("type") == "folder"]
    return {f"folder {s.root}": s.listing_digest() for s in sources}


def staleness(stage: Stage, config: PipelineConfig, paths: RunPaths) -> str | None:
    """Why the stage must run, or None when its record matches its config, inputs and outputs."""
    path = record_path(stage, paths)
    if not path.is_file():
        return "no record of a finished run"
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return f"{path.name} is unreadable"
    now = fingerprint(stage, config, paths)
    if record.get("config_sha256") != now["config_sha256"]:
        return f"[{stage.name}] config changed"
    changed = _differences(record.get("inputs", {}), now["inputs"])
    if changed:
        return f"input changed: {changed}"
    outputs = file_hashes(stage.outputs(paths), paths.root)
    changed = _differences(record.get("outputs", {}), outputs)
    return f"output changed or missing: {changed}" if changed else None


def _differences(before: dict, now: dict) -> str:
    names = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) or now.get(k) is None)
    return ", ".join(names)


def write_record(stage: Stage, config: PipelineConfig, paths: RunPaths, seconds: float, summary: object) -> None:
    from pocketml.fsutil import atomic_write_json

    record = {"stage": stage.name, **fingerprint(stage, config, paths),
              "outputs": file_hashes(stage.outputs(paths), paths.root),
              "seconds": round(seconds, 3), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "summary": _jsonable(summary)}
    atomic_write_json(record_path(stage, paths), record)


def _jsonable(summary: object) -> object:
    """What a stage returned, as JSON for its record: summaries as they are, an export as its statuses."""
    if hasattr(summary, "artifacts"):
        return {a.name: {"status": a.status, "validation": a.parity.status} for a in summary.artifacts}
    if isinstance(summary, Path):
        return str(summary)
    if isinstance(summary, dict):
        return json.loads(json.dumps(summary, default=str))
    return None


# ---------------------------------------------------------------- running


def selected_stages(from_stage: str | None = None, only: str | None = None, to_stage: str | None = None) -> list[Stage]:
    """The stages to consider, in pipeline order."""
    if only and (from_stage or to_stage):
        raise PocketMLError("--only cannot be combined with --from/--to; use --from A --to B for a range")
    for value in (from_stage, only, to_stage):
        if value is not None and value not in STAGES:
            raise PocketMLError(f"unknown stage {value!r}; accepted: {', '.join(STAGES)}")
    first = STAGES.index(only or from_stage or STAGES[0])
    last = STAGES.index(only or to_stage or STAGES[-1])
    if last < first:
        raise PocketMLError(f"--to {to_stage} comes before --from {from_stage}; stages run in the order {' → '.join(STAGES)}")
    return list(PIPELINE[first : last + 1])


def run_pipeline(config_path: str | Path, run_dir: str | Path | None = None, from_stage: str | None = None,
                 only: str | None = None, force: bool = False, to_stage: str | None = None) -> list[StageResult]:
    """Run the pipeline described by the TOML at `config_path`; returns one result per selected stage."""
    config, paths = load_run(config_path, run_dir)
    return run_stages(config, paths, selected_stages(from_stage, only, to_stage), force)


def load_run(config_path: str | Path, run_dir: str | Path | None) -> tuple[PipelineConfig, RunPaths]:
    """The validated config and the run directory (--run-dir wins over the TOML's run_dir)."""
    config = load_pipeline_config(config_path)
    return config, RunPaths(Path(run_dir) if run_dir is not None else config.run_dir)


def run_stages(config: PipelineConfig, paths: RunPaths, stages: list[Stage], force: bool) -> list[StageResult]:
    from rich.markup import escape

    from pocketml.console import console

    paths.root.mkdir(parents=True, exist_ok=True)
    results = []
    for stage in stages:
        reason = "--force" if force else staleness(stage, config, paths)
        if reason is None:
            console.print(f"[bold]{stage.name}[/]: up to date, skipped")
            results.append(StageResult(stage.name, SKIPPED, 0.0, paths.stage_dir(stage.name), "unchanged"))
            continue
        require_inputs(stage, config, paths)
        console.print(f"[bold]{stage.name}[/]: running ({escape(reason)})")
        before = file_hashes(stage.outputs(paths), paths.root)
        results.append(run_stage(stage, config, paths, reason))
        if reason.endswith("config changed") and file_hashes(stage.outputs(paths), paths.root) == before:
            # e.g. acquire resumes finished shards: a changed source may add nothing to an existing pool.
            console.print(f"note: {stage.name} ran with a changed config but its outputs are unchanged; "
                          f"use a new --run-dir to build them from scratch")
    return results


def require_inputs(stage: Stage, config: PipelineConfig, paths: RunPaths) -> None:
    missing = [p for p in stage.inputs(config, paths) if not p.exists()]
    if missing:
        raise PocketMLError(f"stage {stage.name} needs {', '.join(map(str, missing))}, which does not exist; "
                            "run the earlier stages first (without --from/--only)")


def run_stage(stage: Stage, config: PipelineConfig, paths: RunPaths, reason: str) -> StageResult:
    record = record_path(stage, paths)
    # A stage that dies half-way must not look finished on the next run.
    record.unlink(missing_ok=True)
    from pocketml.console import library_output

    start = time.perf_counter()
    try:
        with library_output(paths.stage_dir(stage.name)):
            summary = stage.run(config, paths)
    except BaseException:
        from pocketml.console import err_console

        err_console.print(f"{stage.name}: stopped after {time.perf_counter() - start:.1f} s; the stages before it "
                          "are kept and a rerun starts here")
        raise
    seconds = time.perf_counter() - start
    write_record(stage, config, paths, seconds, summary)
    return StageResult(stage.name, RAN, seconds, paths.stage_dir(stage.name), reason)


# ---------------------------------------------------------------- the closing summary


def print_summary(results: list[StageResult], paths: RunPaths) -> None:
    from pocketml.console import console, print_table

    print_table(f"pocketml run → {paths.root}", ["stage", "status", "seconds", "directory", "why"],
                [(r.stage, r.status, round(r.seconds, 1), r.directory, r.reason) for r in results])
    print_bench_table(paths)
    for line in bundle_lines(paths):
        console.print(line)


def print_bench_table(paths: RunPaths) -> None:
    """bench's own console table, from the results.json it wrote (also when bench was skipped)."""
    from pocketml.benchmarks.report import REPORT_HTML, RESULTS_CSV
    from pocketml.benchmarks.report import print_summary as print_bench_summary
    from pocketml.console import console

    results = paths.bench / RESULTS_FILE
    if not results.is_file():
        return
    print_bench_summary(json.loads(results.read_text()))
    files = [paths.bench / name for name in (RESULTS_CSV, REPORT_HTML)]
    console.print("benchmark table: " + ", ".join(str(f) for f in [results, *files] if f.is_file()))


def bundle_lines(paths: RunPaths) -> list[str]:
    """Where each platform's bundle is, with the file it leads with."""
    lines = []
    for platform in _bundle_platforms(paths):
        bundle = paths.bundles / platform / BUNDLE_MANIFEST
        if bundle.is_file():
            recommended = json.loads(bundle.read_text()).get("recommended")
            lines.append(f"{platform} bundle: {bundle.parent}" + (f" (recommended: {recommended})" if recommended else ""))
    return lines


# ---------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run acquire → curate → train → export → bench → package from one TOML file",
        description="Run the whole pipeline into one run directory; stages whose config and inputs are "
                    "unchanged since their last run are skipped.")
    parser.add_argument("config", type=Path, metavar="PIPELINE.toml", help="pipeline config (see examples/)")
    parser.add_argument("--run-dir", type=Path, default=None, metavar="DIR", help="run directory (default: run_dir in the TOML)")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, default=None,
                        help="start at this stage; earlier stages are taken as they are")
    parser.add_argument("--to", dest="to_stage", choices=STAGES, default=None, help="stop after this stage")
    parser.add_argument("--only", choices=STAGES, default=None, help="run just this stage")
    parser.add_argument("--force", action="store_true", help="rerun the selected stages even when up to date")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    config, paths = load_run(args.config, args.run_dir)
    results = run_stages(config, paths, selected_stages(args.from_stage, args.only, args.to_stage),
                         args.force)
    print_summary(results, paths)
    return 0
