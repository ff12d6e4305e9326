import csv

import numpy as np
import pytest
from PIL import Image

from pocketml.dataset import MANIFEST_COLUMNS, labels_of, load_image, read_records, select_split
from pocketml.errors import PocketMLError


def _image(path, size=(40, 20), color=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_imagefolder_with_splits_is_read_with_labels_and_split_names(hotdog_dir):
    records = read_records(hotdog_dir)
    assert len(records) == 250
    assert labels_of(records) == ["hot_dog", "not_hot_dog"]
    assert {r.split for r in records} == {"train", "val"}
    assert len(select_split(records, "test", "val")) == 50


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
