"""The typed results the Python API returns for acquire, curate, bench and package (export returns
its ExportManifest, validate the same, train the model directory). Each is read from what its stage
wrote or returned, so the files on disk and the objects a notebook gets say the same thing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from pocketml.artifact import Recommendation


@dataclass(frozen=True)
class AcquireResult:
    """What `acquire` left in `out_dir` (acquisition.json holds the same, as `summary`)."""

    out_dir: Path
    urls: int  # every URL the dataset has seen
    images: int  # verified images stored
    by_status: dict[str, int]  # outcome -> URLs
    by_label: dict[str, dict[str, int]]  # label -> outcome -> URLs
    processed: int  # URLs this run handled (0: everything was already done)
    seconds: float  # this run
    summary: dict = field(repr=False)

    @classmethod
    def from_summary(cls, summary: dict) -> AcquireResult:
        run = summary.get("this_run", {})
        return cls(Path(summary["out_dir"]), summary["urls"], summary["images"], dict(summary["by_status"]),
                   dict(summary["by_label"]), run.get("processed", 0), run.get("seconds", 0.0), summary)


@dataclass(frozen=True)
class CurateResult:
    """What `curate` decided: images kept and removed (and why), the classes, the warnings it printed."""

    dataset_dir: Path
    images_in: int
    images_kept: int
    images_removed: int
    labels: tuple[str, ...]
    removed_by_reason: dict[str, int]
    class_balance: dict  # split -> label -> images
    warnings: list[str]
    report: dict = field(repr=False)  # everything report/summary.json holds

    @classmethod
    def from_report(cls, dataset_dir: Path, report: dict) -> CurateResult:
        return cls(Path(dataset_dir), report["images_in"], report["images_kept"], report["images_removed"],
                   tuple(report["labels"]), dict(report["removed_by_reason"]), report["class_balance"],
                   list(report.get("warnings", [])), report)


@dataclass(frozen=True)
class BenchRow:
    """One file as bench measured it (the Keras original is the first row); `extra` holds any other
    column bench wrote."""

    name: str
    format: str
    precision: str
    path: str
    status: str
    reason: str | None = None
    bytes: int | None = None
    zip_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    images: int = 0
    accuracy: float | None = None
    accuracy_drop_points: float | None = None
    top1_agreement: float | None = None
    flips: int | None = None
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    latency: dict = field(default_factory=dict)  # "<threads>" -> {"p50_ms", "p90_ms", ...}
    latency_note: str | None = None
    throughput: dict = field(default_factory=dict)
    memory: dict | None = None
    estimates: list = field(default_factory=list)
    recommended: list = field(default_factory=list)  # platforms it is recommended for
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, row: dict) -> BenchRow:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in row.items() if k in known},
                   extra={k: v for k, v in row.items() if k not in known})

    def p50_ms(self, threads: int = 1) -> float | None:
        """Median batch-1 latency at `threads` CPU threads (None: not timed here)."""
        return self.latency.get(str(threads), {}).get("p50_ms")


@dataclass
class BenchResults:
    """What `pocketml bench` measured: one row per file (the Keras original first) and the choice per platform."""

    out_dir: Path
    rows: list[BenchRow]
    recommendations: list[Recommendation]
    results: dict  # everything results.json holds: machine, libraries, config, peak GFLOP/s

    def row(self, name: str) -> BenchRow:
        return next(r for r in self.rows if r.name == name)

    def recommended(self, platform: str) -> str | None:
        return next((r.artifact for r in self.recommendations if r.platform == platform), None)


@dataclass(frozen=True)
class PackageResult:
    """The bundles `package` wrote: platform -> the file names each carries, the recommended one first."""

    out_dir: Path
    bundles: dict[str, list[str]]

    def files(self, platform: str) -> list[str]:
        return list(self.bundles.get(platform, []))

    def folder(self, platform: str) -> Path:
        return self.out_dir / platform
