import json

import pytest
from pocketml.acquisition.audit import audit

from pocketml.app.cli import main
from pocketml.configs.curate import CurateConfig
from pocketml.errors import PocketMLError
from pocketml.fsutil import sha256_file
from tests.acquisition.curate_pool import image_folder, photos_of, reencoded


def test_audit_finds_planted_leakage_between_predefined_splits_without_touching_the_folder(
    tmp_path, photo_folder
):
    folder = image_folder(tmp_path / "data", photo_folder, per_class=8)
    train_cat = photos_of(photo_folder, "cat", 3, "train")
    # Plant: a byte copy, a re-encode and a half-size copy of training photos in val.
    (folder / "val" / "cat" / "copy.jpg").write_bytes(train_cat[0].read_bytes())
    (folder / "val" / "cat" / "reenc.jpg").write_bytes(reencoded(train_cat[1], quality=60))
    (folder / "val" / "coffee" / "small.jpg").write_bytes(reencoded(train_cat[2], scale=0.5))
    before = sha256_file(folder)
    summary = audit(folder, tmp_path / "out", CurateConfig(workers=1))
    assert sha256_file(folder) == before
    assert summary["leakage"]["val"] == {
        "images": 19,
        "exact_leaks": 1,
        "near_leaks": 2,
        "leak_fraction": round(3 / 19, 4),
        "similar_leaks": 0,
    }
    kinds = sorted(e["kind"] for e in summary["leak_examples"])
    assert kinds == ["exact", "near", "near"]
    # The half-size copy sits under the other label: a label conflict as well as a leak.
    (conflict,) = summary["label_conflicts"]
    assert "val/coffee/small.jpg" in conflict["paths"]
    # Under the default "drop" policy both sides of the conflict would go.
    assert summary["would_remove_by_reason"] == {
        "label_conflict": 2,
        "exact_duplicate": 1,
        "near_duplicate": 1,
    }
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["leakage"]["val"]["exact_leaks"] == 1
    assert (tmp_path / "out" / "card.md").read_text().count("exact and 2 near copies") == 1


@pytest.mark.slow
def test_audit_of_the_real_hotdog_folder_reports_no_leakage(tmp_path, hotdog_dir):
    summary = audit(hotdog_dir, tmp_path / "audit", CurateConfig(workers=1))
    assert summary["images_in"] == 250
    assert summary["class_balance"] == {
        "train": {"hot_dog": 100, "not_hot_dog": 100},
        "val": {"hot_dog": 25, "not_hot_dog": 25},
    }
    assert summary["leakage"]["val"]["exact_leaks"] == 0 and summary["leakage"]["val"]["near_leaks"] == 0
    assert summary["label_conflicts"] == []
    assert (tmp_path / "audit" / "contact_hot_dog.png").stat().st_size > 50_000


def test_audit_refuses_to_write_inside_the_folder_and_needs_labels(tmp_path, photo_folder):
    folder = image_folder(tmp_path / "data", photo_folder, per_class=2)
    with pytest.raises(PocketMLError, match="never writes into"):
        audit(folder, folder / "report")
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(photos_of(photo_folder, "cat", 1)[0].read_bytes())
    with pytest.raises(PocketMLError, match="outside class folders"):
        audit(flat, tmp_path / "out")


def test_cli_audit_writes_the_report_and_an_empty_folder_is_a_clear_error(tmp_path, photo_folder, capsys):
    folder = image_folder(tmp_path / "data", photo_folder, per_class=3)
    assert main(["audit", str(folder), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.json").is_file()
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty"), "--out", str(tmp_path / "rep2")]) == 2
    assert "holds no images" in capsys.readouterr().err
