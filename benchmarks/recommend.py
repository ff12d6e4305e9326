"""The one file to ship per platform: the fastest (or smallest) artifact whose verdict passed. The
verdict is the export's (copied into the rows) and a device's where one judged the file: recommend
reads verdicts and never judges again, so there is one budget (export/tolerances.py). The platform of
each format is its module's PLATFORM. Written to BENCH_DIR only.
"""

from __future__ import annotations

from pocketml.export.registry import format_for_platform, platforms

from pocketml.artifact import PASSED, TOO_FEW, Recommendation

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


def verdict_on(row: dict, platform: str) -> str:
    """The row's verdict for `platform`: the export's (copied into the row), unless a device that
    stands for the platform judged the file too (row["devices"][name] = {"status", "platforms"}), when
    the worse of the two counts. Read, never re-judged: the budget is export/tolerances.py's."""
    verdicts = [row["status"]]
    for device in (row.get("devices") or {}).values():
        if platform in (device.get("platforms") or ()) and device.get("status"):
            verdicts.append(device["status"])
    return max(verdicts, key=lambda v: (PASSED, TOO_FEW).index(v) if v in (PASSED, TOO_FEW) else 2)


def choose(rows: list[dict], by: str) -> list[Recommendation]:
    """One Recommendation per platform (artifact None, with the reason, when nothing qualifies).

    Only files whose verdict passed are eligible; when none passed, a file the images could not
    decide ("too few images") may be, and the reason says so. A failed file is never the one an app
    is told to ship.
    """
    choices = []
    for platform in platforms():
        fmt = format_for_platform(platform)
        rows_of = [row for row in rows[1:] if row["format"] == fmt]
        verdicts = {row["name"]: verdict_on(row, platform) for row in rows_of}
        candidates = [row for row in rows_of if verdicts[row["name"]] == PASSED]
        undecided = not candidates
        if undecided:
            candidates = [row for row in rows_of if verdicts[row["name"]] == TOO_FEW]
        if not candidates:
            why = "; ".join(f"{row['name']}: {verdicts[row['name']]}" for row in rows_of) or f"no {fmt} artifact"
            choices.append(Recommendation(platform, None, f"no file passed its verdict ({why})"))
            continue
        row = pick(candidates, by)
        speed = _speed_key(row)
        if by == "size":
            rule = "smallest"
        elif speed == float("inf"):
            rule = "smallest (latency not measurable here)"
        else:
            rule = f"fastest, p50 {speed:.2f} ms (within {LATENCY_TIE:.0%} counts as a tie; the smaller wins)"
        verdict = (f"nothing passed: its verdict is '{TOO_FEW}' (needs about {row.get('images_needed') or '?'} images)"
                   if undecided else "its verdict passed")
        reason = f"{rule}, {row['bytes'] / 1e6:.2f} MB, {verdict} on {row['images']} images"
        if row.get("accuracy_drop_points") is not None:
            reason += f" (accuracy drop {row['accuracy_drop_points']:.2f} points)"
        choices.append(Recommendation(platform, row["name"], reason))
    return choices
