"""Which MIL ops coremltools 9 emits for each backbone pocketml trains (Keras 3 -> mlprogram), per
deployment target and precision, and whether the Core ML reference executor covers all of them.

Builds each backbone with training's registry and converts with export/coreml.py itself. Baseline for the
ratio: the op count of MobileNetV2 fp32 iOS16. Run: `.venv/bin/python benchmarks/coreml_op_inventory.py`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 64  # px; ops do not depend on the input size, conversion time does
COMPRESSED_ON = ("mobilenet_v2", "mobilenet_v3_small")  # k-means on ResNet50's 23M weights takes minutes


def variants(backbone: str) -> list[tuple[str, str]]:
    precisions = ["fp32", "fp16"] + (["int8-weights", "palettized-6bit"] if backbone in COMPRESSED_ON else [])
    return [(p, t) for t in ("iOS16", "iOS18") for p in precisions]


def convert_and_list(models: dict, backbone: str, precision: str, target: str, tmp: Path, seconds: dict) -> list[str]:
    """The sorted op types of one converted variant (the Keras model is built once per backbone)."""
    from pocketml.export import coreml
    from pocketml.export.coreml_mil import load_program

    from pocketml.spec import ModelSpec

    if backbone not in models:
        models[backbone] = random_classifier(backbone)
    path = tmp / f"{backbone}_{precision}_{target}.mlpackage"
    spec = ModelSpec(labels=("a", "b"), image_size=(SIZE, SIZE))
    start = time.perf_counter()
    coreml.convert(models[backbone], spec, precision, path, None, minimum_deployment_target=target)
    seconds[f"{backbone}/{precision}/{target}"] = round(time.perf_counter() - start, 1)
    return sorted(load_program(path).op_types)


def random_classifier(name: str):
    """A random-weights classifier built exactly as `pocketml train` builds one (the ops do not depend on weights)."""
    from pocketml.training.backbones import Weights, build_backbone, get_backbone
    from pocketml.training.model import build_classifier

    backbone = get_backbone(name)
    network = build_backbone(backbone, SIZE, 0.35 if backbone.uses_alpha else 1.0, Weights("none"))
    return build_classifier(network, backbone.normalization, num_classes=2, dropout=0.0)


def main() -> None:
    from pocketml.benchmarks.common import machine_info, print_result
    from pocketml.export.coreml_reference import OPS
    from pocketml.training.backbones import BACKBONES

    from pocketml.console import progress

    inventory: dict[str, dict[str, list[str]]] = {}
    seconds: dict[str, float] = {}
    jobs = [(b, p, t) for b in BACKBONES for p, t in variants(b)]
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        with progress() as bar:
            task = bar.add_task("convert + inventory", total=len(jobs))
            for backbone, precision, target in jobs:
                inventory.setdefault(backbone, {})[f"{precision}/{target}"] = convert_and_list(
                    models, backbone, precision, target, Path(tmp), seconds
                )
                bar.advance(task)
    per_backbone = {b: sorted({op for ops in v.values() for op in ops}) for b, v in inventory.items()}
    all_ops = sorted({op for ops in per_backbone.values() for op in ops})
    unsupported = [op for op in all_ops if op != "const" and op not in OPS]
    baseline = len(inventory["mobilenet_v2"]["fp32/iOS16"])
    for backbone, ops in per_backbone.items():
        print(f"{backbone:20s} {len(ops):3d} op types ({len(ops) / baseline:.2f}x MobileNetV2 fp32 iOS16): {', '.join(ops)}")
    print(f"unsupported by the reference executor: {unsupported or 'none'}")
    print_result(
        {
            "machine": machine_info(),
            "input_px": SIZE,
            "ops_per_backbone": per_backbone,
            "ops_per_variant": inventory,
            "all_ops": all_ops,
            "unsupported": unsupported,
            "baseline_op_types_mobilenet_v2_fp32_ios16": baseline,
            "convert_seconds": seconds,
        }
    )


if __name__ == "__main__":
    main()
