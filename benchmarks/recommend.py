"""The one file to ship per platform (and per OS tier within it: iOS has Core ML from iOS 16 and
Core AI from iOS 27): the fastest (or smallest) artifact whose verdict passed. The verdict is the
export's (copied into the rows) and a device's where one judged the file: recommend reads verdicts
and never judges again, so there is one budget (export/tolerances.py). The platforms of each format
are its module's PLATFORMS (export/registry.py); a device adds the platforms it stands for (the web).
Written to BENCH_DIR only.
"""

from __future__ import annotations

from pocketml.benchmarks.devices import device_module, parse_device
from pocketml.export.registry import format_module, os_tiers, platform_formats

from pocketml.artifact import PASSED, TOO_FEW, Recommendation

LATENCY_TIE = 0.05  # latencies within 5 % are a tie on a shared CPU: the smaller file wins


def _speed_key(row: dict) -> float:
    """Median latency at the row's best setting (an app picks its thread count); unmeasured rows
    sort after measured ones."""
    timed = [v["p50_ms"] for v in (row.get("latency") or {}).values() if v.get("p50_ms") is not None]
    return min(timed) if timed else float("inf")


def _device_key(device: str):
    """Speed on `device` (its estimated ms on a named phone, else its own cost figure); unmeasured rows last."""
    def key(row: dict) -> float:
        speed = (row.get("devices") or {}).get(device, {}).get("speed")
        return float("inf") if speed is None else speed
    return key


def pick(candidates: list[dict], by: str, speed=_speed_key) -> dict:
    """The fastest candidate (ties within LATENCY_TIE go to the smaller file), or the smallest."""
    size = lambda row: row["bytes"] or 0  # noqa: E731
    if by == "size":
        return min(candidates, key=lambda row: (size(row), speed(row)))
    fastest = min(speed(row) for row in candidates)
    tied = [row for row in candidates if speed(row) <= fastest * (1 + LATENCY_TIE)]
    return min(tied, key=lambda row: (size(row), speed(row)))


def _device_speed_text(record: dict) -> str:
    if record.get("estimates"):
        first = record["estimates"][0]
        return f"estimated {first['estimate_ms']:.2f} ms on {first['device']} ({first['error']})"
    cost = record.get("cost") or {}
    if "p50_ms" in cost:  # a device that times itself (the browser: performance.now() in the page)
        return f"p50 {cost['p50_ms']:.2f} ms per inference at {cost.get('threads', 1)} thread(s) there"
    if "instructions" in cost:
        return f"{cost['instructions'] / 1e6:.1f} M instructions per inference"
    return f"{record['speed']:.3g}"


def verdict_on(row: dict, platform: str, device: str | None = None) -> str:
    """The row's verdict for `platform`: the export's (copied into the row), and that of every device
    that judged the file and stands for the platform (`device`, or a record naming the platform); the
    worst counts, and a file the platform's device did not run has no verdict there. Read, never
    re-judged: the budget is export/tolerances.py's."""
    records = row.get("devices") or {}
    verdicts = [row["status"]]
    for label, record in records.items():
        if (label == device or platform in (record.get("platforms") or ())) and record.get("status"):
            verdicts.append(record["status"])
    if device is not None and device not in records:
        verdicts.append(f"not run on {device}")
    return max(verdicts, key=lambda v: (PASSED, TOO_FEW).index(v) if v in (PASSED, TOO_FEW) else 2)


def device_platforms(devices: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """platform -> the formats its device runs, for the platforms only a device stands for (the web);
    a platform a format declares (android for arm64) keeps its own formats."""
    declared = platform_formats()
    return {platform: tuple(device_module(parse_device(label)[0]).FORMATS)
            for platform, label in devices.items() if platform not in declared}


def choose(rows: list[dict], by: str, devices: dict[str, str] | None = None) -> list[Recommendation]:
    """One Recommendation per platform and OS tier (artifact None, with the reason, when nothing qualifies).

    Only files whose verdict passed are eligible; when none passed, a file the images could not
    decide ("too few images") may be, and the reason says so. A failed file is never the one an app
    is told to ship. `devices` maps a platform to the device that stands for it (bench --device):
    there a file must also pass on that device, and the device's cost ranks the files, not the host's;
    a platform only a device stands for (the web) is added with the formats that device runs.
    """
    devices = devices or {}
    choices = []
    for platform, fmts in platform_formats(device_platforms(devices)).items():
        if not any(row["format"] in fmts for row in rows[1:]):  # the export was not asked for them
            choices.append(Recommendation(platform, None, f"no {platform} format was asked for "
                                          f"({', '.join(fmts)} not exported)", runs_on(fmts)))
            continue
        for tier in os_tiers(fmts, platform).values():
            if any(row["format"] in tier for row in rows[1:]):  # a tier none of whose formats was exported: no entry
                choices.append(_choose_one(rows, platform, tier, by, devices.get(platform)))
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


def _choose_one(rows: list[dict], platform: str, fmts: tuple[str, ...], by: str, device: str | None) -> Recommendation:
    fmt = " or ".join(fmts)
    rows_of = [row for row in rows[1:] if row["format"] in fmts]
    verdicts = {row["name"]: verdict_on(row, platform, device) for row in rows_of}
    candidates = [row for row in rows_of if verdicts[row["name"]] == PASSED]
    undecided = not candidates
    if undecided:
        candidates = [row for row in rows_of if verdicts[row["name"]] == TOO_FEW]
    if not candidates:
        why = "; ".join(f"{row['name']}: {verdicts[row['name']]}" for row in rows_of) or f"no {fmt} artifact"
        return Recommendation(platform, None, f"no file passed its verdict ({why})", runs_on(fmts))
    speed_of = _device_key(device) if device else _speed_key
    row = pick(candidates, by, speed_of)
    speed = speed_of(row)
    if by == "size":
        rule = "smallest"
    elif device and speed != float("inf"):
        rule = (f"fastest on {device}, {_device_speed_text(row['devices'][device])} (within {LATENCY_TIE:.0%} "
                "counts as a tie; the smaller wins; host timings are in the table, labelled host)")
    elif speed == float("inf"):
        rule = "smallest (latency not measurable here)"
    else:
        rule = f"fastest, p50 {speed:.2f} ms (within {LATENCY_TIE:.0%} counts as a tie; the smaller wins)"
    verdict = (f"nothing passed: its verdict is '{TOO_FEW}' (needs about {row.get('images_needed') or '?'} images)"
               if undecided else "its verdict passed")
    reason = f"{rule}, {row['bytes'] / 1e6:.2f} MB, {verdict} on {row['images']} images"
    if row.get("accuracy_drop_points") is not None:
        reason += f" (accuracy drop {row['accuracy_drop_points']:.2f} points)"
    return Recommendation(platform, row["name"], reason, runs_on(fmts))
