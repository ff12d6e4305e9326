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

from pocketml.export.registry import format_module

from pocketml.artifact import EXPORTED, Artifact, ExportManifest, load_recommendations
from pocketml.console import console, print_table
from pocketml.fsutil import atomic_output, atomic_write_json, atomic_write_text
from pocketml.spec import LABELS_FILE, write_labels

README = "README.md"
BUNDLE_MANIFEST = "bundle.json"


def recommended_names(bench_dir: str | Path | None) -> dict[str, tuple[str, str]]:
    """platform -> (artifact name, bench's reason) for the platforms bench recommended a file for."""
    if bench_dir is None:
        return {}
    return {r.platform: (r.artifact, r.reason) for r in load_recommendations(bench_dir) if r.artifact}


def shipped(artifacts: list[Artifact], recommended: str | None) -> list[Artifact]:
    """The files a bundle carries: those whose verdict passed, the recommended one first."""
    passed = [a for a in artifacts if a.passed]
    return sorted(passed, key=lambda a: a.name != recommended)


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
    text = f"{parity.status}: agreement {parity.top1_agreement:.3f} ({parity.flips} of {parity.images} flipped)"
    if parity.max_abs_diff is not None:
        text += f", max\\|Δp\\| {parity.max_abs_diff:.2g}"
    return text


def _runs_on(artifact: Artifact) -> str:
    """What hardware the file suits: integer-only files run on NPUs, DSPs and the Edge TPU; a file
    with ops kept float needs a CPU or GPU (names the ops, as the quantisation search recorded them)."""
    if artifact.integer_only is True:
        return "integer-only (NPU, DSP, Edge TPU, CPU)"
    if artifact.integer_only is False:
        ops = artifact.float_ops
        shown = ", ".join(f"`{op}`" for op in ops[:3]) + (f" and {len(ops) - 3} more" if len(ops) > 3 else "")
        return f"CPU/GPU: {len(ops)} op(s) kept float ({shown})" if ops else "CPU/GPU: float fallbacks"
    return "CPU/GPU" if artifact.precision != "fp16" else "CPU/GPU (GPU delegates compute in fp16)"


def readme_text(module, manifest: ExportManifest, files: list[Artifact], left_out: list[Artifact],
                recommendation: tuple[str, str] | None) -> str:
    model = manifest.model
    height, width = model.image_size
    lines = [f"# {module.TITLE} bundle", "",
             f"Classes: {', '.join(model.labels)}. Input: {height}x{width} RGB pixels 0..255 "
             "(the model normalises internally).", ""]
    if recommendation and files and files[0].name == recommendation[0]:
        lines += [f"Recommended: `{Path(files[0].path).name}` ({files[0].precision}) — {recommendation[1]}.", ""]
    elif files:
        lines += ["No file is recommended yet: run `pocketml bench` and package again to choose one.", ""]
    else:
        lines += ["No file of this format passed validation; see the export manifest for why.", ""]
    if files:
        lines += ["| file | precision | size | verdict vs Keras | runs on |", "|---|---|---|---|---|"]
        lines += [f"| `{Path(a.path).name}` | {a.precision} | {_size(a)} | {_verdict(a)} | {_runs_on(a)} |"
                  for a in files]
        lines.append("")
    for artifact in left_out:
        why = artifact.reason if artifact.status != EXPORTED else artifact.parity.reason
        status = artifact.status if artifact.status != EXPORTED else artifact.parity.status
        line = f"Not included: {artifact.name} ({status}: {why})."
        if artifact.integer_only and artifact.status == EXPORTED:
            # Accelerators that run only integer models may still want it, knowing it misses the budget.
            line += (f" It is the strict integer-only file (NPU, DSP, Edge TPU): the export keeps it at "
                     f"`{artifact.path}` for accelerators that need one.")
        lines.append(line)
    if files:
        file = Path(files[0].path).name
        lines += ["", module.SNIPPET.format(file=file, class_name=Path(file).stem.replace("-", "_"),
                                            height=height, width=width)]
    return "\n".join(lines).rstrip() + "\n"


def write_bundle(folder: Path, export_dir: Path, module, manifest: ExportManifest, artifacts: list[Artifact],
                 recommendation: tuple[str, str] | None) -> list[Artifact]:
    """One platform's bundle in `folder`; returns the files it carries."""
    files = shipped(artifacts, recommendation[0] if recommendation else None)
    folder.mkdir(parents=True)
    for artifact in files:
        link_into_bundle(export_dir / artifact.path, folder / Path(artifact.path).name)
    if module.LABELS_BESIDE and files:
        write_labels(folder / LABELS_FILE, manifest.model.labels)
    recommended = recommendation[0] if recommendation and files and files[0].name == recommendation[0] else None
    spec_keys = ("labels", "image_size", "color_order", "input_range", "normalization", "backbone", "source_sha256")
    atomic_write_json(folder / BUNDLE_MANIFEST, {
        "model": {k: v for k, v in manifest.model.spec.to_dict().items() if k in spec_keys},
        "recommended": recommended,
        "files": [entry(a) for a in files],
    })
    left_out = [a for a in artifacts if a not in files]
    atomic_write_text(folder / README, readme_text(module, manifest, files, left_out, recommendation))
    return files


def package(export_dir: str | Path, out_dir: str | Path, bench_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Bundles for every platform the export has files for, in `out_dir`; returns platform -> file names."""
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    manifest = ExportManifest.load(export_dir)
    recommendations = recommended_names(bench_dir)
    by_format: dict[str, list[Artifact]] = {}
    for artifact in manifest.artifacts:
        by_format.setdefault(artifact.format, []).append(artifact)
    contents: dict[str, list[str]] = {}
    with atomic_output(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for fmt, artifacts in by_format.items():
            module = format_module(fmt)
            files = write_bundle(tmp / module.PLATFORM, export_dir, module, manifest, artifacts,
                                 recommendations.get(module.PLATFORM))
            contents[module.PLATFORM] = [Path(a.path).name for a in files]
    print_table(f"package → {out_dir}", ("bundle", "files", "recommended"),
                [(out_dir / platform, len(files), (recommendations.get(platform) or ("-",))[0])
                 for platform, files in contents.items()])
    empty = [p for p, files in contents.items() if not files]
    if empty:
        console.print(f"note: no file passed validation for {', '.join(empty)}; those bundles hold only a README")
    return contents
