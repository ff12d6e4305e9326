"""`curate`: turn the acquired pool into the dataset training reads.

pool.csv -> decode + hash every image -> drop unreadable and quality-excluded images -> cluster
exact (pixel hash) and near (pHash) duplicates -> resolve label conflicts -> keep one image per
cluster -> group similar images -> leakage-free stratified splits -> manifest.csv, removed.csv,
report/. Nothing under the pool is modified or deleted; every image left out is a row of
removed.csv with its reason.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pocketml.acquisition import hashing, neardup, quality, report, splits
from pocketml.acquisition.image_facts import ImageFacts, baseline_pixels, collect_facts
from pocketml.acquisition.pool import POOL_COLUMNS, POOL_FILE, REQUIRED_POOL_COLUMNS

from pocketml.configs.curate import CurateConfig
from pocketml.console import err_console, print_table
from pocketml.dataset import DATASET_MANIFEST, MANIFEST_COLUMNS, SPLIT_ALIASES, SPLITS
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_text

REMOVED = "removed.csv"
REMOVED_COLUMNS = (
    "sha256",
    "path",
    "label",
    "source",
    "source_url",
    "reason",
    "duplicate_of",
    "distance",
    "detail",
)
REPORT_DIR = "report"
DUPLICATE_SHEET_CLUSTERS = 16  # clusters drawn on duplicates.png
DUPLICATE_SHEET_WIDTH = 8  # images per cluster row on duplicates.png


@dataclass
class Item:
    """One image under curation: where it is, what the pool says, what decoding found."""

    index: int
    path: Path  # absolute
    rel_path: str  # as written in the manifest (relative to the dataset dir)
    label: str
    predefined: str | None = None  # split given by the source, if any
    sha256: str = ""
    source: str = ""
    source_url: str = ""
    facts: ImageFacts | None = None


@dataclass
class Removal:
    item: Item
    reason: str  # unreadable | missing | quality | label_conflict | exact_duplicate | near_duplicate
    duplicate_of: Item | None = None
    distance: int | None = None
    detail: str = ""


@dataclass
class Analysis:
    """Duplicate structure of a set of readable items (indices into the list analysed)."""

    clusters: list[list[int]]  # near-duplicate clusters with 2+ members
    exact_pairs: list[tuple[int, int]]
    near_pairs: list[tuple[int, int, int]]  # (a, b, distance), distance <= near_distance, pixels differ
    similar_pairs: list[tuple[int, int, int]]  # within group_distance
    conflicts: list[list[int]] = field(default_factory=list)  # clusters carrying 2+ labels


@dataclass(frozen=True)
class Engine:
    """Where curation's two costly passes run; every engine gives the same facts and the same pairs."""

    facts: Callable[[Sequence[Path], CurateConfig, str], list[ImageFacts]]  # decode + hash, in order
    near_pairs: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]  # (i < j, distance)


LOCAL = Engine(collect_facts, neardup.near_pairs)  # worker processes and the multi-index search here


@contextmanager
def engine_for(config: CurateConfig) -> Iterator[Engine]:
    """LOCAL, or with executor = "ray" the Ray cluster's engine (acquisition/curate_ray.py), connected
    for the duration."""
    if config.executor != "ray":
        yield LOCAL
        return
    from pocketml.acquisition.curate_ray import ray_engine  # ray is imported only when chosen

    with ray_engine(config) as engine:
        yield engine


def analyse(items: Sequence[Item], config: CurateConfig, engine: Engine = LOCAL) -> Analysis:
    """Exact/near/similar pairs and near-duplicate clusters among readable items."""
    phashes = np.array([it.facts.phash for it in items], dtype=np.uint64)
    pi, pj, pd = engine.near_pairs(phashes, config.group_distance)
    exact, near, similar = [], [], []
    for a, b, d in zip(pi.tolist(), pj.tolist(), pd.tolist(), strict=True):
        similar.append((a, b, d))
        if items[a].facts.pixel_hash == items[b].facts.pixel_hash:
            exact.append((a, b))
        elif d <= config.near_distance and _dhash_agrees(items[a], items[b], config):
            near.append((a, b, d))
    close = [(a, b) for a, b in exact] + [(a, b) for a, b, _ in near]
    ids = neardup.connected_components(
        len(items), np.array([a for a, _ in close]), np.array([b for _, b in close])
    )
    groups: dict[int, list[int]] = defaultdict(list)
    for index, cid in enumerate(ids.tolist()):
        groups[cid].append(index)
    clusters = [members for members in groups.values() if len(members) > 1]
    conflicts = [c for c in clusters if len({items[i].label for i in c}) > 1]
    return Analysis(
        clusters=clusters, exact_pairs=exact, near_pairs=near, similar_pairs=similar, conflicts=conflicts
    )


def _dhash_agrees(a: Item, b: Item, config: CurateConfig) -> bool:
    if config.dhash_distance is None:
        return True
    return hashing.hamming(a.facts.dhash, b.facts.dhash) <= config.dhash_distance


def keeper(members: Sequence[Item]) -> Item:
    """The cluster member to keep: in the earliest predefined split, then largest, then stable order."""

    def rank(it: Item) -> tuple:
        split_rank = SPLITS.index(it.predefined) if it.predefined else len(SPLITS)
        return (split_rank, -(it.facts.width * it.facts.height), it.sha256, it.rel_path)

    return min(members, key=rank)


def read_pool(dataset_dir: Path) -> list[Item]:
    """Items of pool.csv; an optional `split` column carries a source's predefined split."""
    pool = dataset_dir / POOL_FILE
    if not pool.is_file():
        raise PocketMLError(
            f"{pool} not found; run `pocketml acquire` first or give a dataset dir containing {POOL_FILE}"
        )
    with open(pool, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(REQUIRED_POOL_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise PocketMLError(f"{pool} lacks columns {sorted(missing)}; expected {', '.join(POOL_COLUMNS)}")
        items = [_pool_item(k, row, dataset_dir, pool) for k, row in enumerate(reader)]
    if not items:
        raise PocketMLError(f"{pool} lists no images; acquisition stored nothing to curate")
    return items


def _pool_item(index: int, row: dict, dataset_dir: Path, pool: Path) -> Item:
    if not (row.get("label") or "").strip():
        raise PocketMLError(
            f"{pool} row {index + 2} ({row.get('path')}) has no label; every pooled image needs one"
        )
    split = (row.get("split") or "").strip().lower()
    if split and split not in SPLIT_ALIASES:
        raise PocketMLError(
            f"{pool} row {index + 2} has split {split!r}; accepted: {', '.join(SPLIT_ALIASES)}"
        )
    return Item(
        index=index,
        path=dataset_dir / row["path"],
        rel_path=row["path"],
        label=row["label"].strip(),
        predefined=SPLIT_ALIASES[split] if split else None,
        sha256=row.get("sha256") or "",
        source=row.get("source") or "",
        source_url=row.get("source_url") or "",
    )


def readable(
    items: Sequence[Item], config: CurateConfig, what: str, engine: Engine = LOCAL
) -> tuple[list[Item], list[Removal], list[str]]:
    """Decode and hash items; (readable ones, removals for missing/unreadable, warnings naming them)."""
    present = [it for it in items if it.path.is_file()]
    removals = [
        Removal(it, "missing", detail=f"{it.path} does not exist") for it in items if not it.path.is_file()
    ]
    for it, fact in zip(present, engine.facts([it.path for it in present], config, what), strict=True):
        it.facts = fact
        if fact.error:
            removals.append(Removal(it, "unreadable", detail=fact.error))
    warnings = []
    for reason in ("missing", "unreadable"):
        names = [r.item.rel_path for r in removals if r.reason == reason]
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            warnings.append(f"{len(names)} image(s) {reason}, left out: {shown}")
    return [it for it in present if not it.facts.error], removals, warnings


def require_two_labels(items: Sequence[Item], where: Path) -> None:
    labels = Counter(it.label for it in items)
    if not labels:
        raise PocketMLError(f"{where} has no readable images; see removed.csv for why each was left out")
    if len(labels) < 2:
        (only,) = labels
        raise PocketMLError(
            f"{where} has only one class ({only!r}, {labels[only]} images); a classifier needs at least two labels"
        )


def resolve_duplicates(
    items: list[Item], analysis: Analysis, config: CurateConfig
) -> tuple[list[Item], list[Removal]]:
    """Keep one image per near-duplicate cluster; resolve label conflicts by `config.conflict_policy`."""
    removed: list[Removal] = []
    gone: set[int] = set()
    for cluster in analysis.clusters:
        members = [items[i] for i in cluster]
        labels = Counter(it.label for it in members)
        if len(labels) > 1:
            winner = _conflict_winner(labels, config)
            detail = "cluster labels " + ", ".join(f"{lab} x{n}" for lab, n in sorted(labels.items()))
            for it in members:
                if it.label != winner:
                    removed.append(Removal(it, "label_conflict", detail=detail))
                    gone.add(it.index)
            members = [it for it in members if it.label == winner]
        if not members:
            continue
        keep = keeper(members)
        for it in members:
            if it is keep:
                continue
            exact = it.facts.pixel_hash == keep.facts.pixel_hash
            removed.append(
                Removal(
                    it,
                    "exact_duplicate" if exact else "near_duplicate",
                    duplicate_of=keep,
                    distance=hashing.hamming(it.facts.phash, keep.facts.phash),
                )
            )
            gone.add(it.index)
    return [it for it in items if it.index not in gone], removed


def _conflict_winner(labels: Counter, config: CurateConfig) -> str | None:
    """The label a conflicted cluster keeps: None under "drop" or when the majority is tied."""
    if config.conflict_policy == "drop":
        return None
    (top, n1), (_, n2) = labels.most_common(2)
    return top if n1 > n2 else None


def quality_filter(items: list[Item], config: CurateConfig) -> tuple[list[Item], list[Removal]]:
    kept, removed = [], []
    for it in items:
        bad = quality.excluded_by(it.facts.flags, config)
        if bad:
            removed.append(Removal(it, "quality", detail=";".join(bad)))
        else:
            kept.append(it)
    return kept, removed


def split_items(kept: list[Item], analysed: Sequence[Item], analysis: Analysis, config: CurateConfig) -> list[str]:
    """Split per kept item: similar images (within group_distance) share one. The similar pairs are
    the analysis's, found once over every analysed item: the pairs among the kept ones are exactly
    what a second search over the kept items would find."""
    position = {it.index: k for k, it in enumerate(kept)}
    pairs = [(position[analysed[a].index], position[analysed[b].index]) for a, b, _ in analysis.similar_pairs
             if analysed[a].index in position and analysed[b].index in position]
    groups = neardup.connected_components(
        len(kept), np.array([a for a, _ in pairs], dtype=np.int64), np.array([b for _, b in pairs], dtype=np.int64)
    )
    return splits.assign_splits(
        [it.label for it in kept],
        groups.tolist(),
        config.ratios,
        config.seed,
        [it.predefined for it in kept],
    )


def manifest_csv(items: Sequence[Item], item_splits: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for it, split in zip(items, item_splits, strict=True):
        writer.writerow(
            {
                "sha256": it.sha256,
                "path": it.rel_path,
                "label": it.label,
                "split": split,
                "source": it.source,
                "source_url": it.source_url,
                "width": it.facts.width,
                "height": it.facts.height,
                "pixel_hash": it.facts.pixel_hash,
                "phash": hashing.to_hex(it.facts.phash),
                "flags": ";".join(it.facts.flags),
            }
        )
    return buffer.getvalue()


def removed_csv(removals: Sequence[Removal]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, REMOVED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in removals:
        writer.writerow(
            {
                "sha256": r.item.sha256,
                "path": r.item.rel_path,
                "label": r.item.label,
                "source": r.item.source,
                "source_url": r.item.source_url,
                "reason": r.reason,
                "duplicate_of": (r.duplicate_of.sha256 or r.duplicate_of.rel_path) if r.duplicate_of else "",
                "distance": "" if r.distance is None else r.distance,
                "detail": r.detail,
            }
        )
    return buffer.getvalue()


def duplicate_sheet(
    items: Sequence[Item], analysis: Analysis, removals: Sequence[Removal], thumb: int
) -> bytes:
    """Contact sheet of the largest duplicate clusters: kept image framed green, removed ones red."""
    removed_ids = {r.item.index for r in removals}
    rows = []
    for cluster in sorted(analysis.clusters, key=lambda c: (-len(c), c[0]))[:DUPLICATE_SHEET_CLUSTERS]:
        members = [items[i] for i in cluster][:DUPLICATE_SHEET_WIDTH]
        rows.append(
            [
                report.Tile(
                    it.path,
                    f"{it.label} {it.facts.width}x{it.facts.height}",
                    report.REMOVED_COLOUR if it.index in removed_ids else report.KEPT_COLOUR,
                )
                for it in members
            ]
        )
    return report.contact_sheet(rows, thumb)


def duplicate_summary(items: Sequence[Item], analysis: Analysis, config: CurateConfig) -> dict:
    return {
        "near_distance": config.near_distance,
        "group_distance": config.group_distance,
        "exact_pairs": len(analysis.exact_pairs),
        "near_pairs": len(analysis.near_pairs),
        "similar_pairs": len(analysis.similar_pairs),
        "clusters": len(analysis.clusters),
        "largest_cluster": max((len(c) for c in analysis.clusters), default=1),
    }


def conflict_rows(items: Sequence[Item], analysis: Analysis) -> list[dict]:
    return [
        {"labels": sorted({items[i].label for i in c}), "paths": [items[i].rel_path for i in c]}
        for c in analysis.conflicts
    ]


def split_warnings(kept: Sequence[Item], item_splits: list[str], ratios: tuple[float, float, float]) -> list[str]:
    """Classes missing from a split; when the source's own splits have no test split, that alone
    (said once, plainly) rather than 'too few groups' for every class."""
    given_only = bool(kept) and all(it.predefined for it in kept)
    if given_only and "test" not in item_splits and ratios[2] > 0:
        present = sorted(set(item_splits), key=SPLITS.index)
        return [f"the source's own splits ({'/'.join(present)}) have no test split and curate keeps them: val "
                "both picks the best epoch and judges every export, so the verdicts rest on the validation "
                "split; add a test/ folder for an independent verdict"]
    return splits.empty_classes([it.label for it in kept], item_splits, ratios)


def predefined_leakage(items: Sequence[Item], analysis: Analysis) -> dict:
    """Leaks between the source's own splits, before curation fixes them (empty when none are given)."""
    given = [it.predefined for it in items]
    if not any(given):
        return {}
    leak = splits.leakage(given, analysis.exact_pairs, [(a, b) for a, b, _ in analysis.near_pairs])
    sizes = Counter(s for s in given if s)
    out = leak.as_dict(dict(sizes))
    # Looser than near duplicates but still suspicious: burst shots of one scene on both sides.
    similar = splits.leakage(given, [], [(a, b) for a, b, _ in analysis.similar_pairs])
    for split, row in out.items():
        row["similar_leaks"] = max(0, similar.near.get(split, 0) - row["exact_leaks"] - row["near_leaks"])
    return out


def curate(dataset_dir: Path, config: CurateConfig) -> dict:
    """Curate `dataset_dir/pool.csv` into `manifest.csv`, `removed.csv` and `report/`; return the report."""
    dataset_dir = Path(dataset_dir)
    pool = read_pool(dataset_dir)
    with engine_for(config) as engine:
        decoded, removals, warnings = readable(pool, config, "curating: hashing images", engine)
        require_two_labels(decoded, dataset_dir / POOL_FILE)
        items, quality_removed = quality_filter(decoded, config)
        removals += quality_removed
        require_two_labels(items, dataset_dir / POOL_FILE)
        analysis = analyse(items, config, engine)
    kept, dup_removed = resolve_duplicates(items, analysis, config)
    removals += dup_removed
    require_two_labels(kept, dataset_dir / POOL_FILE)
    item_splits = split_items(kept, items, analysis, config)
    warnings += split_warnings(kept, item_splits, config.ratios)
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    summary = build_report(
        dataset_dir.name, pool, kept, item_splits, removals, decoded, items, analysis, config, warnings
    )
    moved = sum(1 for it, s in zip(kept, item_splits, strict=True) if it.predefined and it.predefined != s)
    summary["moved_between_predefined_splits"] = moved
    sheets = _sheets(kept, item_splits, items, analysis, removals, config)
    atomic_write_text(dataset_dir / REMOVED, removed_csv(removals))
    summary = report.write_report(dataset_dir / REPORT_DIR, summary, sheets)
    # The manifest goes last: its presence means the dataset is complete.
    atomic_write_text(dataset_dir / DATASET_MANIFEST, manifest_csv(kept, item_splits))
    print_summary("curate", summary)
    return summary


def build_report(
    name: str,
    pool: Sequence[Item],
    kept: Sequence[Item],
    item_splits: Sequence[str],
    removals: Sequence[Removal],
    decoded: Sequence[Item],
    analysed: Sequence[Item],
    analysis: Analysis,
    config: CurateConfig,
    warnings: list[str],
) -> dict:
    """The report dict: `decoded` are all readable images (quality is summarised over them),
    `analysed` the ones the duplicate `analysis` indexes into, `kept` what the manifest lists."""
    labels = [it.label for it in kept]
    every = sorted(set(labels))
    train_labels = [lab for lab, s in zip(labels, item_splits, strict=True) if s == "train"]
    pixels = baseline_pixels([it.facts for it in kept], config.baseline_size)
    return {
        "dataset": name,
        "images_in": len(pool),
        "images_kept": len(kept),
        "images_removed": len(removals),
        "labels": every,
        "class_balance": report.class_balance(labels, item_splits),
        "class_weights": report.class_weights(train_labels, every),
        "removed_by_reason": dict(Counter(r.reason for r in removals).most_common()),
        "duplicates": duplicate_summary(analysed, analysis, config),
        "label_conflicts": conflict_rows(analysed, analysis),
        "leakage": predefined_leakage(analysed, analysis),
        "quality_flags": dict(Counter(f for it in decoded for f in it.facts.flags).most_common()),
        "quality_measures": measure_spread(decoded),
        "baseline": report.sanity_baseline(pixels, labels, item_splits, config.seed),
        "warnings": warnings,
        "config": {
            "seed": config.seed,
            "ratios": list(config.ratios),
            "near_distance": config.near_distance,
            "group_distance": config.group_distance,
            "dhash_distance": config.dhash_distance,
            "conflict_policy": config.conflict_policy,
            "exclude_flags": list(config.exclude_flags),
        },
    }


def measure_spread(items: Sequence[Item]) -> dict:
    """5th/50th/95th percentiles of each quality measure: what a threshold would cut."""
    if not items:
        return {}
    names = items[0].facts.measures.keys()
    return {
        name: dict(
            zip(
                ("p5", "p50", "p95"),
                np.percentile([it.facts.measures[name] for it in items], [5, 50, 95]).round(2).tolist(),
                strict=True,
            )
        )
        for name in names
    }


def _sheets(kept, item_splits, analysed, analysis, removals, config) -> dict[str, bytes]:
    sheets = class_sheet_pngs(kept, item_splits, config)
    sheets["duplicates.png"] = duplicate_sheet(analysed, analysis, removals, config.contact_sheet_thumb)
    return sheets


def class_sheet_pngs(
    items: Sequence[Item], item_splits: Sequence[str], config: CurateConfig
) -> dict[str, bytes]:
    """{file name: PNG} of each class's contact sheet, thumbnails captioned with split and flags."""
    captions = [f"{s} {';'.join(it.facts.flags)}".strip() for it, s in zip(items, item_splits, strict=True)]
    pngs = report.class_sheets(
        [it.path for it in items],
        [it.label for it in items],
        captions,
        config.contact_sheet_max,
        config.contact_sheet_thumb,
    )
    return {report.sheet_name(label): png for label, png in pngs.items()}


def print_summary(command: str, summary: dict) -> None:
    rows = [
        (split, *counts.values(), sum(counts.values())) for split, counts in summary["class_balance"].items()
    ]
    print_table(f"{command}: class balance", ["split", *summary["labels"], "total"], rows)
    removed = summary.get("removed_by_reason") or {}
    base = summary.get("baseline") or {}
    print_table(
        f"{command}: summary",
        ["images in", "kept", *removed.keys(), "clusters", "baseline acc", "majority rate"],
        [
            (
                summary["images_in"],
                summary["images_kept"],
                *removed.values(),
                summary["duplicates"]["clusters"],
                base.get("accuracy"),
                base.get("majority_rate"),
            )
        ],
    )
