"""The web bundle (BUNDLES_DIR/web/): the file bench recommended for the browser, the runtime that
runs it (only the JS/WASM files it uses, copied from the npm packages at pinned versions), the
labels, `classify.js` (a dependency-free ES module: `classify(imageOrVideoFrame) -> [{label, score}]`),
a minimal `index.html` (drop a photo or use the camera) and a README.

The runtimes are downloaded once, on purpose, by `pocketml device setup web` (`npm pack` of the pinned
versions, each tarball checked against its pinned sha512 before a file of it is used) into the web
device's cache; nothing is fetched when a bundle is assembled or opened. The bundle works offline
from any static file server: one WASM thread there, more where the server sends COOP/COEP
(`pocketml serve`).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pocketml import paths
from pocketml.artifact import Artifact, ExportManifest, Recommendation
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_output, atomic_write_json, atomic_write_text
from pocketml.spec import LABELS_FILE, write_labels

PLATFORM = "web"
TITLE = "Web (browser)"
FORMATS = ("tflite", "onnx")  # the formats the browser runtimes run, in order of preference
ASSETS = ("classify.js", "index.html")  # copied from pocketml/export/web/ into every web bundle
RUNTIME_DIR = "runtime"


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # the registry's sha512 of the tarball: `npm view NAME@VERSION dist.integrity`
    files: dict[str, str]  # path in the tarball -> path under runtime/<folder>/
    folder: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def tarball(self) -> str:
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


LITERT_WASM = ("litert_wasm_internal", "litert_wasm_compat_internal", "litert_wasm_threaded_internal")
# Per format, the packages of its runtime. LiteRT.js: the relaxed-SIMD build (Chromium), the compat build
# (browsers without relaxed SIMD: Safari, Firefox) and the threaded build (cross-origin isolated pages).
RUNTIMES: dict[str, tuple[NpmPackage, ...]] = {
    "tflite": (
        NpmPackage("@litertjs/core", "2.5.3",
                   "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
                   {"package/dist/index.js": "index.js",
                    **{f"package/wasm/{n}.{ext}": f"{n}.{ext}" for n in LITERT_WASM for ext in ("js", "wasm")}},
                   "litert"),
        NpmPackage("@litertjs/wasm-utils", "2.5.3",
                   "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
                   {"package/dist/index.js": "wasm-utils.js"}, "litert"),
    ),
    "onnx": (
        NpmPackage("onnxruntime-web", "1.31.1",
                   "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
                   {"package/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
                    "package/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
                    "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm"},
                   "ort"),
    ),
}
RUNTIME_NOTES = {
    "tflite": "LiteRT.js has three WASM builds (~9 MB each): relaxed SIMD (Chromium), compat (browsers without "
              "relaxed SIMD: Safari, Firefox) and threaded (cross-origin isolated pages); a browser downloads "
              "only the one it uses. The one edit to npm's files: `runtime/litert/index.js` imports its helper as "
              "`./wasm-utils.js` instead of by package name (a browser cannot resolve a bare name without an "
              "import map).",
    "onnx": "onnxruntime-web's one WASM build (~15 MB) runs both unthreaded and threaded; its files are unchanged.",
}
RUNTIME_NAMES = {"tflite": "LiteRT.js (@litertjs/core 2.5.3)", "onnx": "onnxruntime-web 1.31.1"}
# @litertjs/core imports its helper by bare name, which a browser cannot resolve without an import map:
# the copied index.js imports the copied helper by relative path instead (the only edit to npm's files).
BARE_IMPORTS = {"litert/index.js": ('from "@litertjs/wasm-utils"', 'from "./wasm-utils.js"')}


def cache_root() -> Path:
    """The web device's cache (benchmarks.devices.cache_dir("web") names the same folder)."""
    return paths.cache_root() / PLATFORM


def runtime_cache() -> Path:
    """Where the used files of every pinned package lie, unpacked: runtime/<folder>/..."""
    return cache_root() / RUNTIME_DIR


def missing_runtime_files() -> list[str]:
    root = runtime_cache()
    return [f"{p.folder}/{dst}" for packages in RUNTIMES.values() for p in packages
            for dst in p.files.values() if not (root / p.folder / dst).is_file()]


def sha512_integrity(path: Path) -> str:
    digest = hashlib.sha512()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def download(package: NpmPackage, into: Path) -> Path:
    """The package's tarball in `into`, by `npm pack` (the registry npm is configured for), checked."""
    tarball = into / package.tarball
    if not tarball.is_file() or sha512_integrity(tarball) != package.integrity:
        npm = shutil.which("npm")
        if npm is None:
            raise PocketMLError("npm is not installed; the browser runtimes come from the npm registry "
                                "(apt-get install npm, or Node.js from nodejs.org)")
        done = subprocess.run([npm, "pack", package.spec, "--pack-destination", str(into), "--silent"],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not tarball.is_file():
            raise PocketMLError(f"npm pack {package.spec} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    found = sha512_integrity(tarball)
    if found != package.integrity:
        tarball.unlink()
        raise PocketMLError(f"{package.spec} from the registry has integrity {found}, not the pinned "
                            f"{package.integrity}; refusing to use it")
    return tarball


def unpack(package: NpmPackage, tarball: Path, runtime: Path) -> None:
    """Only the files the bundle uses, by name (never a path the archive chooses)."""
    with tarfile.open(tarball, "r:gz") as archive:
        for src, dst in package.files.items():
            member = archive.extractfile(src)
            if member is None:
                raise PocketMLError(f"{package.spec} has no {src}; the pinned file list does not match the package")
            text = member.read()
            key = f"{package.folder}/{dst}"
            if key in BARE_IMPORTS:
                bare, relative = BARE_IMPORTS[key]
                if bare.encode() not in text:
                    raise PocketMLError(f"{package.spec} {src} no longer imports {bare}; update BARE_IMPORTS")
                text = text.replace(bare.encode(), relative.encode())
            (runtime / package.folder).mkdir(parents=True, exist_ok=True)
            (runtime / package.folder / dst).write_bytes(text)


def setup_runtime() -> Path:
    """Download (once) and unpack the pinned runtimes into the web cache; returns runtime/. Idempotent."""
    root = cache_root()
    tarballs = root / "npm"
    tarballs.mkdir(parents=True, exist_ok=True)
    if not missing_runtime_files():
        return runtime_cache()
    with atomic_output(runtime_cache()) as tmp:
        tmp.mkdir(parents=True)
        for packages in RUNTIMES.values():
            for package in packages:
                unpack(package, download(package, tarballs), tmp)
        atomic_write_json(tmp / "versions.json", {p.name: {"version": p.version, "integrity": p.integrity}
                                                  for packages in RUNTIMES.values() for p in packages})
    return runtime_cache()


def copy_runtime(fmt: str, folder: Path) -> list[str]:
    """The runtime files of `fmt` into folder/runtime/; returns their paths relative to `folder`."""
    missing = missing_runtime_files()
    if missing:
        raise PocketMLError(f"the browser runtimes are not set up ({len(missing)} files missing in "
                            f"{runtime_cache()}); run `pocketml device setup web` once (needs npm)")
    copied = []
    for package in RUNTIMES[fmt]:
        for dst in package.files.values():
            target = folder / RUNTIME_DIR / package.folder / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(runtime_cache() / package.folder / dst, target)
            copied.append(str(target.relative_to(folder)))
    return copied


def asset_text(name: str) -> str:
    return resources.files("pocketml.export").joinpath("web", name).read_text(encoding="utf-8")


def web_config(manifest: ExportManifest, artifact: Artifact, recommended: bool) -> dict:
    """bundle.json of the web bundle: what classify.js reads (file, labels, input size) and the proof."""
    from pocketml.export.package import entry

    spec_keys = ("labels", "image_size", "color_order", "input_range", "normalization", "backbone", "source_sha256")
    return {
        "model": {k: v for k, v in manifest.model.spec.to_dict().items() if k in spec_keys},
        "recommended": artifact.name if recommended else None,
        "files": [entry(artifact)],
        "web": {"file": Path(artifact.path).name, "format": artifact.format,
                "runtimes": {fmt: RUNTIME_NAMES[fmt] for fmt in FORMATS},
                "packages": {p.name: {"version": p.version, "integrity": p.integrity} for p in RUNTIMES[artifact.format]}},
    }


def readme(manifest: ExportManifest, artifact: Artifact | None, reason: str) -> str:
    model = manifest.model
    height, width = model.image_size
    lines = [f"# {TITLE} bundle", "",
             f"Classes: {', '.join(model.labels)}. Input: {height}x{width} RGB pixels 0..255, resized "
             "and centre-cropped by `classify.js` exactly as the other platforms' inputs are.", ""]
    if artifact is None:
        return "\n".join([*lines, f"No web bundle: {reason}.", ""])
    file = Path(artifact.path).name
    packages = ", ".join(f"`{p.name}` {p.version}" for p in RUNTIMES[artifact.format])
    lines += [
        f"Recommended: `{file}` ({artifact.precision}), run by {RUNTIME_NAMES[artifact.format]} — {reason}.", "",
        "```js",
        'import { classify } from "./classify.js";',
        'const top3 = await classify(document.querySelector("img"));  // [{label, score}, ...] best first',
        "```", "",
        "`classify` takes an `<img>`, `<video>`, `<canvas>`, `ImageBitmap`, `VideoFrame` or an image `File`/`Blob`.",
        "`createClassifier({threads, accelerator})` gives a `Classifier` with `classify()` and `probabilities()`.", "",
        "## Serving it", "",
        "Any static file server works, offline: `python -m http.server` in this folder, then open "
        "`http://localhost:8000/` (drop a photo, or use the camera). The page runs on one WASM thread there.",
        "`pocketml serve .` also sends `Cross-Origin-Opener-Policy: same-origin` and "
        "`Cross-Origin-Embedder-Policy: require-corp`: the page is then cross-origin isolated and the runtime "
        "uses several threads. Send the same two headers from your own server for the threaded speed.", "",
        "## The runtime", "",
        f"`runtime/` is a copy of only the files this model needs, from the npm packages {packages} (each "
        "tarball checked against the sha512 integrity pinned in pocketml; `bundle.json` records it), so the "
        "bundle needs no CDN and works offline. " + RUNTIME_NOTES[artifact.format], "",
    ]
    return "\n".join(lines)


def chosen(manifest: ExportManifest, recommendation: tuple[str, str] | None) -> tuple[Artifact | None, str]:
    """The file bench recommended for the web and why; None and why not when there is none to ship."""
    if recommendation is None:
        return None, ("no file has been judged in a browser yet; run `pocketml bench EXPORT_DIR --device web` "
                      "and package again")
    artifact = manifest.by_name(recommendation[0])
    if artifact is None or artifact.format not in FORMATS:
        return None, f"bench recommended {recommendation[0]!r}, which this export has no browser-runnable file of"
    return artifact, recommendation[1]


def write_web_bundle(folder: Path, export_dir: Path, manifest: ExportManifest,
                     recommendation: tuple[str, str] | None) -> list[str]:
    """BUNDLES_DIR/web/ in `folder` (inside package's atomic output); returns the model files it carries."""
    from pocketml.export.package import link_into_bundle

    artifact, reason = chosen(manifest, recommendation)
    folder.mkdir(parents=True)
    atomic_write_text(folder / "README.md", readme(manifest, artifact, reason))
    if artifact is None:
        return []
    link_into_bundle(export_dir / artifact.path, folder / Path(artifact.path).name)
    copy_runtime(artifact.format, folder)
    for name in ASSETS:
        (folder / name).write_text(asset_text(name), encoding="utf-8")
    write_labels(folder / LABELS_FILE, manifest.model.labels)
    atomic_write_json(folder / "bundle.json", web_config(manifest, artifact, recommended=True))
    return [Path(artifact.path).name]


def web_bundles(out: Path, export_dir: Path, manifest: ExportManifest,
                recommendations: dict[str, list[Recommendation]]) -> dict[str, list[str]]:
    """{"web": files} with BUNDLES_DIR/web/ written when bench judged files in a browser and recommended
    one (`pocketml bench --device web`); {} otherwise: a web bundle ships only a file proven there."""
    chosen_one = next(iter(recommendations.get(PLATFORM) or ()), None)
    if chosen_one is None:
        return {}
    return {PLATFORM: write_web_bundle(out / PLATFORM, export_dir, manifest, (chosen_one.artifact, chosen_one.reason))}
