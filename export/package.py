"""`pocketml package`: the app bundles, assembled from an export directory (and bench's recommendation)
into a directory of their own — what an iOS, Android or ONNX Runtime developer copies into a project.

BUNDLES_DIR/<platform>/ holds the files of that platform's format whose verdict passed, the
recommended one first; labels.txt where the format cannot carry its labels; bundle.json (the manifest
excerpt: spec, and per file its sha256, size and verdict); README.md with the table and a usage
snippet of the recommended file. Files are hard links to the export's when the filesystem allows
(exported files are never modified in place), copies otherwise. The whole directory is replaced at
once, so a kill leaves the previous bundles or the new ones, never a mix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pocketml.export import web_bundle
from pocketml.export.registry import (
    format_module,
    os_floor,
    platform_formats,
    platform_min_os,
    platform_title,
)

from pocketml.artifact import (
    EXPORTED,
    TOO_FEW,
    Artifact,
    ExportManifest,
    Recommendation,
    load_recommendations,
)
from pocketml.console import console, print_table
from pocketml.fsutil import atomic_output, atomic_write_json, atomic_write_text
from pocketml.spec import LABELS_FILE, write_labels

README = "README.md"
BUNDLE_MANIFEST = "bundle.json"


def recommendations_by_platform(bench_dir: str | Path | None) -> dict[str, list[Recommendation]]:
    """platform -> bench's recommendations that name a file (iOS: one per OS tier)."""
    if bench_dir is None:
        return {}
    chosen: dict[str, list[Recommendation]] = {}
    for rec in load_recommendations(bench_dir):
        if rec.artifact:
            chosen.setdefault(rec.platform, []).append(rec)
    return chosen


def bundle_artifacts(manifest: ExportManifest, recommendations: dict[str, list[Recommendation]]
                     ) -> dict[str, list[Artifact]]:
    """platform -> the export's files of the formats it takes: those the formats declare, and for a
    platform only bench named (one a device stands for) the formats of the files it recommended."""
    formats = dict(platform_formats())
    for platform, recs in recommendations.items():
        named = tuple(dict.fromkeys(a.format for r in recs for a in manifest.artifacts if a.name == r.artifact))
        formats[platform] = (*formats.get(platform, ()), *(f for f in named if f not in formats.get(platform, ())))
    chosen = {p: [a for a in manifest.artifacts if a.format in fmts] for p, fmts in formats.items()}
    return {p: artifacts for p, artifacts in chosen.items() if artifacts}


def ranked(recommendations: list[Recommendation], artifacts: list[Artifact], platform: str,
           min_os: int) -> list[Recommendation]:
    """The recommendations for the app's minimum OS first: the file of the newest tier that
    `min_os` reaches (min iOS 27: Core AI; min iOS 16: Core ML), then the others, oldest tier first."""
    formats = {a.name: a.format for a in artifacts}
    floor = {r.artifact: os_floor(formats[r.artifact], platform) for r in recommendations if r.artifact in formats}
    known = [r for r in recommendations if r.artifact in floor]
    reached = [r for r in known if floor[r.artifact] <= min_os]
    first = max(reached, key=lambda r: floor[r.artifact], default=None)
    return ([first] if first else []) + sorted((r for r in known if r is not first), key=lambda r: floor[r.artifact])


def shipped(artifacts: list[Artifact], recommended: list[str]) -> list[Artifact]:
    """The files a bundle carries: those whose verdict passed, the recommended ones first, in order (bench
    recommends a "too few images" file only when nothing passed; it is carried then, and says so)."""
    passed = [a for a in artifacts if a.passed or (a.name in recommended and a.parity.status == TOO_FEW)]
    return sorted(passed, key=lambda a: recommended.index(a.name) if a.name in recommended else len(recommended))


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(src, dst)
    return dst


def link_into_bundle(src: Path, dst: Path) -> None:
    if src.is_dir():  # an .mlpackage
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def entry(artifact: Artifact) -> dict:
    """A file's line in bundle.json: what an app developer (or a CI check) needs to trust it."""
    return {"file": Path(artifact.path).name, "format": artifact.format, "precision": artifact.precision,
            "sha256": artifact.sha256, "bytes": artifact.bytes, "parity": artifact.to_dict()["parity"],
            "notes": artifact.notes, "details": artifact.details}


def _size(artifact: Artifact) -> str:
    return f"{artifact.bytes / 1e6:.2f} MB" if artifact.bytes else "-"


def _verdict(artifact: Artifact) -> str:
    parity = artifact.parity
    if parity.top1_agreement is None:
        return parity.status
    ambiguous = f", {parity.ambiguous_flips} of them near-ties of Keras" if parity.ambiguous_flips else ""
    text = f"{parity.status}: agreement {parity.top1_agreement:.4f} ({parity.flips} of {parity.images} flipped{ambiguous})"
    if parity.max_abs_diff is not None:
        text += f", max\\|Δp\\| {parity.max_abs_diff:.2g}"
    return text


def _runs_on(artifact: Artifact) -> str:
    """What hardware the file suits: integer-only files run on NPUs, DSPs and the Edge TPU; a file
    with ops kept float needs a CPU or GPU (names the ops, as the quantisation search recorded them)."""
    if artifact.integer_only is True and artifact.activation_bits == 16:
        return ("CPU, slowly: 16-bit activations (integer, but NPU, DSP and Edge TPU delegates run 8-bit "
                "and LiteRT's CPU path has no fast int16 kernels)")
    if artifact.accelerator_ready:
        return "integer-only (NPU, DSP, Edge TPU, CPU)"
    if artifact.integer_only is False:
        ops = artifact.float_ops
        shown = ", ".join(f"`{op}`" for op in ops[:3]) + (f" and {len(ops) - 3} more" if len(ops) > 3 else "")
        return f"CPU/GPU: {len(ops)} op(s) kept float ({shown})" if ops else "CPU/GPU: float fallbacks"
    return "CPU/GPU" if artifact.precision != "fp16" else "CPU/GPU (GPU delegates compute in fp16)"


def _recommendation_lines(recommendations: list[Recommendation], files: list[Artifact], platform: str,
                          min_os: int) -> list[str]:
    """'Recommended: ...' for the app's minimum OS, then 'Recommended on iOS 27+ ...' for each newer tier."""
    by_name = {a.name: a for a in files}
    lines = []
    for rec in recommendations:
        artifact = by_name[rec.artifact]
        tier = os_floor(artifact.format, platform)
        lead = "Recommended" if tier <= min_os and not lines else f"Recommended on {rec.runs_on or artifact.format}"
        lines.append(f"{lead}: `{Path(artifact.path).name}` ({artifact.precision}) — {rec.reason}.")
    return lines


def readme_text(platform: str, manifest: ExportManifest, files: list[Artifact], left_out: list[Artifact],
                recommendations: list[Recommendation], min_os: int, extras: list[str] = ()) -> str:
    model = manifest.model
    height, width = model.image_size
    lines = [f"# {platform_title(platform)} bundle", "",
             f"Classes: {', '.join(model.labels)}. Input: {height}x{width} RGB pixels 0..255 "
             "(the model normalises internally).", ""]
    if recommendations:
        lines += [*_recommendation_lines(recommendations, files, platform, min_os), ""]
    elif files:
        lines += ["No file is recommended yet: run `pocketml bench` and package again to choose one.", ""]
    else:
        lines += ["No file of this platform's formats passed validation; see the export manifest for why.", ""]
    if files:
        lines += ["| file | precision | size | OS | verdict vs Keras | runs on |", "|---|---|---|---|---|---|"]
        lines += [f"| `{Path(a.path).name}` | {a.precision} | {_size(a)} | {format_module(a.format).RUNS_ON} "
                  f"| {_verdict(a)} | {_runs_on(a)} |" for a in files]
        lines.append("")
    for artifact in left_out:
        why = artifact.reason if artifact.status != EXPORTED else artifact.parity.reason
        status = artifact.status if artifact.status != EXPORTED else artifact.parity.status
        line = f"Not included: {artifact.name} ({status}: {why})."
        if artifact.accelerator_ready and artifact.status == EXPORTED:
            # Accelerators that run only integer models may still want it, knowing it misses the budget.
            line += (f" It is the strict integer-only file (NPU, DSP, Edge TPU): the export keeps it at "
                     f"`{artifact.path}` for accelerators that need one.")
        lines.append(line)
    lines += [*_snippets(platform, files, height, width), *extras]
    return "\n".join(lines).rstrip() + "\n"


def _snippets(platform: str, files: list[Artifact], height: int, width: int) -> list[str]:
    """Each format's usage code for this platform, with its first (recommended) file; a heading per
    format when the bundle has several."""
    first_of = {a.format: Path(a.path).name for a in reversed(files)}
    formats = list(dict.fromkeys(a.format for a in files))
    lines = []
    for fmt in formats:
        module, file = format_module(fmt), first_of[fmt]
        snippet = module.SNIPPETS.get(platform)
        if snippet is None:
            continue
        lines += ["", f"## {module.TITLE}"] if len(formats) > 1 else []
        lines += ["", snippet.format(file=file, stem=Path(file).stem, class_name=Path(file).stem.replace("-", "_"),
                                     height=height, width=width)]
    return lines


def write_bundle(folder: Path, export_dir: Path, platform: str, manifest: ExportManifest, artifacts: list[Artifact],
                 recommendations: list[Recommendation]) -> list[Artifact]:
    """One platform's bundle in `folder`; returns the files it carries."""
    min_os = platform_min_os(platform, manifest.model)
    recs = [r for r in ranked(recommendations, artifacts, platform, min_os)
            if any(a.name == r.artifact and (a.passed or a.parity.status == TOO_FEW) for a in artifacts)]
    files = shipped(artifacts, [r.artifact for r in recs])
    folder.mkdir(parents=True)
    for artifact in files:
        link_into_bundle(export_dir / artifact.path, folder / Path(artifact.path).name)
    if any(format_module(a.format).LABELS_BESIDE for a in files):
        write_labels(folder / LABELS_FILE, manifest.model.labels)
    tier = os_floor(manifest.by_name(recs[0].artifact).format, platform) if recs else None
    first = recs[0] if tier is not None and tier <= min_os else None
    spec_keys = ("labels", "image_size", "color_order", "input_range", "normalization", "backbone", "source_sha256")
    atomic_write_json(folder / BUNDLE_MANIFEST, {
        "model": {k: v for k, v in manifest.model.spec.to_dict().items() if k in spec_keys},
        "recommended": first.artifact if first else None,  # the file for the app's minimum OS
        "recommendations": [{"artifact": r.artifact, "runs_on": r.runs_on, "reason": r.reason} for r in recs],
        "files": [entry(a) for a in files],
    })
    extras = [line for fmt in dict.fromkeys(a.format for a in files) for line in format_module(fmt).bundle_extras(
        folder, [folder / Path(a.path).name for a in files if a.format == fmt], manifest.model)]
    left_out = [a for a in artifacts if a not in files]
    atomic_write_text(folder / README, readme_text(platform, manifest, files, left_out, recs, min_os, extras))
    return files


def package(export_dir: str | Path, out_dir: str | Path, bench_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Bundles for every platform the export has files for, in `out_dir`; returns platform -> file names."""
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    manifest = ExportManifest.load(export_dir)
    recommendations = recommendations_by_platform(bench_dir)
    contents: dict[str, list[str]] = {}
    with atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for platform, artifacts in bundle_artifacts(manifest, recommendations).items():
            if platform == web_bundle.PLATFORM:  # the browser's bundle carries a runtime and a page: its own writer
                continue
            files = write_bundle(tmp / platform, export_dir, platform, manifest, artifacts,
                                 recommendations.get(platform, []))
            contents[platform] = [Path(a.path).name for a in files]
        contents.update(web_bundle.web_bundles(tmp, export_dir, manifest, recommendations))
    print_table(f"package → {out_dir}", ("bundle", "files", "recommended"),
                [(out_dir / platform, len(files), ", ".join(r.artifact for r in recommendations.get(platform, [])) or "-")
                 for platform, files in contents.items()])
    empty = [p for p, files in contents.items() if not files]
    if empty:
        console.print(f"note: no file passed validation for {', '.join(empty)}; those bundles hold only a README")
    return contents
