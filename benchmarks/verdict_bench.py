"""The verdict on a user's own model, before -> after issue 24: does a correct compressed file pass,
does a broken one still fail, and does the fp16 budget hold as the number of images grows?

    POCKETML_SHARED_DATA=/path/to/shared/data python benchmarks/verdict_bench.py   # ends with RESULT {json}

The model is the issue's: MobileNetV2 a0.35 at 128 px with ImageNet weights (../shared/data/weights),
`Rescaling(1/127.5, -1)` first, a softmax head fitted on the 200 hot-dog training photos; exported
with `--calibration hotdog/train --images hotdog/val` (50 held-out photos) to fp16 in all three
formats and to the integer / compressed file of each (TFLite int8, ONNX int8, Core ML compressed).
"before" is the rule that shipped before (fp16: max|dp| <= 0.03 and agreement >= 0.99; integer:
agreement >= 0.99 and drop <= 1 point, both on the 50 held-out photos alone), applied to the same
outputs; "after" is the file's verdict in the manifest. Broken files: the same model with every
weight perturbed by 5 % (multiplicative Gaussian noise), exported fp16, and the real model exported
with a wrong normalisation (ImageNet mean/std added in front of its own Rescaling), each judged by
the real model's Judge. Growth: the TFLite fp16 file's max and 99th-percentile |dp| on 50..2,000
rendered photos (tests/photos.py: agreement needs no labels).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pocketml.benchmarks.common import PROJECT_ROOT, machine_info, print_result, shared_data  # noqa: E402

CACHE = PROJECT_ROOT / "runs" / "verdict_bench"
MOBILENET_V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
SIZE = 128
INTEGER = {"tflite": "int8", "onnx": "int8", "coreml": "compressed"}
GROWTH_COUNTS = (50, 200, 500, 2000)
PERTURBATION = 0.05


def user_model(out: Path) -> Path:
    """The issue's 128 px model, saved as a user would (a .keras file and a labels file)."""
    from tests.models import LABELS, build_classifier, fit_head

    out.mkdir(parents=True, exist_ok=True)
    model = build_classifier(shared_data("weights", MOBILENET_V2_035), size=SIZE)
    fit_head(model, shared_data("hotdog", "train"), SIZE)
    model.save(out / "model.keras")
    (out / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return out / "model.keras"


def perturbed(path: Path, out: Path) -> Path:
    import keras

    model = keras.saving.load_model(path, compile=False)
    rng = np.random.default_rng(0)
    model.set_weights([w * (1 + PERTURBATION * rng.standard_normal(w.shape)).astype(w.dtype) for w in model.get_weights()])
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    return out / "model.keras"


def old_rule(precision: str, parity, held_out: np.ndarray, reference: np.ndarray) -> str:
    """What the verdict said before: on the 50 held-out photos alone, fp16 max|dp| <= 0.03, agreement
    >= 0.99 (0 flips of 50) and drop <= 1 point."""
    diff = np.abs(held_out - reference)
    agreement = (held_out.argmax(1) == reference.argmax(1)).mean()
    ok = agreement >= 0.99 and (parity.accuracy_drop_points or 0) <= 1.0
    if precision == "fp16":
        ok = ok and diff.max() <= 0.03
    return "passed" if ok else "failed"


def export(model: Path, labels: Path, out: Path, precisions: list[str], validate: bool = True, **extra):
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    hotdog = shared_data("hotdog")
    config = ExportConfig(formats=["tflite", "onnx", "coreml"], precisions=precisions, labels=labels,
                          calibration=hotdog / "train", validation_images=hotdog / "val", validate=validate, **extra)
    started = time.perf_counter()
    manifest = export_model(model, out, config)
    return manifest, time.perf_counter() - started


def figures_of(artifact) -> dict:
    p = artifact.parity
    return {"status": artifact.status if artifact.status != "exported" else p.status, "reason": artifact.reason or p.reason,
            "images": p.images, "held_out": p.held_out_images, "flips": p.flips, "ambiguous_flips": p.ambiguous_flips,
            "held_out_flips": p.held_out_flips, "max_abs_diff": p.max_abs_diff, "p99_abs_diff": p.p99_abs_diff,
            "mean_abs_diff": p.mean_abs_diff, "images_needed": p.images_needed,
            "ambiguous": [f for f in p.flipped if f["ambiguous"]]}


def judged_with(judge, export_dir: Path, manifest) -> dict:
    from pocketml.export.judge import artifact_verdict

    return {a.name: artifact_verdict(export_dir, a, judge) for a in manifest.artifacts}


def main() -> None:
    from pocketml.export.judge import judge_for
    from pocketml.export.keras_model import KerasPredictor, load_keras_predictor
    from pocketml.export.registry import format_module

    from pocketml.dataset import ImageSet, evaluation_set, load_images
    from tests.photos import write_photo_folder

    started = time.perf_counter()
    model_path = user_model(CACHE / "model")
    labels = model_path.parent / "labels.txt"
    precisions = ["fp16", "int8", "compressed"]
    manifest, export_seconds = export(model_path, labels, CACHE / "export", precisions)
    rows = {a.name: figures_of(a) for a in manifest.artifacts}

    # "before": the old rule on the 50 held-out photos, same files, same reference.
    reference = load_keras_predictor(model_path, (SIZE, SIZE))
    held = judge_for(ImageSet.from_dict(manifest.images["evaluation"]), reference, ["hot_dog", "not_hot_dog"])
    for artifact in manifest.artifacts:
        if artifact.status == "exported":
            probs = format_module(artifact.format).load(CACHE / "export" / artifact.path).predict(held.images)
            rows[artifact.name]["before"] = old_rule(artifact.precision, artifact.parity, probs, held.reference)

    # Broken files, judged by the real model's Judge on the same images the export used.
    agreement = ImageSet.from_dict(manifest.images["agreement"]) if manifest.images.get("agreement") else None
    judge = judge_for(ImageSet.from_dict(manifest.images["evaluation"]), KerasPredictor(reference.model, (SIZE, SIZE)),
                      ["hot_dog", "not_hot_dog"], agreement)
    noisy, _ = export(perturbed(model_path, CACHE / "perturbed"), labels, CACHE / "broken-perturbed", ["fp16"], validate=False)
    wrong, _ = export(model_path, labels, CACHE / "broken-normalisation", ["fp16"], validate=False, preprocess="imagenet")
    broken = {f"perturbed {a.name}": p for a, p in zip(noisy.artifacts, judged_with(judge, CACHE / "broken-perturbed", noisy).values(), strict=True)}
    broken |= {f"wrong normalisation {a.name}": p for a, p in zip(wrong.artifacts, judged_with(judge, CACHE / "broken-normalisation", wrong).values(), strict=True)}

    # Growth of max vs p99 |dp| with n: the TFLite fp16 file on rendered photos (label-free agreement).
    photos = CACHE / "photos"
    if not photos.exists():
        write_photo_folder(photos, seed=1, counts={"test": max(GROWTH_COUNTS) // 2})
    images = load_images(evaluation_set(photos, count=max(GROWTH_COUNTS)).paths, (SIZE, SIZE))
    keras_probs = reference.predict(images)
    fp16_probs = format_module("tflite").load(CACHE / "export" / "tflite" / "model-fp16.tflite").predict(images)
    per_image = np.abs(fp16_probs - keras_probs).max(axis=1)
    growth = {n: {"max": float(per_image[:n].max()), "p99": float(np.percentile(per_image[:n], 99)),
                  "mean": float(np.abs(fp16_probs[:n] - keras_probs[:n]).mean())} for n in GROWTH_COUNTS}

    fp16_passed = [f for f in ("tflite", "onnx", "coreml") if rows.get(f"{f}-fp16", {}).get("status") == "passed"]
    integer_passed = [f for f, p in INTEGER.items() if rows.get(f"{f}-{p}", {}).get("status") == "passed"]
    broken_failed = [name for name, p in broken.items() if p.status == "failed"]
    judged_images = min(r["images"] for r in rows.values())
    for name, row in rows.items():
        print(f"{name}: before {row.get('before')} -> after {row['status']} on {row['images']} images "
              f"({row['flips']} flips, {row['ambiguous_flips']} ambiguous; max|dp| {row['max_abs_diff']:.4f}, "
              f"p99 {row['p99_abs_diff']:.4f}) {row['reason'] or ''}")
    for name, parity in broken.items():
        print(f"{name}: {parity.status} ({parity.reason})")
    for n, g in growth.items():
        print(f"tflite fp16 on {n} photos: max|dp| {g['max']:.4f}, p99 {g['p99']:.4f}, mean {g['mean']:.5f}")
    print(f"goal fp16 passes in all three formats: {len(fp16_passed)}/3 {fp16_passed}")
    print(f"goal a passing integer file in >= 2 formats: {len(integer_passed)}/3 {integer_passed}")
    print(f"goal agreement on >= 150 images: {judged_images}")
    print(f"goal every broken file fails: {len(broken_failed)}/{len(broken)}")
    print(f"ratio max|dp| growth 50 -> 2000 photos: {growth[2000]['max'] / growth[50]['max']:.2f}x "
          f"(p99 {growth[2000]['p99'] / growth[50]['p99']:.2f}x)")
    print_result({
        "model": f"MobileNetV2 a0.35 {SIZE} px, head fitted on hotdog/train",
        "machine": machine_info(),
        "export_seconds": round(export_seconds, 1),
        "rows": rows,
        "broken": {name: {"status": p.status, "reason": p.reason, "max_abs_diff": p.max_abs_diff,
                          "flips": p.flips} for name, p in broken.items()},
        "fp16_growth": growth,
        "goals": {"fp16_passed": fp16_passed, "integer_passed": integer_passed, "agreement_images": judged_images,
                  "broken_failed": len(broken_failed), "broken": len(broken)},
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
