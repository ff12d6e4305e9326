"""Per-device latency estimates: published figures for a reference model, scaled by MACs.

Every estimate carries the word "estimate", the reference it was scaled from and its source, so
a reader never mistakes it for a measurement on that phone.
"""

from __future__ import annotations

import json
from pathlib import Path

from pocketml.errors import PocketMLError

DEVICES_FILE = Path(__file__).with_name("devices.json")


def load_devices(path: Path = DEVICES_FILE) -> dict:
    try:
        data = json.loads(Path(path).read_text())
        _ = data["reference_model"]["macs"], [(d["device"], d["ms"], d["source"]) for d in data["devices"]]
        return data
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PocketMLError(f"{path} is not a device reference file ({exc!r}); see benchmarks/devices.json") from exc


def device_estimates(fmt: str, precision: str, macs: int | None, devices: dict) -> list[dict]:
    """Estimated ms on each reference device that runs `fmt` at `precision` (empty without MACs)."""
    if not macs:
        return []
    reference = devices["reference_model"]
    scale = macs / reference["macs"]
    return [
        {
            "device": d["device"],
            "runtime": d["runtime"],
            "estimate_ms": d["ms"] * scale,
            "label": "estimate",
            "basis": f"{d['ms']} ms for {reference['name']} ({reference['macs'] / 1e6:.0f} M MACs) x {scale:.3g}",
            "source": d["source"],
        }
        for d in devices["devices"]
        if d["format"] == fmt and precision in d["precisions"]
    ]
