"""Image sources, one module each. A source turns its config into a stream of SourceItems.

A source table in TOML names its `type`; the rest of its keys are validated by that module's
`CONFIG` dataclass, and the module's `make_source(config)` builds the Source. A new source is
one new module plus one line in SOURCE_MODULES.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pocketml.acquisition.sources.base import Source, SourceItem

from pocketml.config import from_mapping
from pocketml.errors import PocketMLError

SOURCE_MODULES = {
    "urls": "pocketml.acquisition.sources.urls",
    "imagenet": "pocketml.acquisition.sources.imagenet",
    "openimages": "pocketml.acquisition.sources.openimages",
    "search": "pocketml.acquisition.sources.search",
    "folder": "pocketml.acquisition.sources.folder",
    "glyphs": "pocketml.acquisition.sources.glyphs",
}

__all__ = ["SOURCE_MODULES", "Source", "SourceItem", "check_sources", "make_source", "source_config", "source_module"]


def source_module(type_name: str) -> ModuleType:
    if type_name not in SOURCE_MODULES:
        raise PocketMLError(f"unknown source type {type_name!r}; accepted types: {', '.join(SOURCE_MODULES)}")
    return importlib.import_module(SOURCE_MODULES[type_name])


def source_config(table: dict, where: str = "source") -> tuple[ModuleType, object]:
    """A source table's module and its validated CONFIG (keys only: nothing is opened or fetched)."""
    if not isinstance(table, dict):
        raise PocketMLError(f"[{where}] must be a table with a `type` key, got {type(table).__name__}")
    if "type" not in table:
        raise PocketMLError(f"[{where}] has no `type`; accepted types: {', '.join(SOURCE_MODULES)}")
    module = source_module(table["type"])
    keys = {k: v for k, v in table.items() if k != "type"}
    return module, from_mapping(module.CONFIG, keys, f"{where}({table['type']})")


def check_sources(tables: list[dict]) -> None:
    """Every [[acquire.sources]] table checked against its source's CONFIG before anything runs."""
    if not tables:
        raise PocketMLError(f"[acquire] has no sources; add at least one [[acquire.sources]] table with "
                            f"type = {' | '.join(SOURCE_MODULES)}")
    for i, table in enumerate(tables):
        source_config(table, f"acquire.sources[{i}]")


def make_source(table: dict, where: str = "source") -> Source:
    """A Source from a TOML table with `type` plus that source's keys (validated by its CONFIG)."""
    module, config = source_config(table, where)
    return module.make_source(config)
