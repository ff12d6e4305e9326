"""The pipeline TOML: one run directory and one section per stage, each exactly that stage's config.

    run_dir = "runs/hotdog"      # optional; `pocketml run --run-dir` overrides it
    [acquire]  ... AcquireConfig  (pocketml/configs/acquire.py)
    [curate]   ... CurateConfig   (pocketml/configs/curate.py)
    [train]    ... TrainConfig    (pocketml/configs/train.py)
    [export]   ... ExportConfig   (pocketml/configs/export.py)
    [bench]    ... BenchConfig    (pocketml/configs/bench.py)

The whole file is validated before any stage runs, so a typo in [bench] is reported in the first
second, not after an hour of downloading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pocketml.config import from_mapping, load_toml
from pocketml.configs.acquire import AcquireConfig
from pocketml.configs.bench import BenchConfig
from pocketml.configs.curate import CurateConfig
from pocketml.configs.export import ExportConfig
from pocketml.configs.train import TrainConfig
from pocketml.errors import PocketMLError


@dataclass
class PipelineConfig:
    run_dir: Path = Path("runs/pipeline")  # where every stage writes (relative to the working directory)
    acquire: AcquireConfig = field(default_factory=AcquireConfig)  # sources, downloader, verification
    curate: CurateConfig = field(default_factory=CurateConfig)  # duplicates, quality flags, splits, report
    train: TrainConfig = field(default_factory=TrainConfig)  # backbone, image size, epochs
    export: ExportConfig = field(default_factory=ExportConfig)  # formats, precisions, validation
    bench: BenchConfig = field(default_factory=BenchConfig)  # latency, accuracy, size measurements


def pipeline_config_from_mapping(data: dict, where: str = "") -> PipelineConfig:
    """A validated PipelineConfig, the acquisition sources' own keys included."""
    config = from_mapping(PipelineConfig, data, where)
    validate_sources(config.acquire)
    return config


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """The pipeline TOML at `path`, validated; errors name the file, the key, the value and what is accepted."""
    data = load_toml(path)
    try:
        return pipeline_config_from_mapping(data)
    except PocketMLError as exc:
        raise PocketMLError(f"{path}: {exc}") from exc


def validate_sources(acquire: AcquireConfig) -> None:
    """Check each [[acquire.sources]] table against its source module's CONFIG before anything runs."""
    from acquisition.sources import SOURCE_MODULES, source_module

    if not acquire.sources:
        raise PocketMLError(f"[acquire] has no sources; add at least one [[acquire.sources]] table with "
                            f"type = {' | '.join(SOURCE_MODULES)}")
    for i, table in enumerate(acquire.sources):
        where = f"acquire.sources[{i}]"
        if "type" not in table:
            raise PocketMLError(f"[{where}] has no `type`; accepted types: {', '.join(SOURCE_MODULES)}")
        module = source_module(table["type"])
        # Only the keys are checked here; the source itself (files, fonts, network) is built by acquire.
        from_mapping(module.CONFIG, {k: v for k, v in table.items() if k != "type"}, f"{where}({table['type']})")
