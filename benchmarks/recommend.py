"""The one file to ship per platform (and per OS tier within it: iOS has Core ML from iOS 16 and
Core AI from iOS 27): the fastest (or smallest) artifact whose verdict passed and whose accuracy stays
within a budget of the Keras model's. The verdict is the export's (copied into the rows); the
platforms of each format are its module's PLATFORMS (export/registry.py). Written to BENCH_DIR only.
"""

from __future__ import annotations

from pocketml.export.registry import format_module, os_tiers, platform_formats

from pocketml.artifact import PASSED, Recommendation

LATENCY_TIE = 0.05  # latencies within 5 % are a tie on a shared CPU: the smaller file wins


def _speed_key(row: dict) -> float:
    """Median latency at the row's best setting (an app picks its thread count); unmeasured rows
    sort after measured ones."""
    timed = [v["p50_ms"] for v in (row.get("latency") or {}).values() if v.get("p50_ms") is not None]
    return min(timed) if timed else float("inf")


def pick(candidates: list[dict], by: str) -> dict:
    """The fastest candidate (ties within LATENCY_TIE go to the smaller file), or the smallest."""
    size = lambda row: row["bytes"] or 0  # noqa: E731
    if by == "size":
        return min(candidates, key=lambda row: (size(row), _speed_key(row)))
    fastest = min(_speed_key(row) for row in candidates)
    tied = [row for row in candidates if _speed_key(row) <= fastest * (1 + LATENCY_TIE)]
    return min(tied, key=lambda row: (size(row), _speed_key(row)))


def _rejection(row: dict, budget_points: float, min_agreement: float) -> str | None:
    """Why `row` may not be recommended (None: it may)."""
    if row["status"] != PASSED:
        return f"{row['name']}: {row['status']}"
    drop, agreement = row.get("accuracy_drop_points"), row.get("top1_agreement")
    if drop is None:
        return f"{row['name']}: no accuracy measured"
    if drop > budget_points:
        return f"{row['name']}: drop {drop:.2f} points"
    if agreement is not None and agreement < min_agreement:
        return f"{row['name']}: top-1 agreement {agreement:.3f} < {min_agreement:g}"
    return None


def choose(rows: list[dict], budget_points: float, by: str, min_agreement: float = 0.99,
           platforms: dict[str, tuple[str, ...]] | None = None) -> list[Recommendation]:
    """One Recommendation per platform and OS tier (artifact None, with the reason, when nothing
    qualifies); `platforms` adds platforms a device stands for (see registry.platform_formats).

    Only rows whose verdict passed are eligible: a file that failed validation is never the one an
    app is told to ship.
    """
    choices = []
    for platform, fmts in platform_formats(platforms).items():
        for tier in os_tiers(fmts, platform).values():
            choices.append(_choose_one(rows, platform, tier, budget_points, by, min_agreement))
    return choices


def keyed(choices: list[Recommendation]) -> dict[str, Recommendation]:
    """The recommendations by the name bench's report gives them: the platform, with the OS its file
    is for where the platform has several tiers ("ios (iOS 27+, macOS 27+ (Core AI))")."""
    tiers: dict[str, int] = {}
    for choice in choices:
        tiers[choice.platform] = tiers.get(choice.platform, 0) + 1
    return {(c.label if tiers[c.platform] > 1 else c.platform): c for c in choices}


def runs_on(formats: tuple[str, ...]) -> str:
    return " / ".join(dict.fromkeys(format_module(f).RUNS_ON for f in formats))


def _choose_one(rows: list[dict], platform: str, fmts: tuple[str, ...], budget_points: float, by: str,
                min_agreement: float) -> Recommendation:
    fmt = " or ".join(fmts)
    candidates, rejected = [], []
    for row in rows[1:]:
        if row["format"] not in fmts:
            continue
        why = _rejection(row, budget_points, min_agreement)
        if why:
            rejected.append(why)
        else:
            candidates.append(row)
    if not candidates:
        why = "; ".join(rejected) or f"no {fmt} artifact passed"
        return Recommendation(platform, None, f"nothing within {budget_points:g} points ({why})", runs_on(fmts))
    row = pick(candidates, by)
    speed = _speed_key(row)
    if by == "size":
        rule = "smallest"
    elif speed == float("inf"):
        rule = "smallest (latency not measurable here)"
    else:
        rule = f"fastest, p50 {speed:.2f} ms (within {LATENCY_TIE:.0%} counts as a tie; the smaller wins)"
    reason = (f"{rule}, {row['bytes'] / 1e6:.2f} MB, within {budget_points:g} points "
              f"(drop {row['accuracy_drop_points']:.2f} points on {row['images']} evaluation images)")
    return Recommendation(platform, row["name"], reason, runs_on(fmts))
