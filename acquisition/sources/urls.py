"""URL lists: text (one URL a line), CSV/TSV with url and label columns, or the ImageNet fall11
list (`<wnid>_<n>\\t<url>`); plain, .gz or .tgz/.tar.gz; read as a stream, so a 13M-line list
never sits in memory.
"""

from __future__ import annotations

import csv
import gzip
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pocketml.acquisition.sources.base import Source, SourceItem

from pocketml.errors import PocketMLError

NAME = "urls"


@dataclass
class UrlsConfig:
    path: str = ""  # the list file (plain, .gz, .tgz/.tar.gz); required
    format: Literal["auto", "text", "csv", "tsv", "fall11"] = "auto"  # auto: from the name and first line
    label: str = ""  # label for every item of a text list; for fall11, overrides the wnid as label
    url_column: str = "url"  # CSV/TSV column holding the URL
    label_column: str = "label"  # CSV/TSV column holding the label (empty cells fall back to `label`)
    wnids: list[str] = field(default_factory=list)  # fall11 only: keep these synsets (empty keeps all)
    limit: int = 0  # stop after this many items (0 = all)


CONFIG = UrlsConfig


class UrlListSource:
    name = NAME

    def __init__(self, config: UrlsConfig):
        if not config.path:
            raise PocketMLError("[source(urls)] needs `path`: a text, CSV/TSV or fall11 URL list (.gz/.tgz accepted)")
        self.config = config
        self.path = Path(config.path).expanduser()
        if not self.path.is_file():
            raise PocketMLError(f"[source(urls)] path {self.path} does not exist")

    def items(self) -> Iterator[SourceItem]:
        count = 0
        for lines in _text_streams(self.path):
            for item in self._parse(lines):
                yield item
                count += 1
                if self.config.limit and count >= self.config.limit:
                    return

    def _parse(self, lines: Iterator[str]) -> Iterator[SourceItem]:
        first = next(lines, None)
        if first is None:
            return
        fmt = self.config.format if self.config.format != "auto" else detect_format(self.path.name, first)
        lines = _chain(first, lines)
        if fmt == "text":
            yield from self._text(lines)
        elif fmt == "fall11":
            yield from self._fall11(lines)
        else:
            yield from self._table(lines, "\t" if fmt == "tsv" else ",")

    def _text(self, lines: Iterator[str]) -> Iterator[SourceItem]:
        label = self.config.label or "unlabelled"
        for line in lines:
            url = line.strip()
            if url and not url.startswith("#"):
                yield SourceItem(url, label, NAME)

    def _fall11(self, lines: Iterator[str]) -> Iterator[SourceItem]:
        wanted = set(self.config.wnids)
        for line in lines:
            name, _, url = line.rstrip("\r\n").partition("\t")
            wnid = name.split("_", 1)[0]
            if url.strip() and (not wanted or wnid in wanted):
                yield SourceItem(url.strip(), self.config.label or wnid, NAME)

    def _table(self, lines: Iterator[str], delimiter: str) -> Iterator[SourceItem]:
        reader = csv.DictReader(lines, delimiter=delimiter)
        columns = reader.fieldnames or []
        if self.config.url_column not in columns:
            raise PocketMLError(f"{self.path} has no {self.config.url_column!r} column; columns are {columns}")
        for row in reader:
            url = (row.get(self.config.url_column) or "").strip()
            label = (row.get(self.config.label_column) or "").strip() or self.config.label or "unlabelled"
            if url:
                yield SourceItem(url, label, NAME)


def detect_format(name: str, first_line: str) -> str:
    lowered = name.lower()
    stem = lowered.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
    head, _, tail = first_line.partition("\t")
    if tail.strip().startswith(("http://", "https://")) and "_" in head and head.startswith("n"):
        return "fall11"
    if stem.endswith(".tsv") or "\t" in first_line:
        return "tsv"
    if stem.endswith(".csv") or ("," in first_line and not first_line.strip().startswith(("http://", "https://"))):
        return "csv"
    return "text"


def _text_streams(path: Path) -> Iterator[Iterator[str]]:
    """Line streams of the list: one for a plain/.gz file, one per member of a .tgz."""
    lowered = path.name.lower()
    if lowered.endswith((".tgz", ".tar.gz", ".tar")):
        with tarfile.open(path, "r|*") as tar:  # stream mode: members are read in order, never all at once
            for member in tar:
                if member.isfile():
                    raw = tar.extractfile(member)
                    if raw is not None:
                        # TextIOWrapper would ask the stream-mode member whether it can seek (it cannot).
                        yield (line.decode("utf-8", errors="replace") for line in raw)
        return
    opener = gzip.open if lowered.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        yield fh


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def make_source(config: UrlsConfig) -> Source:
    return UrlListSource(config)
