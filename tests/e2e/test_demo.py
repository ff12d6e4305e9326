"""The reduced demo through every stage: glyphs → curate → EfficientNet-Lite0 → every format → bench
→ package.

Asserts what a user relies on after `make demo`: each stage's manifest, the three app bundles,
verdicts that passed at fp32 in every format (Core ML through the reference executor off macOS),
that each stage wrote only its own directory, and that bench reports the export's verdicts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pocketml.app.pipeline import run_pipeline
from pocketml.artifact import ExportManifest
from pocketml.dataset import MANIFEST_COLUMNS
from pocketml.paths import STAGES, RunPaths

CONFIG = Path(__file__).with_name("demo_small.toml")
LETTERS = ["A", "B", "C", "D", "E"]
PER_LETTER = 24


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root`: relative path -> (size, mtime in ns)."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, list, dict]:
    """The pipeline run one stage at a time, with a snapshot of every directory around each stage."""
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    results, writes = [], {}
    paths = RunPaths(run_dir)
    dirs = {"dataset": paths.dataset, "model": paths.model, "export": paths.export, "bench": paths.bench,
            "bundles": paths.bundles, "stages": paths.records}
    for stage in STAGES:
        before = {name: tree(d) for name, d in dirs.items()}
        results += run_pipeline(CONFIG, run_dir, only=stage)
        writes[stage] = [name for name, d in dirs.items() if tree(d) != before[name]]
    return run_dir, results, writes


@pytest.mark.slow
def test_each_stage_writes_only_its_own_directory(demo_run):
    """One writer per directory: a stage changes its own directory and the orchestrator's record, nothing else."""
    own = {"acquire": "dataset", "curate": "dataset", "train": "model", "export": "export", "bench": "bench",
           "package": "bundles"}
    for stage, changed in demo_run[2].items():
        assert sorted(changed) == sorted([own[stage], "stages"]), (stage, changed)


@pytest.mark.slow
def test_bench_reports_the_verdict_export_recorded_and_no_calibration_image_judged(demo_run):
    paths = RunPaths(demo_run[0])
    manifest = ExportManifest.load(paths.export)
    calibration = set(manifest.images["calibration"]["images"])
    evaluation = set(manifest.images["evaluation"]["images"])
    assert calibration and evaluation and not calibration & evaluation
    assert manifest.images["calibration"]["split"] == "train" and manifest.images["evaluation"]["split"] == "test"
    rows = {row["name"]: row for row in json.loads((paths.bench / "results.json").read_text())["rows"]}
    for artifact in manifest.artifacts:
        row, parity = rows[artifact.name], artifact.parity
        assert (row["top1_agreement"], row["flips"], row["max_abs_diff"], row["images"]) == (
            parity.top1_agreement, parity.flips, parity.max_abs_diff, parity.images)
        assert row["status"] == {"passed": "passed", "failed": "failed validation"}[parity.status]


@pytest.mark.slow
def test_every_stage_ran_and_left_its_record(demo_run):
    run_dir, results, _ = demo_run
    assert [(r.stage, r.status) for r in results] == [(s, "ran") for s in STAGES]
    paths = RunPaths(run_dir)
    for stage in STAGES:
        record = json.loads((paths.records / f"{stage}.json").read_text())
        assert record["stage"] == stage and all(record["outputs"].values())


@pytest.mark.slow
def test_acquire_and_curate_manifests(demo_run):
    paths = RunPaths(demo_run[0])
    summary = json.loads((paths.dataset / "acquisition.json").read_text())
    assert summary["images"] == len(LETTERS) * PER_LETTER
    pool = rows(paths.dataset / "pool.csv")
    assert {r["label"] for r in pool} == set(LETTERS) and {r["source"] for r in pool} == {"glyphs"}
    assert all((paths.dataset / r["path"]).is_file() for r in pool)
    manifest = rows(paths.dataset / "manifest.csv")
    assert tuple(manifest[0]) == MANIFEST_COLUMNS
    assert {r["split"] for r in manifest} == {"train", "val", "test"}
    # The source made deliberate near-duplicates; curation keeps one of each.
    assert len(manifest) < len(pool)
    assert (paths.dataset / "report" / "report.json").is_file()


@pytest.mark.slow
def test_train_wrote_a_model_that_learned_the_letters(demo_run):
    paths = RunPaths(demo_run[0])
    for name in ("model.keras", "spec.json", "labels.txt", "history.csv", "eval.json"):
        assert (paths.model / name).is_file(), name
    assert json.loads((paths.model / "spec.json").read_text())["labels"] == LETTERS
    evaluation = json.loads((paths.model / "eval.json").read_text())
    assert evaluation["accuracy"] > 0.5  # 5 letters: chance is 0.2


@pytest.mark.slow
def test_bundles_and_fp32_verdicts_passed_in_every_format(demo_run):
    paths = RunPaths(demo_run[0])
    manifest = ExportManifest.load(paths.export)
    recommendations = json.loads((paths.bench / "recommendations.json").read_text())
    for rec in recommendations:
        bundle = json.loads((paths.bundles / rec["platform"] / "bundle.json").read_text())
        assert rec["artifact"] and bundle["recommended"] == rec["artifact"], rec
        first = bundle["files"][0]["file"]
        assert (paths.bundles / rec["platform"] / first).exists()
        assert f"Recommended: `{first}`" in (paths.bundles / rec["platform"] / "README.md").read_text()
    for fmt in ("tflite", "coreml", "onnx"):
        artifact = manifest.find(fmt, "fp32")
        assert artifact is not None and artifact.status == "exported", fmt
        assert (paths.export / artifact.path).exists()
        assert artifact.parity.status == "passed", (fmt, artifact.parity)
        assert artifact.parity.images > 0 and artifact.parity.top1_agreement >= 0.99
    assert manifest.find("tflite", "fp16") is not None


@pytest.mark.slow
def test_bench_measured_every_artifact_and_recommended_one_per_platform(demo_run):
    paths = RunPaths(demo_run[0])
    results = json.loads((paths.bench / "results.json").read_text())
    names = {row["name"] for row in results["rows"]}
    exported = ExportManifest.load(paths.export)
    assert {a.name for a in exported.artifacts} <= names
    assert (paths.bench / "results.csv").is_file() and (paths.bench / "report.html").is_file()
    recommended = {r["artifact"] for r in json.loads((paths.bench / "recommendations.json").read_text())}
    assert recommended and recommended <= {a.name for a in exported.artifacts if a.passed}


@pytest.mark.slow
def test_second_run_skips_every_stage(demo_run):
    run_dir = demo_run[0]
    results = run_pipeline(CONFIG, run_dir)
    assert [(r.stage, r.status) for r in results] == [(s, "skipped") for s in STAGES]
