"""Whole models through the Core ML reference executor against the Keras original, every package
converted by export/coreml.py itself (the exporter's own conversion, not a copy of it).

Real weights (EfficientNet-Lite0 ImageNet backbone, 96 px, head fitted on real photos) for the
probability parity the export judges; random-weights backbones compare pre-softmax logits,
because their probabilities are nearly the same for every image.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("coremltools")

from pocketml.export import coreml  # noqa: E402
from pocketml.export.coreml_mil import load_program, materialize_constexpr  # noqa: E402
from pocketml.export.coreml_reference import NAME, load_reference  # noqa: E402

from pocketml.dataset import load_images, read_records  # noqa: E402
from pocketml.errors import PocketMLError  # noqa: E402
from pocketml.spec import ModelSpec  # noqa: E402
from tests.models import BACKBONES, PHOTO_LABELS, build_backbone_classifier, calibrate_batchnorm  # noqa: E402

LABELS = list(PHOTO_LABELS)


def convert(model, labels, path: Path, precision: str = "fp32", target: str = "iOS16") -> Path:
    """`model` as the exporter converts it: export/coreml.py's convert, spec from the model's input."""
    size = tuple(int(d) for d in model.inputs[0].shape[1:3])
    coreml.convert(model, ModelSpec(labels=tuple(labels), image_size=size), precision, path, None,
                   minimum_deployment_target=target)
    return path



@pytest.fixture(scope="module")
def photo_images(photos_dir: Path) -> np.ndarray:
    """12 real validation photos, both classes, at the model's 96 px."""
    records = sorted((r for r in read_records(photos_dir) if r.split == "val"), key=lambda r: str(r.path))
    chosen = [r for r in records if r.label == LABELS[0]][:6] + [r for r in records if r.label == LABELS[1]][:6]
    return load_images([r.path for r in chosen], (96, 96))


@pytest.fixture(scope="module")
def packages(tmp_path_factory, keras_model) -> dict[str, Path]:
    """The real classifier converted by the exporter's module, one package per (precision, target) asked for."""
    root = tmp_path_factory.mktemp("coreml_real")
    made: dict[str, Path] = {}

    def get(precision: str, target: str = "iOS16") -> Path:
        key = f"{precision}_{target}"
        if key not in made:
            made[key] = convert(keras_model, LABELS, root / f"{key}.mlpackage", precision, target)
        return made[key]

    return get  # type: ignore[return-value]


def deviation(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    return {
        "max_abs_diff": float(np.abs(predicted - reference).max()),
        "top1_agreement": float((predicted.argmax(1) == reference.argmax(1)).mean()),
    }


@pytest.fixture(scope="module")
def keras_probs(keras_model, photo_images) -> np.ndarray:
    return keras_model.predict(photo_images.astype(np.float32), verbose=0)


# ---------------------------------------------------------------- real weights, real photos


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_real_classifier_parity(packages, photo_images, keras_probs, precision, tolerance):
    predictor = load_reference(packages(precision))
    probs = predictor.predict(photo_images)
    figures = deviation(probs, keras_probs)
    print(f"\ncoreml-reference {precision} iOS16 vs keras on 12 photos: {figures}")
    assert probs.dtype == np.float32 and probs.shape == (12, 2)
    assert figures["max_abs_diff"] <= tolerance
    assert figures["top1_agreement"] == 1.0
    # The classes really separate (a vacuous, near-constant output would pass any tolerance).
    assert np.ptp(keras_probs[:, 0]) > 0.2


def test_fp16_error_is_visible_not_hidden(packages, photo_images, keras_probs):
    fp16 = load_reference(packages("fp16")).predict(photo_images)
    assert np.abs(fp16 - keras_probs).max() > 1e-5  # float16 rounding shows up in the probabilities


def test_predictor_contract(packages, photo_images):
    predictor = load_reference(packages("fp32"))
    assert predictor.name == NAME == "coreml-reference"
    assert predictor.input_size == (96, 96)
    assert predictor.labels == tuple(LABELS)
    from_uint8 = predictor.predict(photo_images[:2])
    from_float = predictor.predict(photo_images[:2].astype(np.float32))
    np.testing.assert_array_equal(from_uint8, from_float)
    np.testing.assert_allclose(from_uint8.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(PocketMLError, match=r"\[N,96,96,3\]"):
        predictor.predict(photo_images[:, :64, :64])


def test_classifier_ending_reports_label_and_per_label_probabilities(packages, photo_images):
    predictor = load_reference(packages("fp32"))
    values = predictor.executor.run({predictor.image_name: predictor.image_feed(photo_images[0])})
    probs = predictor.predict(photo_images[:1])[0]
    assert values["classLabel"] == LABELS[int(probs.argmax())]
    assert set(values["classLabel_probs"]) == set(LABELS)
    np.testing.assert_allclose([values["classLabel_probs"][label] for label in LABELS], probs, rtol=1e-6)


@pytest.mark.parametrize(
    "precision,target",
    [
        ("int8-weights", "iOS16"),
        pytest.param("int8-weights", "iOS18", marks=pytest.mark.slow),
        pytest.param("palettized-6bit", "iOS16", marks=pytest.mark.slow),  # k-means: slow
        pytest.param("palettized-6bit", "iOS18", marks=pytest.mark.slow),
    ],
)
def test_compressed_variants_report_their_real_deviation(packages, photo_images, keras_probs, precision, target):
    path = packages(precision, target)
    predictor = load_reference(path)
    # The executor's own decompression equals coremltools', so the deviation is the compression's.
    theirs = materialize_constexpr(path)
    assert theirs
    for name, value in theirs.items():
        np.testing.assert_array_equal(predictor.executor.constants[name].astype(np.float32), value.astype(np.float32))
    figures = deviation(predictor.predict(photo_images), keras_probs)
    print(f"\ncoreml-reference {precision} {target} vs keras on 12 photos: {figures}")
    assert 1e-4 < figures["max_abs_diff"] < 1.0  # really compressed, still a classifier


def test_perturbed_weight_blob_breaks_parity(packages, tmp_path, photo_images, keras_probs):
    """A copied .mlpackage whose largest weight is corrupted inside weight.bin: the executor shows it."""
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(packages("fp32"), broken)
    program = load_program(broken)
    largest = max((op.value for op in program.ops if op.op_type == "const" and isinstance(op.value, np.ndarray)),
                  key=lambda v: v.size)
    blob = next(broken.rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    start = bytes(data).find(np.ascontiguousarray(largest).tobytes())
    assert start >= 0, "weight not found verbatim in weight.bin"
    corrupted = np.ascontiguousarray(largest).copy()
    corrupted.reshape(-1)[::7] *= -3.0
    data[start : start + corrupted.nbytes] = corrupted.tobytes()
    blob.write_bytes(bytes(data))
    probs = load_reference(broken).predict(photo_images)
    assert np.abs(probs - keras_probs).max() > 1e-2  # far outside the fp32 tolerance of 1e-4


# ---------------------------------------------------------------- other backbones, random weights


def logits_of(predictor, images: np.ndarray) -> np.ndarray:
    """The classifier's pre-softmax values, read from the program's softmax input."""
    softmax = next(op for op in predictor.executor.program.ops if op.op_type == "softmax")
    rows = []
    for image in images:
        values = predictor.executor.run({predictor.image_name: predictor.image_feed(image)})
        rows.append(np.asarray(values[softmax.inputs["x"]], np.float32).reshape(-1))
    return np.stack(rows)


def keras_logits(model, images: np.ndarray) -> np.ndarray:
    import keras

    features = keras.Model(model.input, model.get_layer("features").output).predict(images.astype(np.float32), verbose=0)
    kernel, bias = model.get_layer("probabilities").get_weights()
    return features @ kernel + bias


def check_backbone(backbone: str, precision: str, target: str, images: np.ndarray, tmp_path: Path) -> float:
    """Max logit error, relative to the largest logit, of a converted random-weights backbone classifier
    whose BatchNorm statistics come from the images (so activations neither vanish nor explode).
    """
    model = build_backbone_classifier(backbone, size=images.shape[1], classes=5)
    calibrate_batchnorm(model, images)
    path = tmp_path / f"{backbone}_{precision}_{target}.mlpackage"
    convert(model, [f"c{i}" for i in range(5)], path, precision, target)
    got, want = logits_of(load_reference(path), images), keras_logits(model, images)
    # Logits that barely move between images would make the comparison vacuous.
    assert np.ptp(want, axis=0).max() > 0.05 * np.abs(want).max(), "logits do not vary across images"
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6))


@pytest.fixture(scope="module")
def small_images(hotdog_dir: Path) -> np.ndarray:
    # The slow backbone sweep keeps the three hot-dog photos its fp16 bounds were measured on:
    # ResNet50's random-weights fp16 logit error is image-dependent (0.017 on these, 0.026-0.04 on others).
    records = sorted(read_records(hotdog_dir), key=lambda r: str(r.path))[:3]
    return load_images([r.path for r in records], (64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_backbone_logits(backbone, precision, tolerance, target, small_images, tmp_path):
    error = check_backbone(backbone, precision, target, small_images, tmp_path)
    print(f"\n{backbone} {precision} {target} relative logit error {error:.2e}")
    assert error <= tolerance


@pytest.mark.slow
def test_mobilenet_v2_224_runs_within_two_seconds(tmp_path):
    import time

    model = build_backbone_classifier("mobilenet_v2", size=224, alpha=1.0)  # the size the issue times
    convert(model, LABELS, tmp_path / "m.mlpackage", "fp32", "iOS16")
    predictor = load_reference(tmp_path / "m.mlpackage")
    image = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3)).astype(np.uint8)
    predictor.predict(image)
    start = time.perf_counter()
    predictor.predict(image)
    assert time.perf_counter() - start <= 2.0


@pytest.mark.macos
@pytest.mark.skipif(__import__("sys").platform != "darwin", reason="the Core ML runtime exists only on macOS")
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_reference_matches_core_ml_runtime(packages, photo_images, precision, tolerance):
    import coremltools as ct
    from PIL import Image

    path = packages(precision)
    runtime = ct.models.MLModel(str(path))
    reference = load_reference(path).predict(photo_images)
    for row, image in zip(reference, photo_images, strict=True):
        probs = runtime.predict({"image": Image.fromarray(image)})["classLabel_probs"]
        np.testing.assert_allclose([probs[label] for label in LABELS], row, atol=tolerance)
