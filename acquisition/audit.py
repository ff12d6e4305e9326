"""`audit`: curation's checks, read-only, on a dataset someone already has (an ImageFolder).

Reports exact and near duplicates, label conflicts, leakage between the folder's own train/val/test
splits (how many evaluation images have a copy in an earlier split: the notMNIST lesson), quality
flags, class balance and a sanity baseline. Writes only into `out_dir`; the folder is never touched.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pocketml.acquisition import report
from pocketml.acquisition.curate import (
    Item,
    analyse,
    build_report,
    class_sheet_pngs,
    conflict_rows,
    duplicate_sheet,
    engine_for,
    print_summary,
    readable,
    require_two_labels,
    resolve_duplicates,
)

from pocketml.configs.curate import CurateConfig
from pocketml.console import err_console, print_table
from pocketml.dataset import read_records
from pocketml.errors import PocketMLError

UNSPLIT = "all"  # split name shown for a folder without train/val/test sub-folders


def folder_items(imagefolder: Path) -> list[Item]:
    """Labelled items of an ImageFolder, with its own splits as predefined."""
    records = read_records(imagefolder)
    unlabelled = [r.path for r in records if r.label is None]
    if unlabelled:
        raise PocketMLError(
            f"{imagefolder} has images outside class folders (e.g. {unlabelled[0].name}); "
            "audit needs ROOT/[split/]label/image files"
        )
    return [
        Item(
            index=k,
            path=r.path,
            rel_path=r.path.relative_to(imagefolder).as_posix(),
            label=r.label or "",
            predefined=r.split,
            source="folder",
            source_url=str(r.path),
        )
        for k, r in enumerate(records)
    ]


def audit(imagefolder: Path, out_dir: Path, config: CurateConfig | None = None) -> dict:
    """Audit an ImageFolder read-only; write report.json, card.md and contact sheets to out_dir."""
    imagefolder, out_dir = Path(imagefolder).resolve(), Path(out_dir).resolve()
    if out_dir == imagefolder or imagefolder in out_dir.parents:
        raise PocketMLError(
            f"--out {out_dir} is inside {imagefolder}; audit never writes into the folder it audits"
        )
    config = config or CurateConfig()
    every = folder_items(imagefolder)
    with engine_for(config) as engine:
        items, unreadable, warnings = readable(every, config, "auditing: hashing images", engine)
        require_two_labels(items, imagefolder)
        analysis = analyse(items, config, engine)
    # What curate would drop, for the report only: nothing is removed here.
    _, would_remove = resolve_duplicates(list(items), analysis, config)
    item_splits = [it.predefined or UNSPLIT for it in items]
    for warning in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    summary = build_report(
        imagefolder.name, every, items, item_splits, unreadable, items, items, analysis, config, warnings
    )
    summary["mode"] = "audit (read-only)"
    summary["would_remove_by_reason"] = dict(Counter(r.reason for r in would_remove).most_common())
    summary["leak_examples"] = leak_examples(items, analysis)
    summary["label_conflicts"] = conflict_rows(items, analysis)
    sheets = class_sheet_pngs(items, item_splits, config)
    sheets["duplicates.png"] = duplicate_sheet(items, analysis, would_remove, config.contact_sheet_thumb)
    summary = report.write_report(out_dir, summary, sheets)
    print_summary("audit", summary)
    leak_rows = [
        (s, v["images"], v["exact_leaks"], v["near_leaks"], v["leak_fraction"])
        for s, v in summary["leakage"].items()
    ]
    if leak_rows:
        print_table(
            "audit: leakage into later splits", ["split", "images", "exact", "near", "fraction"], leak_rows
        )
    return summary


def leak_examples(items: list[Item], analysis, limit: int = 20) -> list[dict]:
    """A few concrete cross-split copies, so a user can look at them."""
    out = []
    pairs = [(a, b, "exact", 0) for a, b in analysis.exact_pairs] + [
        (a, b, "near", d) for a, b, d in analysis.near_pairs
    ]
    for a, b, kind, distance in pairs:
        sa, sb = items[a].predefined, items[b].predefined
        if sa and sb and sa != sb:
            out.append({"kind": kind, "distance": distance, "a": items[a].rel_path, "b": items[b].rel_path})
        if len(out) >= limit:
            break
    return out
