"""The dataset report a user can look at: balance, weights, losses, contact sheets, card, baseline.

`write_report` writes `report.json`, `card.md`, one `contact_<label>.png` per class and
`duplicates.png` into a report directory, all atomically, and returns the report dict.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from pocketml.dataset import SPLITS, to_rgb
from pocketml.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

KEPT_COLOUR = (40, 160, 60)  # border of the image a duplicate cluster keeps
REMOVED_COLOUR = (200, 40, 40)  # border of the copies it removes
CAPTION_HEIGHT = 14  # pixels under each thumbnail for its caption
MESSAGE_FONT_PX = 14  # text of a sheet that has no pictures


def class_balance(labels: Sequence[str], splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """{split: {label: count}} over every label, zeros included, splits in train/val/test order
    (then any other name, such as "all" for an unsplit folder)."""
    every = sorted(set(labels))
    counts = Counter(zip(splits, labels, strict=True))
    present = set(splits)
    order = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    return {s: {lab: counts[(s, lab)] for lab in every} for s in order}


def class_weights(train_labels: Sequence[str], every_label: Sequence[str]) -> dict[str, float]:
    """Balanced class weights n / (k * n_c) over the training split (what training passes to Keras).

    A class missing from train gets weight 0: there is nothing to weight.
    """
    counts = Counter(train_labels)
    n, k = len(train_labels), len(every_label)
    return {lab: round(n / (k * counts[lab]), 6) if counts[lab] else 0.0 for lab in sorted(every_label)}


def sanity_baseline(
    pixels: np.ndarray, labels: Sequence[str], splits: Sequence[str], seed: int = 0
) -> dict[str, object]:
    """Logistic regression on downsampled pixels vs always answering the majority class.

    Evaluated on test (else val); with neither, by 5-fold cross-validation on everything. If the
    regression does not beat the majority rate, the labels may carry little that pixels show.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
    y = np.asarray(labels)
    split_arr = np.asarray(splits)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.1, random_state=seed))
    eval_split = next((s for s in ("test", "val") if (split_arr == s).any()), None)
    train_mask = split_arr == "train"
    if eval_split and len(set(y[train_mask])) >= 2:
        test_mask = split_arr == eval_split
        model.fit(x[train_mask], y[train_mask])
        predicted, truth = model.predict(x[test_mask]), y[test_mask]
        majority = Counter(y[train_mask].tolist()).most_common(1)[0][0]
        how = f"trained on train ({int(train_mask.sum())}), scored on {eval_split} ({int(test_mask.sum())})"
    else:
        folds = min(5, min(Counter(y.tolist()).values()))
        if folds < 2:
            return {"skipped": "a class has fewer than 2 images; nothing to cross-validate"}
        predicted = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
        truth, majority = y, Counter(y.tolist()).most_common(1)[0][0]
        how = f"{folds}-fold cross-validation over {len(y)} images"
    accuracy = float((predicted == truth).mean())
    majority_rate = float((truth == majority).mean())
    return {
        "method": f"logistic regression on {pixels.shape[1]}x{pixels.shape[2]} RGB pixels; {how}",
        "accuracy": round(accuracy, 4),
        "majority_class": str(majority),
        "majority_rate": round(majority_rate, 4),
        "lift": round(accuracy - majority_rate, 4),
    }


@dataclass(frozen=True)
class Tile:
    path: Path
    caption: str
    border: tuple[int, int, int] | None = None


def contact_sheet(rows: Sequence[Sequence[Tile]], thumb: int) -> bytes:
    """PNG bytes of a grid: one row per sequence of tiles, each a square thumbnail with a caption."""
    if not rows:
        return _message_png("no duplicate clusters found", thumb)
    columns = max((len(r) for r in rows), default=1)
    cell_w, cell_h = thumb + 4, thumb + 4 + CAPTION_HEIGHT
    sheet = Image.new("RGB", (max(1, columns) * cell_w, max(1, len(rows)) * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            x, y = c * cell_w, r * cell_h
            if tile.border:
                draw.rectangle((x, y, x + thumb + 3, y + thumb + 3), fill=tile.border)
            sheet.paste(_thumbnail(tile.path, thumb), (x + 2, y + 2))
            draw.text((x + 2, y + thumb + 4), tile.caption[: thumb // 6], fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _message_png(text: str, thumb: int) -> bytes:
    """A small PNG that says why a sheet has no pictures, rather than a blank one."""
    sheet = Image.new("RGB", (max(240, thumb * 3), thumb // 2 + 10), (255, 255, 255))
    # The scalable default font: the bitmap one leaves spaces hardly wider than letter gaps ("noduplicate").
    ImageDraw.Draw(sheet).text((8, 8), text, fill=(0, 0, 0), font=ImageFont.load_default(size=MESSAGE_FONT_PX))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _thumbnail(path: Path, side: int) -> Image.Image:
    """Square, centre-cropped thumbnail; a grey square when the file cannot be read."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (side * 2, side * 2))
            return ImageOps.fit(to_rgb(ImageOps.exif_transpose(img)), (side, side))
    except OSError:
        return Image.new("RGB", (side, side), (128, 128, 128))


def class_sheets(
    paths: Sequence[Path], labels: Sequence[str], captions: Sequence[str], per_class: int, thumb: int
) -> dict[str, bytes]:
    """{label: PNG} with up to `per_class` images of each class, 8 a row, spread evenly over the class
    (so every split shows up, not just the first folder)."""
    out = {}
    for label in sorted(set(labels)):
        tiles = [Tile(p, c) for p, lab, c in zip(paths, labels, captions, strict=True) if lab == label]
        picked = np.unique(np.linspace(0, len(tiles) - 1, min(per_class, len(tiles))).round().astype(int))
        tiles = [tiles[k] for k in picked]
        out[label] = contact_sheet([tiles[k : k + 8] for k in range(0, len(tiles), 8)], thumb)
    return out


def card_markdown(report: dict) -> str:
    """The dataset card: what is in the dataset, what was removed and why, and what to watch for."""
    lines = [f"# Dataset card: {report['dataset']}", ""]
    lines += [
        f"{report['images_kept']} images kept of {report['images_in']} ({report['images_removed']} removed).",
        "",
    ]
    lines += ["## Class balance", "", "| split | " + " | ".join(report["labels"]) + " | total |"]
    lines += ["|---" * (len(report["labels"]) + 2) + "|"]
    for split, counts in report["class_balance"].items():
        row = [str(counts.get(lab, 0)) for lab in report["labels"]]
        lines.append(f"| {split} | " + " | ".join(row) + f" | {sum(counts.values())} |")
    weights = ", ".join(f"{k}: {v}" for k, v in report["class_weights"].items())
    lines += ["", f"Class weights for training (balanced, n / (k * n_c) on train): {weights}", ""]
    lines += ["## Removed", ""]
    removed = report.get("removed_by_reason") or {}
    lines += [f"- {reason}: {count}" for reason, count in removed.items()] or ["- nothing"]
    lines += ["", "## Duplicates and leakage", ""]
    dup = report["duplicates"]
    lines.append(
        f"- {dup['exact_pairs']} exact pairs (same decoded pixels), {dup['near_pairs']} near pairs "
        f"(pHash within {dup['near_distance']} bits), {dup['clusters']} clusters of 2 or more"
    )
    lines.append(f"- label conflicts (one image under two labels): {len(report['label_conflicts'])}")
    for split, leak in (report.get("leakage") or {}).items():
        lines.append(
            f"- {split}: {leak['exact_leaks']} exact and {leak['near_leaks']} near copies of earlier-split images "
            f"out of {leak['images']} ({leak['leak_fraction']:.1%}); {leak.get('similar_leaks', 0)} more within "
            f"{dup['group_distance']} bits"
        )
    lines += ["", "## Quality flags", ""]
    lines += [f"- {flag}: {count}" for flag, count in report["quality_flags"].items()] or ["- none"]
    lines += ["", "## Sanity baseline", ""]
    base = report.get("baseline") or {}
    if "accuracy" in base:
        lines.append(
            f"{base['method']}: accuracy {base['accuracy']:.3f} vs majority class "
            f"({base['majority_class']}) {base['majority_rate']:.3f}, lift {base['lift']:+.3f}."
        )
        if base["lift"] <= 0.05:
            lines.append(
                "\nRaw pixels do not separate these classes: expect the learning to come from the pretrained "
                "backbone, and look at the labels if fine-tuning does not beat this either."
            )
    else:
        lines.append(f"skipped: {base.get('skipped', 'not run')}")
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "## Files", ""] + [f"- `{name}`" for name in report["files"]]
    return "\n".join(lines) + "\n"


def write_report(out_dir: Path, report: dict, sheets: dict[str, bytes]) -> dict:
    """Write sheets (name -> PNG bytes), report.json and card.md into out_dir; return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in sheets.items():
        atomic_write_bytes(out_dir / name, png)
    report["files"] = sorted([*sheets, "report.json", "card.md"])
    atomic_write_text(out_dir / "card.md", card_markdown(report))
    atomic_write_json(out_dir / "report.json", report)
    return report


def sheet_name(label: str) -> str:
    """File name of a class's contact sheet; labels are folder names, but keep it filesystem-safe."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    return f"contact_{safe}.png"
