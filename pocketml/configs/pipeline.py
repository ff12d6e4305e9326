"""The pipeline TOML: one run directory and one section per stage, each exactly that stage's config.

    run_dir = "runs/hotdog"      # optional; `pocketml run --run-dir` overrides it
    [acquire]  ... AcquireConfig  (pocketml/configs/acquire.py)
    [curate]   ... CurateConfig   (pocketml/configs/curate.py)
    [train]    ... TrainConfig    (pocketml/configs/train.py)
    [export]   ... ExportConfig   (pocketml/configs/export.py)
    [bench]    ... BenchConfig    (pocketml/configs/bench.py)

The whole file is validated before any stage runs (pocketml/app/pipeline.py load_pipeline_config,
which also checks each source's keys and each format name against its stage), so a typo in [bench]
is reported in the first second, not after an hour of downloading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pocketml.configs.acquire import AcquireConfig
from pocketml.configs.bench import BenchConfig
from pocketml.configs.curate import CurateConfig
from pocketml.configs.export import ExportConfig
from pocketml.configs.train import TrainConfig


@dataclass
class PipelineConfig:
    run_dir: Path = Path("runs/pipeline")  # where every stage writes (relative to the working directory)
    acquire: AcquireConfig = field(default_factory=AcquireConfig)  # sources, downloader, verification
    curate: CurateConfig = field(default_factory=CurateConfig)  # duplicates, quality flags, splits, report
    train: TrainConfig = field(default_factory=TrainConfig)  # backbone, image size, epochs
    export: ExportConfig = field(default_factory=ExportConfig)  # formats, precisions, validation
    bench: BenchConfig = field(default_factory=BenchConfig)  # latency, size, memory measurements, recommendation
