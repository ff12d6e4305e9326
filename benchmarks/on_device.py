"""Bench on devices (`pocketml bench EXPORT --device arm64[:core]`, `[bench] devices = [...]`): every file
a device can run gets, beside its host row, that device's verdict, its cost there and, where a
calibration exists, milliseconds on named phones.

The verdict is export's Judge on the device's outputs, never a second judge. Devices are slow (an
emulated core is ~300-700x slower than this machine), so bench owns a sampling policy: each file runs
first on a stratified sample of the evaluation images; when its device outputs stay within
HOST_EPSILON of its own host outputs there, the host verdict stands for the device (the record says
so), otherwise the whole evaluation set is judged on the device. A file failing on a device is failed
there and never recommended for the platforms that device stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from pocketml.benchmarks import estimates
from pocketml.benchmarks.devices import DeviceRun, device_label, device_module, parse_device
from pocketml.benchmarks.report import row_status
from pocketml.export.registry import format_module

from pocketml.artifact import FAILED, PRECISIONS, ExportManifest
from pocketml.console import console
from pocketml.dataset import ImageSet

SAMPLE_IMAGES = 16  # images per file on the device before deciding whether the host verdict stands
# |p_device - p_host| up to which the host verdict stands: 10x below fp32's 1e-4 tolerance and ~400x
# below one step of an int8 output (1/256), so it cannot move a verdict.
HOST_EPSILON = 1e-5


@dataclass(frozen=True)
class Target:
    kind: str
    variant: str
    module: ModuleType

    @property
    def label(self) -> str:
        return device_label(self.kind, self.variant)


def targets(specs: list[str]) -> list[Target]:
    """Each device spec ("arm64", "arm64:neoverse-n1", "web") parsed and checked, duplicates dropped."""
    found: dict[str, Target] = {}
    for spec in specs:
        kind, variant = parse_device(spec)
        target = Target(kind, variant, device_module(kind))
        found.setdefault(target.label, target)
    return list(found.values())


def platform_devices(chosen: list[Target]) -> dict[str, str]:
    """The device whose cost ranks each platform's files: the first given that stands for the platform."""
    platforms: dict[str, str] = {}
    for target in chosen:
        for platform in target.module.PLATFORMS:
            platforms.setdefault(platform, target.label)
    return platforms


def stratified_sample(truth: np.ndarray | None, total: int, count: int = SAMPLE_IMAGES) -> np.ndarray:
    """Up to `count` image indices taking each class in turn (in file order within a class), so every
    class is on the device; unlabelled images: evenly spaced."""
    if total <= count:
        return np.arange(total)
    if truth is None:
        return np.unique(np.linspace(0, total - 1, count).round().astype(int))
    queues = [list(np.flatnonzero(truth == c)) for c in np.unique(truth)]
    chosen: list[int] = []
    while len(chosen) < count:
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return np.array(sorted(chosen))


def host_comparison(device: np.ndarray, host: np.ndarray) -> dict:
    diff = float(np.abs(device.astype(np.float64) - host.astype(np.float64)).max()) if host.size else 0.0
    return {"images": int(len(host)), "max_abs_diff": diff, "bit_identical": bool(np.array_equal(device, host))}


def parity_record(parity) -> dict:
    """The verdict fields of a device record, in the shape of the host row's (see bench.verdict_figures)."""
    return {"status": row_status(parity.status), "reason": parity.reason, "images": parity.images, "accuracy": parity.accuracy,
            "accuracy_drop_points": parity.accuracy_drop_points, "top1_agreement": parity.top1_agreement,
            "flips": parity.flips, "max_abs_diff": parity.max_abs_diff, "mean_abs_diff": parity.mean_abs_diff}


def failed_record(label: str, why: str) -> dict:
    return {"device": label, "status": FAILED, "reason": why, "cost": {}, "estimates": [], "notes": [],
            "speed": None}


@dataclass
class Entry:
    """One file to judge on a device, with the verdict it got on the host (copied when it stands)."""

    path: Path
    format: str
    precision: str
    host_verdict: dict


VERDICT_FIELDS = ("status", "reason", "images", "accuracy", "accuracy_drop_points", "top1_agreement", "flips",
                  "max_abs_diff", "mean_abs_diff")


def judge_on(target: Target, entries: list[Entry], judge) -> list[dict]:
    """Each entry's record on `target` by the sampling policy: a stratified sample (with the cost) first;
    where the device's outputs stay within HOST_EPSILON of the host's, the host verdict stands; the
    others are judged by `judge` on every evaluation image, run on the device."""
    if not entries:
        return []
    images = judge.images
    sample = images[stratified_sample(judge.truth, len(images))]
    console.print(f"{target.label}: {len(entries)} files on {len(sample)} sample images (with cost)")
    first = target.module.run([e.path for e in entries], [e.format for e in entries], sample, target.variant,
                              cost=True)
    records = [sample_record(target, entry, result, sample) for entry, result in zip(entries, first, strict=True)]
    again = [i for i, record in enumerate(records) if record.pop("judge_all", False)]
    if again:
        console.print(f"{target.label}: {len(again)} files differ from the host: judging all {len(images)} images there")
        full = target.module.run([entries[i].path for i in again], [entries[i].format for i in again], images,
                                 target.variant, cost=False)
        for i, result in zip(again, full, strict=True):
            full_record(records[i], entries[i], result, judge)
    return records


def sample_record(target: Target, entry: Entry, result: DeviceRun, sample: np.ndarray) -> dict:
    if result.error:
        return failed_record(target.label, f"cannot run on {target.label}: {result.error}")
    host = format_module(entry.format).load(entry.path).predict(sample)
    compared = host_comparison(result.outputs, host)
    record = {"device": target.label, "vs_host": compared, "cost": result.cost, "notes": list(result.notes),
              "estimates": estimates.estimate_ms(result.cost.get("instructions"), entry.precision)}
    record["speed"] = record["estimates"][0]["estimate_ms"] if record["estimates"] else result.cost.get(
        "p50_ms", result.cost.get(getattr(target.module, "COST_KEY", "instructions")))
    if compared["max_abs_diff"] <= HOST_EPSILON:
        record.update({k: entry.host_verdict.get(k) for k in VERDICT_FIELDS})
        same = "bit-identical to" if compared["bit_identical"] else f"within {compared['max_abs_diff']:.1e} of"
        record["basis"] = (f"host verdict stands: outputs {same} the host's on {compared['images']} stratified "
                           f"sample images (epsilon {HOST_EPSILON:g})")
        return record
    record["basis"] = (f"outputs differ from the host's by up to {compared['max_abs_diff']:.2g} on the sample "
                       f"(epsilon {HOST_EPSILON:g}): judged on the device")
    record["judge_all"] = True
    return record


def full_record(record: dict, entry: Entry, result: DeviceRun, judge) -> None:
    if result.error:
        record.update(failed_record(record["device"], f"cannot run on {record['device']}: {result.error}"))
        return
    if judge.reference is None or entry.precision not in PRECISIONS:
        why = "no Keras original" if judge.reference is None else f"precision {entry.precision} unknown"
        record.update(status="not validated", reason=f"{why}: device outputs compared with the host only")
        return
    record.update(parity_record(judge.parity(entry.precision, result.outputs)))
    record["basis"] += f" ({record['images']} evaluation images)"


def device_judge(manifest: ExportManifest, keras_predictor, size: tuple[int, int]):
    """export's Judge on the manifest's evaluation images with the Keras original's outputs; None when
    there are no evaluation images. Without the original, a Judge whose reference is None."""
    from pocketml.export.judge import Judge, judge_for, label_indices
    from pocketml.export.validate import agreement_for

    from pocketml.dataset import load_images

    recorded = manifest.images.get("evaluation")
    if not recorded:
        return None
    image_set = ImageSet.from_dict(recorded)
    paths = [p for p in image_set.paths if p.is_file()]
    if not paths:
        return None
    classes = list(manifest.model.labels)
    if keras_predictor is not None:  # the images the host verdict rests on: held out, then agreement-only
        return judge_for(image_set, keras_predictor, classes, agreement_for(manifest, None, image_set))
    return Judge(load_images(paths, size), None, label_indices(image_set.labels, classes), str(image_set.source))


def measure_devices(specs: list[str], export_dir: Path, manifest: ExportManifest, rows: list[dict],
                    keras_predictor, size: tuple[int, int]) -> tuple[dict[str, str], list[str]]:
    """Run every device of `specs` over the rows: (the device ranking each platform, notes for the results)."""
    chosen = targets(specs)
    if not chosen:
        return {}, []
    judge = device_judge(manifest, keras_predictor, size)
    if judge is None:
        return {}, [f"devices {', '.join(t.label for t in chosen)} not run: no evaluation images recorded"]
    for target in chosen:
        pairs = [(row, artifact) for row, artifact in zip(rows[1:], manifest.artifacts, strict=True)
                 if artifact.format in target.module.FORMATS and row["status"] != FAILED]
        entries = [Entry(export_dir / a.path, a.format, a.precision, row) for row, a in pairs]
        for (row, _), record in zip(pairs, judge_on(target, entries, judge), strict=True):
            row["devices"][target.label] = record
    for row in rows:  # the phone estimates of the first device that has them
        row["estimates"] = next((r["estimates"] for r in row["devices"].values() if r.get("estimates")), [])
    return platform_devices(chosen), []
