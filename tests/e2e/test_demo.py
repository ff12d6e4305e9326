"""The reduced demo through every stage: glyphs → curate → EfficientNet-Lite0 → every format → bench.

Asserts what a user relies on after `make demo`: each stage's manifest, the three app bundles, and
validation rows that passed at fp32 in every format (Core ML passes through the reference executor
off macOS).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pocketml.artifact import ExportManifest
from pocketml.dataset import MANIFEST_COLUMNS
from pocketml.paths import STAGES, RunPaths
from pocketml.pipeline import run_pipeline

CONFIG = Path(__file__).with_name("demo_small.toml")
LETTERS = ["A", "B", "C", "D", "E"]
PER_LETTER = 24


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, list]:
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    return run_dir, run_pipeline(CONFIG, run_dir)


@pytest.mark.slow
def test_every_stage_ran_and_left_its_record(demo_run):
    run_dir, results = demo_run
    assert [(r.stage, r.status) for r in results] == [(s, "ran") for s in STAGES]
    paths = RunPaths(run_dir)
    for stage in STAGES:
        record = json.loads((paths.stage_dir(stage) / f"stage-{stage}.json").read_text())
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
def test_export_bundles_and_fp32_validation_passed_in_every_format(demo_run):
    paths = RunPaths(demo_run[0])
    manifest = ExportManifest.load(paths.export)
    for folder in ("android", "ios", "onnx"):
        bundle = paths.export / folder
        assert bundle.is_dir() and any(bundle.iterdir()), folder
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
    assert any(a.recommended for a in exported.artifacts)


@pytest.mark.slow
def test_second_run_skips_every_stage(demo_run):
    run_dir, _ = demo_run
    results = run_pipeline(CONFIG, run_dir)
    assert [(r.stage, r.status) for r in results] == [(s, "skipped") for s in STAGES]
