"""Where each stage of a pipeline run writes: one run directory, one sub-directory per stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STAGES = ("acquire", "curate", "train", "export", "bench", "package")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def dataset(self) -> Path:
        """acquire writes the raw pool here; curate adds manifest.csv and report/ to the same directory."""
        return self.root / "dataset"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def bundles(self) -> Path:
        """package assembles ios/, android/, onnx/ here from export/ and bench/."""
        return self.root / "bundles"

    @property
    def records(self) -> Path:
        """The orchestrator's own directory: one record per finished stage (config, input and output hashes)."""
        return self.root / "stages"

    def stage_dir(self, stage: str) -> Path:
        """The one directory `stage` writes (acquire and curate are acquisition's two steps over dataset/)."""
        return {"acquire": self.dataset, "curate": self.dataset, "train": self.model,
                "export": self.export, "bench": self.bench, "package": self.bundles}[stage]


def cache_root() -> Path:
    """What `pocketml device setup` prepares on purpose lives here: $POCKETML_CACHE, else ~/.cache/pocketml."""
    return Path(os.environ.get("POCKETML_CACHE") or Path.home() / ".cache" / "pocketml").expanduser()
