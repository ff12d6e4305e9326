"""A folder source's photos are acquire's inputs: a photo added to, removed from or replaced in the
folder makes `pocketml run` acquire again and the pool follows the folder, without --force."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from pocketml.app.pipeline import run_pipeline

CONFIG = """
[acquire]
workers = 1
[[acquire.sources]]
type = "folder"
path = "{photos}"
"""


def pool_urls(run_dir: Path) -> set[str]:
    return set(pool_hashes(run_dir))


def pool_hashes(run_dir: Path) -> dict[str, str]:
    """source_url -> sha256 of the pool's copy."""
    with open(run_dir / "dataset" / "pool.csv", newline="") as fh:
        return {row["source_url"]: row["sha256"] for row in csv.DictReader(fh)}


def acquire(config: Path, run_dir: Path) -> dict[str, tuple[str, str]]:
    return {r.stage: (r.status, r.reason) for r in run_pipeline(config, run_dir, only="acquire")}


def test_added_and_removed_photos_are_picked_up(tmp_path, photos_dir):
    photos = tmp_path / "photos"
    shutil.copytree(photos_dir / "train", photos)
    spare = sorted((photos_dir / "test" / "cat").glob("*.jpg"))[0]
    config = tmp_path / "folder.toml"
    config.write_text(CONFIG.format(photos=photos))
    run_dir = tmp_path / "run"
    assert acquire(config, run_dir)["acquire"][0] == "ran"
    before = pool_urls(run_dir)
    assert acquire(config, run_dir)["acquire"][0] == "skipped"

    added = photos / "cat" / "new.jpg"
    shutil.copyfile(spare, added)
    status, reason = acquire(config, run_dir)["acquire"]
    assert status == "ran" and f"folder {photos}" in reason
    assert pool_urls(run_dir) == before | {added.resolve().as_uri()}

    removed = sorted((photos / "coffee").glob("*.jpg"))[0]
    removed.unlink()
    assert acquire(config, run_dir)["acquire"][0] == "ran"
    assert pool_urls(run_dir) == (before | {added.resolve().as_uri()}) - {removed.resolve().as_uri()}

    # A photo replaced under the same name (another picture, as an editor's "save" leaves it) is re-read.
    replaced = sorted((photos / "coffee").glob("*.jpg"))[0]
    old_hash = pool_hashes(run_dir)[replaced.resolve().as_uri()]
    shutil.copyfile(sorted((photos_dir / "test" / "coffee").glob("*.jpg"))[0], replaced)
    assert acquire(config, run_dir)["acquire"][0] == "ran"
    assert pool_hashes(run_dir)[replaced.resolve().as_uri()] != old_hash  # the pool holds the new picture
    assert len(pool_urls(run_dir)) == len(before)  # in place of the old one, not beside it


def test_a_folder_with_train_and_val_only_says_the_verdict_rests_on_val(tmp_path, photos_dir, capsys):
    photos = tmp_path / "photos"
    for split in ("train", "val"):
        shutil.copytree(photos_dir / split, photos / split)
    config = tmp_path / "folder.toml"
    config.write_text(CONFIG.format(photos=photos))
    results = run_pipeline(config, tmp_path / "run", to_stage="curate")
    assert [r.status for r in results] == ["ran", "ran"]
    err = " ".join(capsys.readouterr().err.split())
    assert "have no test split and curate keeps them" in err and "the verdicts rest on the validation split" in err
    assert "too few groups" not in err
    with open(tmp_path / "run" / "dataset" / "manifest.csv", newline="") as fh:
        assert {row["split"] for row in csv.DictReader(fh)} == {"train", "val"}
    example = (Path(__file__).parents[2] / "examples" / "folder.toml").read_text()
    assert "the verdicts then rest on val" in example and "makes its own leakage-free splits" not in example


def test_the_folder_example_trains_offline():
    """Its weights are a file on this machine (packaged with a dependency), not a download."""
    from pocketml.training.backbones import get_backbone, resolve_weights

    from pocketml.app.pipeline import load_pipeline_config

    train = load_pipeline_config(Path(__file__).parents[2] / "examples" / "folder.toml").train
    weights = resolve_weights(get_backbone(train.backbone), train.weights, train.alpha, train.image_size)
    assert weights.path is not None and weights.path.is_file()
