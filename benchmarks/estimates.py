"""Milliseconds on named phones, estimated from a file's instructions per inference on an emulated ARM
core (benchmarks/devices/arm64.py), with the estimate's error stated beside it.

benchmarks/phones.json keeps, per phone class, published latencies of the same runtime on that phone
(model, precision, runtime, threads, ms, source) and the instructions pocketml counted for the same
architecture on cortex-a76 at 1 thread (benchmarks/arm_calibration_bench.py counts them). The fit is
one factor per class and kind of kernel, ms = factor x instructions, the geometric mean of
ms/instructions over the points: integer kernels (SDOT does 16 multiply-adds in one instruction) take
more time per instruction than float ones, and one factor for both missed by 25 % in the median and
59 % at worst, two by 10 % and 31 %. Published figures are at 4 threads: the factor maps a 1-thread
count to the published thread count, so an estimate is "at that many threads on that phone". Its
error is measured leave-one-out: each point predicted by the fit on the others of its kind. Every estimate carries the word
"estimate", the class, the fit's median and worst leave-one-out error and the sources.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

from pocketml.errors import PocketMLError

PHONES_FILE = Path(__file__).with_name("phones.json")
POINT_FIELDS = ("model", "family", "precision", "runtime", "threads", "ms", "source", "instructions")


def load_phones(path: Path = PHONES_FILE) -> list[dict]:
    """The phone classes with their calibration points; a point without a count is kept out of the fit."""
    try:
        classes = json.loads(Path(path).read_text())["classes"]
        for phone in classes:
            _ = phone["name"], phone["runtime"], phone["threads"]
            for point in phone["points"]:
                _ = [point[f] for f in POINT_FIELDS]
        return classes
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PocketMLError(f"{path} is not a phone calibration file ({exc!r}); see benchmarks/phones.json") from exc


def counted(points: list[dict]) -> list[dict]:
    return [p for p in points if p.get("instructions")]


def kernels(precision: str) -> str:
    """The kind of kernels a precision runs on: "integer" (int8 files) or "float" (fp32, fp16)."""
    return "integer" if precision.startswith("int8") else "float"


def fit_factor(points: list[dict]) -> float:
    """ms per instruction: the geometric mean of ms / instructions (errors are relative, so fit in logs)."""
    if not points:
        raise PocketMLError("no counted calibration points to fit")
    return math.exp(sum(math.log(p["ms"] / p["instructions"]) for p in points) / len(points))


def leave_one_out(points: list[dict]) -> list[float]:
    """|estimate - published| / published of each point, estimated by the fit on all the others."""
    errors = []
    for i, point in enumerate(points):
        factor = fit_factor(points[:i] + points[i + 1:])
        errors.append(abs(factor * point["instructions"] - point["ms"]) / point["ms"])
    return errors


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@cache
def calibration(path: Path = PHONES_FILE) -> list[dict]:
    """Per phone class and kind of kernels: the factor, the leave-one-out errors and what they rest on."""
    fits = []
    for phone in load_phones(path):
        for kind in ("float", "integer"):
            points = [p for p in counted(phone["points"]) if kernels(p["precision"]) == kind]
            if len(points) < 3:  # two points leave one to fit a held-out point on: no error worth stating
                continue
            errors = leave_one_out(points)
            fits.append({
                "phone": phone["name"], "runtime": phone["runtime"], "threads": phone["threads"], "kernels": kind,
                "factor": fit_factor(points), "points": len(points),
                "families": sorted({p["family"] for p in points}),
                "loo_median": median(errors), "loo_max": max(errors), "loo_errors": errors,
                "sources": sorted({p["source"] for p in points}),
            })
    return fits


def estimate_ms(instructions: int | None, precision: str, path: Path = PHONES_FILE) -> list[dict]:
    """Estimated ms per phone class for a file of `precision` costing `instructions` per inference on the
    emulated core (empty without a count, or without a fit for its kind of kernels)."""
    if not instructions:
        return []
    return [
        {
            "device": fit["phone"],
            "runtime": fit["runtime"],
            "threads": fit["threads"],
            "estimate_ms": fit["factor"] * instructions,
            "label": "estimate",
            "error": f"leave-one-out error median {fit['loo_median']:.0%}, worst {fit['loo_max']:.0%} "
                     f"over {fit['points']} published {fit['kernels']} points ({', '.join(fit['families'])})",
            "loo_median": fit["loo_median"],
            "loo_max": fit["loo_max"],
            "basis": f"{instructions / 1e6:.1f} M instructions on cortex-a76 (1 thread) x "
                     f"{fit['factor'] * 1e6:.3g} ms per M ({fit['kernels']} kernels)",
            "source": "; ".join(fit["sources"]),
        }
        for fit in calibration(path)
        if fit["kernels"] == kernels(precision)
    ]


def overall_error(path: Path = PHONES_FILE) -> dict[str, dict]:
    """Per phone class: the median and worst leave-one-out error over all its points, every kind pooled."""
    pooled: dict[str, list[float]] = {}
    for fit in calibration(path):
        pooled.setdefault(fit["phone"], []).extend(fit["loo_errors"])
    return {phone: {"points": len(errors), "loo_median": median(errors), "loo_max": max(errors)}
            for phone, errors in pooled.items()}
