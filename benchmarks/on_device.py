"""Bench on devices (`pocketml bench EXPORT --device arm64[:core]`, `[bench] devices = [...]`): every file
a device can run gets, beside its host row, that device's verdict, its cost there and, where a
calibration exists, milliseconds on named phones.

The verdict is export's Judge on the device's outputs, never a second judge. Devices are slow (an
emulated core is ~300-700x slower than this machine), so bench owns a sampling policy:
1. Each file runs first on a stratified sample of the evaluation images (with its cost). When its device
   outputs stay within HOST_EPSILON of its own host outputs there, the host verdict stands for the device.
2. Otherwise the device judges it. By default ("guided") the device runs, besides the sample, every image
   whose outcome the device could change: those the file decides on the host by less than twice the
   reach (REACH x the largest move seen on the sample, at least MOVE_SHARE of what the precision may move;
   a flip needs the top two to cross), and those within the reach of a bound of the precision's budget.
   The other images keep their host outputs; the record says how many ran where, and the assumption (the
   device moves no other output by more than the reach) is measured by benchmarks/arm64_bench.py against
   judging every image on the device. With `device_images = "all"` (`--device-images all`) every
   evaluation image runs on the device.
A file failing on a device is failed there and never recommended for the platforms that device stands for.
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
# How far the device may move an output of an image the sample did not include: REACH x the sample's largest
# move, and at least MOVE_SHARE of what the file's precision itself may move a probability (its ambiguous
# margin). Moves are sparse: on the demo's Lite0 export the ONNX int8 file moved no sample output by more
# than 6e-4 on the device but one other image by 0.009, so the sample alone cannot bound them. Measured over
# every evaluation image on the device (benchmarks/arm64_bench.py prints it): int8 files moved at most
# 0.025 (a quantised file may move 0.2), fp16 ONNX files 0.025 (fp16 may move 0.1).
REACH = 4.0
MOVE_SHARE = 0.25
# Guided judging runs every image on the device once more than this share of them is at risk anyway.
ALL_ABOVE = 0.5


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


def judge_on(target: Target, entries: list[Entry], judge, every_image: bool = False) -> list[dict]:
    """Each entry's record on `target` by the sampling policy (module docstring): a stratified sample (with
    the cost) first; where the device's outputs stay within HOST_EPSILON of the host's, the host verdict
    stands; the others are judged on the device, on the images it could decide differently (or on every
    evaluation image with `every_image`)."""
    if not entries:
        return []
    images = judge.images
    sample = stratified_sample(judge.truth, len(images))
    console.print(f"{target.label}: {len(entries)} files on {len(sample)} sample images (with cost)")
    first = target.module.run([e.path for e in entries], [e.format for e in entries], images[sample],
                              target.variant, cost=True)
    records, plans = [], {}
    for index, (entry, result) in enumerate(zip(entries, first, strict=True)):
        record, host = sample_record(target, entry, result, images, sample)
        records.append(record)
        if host is not None:
            plans[index] = DevicePlan(entry, host, sample, result.outputs, judge, every_image)
    if plans:
        ran = sum(len(plan.rest) for plan in plans.values())
        console.print(f"{target.label}: {len(plans)} files differ from the host: {ran} more file-images there")
        chosen = [i for i, plan in plans.items() if len(plan.rest)]
        more = target.module.run([entries[i].path for i in chosen], [entries[i].format for i in chosen],
                                 [images[plans[i].rest] for i in chosen], target.variant,
                                 cost=False) if chosen else []
        rest = dict(zip(chosen, more, strict=True))
        for i, plan in plans.items():
            device_record(records[i], plan, rest.get(i), judge)
    return records


def sample_record(target: Target, entry: Entry, result: DeviceRun, images: np.ndarray,
                  sample: np.ndarray) -> tuple[dict, np.ndarray | None]:
    """The file's record from its sample run, and its host outputs on every image when the device must judge it
    (None when the host verdict stands or the file could not run)."""
    if result.error:
        return failed_record(target.label, f"cannot run on {target.label}: {result.error}"), None
    predictor = format_module(entry.format).load(entry.path)
    compared = host_comparison(result.outputs, predictor.predict(images[sample]))
    record = {"device": target.label, "vs_host": compared, "cost": result.cost, "notes": list(result.notes),
              "estimates": estimates.estimate_ms(result.cost.get("instructions"), entry.precision)}
    record["speed"] = record["estimates"][0]["estimate_ms"] if record["estimates"] else result.cost.get(
        "p50_ms", result.cost.get(getattr(target.module, "COST_KEY", "instructions")))
    if compared["max_abs_diff"] <= HOST_EPSILON:
        record.update({k: entry.host_verdict.get(k) for k in VERDICT_FIELDS})
        same = "bit-identical to" if compared["bit_identical"] else f"within {compared['max_abs_diff']:.1e} of"
        record["basis"] = (f"host verdict stands: outputs {same} the host's on {compared['images']} stratified "
                           f"sample images (epsilon {HOST_EPSILON:g})")
        return record, None
    return record, predictor.predict(images)


class DevicePlan:
    """Which evaluation images a file that differs from the host runs on the device: `rest`, beside the
    sample it already ran; every other image keeps its host output (see the module docstring)."""

    def __init__(self, entry: Entry, host: np.ndarray, sample: np.ndarray, on_sample: np.ndarray, judge,
                 every_image: bool) -> None:
        from pocketml.export.tolerances import tolerance_for

        self.entry, self.host, self.sample, self.on_sample = entry, host, sample, on_sample
        self.tolerance = tolerance_for(entry.precision) if entry.precision in PRECISIONS else None
        moves = np.abs(on_sample.astype(np.float64) - host[sample].astype(np.float64))
        self.moved, self.mean_moved = float(moves.max()), float(moves.mean())
        self.reach = max(REACH * self.moved, MOVE_SHARE * self.tolerance.ambiguous_margin if self.tolerance else 0.0)
        others = np.setdiff1d(np.arange(len(host)), sample)
        at_risk = others[self.at_risk(judge.reference)[others]] if judge.reference is not None else others
        self.every = every_image or len(at_risk) > ALL_ABOVE * len(others)
        self.rest = others if self.every else at_risk

    def at_risk(self, reference: np.ndarray) -> np.ndarray:
        """Per image: could a move of up to `reach` on every output change its outcome under the budget?"""
        from pocketml.export.judge import margins

        tol = self.tolerance
        risky = margins(self.host.astype(np.float64)) < 2 * self.reach  # the top two could cross
        diff = np.abs(self.host.astype(np.float64) - reference.astype(np.float64))
        if tol is not None and tol.max_abs_diff is not None:
            risky |= diff.max(axis=1) + self.reach > tol.max_abs_diff
        if tol is not None and tol.max_mean_abs_diff is not None and \
                diff.mean() + REACH * self.mean_moved > tol.max_mean_abs_diff:
            risky[:] = True  # the mean is over every image: no image can be left out
        return risky

    def outputs(self, on_rest: np.ndarray | None) -> np.ndarray:
        """Every image's output: the device's where it ran, the host's elsewhere."""
        merged = self.host.astype(np.float32).copy()
        merged[self.sample] = self.on_sample
        if on_rest is not None and len(self.rest):
            merged[self.rest] = on_rest
        return merged

    def basis(self, images: int) -> str:
        moved = f"outputs differ from the host's by up to {self.moved:.2g} on the sample (epsilon {HOST_EPSILON:g})"
        if self.every:
            return f"{moved}: judged on the device on all {images} evaluation images"
        ran = len(self.sample) + len(self.rest)
        return (f"{moved}: judged on the device on {ran} of {images} evaluation images (the {len(self.sample)} "
                f"sample images and the {len(self.rest)} whose outcome a move of {self.reach:.2g} could change); "
                f"the other {images - ran} keep their host outputs (assumed: the device moves none of their outputs "
                f"by more than {self.reach:.2g})")


def device_record(record: dict, plan: DevicePlan, rest: DeviceRun | None, judge) -> None:
    """The device's verdict in `record`: export's Judge on the device's outputs (and the host's, where guided)."""
    if rest is not None and rest.error:
        record.update(failed_record(record["device"], f"cannot run on {record['device']}: {rest.error}"))
        return
    if rest is not None:
        record["notes"] += rest.notes
    outputs = plan.outputs(rest.outputs if rest is not None else None)
    ran = np.concatenate([plan.sample, plan.rest])
    record["vs_host_judged"] = host_comparison(outputs[ran], plan.host[ran].astype(np.float32))
    record["device_images"] = int(len(ran))
    record["reach"] = None if plan.every else plan.reach
    record["basis"] = plan.basis(len(outputs))
    if judge.reference is None or plan.entry.precision not in PRECISIONS:
        why = "no Keras original" if judge.reference is None else f"precision {plan.entry.precision} unknown"
        record.update(status="not validated", reason=f"{why}: device outputs compared with the host only")
        return
    record.update(parity_record(judge.parity(plan.entry.precision, outputs)))


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
                    keras_predictor, size: tuple[int, int], every_image: bool = False) -> tuple[dict[str, str], list[str]]:
    """Run every device of `specs` over the rows: (the device ranking each platform, notes for the results).
    `every_image`: a file the device must judge runs every evaluation image there (else: guided)."""
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
        for (row, _), record in zip(pairs, judge_on(target, entries, judge, every_image), strict=True):
            row["devices"][target.label] = record
    for row in rows:  # the phone estimates of the first device that has them
        row["estimates"] = next((r["estimates"] for r in row["devices"].values() if r.get("estimates")), [])
    return platform_devices(chosen), []
