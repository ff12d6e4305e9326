"""Where each stage of a pipeline run writes: one run directory, one sub-directory per stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("acquire", "curate", "train", "export", "bench")


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

    def stage_dir(self, stage: str) -> Path:
        return {"acquire": self.dataset, "curate": self.dataset, "train": self.model,
                "export": self.export, "bench": self.bench}[stage]
