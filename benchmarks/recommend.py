"""The one file to ship per platform: the fastest (or smallest) artifact whose accuracy stays
within a budget of the Keras model's, written back into the export manifest and bundle READMEs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pocketml.artifact import ExportManifest

PLATFORM_FORMATS = {"ios": "coreml", "android": "tflite", "onnx": "onnx"}


def accuracy_evidence(row: dict, artifact, reference_accuracy: float | None) -> tuple[float | None, str]:
    """(accuracy drop in points, where it comes from): measured here, else `pocketml validate`'s parity.

    Core ML cannot run on Linux, so an iOS choice made there rests on the parity that validate
    recorded (e.g. with a reference executor); with neither, the artifact is not eligible.
    """
    if row.get("accuracy_drop_points") is not None:
        return row["accuracy_drop_points"], "measured by bench"
    parity = artifact.parity
    if parity.status == "passed" and parity.accuracy is not None and parity.reference_accuracy is not None:
        return (parity.reference_accuracy - parity.accuracy) * 100, "parity recorded by pocketml validate"
    return None, "no accuracy measured"


def _speed_key(row: dict) -> float:
    """Median latency at the row's best thread setting (an app picks its thread count); unmeasured
    rows sort after measured ones.
    """
    latency = row.get("latency") or {}
    timed = [v["p50_ms"] for k, v in latency.items() if k.isdigit() and v.get("p50_ms") is not None]
    return min(timed) if timed else float("inf")


LATENCY_TIE = 0.05  # latencies within 5 % are a tie on a shared CPU: the smaller file wins


def pick(candidates: list[tuple[dict, float, str]], by: str) -> tuple[dict, float, str]:
    """The fastest candidate (ties within LATENCY_TIE go to the smaller file), or the smallest."""
    size = lambda c: c[0]["bytes"] or 0  # noqa: E731
    if by == "size":
        return min(candidates, key=lambda c: (size(c), _speed_key(c[0])))
    fastest = min(_speed_key(c[0]) for c in candidates)
    tied = [c for c in candidates if _speed_key(c[0]) <= fastest * (1 + LATENCY_TIE)]
    return min(tied, key=lambda c: (size(c), _speed_key(c[0])))


def choose(
    rows: list[dict], manifest: ExportManifest, budget_points: float, by: str, min_agreement: float = 0.99
) -> dict[str, dict]:
    """platform -> {"artifact", "reason"} (artifact None with the reason when nothing qualifies).

    Only rows whose status is `passed` are eligible: a file that failed validation (here or in
    `pocketml validate`) is never the one an app is told to ship.
    """
    reference_accuracy = rows[0]["accuracy"] if rows else None
    choices = {}
    for platform, fmt in PLATFORM_FORMATS.items():
        candidates, rejected = [], []
        for row in rows[1:]:
            artifact = manifest.find(row["format"], row["precision"])
            if row["format"] != fmt or artifact is None:
                continue
            if row["status"] != "passed":
                rejected.append(f"{row['name']}: {row['status']}")
                continue
            drop, basis = accuracy_evidence(row, artifact, reference_accuracy)
            agreement = row.get("top1_agreement")
            if drop is None or drop > budget_points:
                rejected.append(f"{row['name']}: {basis if drop is None else f'drop {drop:.2f} points'}")
                continue
            if agreement is not None and agreement < min_agreement:
                rejected.append(f"{row['name']}: top-1 agreement {agreement:.3f} < {min_agreement:g}")
                continue
            candidates.append((row, drop, basis))
        if not candidates:
            why = "; ".join(rejected) or f"no {fmt} artifact passed"
            choices[platform] = {"artifact": None, "reason": f"nothing within {budget_points:g} points ({why})"}
            continue
        row, drop, basis = pick(candidates, by)
        speed = _speed_key(row)
        if by == "size":
            rule = "smallest"
        elif speed == float("inf"):
            rule = "smallest (latency not measurable here)"
        else:
            rule = f"fastest, p50 {speed:.2f} ms (within {LATENCY_TIE:.0%} counts as a tie; the smaller wins)"
        choices[platform] = {
            "artifact": row["name"],
            "reason": f"{rule}, {row['bytes'] / 1e6:.2f} MB, within {budget_points:g} points "
            f"(drop {drop:.2f} points, {basis})",
        }
    return choices


def mark_manifest(export_dir: Path, manifest: ExportManifest, choices: dict[str, dict]) -> list[str]:
    """Write `recommended` platforms into manifest.json and refresh the bundle READMEs; returns notes."""
    for artifact in manifest.artifacts:
        artifact.recommended = sorted(p for p, c in choices.items() if c["artifact"] == artifact.name)
    manifest.save(export_dir)
    try:
        bundles = importlib.import_module("export.bundles")
    except ModuleNotFoundError as exc:
        if exc.name != "export.bundles":
            raise
        return ["bundle READMEs not refreshed: export.bundles is not available"]
    writer = getattr(bundles, "write_bundle_readmes", None)
    if writer is None:
        return ["bundle READMEs not refreshed: export.bundles has no write_bundle_readmes"]
    writer(export_dir, manifest)
    return []
