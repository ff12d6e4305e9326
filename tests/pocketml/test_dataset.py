import csv

import numpy as np
import pytest
from PIL import Image

from pocketml.dataset import (
    MANIFEST_COLUMNS,
    ImageSet,
    agreement_set,
    bounded,
    choose_images,
    labels_of,
    load_image,
    read_records,
    select_split,
)
from pocketml.errors import PocketMLError


def _image(path, size=(40, 20), color=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_imagefolder_with_splits_is_read_with_labels_and_split_names(photos_dir):
    records = read_records(photos_dir)
    assert len(records) == 160
    assert labels_of(records) == ["cat", "coffee"]
    assert {r.split for r in records} == {"train", "val", "test"}
    assert len(select_split(records, "test", "val")) == 32
    assert {r.split for r in select_split(records, "test", "val")} == {"test"}


def test_manifest_dataset_dir_is_read_from_manifest_csv(tmp_path):
    _image(tmp_path / "images" / "ab" / "abc.jpg")
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerow({"sha256": "abc", "path": "images/ab/abc.jpg", "label": "a", "split": "test"})
    (record,) = read_records(tmp_path)
    assert record.path == tmp_path / "images" / "ab" / "abc.jpg" and record.split == "test"


def test_flat_folder_gives_unlabelled_records_and_empty_folder_is_an_error(tmp_path):
    _image(tmp_path / "flat" / "1.png")
    assert read_records(tmp_path / "flat")[0].label is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(PocketMLError, match="holds no images"):
        read_records(tmp_path / "empty")


def test_load_image_resizes_shorter_side_and_centre_crops(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 255  # a white centre band of a wide image
    path = tmp_path / "wide.png"
    Image.fromarray(img).save(path)
    out = load_image(path, (10, 10))
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out.min() > 200  # the crop kept the centre band only


def test_transparent_png_is_composited_on_white(tmp_path):
    path = _image(tmp_path / "t.png", color=(0, 0, 0, 0), mode="RGBA")
    assert load_image(path, (8, 8)).min() == 255


def _folder(root, per_label: dict[str, int], split: str | None = None):
    """Distinct small PNGs under root/[split/]label/ (the colour encodes split, label and index, so no two match)."""
    split_code = {None: 0, "train": 60, "val": 120, "test": 180}[split]
    for label, count in per_label.items():
        for i in range(count):
            base = root / split if split else root
            _image(base / label / f"{i}.png", size=(8, 8), color=(i, ord(label[0]), split_code))
    return root


def test_calibration_from_train_evaluation_from_test_never_overlapping(photos_dir):
    calibration, evaluation = choose_images(photos_dir, None)
    # A quarter of the 96 training images calibrate; the other 72 are left to judge agreement on.
    assert (calibration.role, calibration.split, len(calibration)) == ("calibration", "train", 24)
    assert (evaluation.role, evaluation.split, len(evaluation)) == ("evaluation", "test", 32)
    assert not set(calibration.paths) & set(evaluation.paths)
    again = choose_images(photos_dir, None)
    assert again == (calibration, evaluation)  # the same images on every run


def test_evaluation_folder_alone_calibrates_on_its_train_split(photos_dir):
    calibration, evaluation = choose_images(None, photos_dir)
    assert calibration.split == "train" and evaluation.split == "test"
    val_only = choose_images(None, photos_dir / "val")
    assert val_only[0] is None and val_only[1].split == "all" and len(val_only[1]) == 32


def test_a_folder_without_splits_is_divided_so_no_image_is_used_twice(tmp_path):
    root = _folder(tmp_path / "flat", {"a": 30, "b": 30})
    calibration, evaluation = choose_images(root, None, calibration_count=20)
    assert (calibration.split, len(calibration)) == ("all", 15)  # a quarter of 60, below the 20 asked
    assert (evaluation.split, len(evaluation)) == ("rest", 45)
    assert not set(calibration.paths) & set(evaluation.paths)
    assert "15 images left out of evaluation: they also calibrate" in evaluation.notes


def test_a_small_flat_folder_given_as_calibration_alone_serves_both_roles_and_says_how(tmp_path):
    # A user's first try: 200 photos, no splits, `--calibration photos`. It used to be refused ("no
    # images left to evaluate on"); now a quarter calibrates and the rest judge, and the note says so.
    root = _folder(tmp_path / "flat", {"a": 100, "b": 100})
    calibration, evaluation = choose_images(root, None)
    assert (len(calibration), len(evaluation)) == (50, 150)
    assert calibration.notes == (f"50 of the 200 images of {root} (all) calibrate; the other 150 are left to judge "
                                 "the files on",)
    assert {r.label for r in calibration.records} == {"a", "b"}
    one = _folder(tmp_path / "one", {"a": 1})
    with pytest.raises(PocketMLError, match="no images left to evaluate on"):
        choose_images(one, None)


def test_agreement_is_measured_on_every_image_that_neither_calibrates_nor_is_held_out(photos_dir):
    calibration, evaluation = choose_images(photos_dir, None)
    others = agreement_set([photos_dir], calibration, evaluation)
    assert (others.role, others.split, len(others)) == ("agreement", "train+val", 72 + 32)
    used = {*calibration.paths, *evaluation.paths}
    assert not used & set(others.paths)
    bounded_others = agreement_set([photos_dir], calibration, evaluation, count=len(evaluation) + 10)
    assert len(bounded_others) == 10 and {r.label for r in bounded_others.records} == {"cat", "coffee"}
    assert agreement_set([photos_dir], calibration, evaluation, count=len(evaluation)) is None


def test_a_copy_of_a_calibration_image_is_not_evaluated(tmp_path):
    import shutil

    train = _folder(tmp_path / "data", {"a": 4, "b": 4}, "train")
    _folder(tmp_path / "data", {"a": 3, "b": 3}, "test")
    calibrating = choose_images(train, None)[0].paths[0]
    shutil.copy(calibrating, train / "test" / "a" / "copy.png")  # leaked into test
    calibration, evaluation = choose_images(train, None)
    assert len(evaluation) == 6 and all(p.name != "copy.png" for p in evaluation.paths)
    assert evaluation.notes == ("1 images left out of evaluation: they also calibrate",)


def test_bounded_keeps_every_label_its_share_and_the_order():
    from pocketml.dataset import ImageRecord

    records = [ImageRecord(f"a{i}", "a", None) for i in range(90)] + [ImageRecord(f"b{i}", "b", None) for i in range(10)]
    chosen = bounded(records, 20)
    assert len(chosen) == 20 and sum(r.label == "b" for r in chosen) == 2
    assert chosen == sorted(chosen, key=records.index) and bounded(records, 20) == chosen
    assert bounded(records, 500) == records


def test_image_set_round_trips_through_the_manifest(photos_dir):
    _, evaluation = choose_images(photos_dir, None)
    assert ImageSet.from_dict(evaluation.to_dict()) == evaluation


@pytest.mark.parametrize(
    ("calibration", "evaluation", "message"),
    [
        ("val_only", None, "no train split to calibrate on"),
        (None, "train_only", "no test or val split to evaluate on"),
    ],
)
def test_folders_that_cannot_serve_their_role_are_one_line_errors(tmp_path, calibration, evaluation, message):
    _folder(tmp_path / "val_only", {"a": 2}, "val")
    _folder(tmp_path / "train_only", {"a": 2}, "train")
    with pytest.raises(PocketMLError, match=message):
        choose_images(calibration and tmp_path / calibration, evaluation and tmp_path / evaluation)
