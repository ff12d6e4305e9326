"""Bring your own model: classifiers written the ways users write them, with real ImageNet weights
(EfficientNet-Lite0) and a head fitted on real photos, become the one classifier every converter
sees, export fp32 to TFLite, Core ML and ONNX, and match the user's own model on the photos.

The reference is computed by hand from the user's model (tests/export/user_models.py
reference_probabilities), not by pocketml's graph, so a wrong normalisation, a lost softmax or a
swapped channel order fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
from pocketml.export.model_source import load_source
from pocketml.export.registry import format_module

from pocketml.artifact import ExportManifest
from tests.export import user_models as um

MAX_DP = 1e-4  # the bar for fp32: max |p_file - p_keras| over the photos
COREML_PHOTOS = 8  # the numpy Core ML executor takes ~0.25 s per 64 px image


@pytest.fixture(scope="module")
def parts(photos_dir):
    return um.fitted_parts(photos_dir / "train")


@pytest.fixture(scope="module")
def photos(photos_dir):
    return um.photo_test_split(photos_dir)


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    return um.write_labels_file(tmp_path_factory.mktemp("labels"))


def assert_matches(probs: np.ndarray, reference: np.ndarray, what: str) -> None:
    assert probs.shape == reference.shape, what
    assert np.abs(probs - reference).max() <= MAX_DP, f"{what}: max|dp| {np.abs(probs - reference).max():.2e}"
    assert (probs.argmax(1) == reference.argmax(1)).all(), what


def test_the_fitted_head_is_a_real_classifier(parts, photos):
    _, images, truth = photos
    reference = um.reference_probabilities(um.functional_unnamed(parts), images)
    assert (reference.argmax(1) == truth).mean() >= 0.8
    assert 0.05 < reference[:, 1].mean() < 0.95, "a collapsed model would make every parity check meaningless"


# A SavedModel export takes ~10 s; one (the subclassed model) runs in the quick suite.
QUICK_CASES = [pytest.param(c, marks=pytest.mark.slow) if c.name == "savedmodel-logits" else c for c in um.CASES]


@pytest.mark.parametrize("case", QUICK_CASES + list(um.LIVE_CASES), ids=lambda c: c.name)
def test_every_shape_becomes_the_same_classifier(case, parts, photos, labels_file, tmp_path):
    """Input `image` float32 [N,64,64,3] RGB 0..255, probabilities out, equal to the user's model
    with the preprocessing it expects; the note says what was assumed."""
    _, images, _ = photos
    model = case.build(parts)
    saved = um.save_case(case, model, tmp_path)
    source = load_source(saved, labels=labels_file, **case.source_kwargs())
    assert tuple(source.model.inputs[0].shape) == (None, 64, 64, 3) and str(source.model.inputs[0].dtype) == "float32"
    assert source.spec.labels == um.PHOTO_LABELS and source.spec.image_size == (64, 64)
    assert any(case.note in note for note in source.notes), source.notes
    probs = np.asarray(source.model(images.astype(np.float32)), np.float64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert_matches(probs, um.reference_probabilities(model, images, **case.expects), case.name)


def check_export(export_dir, model, case, images) -> None:
    """Every fp32 file exported, validated within MAX_DP and agreement 1.0, and equal to the user's model."""
    manifest = ExportManifest.load(export_dir)
    assert [(a.format, a.status) for a in manifest.artifacts] == [(f, "exported") for f in ("tflite", "coreml", "onnx")]
    reference = um.reference_probabilities(model, images, **case.expects)
    for artifact in manifest.artifacts:
        parity = artifact.parity
        assert parity.status == "passed" and parity.images == len(images), (artifact.name, parity)
        assert parity.max_abs_diff <= MAX_DP and parity.top1_agreement == 1.0, (artifact.name, parity)
        count = COREML_PHOTOS if artifact.format == "coreml" else len(images)
        probs = format_module(artifact.format).load(export_dir / artifact.path).predict(images[:count])
        assert_matches(probs, reference[:count], f"{case.name} {artifact.name}")
    # Whatever the user called their input, every file's input is `image` (graph.py's one signature).
    assert [i.name for i in ort_inputs(export_dir / "onnx" / "model-fp32.onnx")] == ["image"]
    assert [i["name"] for i in tflite_inputs(export_dir / "tflite" / "model-fp32.tflite")] == ["image"]
    assert [i.name for i in format_module("coreml").read_model_spec(export_dir / "coreml" / "model-fp32.mlpackage")
            .description.input] == ["image"]  # fmt: skip
    normalization = manifest.model.normalization
    assert normalization.added_at_export == bool(case.export.get("preprocess") or case.export.get("mean"))


def ort_inputs(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()


def tflite_inputs(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_input_details()


def test_sequential_exports_to_all_three_formats_and_matches(photos_dir, photos, tmp_path_factory):
    """Before: Core ML failed ("Unable to determine the type of the model") and ONNX failed
    (KeyError: 'keras_tensor_323') on a Sequential model."""
    _, images, _ = photos
    export_dir, _, model = um.exported_case("sequential", photos_dir, tmp_path_factory.getbasetemp())
    check_export(export_dir, model, next(c for c in um.CASES if c.name == "sequential"), images)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in um.CASES if c.name != "sequential"], ids=lambda c: c.name)
def test_every_shape_exports_to_all_three_formats_and_matches(case, photos_dir, photos, tmp_path_factory):
    _, images, _ = photos
    export_dir, _, model = um.exported_case(case.name, photos_dir, tmp_path_factory.getbasetemp())
    check_export(export_dir, model, case, images)


INTEGER = ("int8", "int8-uint8io", "compressed")  # TFLite int8 + strict uint8, ONNX int8, Core ML compressed


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("case", um.CASES, ids=lambda c: c.name)
def test_every_shape_gets_its_integer_and_compressed_files_converted_and_judged(case, photos_dir, tmp_path_factory):
    """Before: a Sequential model got no integer file at all (the fold / bias-correction step rebuilt it
    from its config as if functional: "Unrecognized keyword arguments passed to Model: {'layers': ...}")."""
    export_dir, _, _ = um.exported_case(case.name, photos_dir, tmp_path_factory.getbasetemp(), precisions=INTEGER,
                                        agreement_images=40)
    manifest = ExportManifest.load(export_dir)
    assert sorted(a.name for a in manifest.artifacts) == [
        "coreml-compressed", "onnx-int8", "tflite-int8", "tflite-int8-uint8io"]
    for artifact in manifest.artifacts:
        assert artifact.status == "exported", (artifact.name, artifact.reason)
        parity = artifact.parity
        assert parity.status in ("passed", "failed", "too few images") and parity.images == 40, (artifact.name, parity)
        assert parity.top1_agreement >= 0.8, (artifact.name, parity)  # converted into a working classifier
        ladder = artifact.details.get("search", {}).get("ladder", [])
        assert all(step["status"] != "error" for step in ladder[:1]), (artifact.name, ladder[:1])


def test_a_sequential_model_is_rebuilt_as_a_sequential_for_its_integer_files(parts, photos):
    from pocketml.export.quantization.fold import integer_ready

    _, images, _ = photos
    model = um.sequential(parts)
    ready, facts = integer_ready(model, images[:8].astype(np.float32))
    assert type(ready) is type(model) and ready is not model
    assert facts["input_fold"]["folded"] and facts["bias_correction"]  # fold and correction ran on the Sequential
    np.testing.assert_allclose(ready.predict(images, verbose=0), model.predict(images, verbose=0), atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("case", um.LIVE_CASES, ids=lambda c: c.name)
def test_a_live_model_object_converts_in_all_three_formats(case, parts, photos, labels_file, tmp_path):
    _, images, _ = photos
    model = case.build(parts)
    source = load_source(model, labels=labels_file)
    reference = um.reference_probabilities(model, images, **case.expects)
    for fmt, suffix in (("tflite", ".tflite"), ("onnx", ".onnx"), ("coreml", ".mlpackage")):
        module = format_module(fmt)
        module.convert(source.model, source.spec, "fp32", tmp_path / f"model{suffix}", None)
        count = COREML_PHOTOS if fmt == "coreml" else len(images)
        assert_matches(module.load(tmp_path / f"model{suffix}").predict(images[:count]), reference[:count], fmt)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("case", um.CASES, ids=lambda c: c.name)
def test_every_shape_exports_to_core_ai_and_matches(case, photos_dir, photos, tmp_path_factory):
    """Core AI's torch path takes every shape the intake accepts that Keras can run on torch: fp32
    within MAX_DP of the user's own model, fp16 within fp16's budget; a SavedModel fails with its reason."""
    pytest.importorskip("coreai_torch", reason="needs the optional extra pocketml[coreai]")
    _, images, _ = photos
    export_dir, _, model = um.exported_case(case.name, photos_dir, tmp_path_factory.getbasetemp(), formats=("coreai",),
                                            precisions=("fp32", "fp16"))
    manifest = ExportManifest.load(export_dir)
    if case.save_as == "savedmodel":
        assert {a.status for a in manifest.artifacts} == {"failed"}
        assert all("SavedModel cannot run" in a.reason for a in manifest.artifacts), manifest.artifacts
        return
    fp32, fp16 = manifest.find("coreai", "fp32"), manifest.find("coreai", "fp16")
    assert fp32.passed and fp32.parity.max_abs_diff <= MAX_DP and fp32.parity.top1_agreement == 1.0, fp32.parity
    assert fp16.passed, fp16.parity
    probs = format_module("coreai").load(export_dir / fp32.path).predict(images)
    assert_matches(probs, um.reference_probabilities(model, images, **case.expects), f"{case.name} coreai-fp32")
