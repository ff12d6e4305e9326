"""`pocketml predict` on every format gives the decisions the user's Keras model gives on the same
photos, with labels from the file itself; folders stream into CSV/JSON, one row per image."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from pocketml.export import predict

from pocketml.app import cli
from pocketml.errors import PocketMLError
from tests.export import user_models as um

COREML_PHOTOS = 8  # the numpy Core ML executor takes ~0.25 s per 64 px image


@pytest.fixture(autouse=True)
def export_commands_only(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("pocketml.export.cli",))


@pytest.fixture(scope="module")
def exported(photos_dir, tmp_path_factory):
    """(export dir, the .keras the user brought, the user's model): the Sequential case of test_intake."""
    return um.exported_case("sequential", photos_dir, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def photos(photos_dir, exported):
    paths, images, truth = um.photo_test_split(photos_dir)
    return paths, um.reference_probabilities(exported[2], images), truth


def predict_csv(argv, capsys) -> list[dict]:
    assert cli.main(["predict", *map(str, argv), "--csv"]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


@pytest.mark.parametrize(
    "file", ["tflite/model-fp32.tflite", "onnx/model-fp32.onnx", "coreml/model-fp32.mlpackage", "keras"]
)
def test_every_format_gives_the_keras_top1_with_its_own_labels(file, exported, photos, capsys):
    export_dir, keras_file, _ = exported
    paths, reference, _ = photos
    count = COREML_PHOTOS if file.endswith(".mlpackage") else len(paths)
    model = keras_file if file == "keras" else export_dir / file
    labels = ["--labels", str(keras_file.parent.parent / "labels.txt")] if file == "keras" else []
    rows = predict_csv([model, *paths[:count], "--top", "2", *labels], capsys)
    assert [row["image"] for row in rows] == [str(p) for p in paths[:count]]
    assert [row["label_1"] for row in rows] == [um.PHOTO_LABELS[i] for i in reference[:count].argmax(1)]
    top = np.array([float(row["p_1"]) for row in rows])
    np.testing.assert_allclose(top, reference[:count].max(1), atol=1e-4)
    assert all(row["label_2"] != row["label_1"] and row["error"] == "" for row in rows)


def test_a_folder_streams_into_a_csv_file(exported, photos, photos_dir, tmp_path, capsys):
    export_dir, _, _ = exported
    paths, reference, truth = photos
    out = tmp_path / "predictions.csv"
    argv = ["predict", str(export_dir / "onnx" / "model-fp32.onnx"), str(photos_dir / "test"), "--csv", "--out", str(out)]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == ""  # everything went to the file
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "label_1", "p_1", "label_2", "p_2", "error"]
    assert sorted(row["image"] for row in rows) == sorted(str(p) for p in paths)
    by_path = {row["image"]: row for row in rows}
    for path, probs in zip(paths, reference, strict=True):
        row = by_path[str(path)]
        assert row["label_1"] == um.PHOTO_LABELS[int(probs.argmax())]
        assert float(row["p_1"]) + float(row["p_2"]) == pytest.approx(1.0, abs=2e-6)
    accuracy = np.mean([by_path[str(p)]["label_1"] == um.PHOTO_LABELS[t] for p, t in zip(paths, truth, strict=True)])
    assert accuracy >= 0.8


def test_json_output_and_an_unreadable_image_is_a_row_with_its_error(exported, photos, tmp_path, capsys):
    export_dir, _, _ = exported
    paths, reference, _ = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    argv = ["predict", str(export_dir / "tflite" / "model-fp32.tflite"), str(paths[0]), str(broken), "--json", "--top", "1"]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["image"] == str(paths[0]) and rows[0]["error"] is None
    assert rows[0]["top"] == [{"label": um.PHOTO_LABELS[int(reference[0].argmax())], "p": pytest.approx(reference[0].max(), abs=1e-4)}]
    assert rows[1]["image"] == str(broken) and rows[1]["top"] == [] and "cannot read image" in rows[1]["error"]


def test_a_file_without_labels_needs_labels(exported, photos, tmp_path, capsys):
    import onnx

    export_dir, keras_file, _ = exported
    paths, reference, _ = photos
    foreign = tmp_path / "foreign.onnx"
    proto = onnx.load(str(export_dir / "onnx" / "model-fp32.onnx"))
    del proto.metadata_props[:]  # as a file from elsewhere would be
    onnx.save(proto, str(foreign))
    assert cli.main(["predict", str(foreign), str(paths[0])]) == 2
    assert "foreign.onnx carries no labels; pass --labels FILE" in capsys.readouterr().err
    labels = tmp_path / "labels.txt"
    labels.write_text("kitty\nespresso\n")
    rows = predict_csv([foreign, paths[0], "--labels", labels], capsys)
    assert rows[0]["label_1"] == ("kitty", "espresso")[int(reference[0].argmax())]
    labels.write_text("a\nb\nc\n")
    assert cli.main(["predict", str(foreign), str(paths[0]), "--labels", str(labels)]) == 2
    assert "has 3 labels; give --labels with exactly 2 lines" in capsys.readouterr().err
    shutil.copy(keras_file, tmp_path / "bare.keras")  # no spec.json beside it
    assert cli.main(["predict", str(tmp_path / "bare.keras"), str(paths[0])]) == 2
    assert "no spec.json beside" in capsys.readouterr().err


def test_classify_names_the_labels_of_one_image(exported, photos):
    export_dir, _, _ = exported
    paths, reference, _ = photos
    model = predict.load(export_dir / "tflite" / "model-fp32.tflite")
    assert model.labels == um.PHOTO_LABELS and model.format == "tflite"
    best, second = model.classify(paths[0], top=2)
    assert best[0] == um.PHOTO_LABELS[int(reference[0].argmax())] and best[1] == pytest.approx(reference[0].max(), abs=1e-4)
    assert best[1] >= second[1]
    with pytest.raises(PocketMLError, match="--image-size applies to Keras models"):
        predict.load(export_dir / "onnx" / "model-fp32.onnx", image_size="64")
    with pytest.raises(PocketMLError, match="holds no images"):
        predict.image_paths([export_dir / "tflite"])
