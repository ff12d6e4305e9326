"""The one verdict per artifact: the export judges every file on the held-out photos and on every
other photo that did not calibrate (agreement needs no labels), `pocketml validate` judges again
with the same Judge, and the tolerance table decides by precision: passed, failed, or too few
images."""

from __future__ import annotations

import json
import shutil

import pytest
from pocketml.export.tolerances import TOLERANCES, decide
from pocketml.export.validate import validate

from pocketml.artifact import ExportManifest, Parity
from pocketml.errors import PocketMLError, ValidationFailed
from pocketml.fsutil import sha256_file
from tests.export.export_helpers import TFLITE_PRECISIONS, real_tflite_export


@pytest.fixture(scope="module")
def export_dir(real_model_dir, photos_dir, tmp_path_factory):
    return real_tflite_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())


def test_export_judged_every_artifact_on_every_photo_that_did_not_calibrate(export_dir, photos_dir):
    manifest = ExportManifest.load(export_dir)
    assert [a.precision for a in manifest.artifacts] == TFLITE_PRECISIONS
    images = manifest.images
    calibration, evaluation, agreement = images["calibration"], images["evaluation"], images["agreement"]
    assert (calibration["split"], calibration["count"]) == ("train", 24)  # a quarter of the 96 training photos
    assert (evaluation["split"], evaluation["count"]) == ("test", 32)
    assert (agreement["role"], agreement["split"], agreement["count"]) == ("agreement", "train+val", 72 + 32)
    roles = [set(calibration["images"]), set(evaluation["images"]), set(agreement["images"])]
    assert sum(map(len, roles)) == len(set.union(*roles)), "no photo plays two roles"
    assert all("/test/" in path for path in evaluation["images"])
    for artifact in manifest.artifacts:
        parity = artifact.parity
        assert (parity.images, parity.held_out_images) == (136, 32)  # accuracy on the held-out 32 only
        assert parity.status == decide(artifact.precision, parity).status
        assert parity.accuracy is not None and parity.reference_accuracy is not None
        assert parity.flips == round((1 - parity.top1_agreement) * 136) == len(parity.flipped)
        assert sum(f["ambiguous"] for f in parity.flipped) == parity.ambiguous_flips
        counted = 1 - (parity.flips - parity.ambiguous_flips) / (136 - parity.ambiguous_flips)
        assert parity.agreement_low - 1e-12 <= counted <= parity.agreement_high + 1e-12


def test_validate_again_gives_the_same_verdicts_on_the_recorded_images(export_dir, tmp_path):
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    before = ExportManifest.load(copy)
    after = validate(copy)
    assert [a.parity for a in after.artifacts] == [a.parity for a in before.artifacts]
    assert after.images == before.images


def test_validate_on_other_images_never_judges_a_calibration_image(export_dir, photos_dir, tmp_path):
    # A flat folder holding two calibration photos (one a renamed copy) and three held-out ones.
    manifest = ExportManifest.load(export_dir)
    folder = tmp_path / "flat"
    folder.mkdir()
    calibration = manifest.images["calibration"]["images"]
    shutil.copy(calibration[0], folder / "a.jpg")
    shutil.copy(calibration[1], folder / "renamed.jpg")
    for i, path in enumerate(sorted((photos_dir / "val" / "cat").glob("*.jpg"))[:3]):
        shutil.copy(path, folder / f"held_out_{i}.jpg")
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    judged = validate(copy, images=folder)
    assert sorted(p.split("/")[-1] for p in judged.images["evaluation"]["images"]) == [
        "held_out_0.jpg", "held_out_1.jpg", "held_out_2.jpg"]
    assert "2 images left out of evaluation: they also calibrate" in judged.images["evaluation"]["notes"]
    assert all(a.parity.images == 3 for a in judged.artifacts)


def test_fp32_passes_at_1e4_with_full_agreement(export_dir):
    parity = ExportManifest.load(export_dir).find("tflite", "fp32").parity
    assert parity.status == "passed"
    assert parity.max_abs_diff <= 1e-4
    assert parity.top1_agreement == 1.0
    assert parity.accuracy == parity.reference_accuracy


def test_int8_variants_keep_the_decisions_and_are_not_failed(export_dir):
    manifest = ExportManifest.load(export_dir)
    for precision in ("int8-dynamic", "int8", "int8-uint8io"):
        parity = manifest.find("tflite", precision).parity
        # Photos near p=0.5 may flip (ambiguous: Keras' own margin is below 0.2); the clear calls hold.
        assert parity.top1_agreement >= 0.95, precision
        assert abs(parity.accuracy - parity.reference_accuracy) <= 0.05, precision
        assert parity.status in ("passed", "too few images"), (precision, parity.reason)
        assert all(f["keras_margin"] < 0.2 for f in parity.flipped if f["ambiguous"])


def test_fp16_passes_with_full_agreement_and_small_probability_moves(export_dir):
    parity = ExportManifest.load(export_dir).find("tflite", "fp16").parity
    assert parity.flips == parity.ambiguous_flips  # only near-ties may flip
    assert 0 < parity.max_abs_diff <= 0.1  # fp16 weights really moved the outputs, within the table
    assert parity.mean_abs_diff <= 5e-3
    assert parity.status == "passed", parity.reason


def test_too_few_images_is_said_with_the_number_that_would_decide(export_dir, photos_dir, tmp_path):
    # The same int8 file judged on 5 held-out photos: no flip, but 5 images cannot show 97 % agreement.
    folder = tmp_path / "few"
    for path in sorted((photos_dir / "test" / "coffee").glob("*.jpg"))[:5]:
        (folder / "coffee").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "coffee" / path.name)
    judged = validate(shutil.copytree(export_dir, tmp_path / "copy"), images=folder)
    parity = judged.find("tflite", "int8-dynamic").parity
    assert (parity.images, parity.flips, parity.status) == (5, 0, "too few images"), parity.reason
    assert parity.images_needed == 125 and "about 125 images would decide" in parity.reason
    assert judged.find("tflite", "fp32").parity.status == "passed"  # a max is decided on any number


def test_strict_collects_every_failure_and_records_them(export_dir, tmp_path):
    # A real mismatch: the fp32 file replaced by the dynamic-range int8 model.
    broken = shutil.copytree(export_dir, tmp_path / "broken")
    shutil.copy(broken / "tflite" / "model-int8-dynamic.tflite", broken / "tflite" / "model-fp32.tflite")
    manifest = ExportManifest.read(broken)  # as a converter that wrote that file would have recorded it
    manifest.by_name("tflite-fp32").sha256 = sha256_file(broken / "tflite" / "model-fp32.tflite")
    manifest.save(broken)
    with pytest.raises(ValidationFailed) as exc:
        validate(broken, strict=True)  # default images: the evaluation photos the export recorded
    assert exc.value.exit_code == 1
    assert "tflite-fp32: max|dp|" in str(exc.value) and "\n" not in str(exc.value)
    saved = json.loads((broken / "manifest.json").read_text())
    fp32 = next(a for a in saved["artifacts"] if a["precision"] == "fp32")
    assert fp32["parity"]["status"] == "failed" and fp32["parity"]["images"] == 136
    statuses = [a["parity"]["status"] for a in saved["artifacts"]]
    assert all(a["parity"]["images"] == 136 for a in saved["artifacts"]), "every artifact is checked"
    assert str(exc.value).startswith(f"{statuses.count('failed')} artifact(s) outside tolerance")


def test_without_recorded_evaluation_images_it_asks_for_images(export_dir, tmp_path):
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    manifest = ExportManifest.load(copy)
    manifest.images["evaluation"] = None
    manifest.save(copy)
    with pytest.raises(PocketMLError, match="--images"):
        validate(copy)


def _figures(images: int, flips: int = 0, ambiguous: int = 0, **more) -> Parity:
    return Parity(images=images, flips=flips, ambiguous_flips=ambiguous, top1_agreement=1 - flips / images, **more)


def test_a_drop_of_exactly_one_point_is_within_the_budget():
    # 0.96 - 0.95 is 1.0000000000000009 points in floating point
    parity = _figures(400, accuracy=0.95, reference_accuracy=0.96, held_out_images=400)
    assert decide("int8", parity).status == "passed"


def test_agreement_is_decided_by_its_interval_and_ambiguous_flips_do_not_count():
    assert TOLERANCES["int8"].min_agreement == 0.97 and TOLERANCES["int8"].ambiguous_margin == 0.2
    assert decide("int8", _figures(200, flips=1)).status == "passed"  # 95 % interval 0.972-0.999
    undecided = decide("int8", _figures(100, flips=1))
    assert undecided.status == "too few images" and undecided.images_needed == 280
    assert "agreement 99/100 (1 flips), 95 % interval 0.9455-0.9982 straddles 0.97" in undecided.reasons[0]
    assert decide("int8", _figures(400, flips=40)).status == "failed"
    # Two near-ties of Keras flipped: reported, not counted, so 50 images with no clear flip still cannot
    # show 97 % (too few), and 200 can.
    assert decide("int8", _figures(50, flips=2, ambiguous=2)).status == "too few images"
    assert decide("int8", _figures(200, flips=2, ambiguous=2)).status == "passed"
    # fp16 and fp32 are decided on any number of images: no clear flip and |dp| within the bound.
    assert decide("fp16", _figures(50, flips=1, ambiguous=1, max_abs_diff=0.04, mean_abs_diff=0.001)).status == "passed"
    failed = decide("fp16", _figures(50, flips=1, max_abs_diff=0.04, mean_abs_diff=0.001))
    assert failed.status == "failed" and "1 of 50 images flipped where Keras' margin is >= 0.1" in failed.reasons
    assert decide("fp16", _figures(50, max_abs_diff=0.12, mean_abs_diff=0.001)).status == "failed"
    assert decide("fp16", _figures(50, max_abs_diff=0.05, mean_abs_diff=0.02)).status == "failed"


def test_accuracy_fails_a_file_only_when_the_held_out_loss_is_shown():
    one_of_50 = _figures(200, accuracy=0.96, reference_accuracy=0.98, held_out_images=50)  # 2 points, 1 image
    assert decide("int8", one_of_50).status == "passed"
    shown = decide("int8", _figures(200, accuracy=0.80, reference_accuracy=0.98, held_out_images=50))
    assert shown.status == "failed" and shown.reasons[0].startswith("accuracy drop 18.00 points (9 of 50")


def test_images_with_labels_the_model_lacks_are_a_clear_error_and_change_nothing(export_dir, photos_dir, tmp_path):
    for label in ("cat", "hot_dog"):
        (tmp_path / "data" / label).mkdir(parents=True)
        shutil.copy(next((photos_dir / "val" / "cat").glob("*.jpg")), tmp_path / "data" / label / f"{label}.jpg")
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    before = (copy / "manifest.json").read_text()
    with pytest.raises(PocketMLError, match=r"labels \['hot_dog'\] that the model does not know.*\['cat', 'coffee'\]"):
        validate(copy, images=tmp_path / "data")
    assert (copy / "manifest.json").read_text() == before
