import csv
import json
from collections import Counter

import pytest
from PIL import Image
from pocketml.acquisition.audit import audit
from pocketml.acquisition.cli_curate import config_from_args
from pocketml.acquisition.curate import curate

from pocketml.app.cli import main
from pocketml.configs.curate import CurateConfig
from pocketml.dataset import MANIFEST_COLUMNS, read_records
from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from tests.acquisition.curate_pool import Pool, photo_pool, photos_of, reencoded


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def curated(tmp_path_factory, photo_folder):
    root, planted = photo_pool(tmp_path_factory.mktemp("pool"), photo_folder)
    before = sha256_file(root / "images")
    summary = curate(root, CurateConfig(seed=1, ratios=(0.6, 0.2, 0.2), workers=1))
    return root, planted, summary, before


def test_manifest_has_the_contract_columns_and_training_can_read_it(curated):
    root, _, summary, _ = curated
    with open(root / "manifest.csv", newline="") as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == MANIFEST_COLUMNS
    records = read_records(root)
    assert len(records) == summary["images_kept"] and all(r.path.is_file() for r in records)
    assert {r.split for r in records} == {"train", "val", "test"}
    assert {r.label for r in records} == {"cat", "coffee"}


def test_planted_duplicates_are_kept_once_and_recorded_with_why(curated):
    root, planted, summary, _ = curated
    kept = {row["sha256"] for row in _rows(root / "manifest.csv")}
    removed = {row["sha256"]: row for row in _rows(root / "removed.csv")}
    exact_pair = {planted["exact"], planted["exact_of"]}
    assert len(exact_pair & kept) == 1
    (dropped,) = exact_pair - kept
    assert removed[dropped]["reason"] == "exact_duplicate" and removed[dropped]["duplicate_of"] in kept
    assert planted["near_of"] in kept  # the larger original wins
    assert removed[planted["near"]]["reason"] == "near_duplicate"
    assert removed[planted["near"]]["duplicate_of"] == planted["near_of"]
    assert int(removed[planted["near"]]["distance"]) <= CurateConfig().near_distance


def test_label_conflict_is_reported_and_kept_under_neither_label(curated):
    root, planted, summary, _ = curated
    kept = {row["sha256"] for row in _rows(root / "manifest.csv")}
    removed = {row["sha256"]: row for row in _rows(root / "removed.csv")}
    for key in ("conflict_a", "conflict_b"):
        assert planted[key] not in kept and removed[planted[key]]["reason"] == "label_conflict"
    (conflict,) = summary["label_conflicts"]
    assert conflict["labels"] == ["cat", "coffee"]


def test_unreadable_and_tiny_images_are_left_out_with_their_reason_and_nothing_is_deleted(curated):
    root, planted, summary, before = curated
    removed = {row["sha256"]: row for row in _rows(root / "removed.csv")}
    assert removed[planted["unreadable"]]["reason"] == "unreadable"
    assert removed[planted["tiny"]]["reason"] == "quality" and removed[planted["tiny"]]["detail"] == "tiny"
    assert any(planted["unreadable"] in w for w in summary["warnings"])
    assert sha256_file(root / "images") == before  # the pool is never modified
    assert summary["removed_by_reason"] == {
        "unreadable": 1,
        "quality": 1,
        "label_conflict": 2,
        "exact_duplicate": 1,
        "near_duplicate": 1,
    }
    assert summary["images_in"] == summary["images_kept"] + summary["images_removed"]
    assert summary["quality_flags"]["tiny"] == 1  # flags are counted over every decoded image


def test_report_files_have_real_content(curated):
    root, _, summary, _ = curated
    report_dir = root / "report"
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved == json.loads(json.dumps(summary))  # the returned dict is what was written
    balance = saved["class_balance"]
    assert sum(sum(c.values()) for c in balance.values()) == saved["images_kept"]
    train = balance["train"]
    n, k = sum(train.values()), len(train)
    for label, weight in saved["class_weights"].items():
        assert weight == pytest.approx(n / (k * train[label]), rel=1e-4)
    base = saved["baseline"]
    assert 0 <= base["accuracy"] <= 1 and 0 < base["majority_rate"] <= 1
    for name in ("contact_cat.png", "contact_coffee.png", "duplicates.png"):
        with Image.open(report_dir / name) as img:
            assert img.width >= 96 and img.height >= 96, name
            assert len(img.getcolors(1 << 20) or range(1 << 20)) > 1000  # real thumbnails, not a blank page
    card = (report_dir / "card.md").read_text()
    assert "## Class balance" in card and "label_conflict: 2" in card and "Sanity baseline" in card


def test_curate_is_deterministic_for_a_seed(curated, tmp_path, photo_folder):
    root, _, _, _ = curated
    again, _ = photo_pool(tmp_path, photo_folder)
    curate(again, CurateConfig(seed=1, ratios=(0.6, 0.2, 0.2), workers=1))
    assert (again / "manifest.csv").read_text() == (root / "manifest.csv").read_text()


def test_one_class_only_is_an_error_naming_it(tmp_path, photo_folder):
    pool = Pool(tmp_path)
    for path in photos_of(photo_folder, "cat", 3):
        pool.add(path.read_bytes(), "cat")
    pool.write()
    with pytest.raises(PocketMLError, match="only one class \\('cat'"):
        curate(tmp_path, CurateConfig(workers=1))
    assert not (tmp_path / "manifest.csv").exists()


def test_empty_or_missing_pool_is_an_error(tmp_path):
    with pytest.raises(PocketMLError, match="pool.csv not found"):
        curate(tmp_path, CurateConfig())
    Pool(tmp_path).write()
    with pytest.raises(PocketMLError, match="lists no images"):
        curate(tmp_path, CurateConfig())


def test_cli_curate_runs_with_ratios_and_rejects_bad_ones(tmp_path, photo_folder, capsys):
    pool = Pool(tmp_path)
    for label in ("cat", "coffee"):
        for path in photos_of(photo_folder, label, 6):
            pool.add(path.read_bytes(), label)
    pool.write()
    assert main(["curate", str(tmp_path), "--ratios", "0.5,0.5", "--seed", "3", "--near-distance", "4"]) == 0
    splits_seen = {row["split"] for row in _rows(tmp_path / "manifest.csv")}
    assert splits_seen == {"train", "val"}
    assert json.loads((tmp_path / "report" / "report.json").read_text())["config"]["near_distance"] == 4
    assert main(["curate", str(tmp_path), "--ratios", "0.5,0.6"]) == 2
    assert "ratios" in capsys.readouterr().err


def test_executor_choice_from_the_cli_and_the_config_file(tmp_path, capsys):
    import argparse

    from pocketml.acquisition.cli_curate import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    config = config_from_args(parser.parse_args(["curate", "ds", "--ray-address", "10.0.0.5:6379"]))
    assert (config.executor, config.ray_address) == ("ray", "10.0.0.5:6379")
    assert config_from_args(parser.parse_args(["audit", "ds", "--executor", "ray"])).executor == "ray"
    Pool(tmp_path).write()
    (tmp_path / "c.toml").write_text('[curate]\nexecutor = "dask"\n')
    assert main(["curate", str(tmp_path), "--config", str(tmp_path / "c.toml")]) == 2
    assert "expected one of local, ray" in capsys.readouterr().err
    (tmp_path / "c.toml").write_text('[curate]\nray_address = "10.0.0.5:6379"\n')
    assert main(["curate", str(tmp_path), "--config", str(tmp_path / "c.toml")]) == 2
    assert 'set executor = "ray"' in capsys.readouterr().err
    assert not (tmp_path / "manifest.csv").exists()


def test_config_file_unknown_key_is_rejected_with_a_hint(tmp_path):
    (tmp_path / "c.toml").write_text("[curate]\nnear_distanse = 3\n")
    Pool(tmp_path).write()
    assert main(["curate", str(tmp_path), "--config", str(tmp_path / "c.toml")]) == 2


def test_predefined_splits_in_the_pool_are_respected(tmp_path, photo_folder):
    pool = Pool(tmp_path)
    for split in ("train", "val"):
        for label in ("cat", "coffee"):
            for path in photos_of(photo_folder, label, 4, split):
                pool.add(path.read_bytes(), label, split=split)
    leaked = photos_of(photo_folder, "cat", 1, "train")[0]
    leak_sha = pool.add(reencoded(leaked, quality=70), "cat", split="val")
    pool.write()
    summary = curate(tmp_path, CurateConfig(workers=1))
    assert summary["leakage"]["val"]["near_leaks"] == 1
    rows = _rows(tmp_path / "manifest.csv")
    assert Counter(r["split"] for r in rows) == {"train": 8, "val": 8}
    assert leak_sha not in {r["sha256"] for r in rows}  # the val copy of a train image goes, train keeps it


def test_ratios_that_leave_a_class_out_of_a_split_warn_naming_the_class(tmp_path, photo_folder):
    pool = Pool(tmp_path)
    for path in photos_of(photo_folder, "cat", 6):
        pool.add(path.read_bytes(), "cat")
    for path in photos_of(photo_folder, "coffee", 2):
        pool.add(path.read_bytes(), "coffee")
    pool.write()
    summary = curate(tmp_path, CurateConfig(workers=1))
    assert summary["warnings"] and all("'coffee'" in w for w in summary["warnings"])
    assert "'coffee' has no images in" in (tmp_path / "report" / "card.md").read_text()


def test_auditing_the_curated_dataset_finds_no_leakage_between_its_splits(curated, tmp_path):
    root, _, summary, _ = curated
    report = audit(root, tmp_path / "audit", CurateConfig(workers=1))
    assert report["images_in"] == summary["images_kept"]
    assert set(report["leakage"]) == {"val", "test"}
    for split, leak in report["leakage"].items():
        assert leak["exact_leaks"] == leak["near_leaks"] == leak["similar_leaks"] == 0, split
    assert report["label_conflicts"] == [] and report["would_remove_by_reason"] == {}
