import json

import pytest

from pocketml.errors import PocketMLError
from pocketml.spec import ModelSpec, Normalization, read_labels


def test_spec_round_trips_through_spec_json_and_labels_txt(tmp_path):
    spec = ModelSpec(labels=("cat", "dog"), image_size=(96, 128), normalization=Normalization.for_mobilenet())
    spec.save(tmp_path)
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\n"
    assert ModelSpec.load(tmp_path) == spec
    assert json.loads((tmp_path / "spec.json").read_text())["image_size"] == [96, 128]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": (), "image_size": (96, 96)}, "no labels"),
        ({"labels": ("a", "a"), "image_size": (96, 96)}, "repeated: a"),
        ({"labels": ("a", "b"), "image_size": (4, 96)}, "too small"),
        ({"labels": ("a", "b"), "image_size": (96, 96), "color_order": "YUV"}, "use RGB or BGR"),
    ],
)
def test_bad_specs_are_rejected_with_a_reason(kwargs, message):
    with pytest.raises(PocketMLError, match=message):
        ModelSpec(**kwargs)


def test_spec_json_with_unknown_keys_or_bad_json_is_a_user_error(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"labels": ["a", "b"], "image_size": [9, 9], "colour": "RGB"}))
    with pytest.raises(PocketMLError, match="unknown keys \\['colour'\\]"):
        ModelSpec.load(tmp_path)
    (tmp_path / "spec.json").write_text("{")
    with pytest.raises(PocketMLError, match="not valid JSON"):
        ModelSpec.load(tmp_path)


def test_read_labels_skips_blank_lines_and_rejects_empty_files(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("hot_dog\n\n not_hot_dog \n")
    assert read_labels(path) == ("hot_dog", "not_hot_dog")
    path.write_text("\n")
    with pytest.raises(PocketMLError, match="empty"):
        read_labels(path)
