"""What a file runs on is said from what the file is: the TFLite ladder's 16x8 rung (16-bit
activations) is recorded as such from its tensors, and the Android bundle README does not call it
integer-only for NPUs, DSPs and the Edge TPU; an int8 rung still is."""

from __future__ import annotations

import pytest

from pocketml.artifact import Artifact, ExportManifest
from pocketml.dataset import choose_images, load_images
from pocketml.fsutil import sha256_file, tree_bytes
from tests.export.export_helpers import tiny_model_dir


@pytest.fixture(scope="module")
def rungs(tmp_path_factory, photos_dir):
    """{rung name: Built} of the int8 ladder's first and last rungs, written into an export dir."""
    from pocketml.export.exporter import model_record
    from pocketml.export.model_source import load_source
    from pocketml.export.quantization import tflite as ladder

    from pocketml.configs.export import ExportConfig

    base = tmp_path_factory.mktemp("runs_on")
    source = load_source(tiny_model_dir(base / "m"))
    calibration = load_images(choose_images(photos_dir, None)[0].paths[:16], source.spec.image_size)
    steps = list(ladder.candidates(source.model, source.spec, calibration, lambda content: content, {}))
    out = base / "exp"
    (out / "tflite").mkdir(parents=True)
    built = {}
    for step in (steps[0], steps[-1]):
        path = out / "tflite" / f"model-int8-{step.step}.tflite"
        built[step.step] = (path, step.build(path))
    return out, built, model_record(source, ExportConfig())


def test_the_16x8_file_is_recorded_from_its_tensors(rungs):
    _, built, _ = rungs
    assert built["int16x8"][1].activation_bits == 16 and built["int16x8"][1].integer_only is True
    assert built["bias-corrected"][1].activation_bits == 8


def test_the_bundle_readme_does_not_call_a_16x8_file_accelerator_ready(rungs, tmp_path):
    from pocketml.export.package import package

    out, built, model = rungs
    path, facts = built["int16x8"]
    artifact = Artifact("tflite", "int8", path.relative_to(out).as_posix(), sha256=sha256_file(path), bytes=tree_bytes(path),
                        details={"integer_only": facts.integer_only, "float_ops": facts.float_ops,
                                 "activation_bits": facts.activation_bits})
    artifact.parity.status = "passed"
    ExportManifest(model=model, artifacts=[artifact]).save(out)
    package(out, tmp_path / "bundles")
    readme = (tmp_path / "bundles" / "android" / "README.md").read_text()
    row = next(line for line in readme.splitlines() if path.name in line and line.startswith("|"))
    assert "16-bit activations" in row and "NPU, DSP, Edge TPU, CPU" not in row

    artifact.parity.status, artifact.parity.reason = "failed", "agreement 0.9"
    ExportManifest(model=model, artifacts=[artifact]).save(out)
    package(out, tmp_path / "bundles")
    readme = (tmp_path / "bundles" / "android" / "README.md").read_text()
    assert "Not included: tflite-int8" in readme and "strict integer-only" not in readme
