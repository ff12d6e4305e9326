"""Stage caching on real (tiny) stages: acquire + curate on a few rendered glyphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pocketml.app.cli import main
from pocketml.app.pipeline import config_sha256, run_pipeline
from pocketml.errors import PocketMLError

TINY = """
[acquire]
workers = 1
[[acquire.sources]]
type = "glyphs"
letters = ["A", "B", "C"]
per_letter = {per_letter}
image_size = 64
system_fonts = false
[curate]
seed = {seed}
"""


SECOND_SOURCE = """
[[acquire.sources]]
type = "glyphs"
letters = ["D"]
per_letter = 10
image_size = 64
system_fonts = false
"""


def write(tmp_path: Path, per_letter: int = 10, seed: int = 0) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(TINY.format(per_letter=per_letter, seed=seed))
    return path


def statuses(results) -> dict[str, str]:
    return {r.stage: r.status for r in results}


def run(config: Path, run_dir: Path, **kwargs):
    return statuses(run_pipeline(config, run_dir, to_stage="curate", **kwargs))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One real acquire + curate, shared by the tests below through copies of its run dir."""
    root = tmp_path_factory.mktemp("cached")
    config = write(root)
    assert run(config, root / "run") == {"acquire": "ran", "curate": "ran"}
    return root, config


@pytest.fixture()
def fresh(first_run, tmp_path):
    import shutil

    root, _ = first_run
    shutil.copytree(root / "run", tmp_path / "run")
    return tmp_path / "run"


def test_records_hold_config_input_and_output_hashes(first_run):
    root, _ = first_run
    dataset = root / "run" / "dataset"
    acquire = json.loads((dataset.parent / "stages" / "acquire.json").read_text())
    curate = json.loads((dataset.parent / "stages" / "curate.json").read_text())
    assert acquire["inputs"] == {} and set(acquire["outputs"]) == {"dataset/pool.csv"}
    assert set(curate["inputs"]) == {"dataset/pool.csv"}
    assert curate["inputs"]["dataset/pool.csv"] == acquire["outputs"]["dataset/pool.csv"]
    assert set(curate["outputs"]) == {"dataset/manifest.csv"}
    assert len(curate["config_sha256"]) == 64 and curate["config_sha256"] != acquire["config_sha256"]
    assert (dataset / "manifest.csv").is_file() and curate["seconds"] > 0


def test_second_run_skips_every_unchanged_stage(first_run, fresh):
    _, config = first_run
    before = (fresh / "dataset" / "manifest.csv").stat().st_mtime_ns
    assert run(config, fresh) == {"acquire": "skipped", "curate": "skipped"}
    assert (fresh / "dataset" / "manifest.csv").stat().st_mtime_ns == before


def test_changing_a_stage_config_reruns_it_and_not_the_stages_before(fresh, tmp_path):
    config = write(tmp_path, seed=7)
    assert run(config, fresh) == {"acquire": "skipped", "curate": "ran"}
    assert run(config, fresh) == {"acquire": "skipped", "curate": "skipped"}


def test_changing_an_earlier_stage_reruns_the_later_ones_through_their_inputs(fresh, tmp_path):
    # A second source adds letter D: the pool changes, so curate reruns although [curate] did not.
    config = write(tmp_path)
    config.write_text(config.read_text() + SECOND_SOURCE)
    assert run(config, fresh) == {"acquire": "ran", "curate": "ran"}
    labels = {row.split(",")[2] for row in (fresh / "dataset" / "manifest.csv").read_text().splitlines()[1:]}
    assert labels == {"A", "B", "C", "D"}
    assert run(config, fresh) == {"acquire": "skipped", "curate": "skipped"}


def test_a_rerun_with_unchanged_outputs_leaves_later_stages_skipped(first_run, fresh, tmp_path):
    # workers changes how acquire runs, not what it stores: pool.csv is identical, curate stays cached.
    _, config = first_run
    changed = tmp_path / "workers.toml"
    changed.write_text(config.read_text().replace("workers = 1", "workers = 2"))
    assert run(changed, fresh) == {"acquire": "ran", "curate": "skipped"}


def test_force_reruns_and_a_deleted_output_is_rebuilt(first_run, fresh):
    _, config = first_run
    assert run(config, fresh, force=True) == {"acquire": "ran", "curate": "ran"}
    (fresh / "dataset" / "manifest.csv").unlink()
    assert run(config, fresh) == {"acquire": "skipped", "curate": "ran"}
    assert (fresh / "dataset" / "manifest.csv").is_file()


def test_only_and_from_select_stages(first_run, fresh):
    _, config = first_run
    assert statuses(run_pipeline(config, fresh, only="curate", force=True)) == {"curate": "ran"}
    assert statuses(run_pipeline(config, fresh, from_stage="curate", to_stage="curate")) == {"curate": "skipped"}


def test_a_stage_whose_inputs_are_missing_is_refused_with_the_path(first_run, tmp_path):
    _, config = first_run
    with pytest.raises(PocketMLError, match=r"stage curate needs .*pool.csv, which does not exist; run the earlier"):
        run_pipeline(config, tmp_path / "empty", only="curate")
    with pytest.raises(PocketMLError, match=r"--only cannot be combined with --from/--to"):
        run_pipeline(config, tmp_path / "empty", only="curate", from_stage="acquire")


def test_a_stage_that_failed_leaves_no_record_and_runs_again(first_run, fresh):
    _, config = first_run
    record = fresh / "stages" / "curate.json"
    (fresh / "dataset" / "pool.csv").write_text("not,a,pool\n")  # curate cannot read this
    with pytest.raises(PocketMLError):
        run_pipeline(config, fresh, only="curate")
    assert not record.exists()


def test_cli_prints_the_stage_summary(first_run, fresh, capsys):
    _, config = first_run
    assert main(["run", str(config), "--run-dir", str(fresh), "--to", "curate"]) == 0
    out = capsys.readouterr().out
    assert "acquire: up to date, skipped" in out and "curate: up to date, skipped" in out
    assert "pocketml run" in out


def test_config_hash_is_canonical():
    assert config_sha256({"b": 1, "a": [1, 2]}) == config_sha256({"a": [1, 2], "b": 1})
    assert config_sha256({"a": Path("x")}) == config_sha256({"a": "x"})
    assert config_sha256({"a": 1}) != config_sha256({"a": 2})
