"""The one file to ship per platform: the fastest (or smallest) artifact whose verdict passed and
whose accuracy stays within a budget of the Keras model's. The verdict is the export's (copied into
the rows); the platform of each format is its module's PLATFORM. Written to BENCH_DIR only.
"""

from __future__ import annotations

from pocketml.benchmarks.devices import device_module, parse_device
from pocketml.export.registry import format_for_platform, platforms

from pocketml.artifact import PASSED, Recommendation

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


def _device_rejection(row: dict, device: str | None) -> str | None:
    """A file that did not pass on the device standing for the platform is never recommended for it."""
    if device is None:
        return None
    record = (row.get("devices") or {}).get(device)
    if record is None:
        return f"{row['name']}: not run on {device}"
    return None if record["status"] == PASSED else f"{row['name']}: {record['status']} on {device}"


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


def _platform_formats(platform: str, devices: dict[str, str]) -> tuple[str, ...]:
    """The formats a platform ships: its format's, or for a device-only group the formats the device runs."""
    fmt = format_for_platform(platform)
    if fmt is not None:
        return (fmt,)
    return tuple(device_module(parse_device(devices[platform])[0]).FORMATS)


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
           devices: dict[str, str] | None = None) -> list[Recommendation]:
    """One Recommendation per platform (artifact None, with the reason, when nothing qualifies).

    Only rows whose verdict passed are eligible: a file that failed validation is never the one an
    app is told to ship. `devices` maps a platform to the device that stands for it (bench --device):
    there a file must also pass on that device, and the device's cost ranks the files, not the host's.
    """
    choices = []
    # Platforms of formats, then groups only a device stands for (the web: run by the browser).
    for platform in [*platforms(), *(p for p in (devices or {}) if p not in platforms())]:
        formats = _platform_formats(platform, devices or {})
        fmt = "/".join(formats)
        device = (devices or {}).get(platform)
        candidates, rejected = [], []
        for row in rows[1:]:
            if row["format"] not in formats:
                continue
            why = _rejection(row, budget_points, min_agreement) or _device_rejection(row, device)
            if why:
                rejected.append(why)
            else:
                candidates.append(row)
        if not candidates:
            why = "; ".join(rejected) or f"no {fmt} artifact passed"
            choices.append(Recommendation(platform, None, f"nothing within {budget_points:g} points ({why})"))
            continue
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
        reason = (f"{rule}, {row['bytes'] / 1e6:.2f} MB, within {budget_points:g} points "
                  f"(drop {row['accuracy_drop_points']:.2f} points on {row['images']} evaluation images)")
        choices.append(Recommendation(platform, row["name"], reason))
    return choices
