"""The browser as a device: exported .tflite files run by LiteRT.js and .onnx files by onnxruntime-web,
in the system's headless Chromium, through the web bundle's own `classify.js` (the code an app ships).

One browser per call; the files, the runtimes and the images are served from a temporary folder on
127.0.0.1 with COOP/COEP (cross-origin isolated, so WASM threads are allowed). Per file the page
computes the outputs on every image at 1 thread (what a plain static server gives: the verdict's
outputs), then latency per inference with performance.now() at 1 and N threads (N = the browser's
cores, at most 4), and reports whether WebGPU is offered. The verdict is bench's (export's Judge).
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from pocketml.benchmarks.devices import DeviceRun, DeviceStatus, cache_dir, per_array
from pocketml.benchmarks.devices.chromium import BrowserError, Chromium, chromium_path, chromium_version
from pocketml.export import web_bundle
from pocketml.export.serve import serving

from pocketml.console import console
from pocketml.errors import PocketMLError
from pocketml.fsutil import atomic_write_json
from pocketml.latency import summary_ms

KIND = "web"
VARIANTS = ("chromium",)
DEFAULT_VARIANT = "chromium"
FORMATS = web_bundle.FORMATS
PLATFORMS = (web_bundle.PLATFORM,)
PAGE = "web_device.html"
MAX_THREADS = 4  # classify.js's cap: beyond 4 WASM threads a phone-sized model gains nothing
TIMING = {"warmup": 3, "minRuns": 10, "maxRuns": 200, "minTimeMs": 1000}


def status(variant: str = DEFAULT_VARIANT) -> DeviceStatus:
    missing, detail = [], {"cache": str(cache_dir(KIND))}
    browser = chromium_path()
    if browser is None:
        missing.append("Chromium: apt-get install chromium (Debian), or set POCKETML_CHROMIUM to a Chromium/Chrome binary")
    else:
        detail["chromium"] = f"{browser} ({chromium_version(browser)})"
    absent = web_bundle.missing_runtime_files()
    if absent:
        missing.append(f"browser runtimes ({', '.join(web_bundle.RUNTIME_NAMES.values())}): "
                       "`pocketml device setup web` (npm pack, pinned versions)")
    else:
        detail["runtimes"] = web_bundle.RUNTIME_NAMES
    return DeviceStatus(ready=not missing, missing=missing, detail=detail)


def setup(variant: str = DEFAULT_VARIANT) -> None:
    """The pinned runtimes into the cache (idempotent). Chromium is the system's: a package to install."""
    runtime = web_bundle.setup_runtime()
    browser = chromium_path()
    if browser is None:
        raise PocketMLError("the browser runtimes are ready, but no Chromium was found: apt-get install chromium "
                            "(Debian), or set POCKETML_CHROMIUM to a Chromium/Chrome binary")
    console.print(f"web: {', '.join(web_bundle.RUNTIME_NAMES.values())} in {runtime}; {chromium_version(browser)}")


def site(folder: Path, files: list[Path], images: np.ndarray) -> list[str]:
    """The page's folder: classify.js, the device page, the runtimes (linked), the files (linked) and
    the images as raw uint8 RGB; returns the files' names in the site."""
    for name in web_bundle.ASSETS:
        (folder / name).write_text(web_bundle.asset_text(name), encoding="utf-8")
    (folder / PAGE).write_text(resources.files("pocketml.benchmarks.devices").joinpath(PAGE).read_text("utf-8"))
    os.symlink(web_bundle.runtime_cache(), folder / web_bundle.RUNTIME_DIR)
    names = []
    for index, path in enumerate(files):
        name = f"file{index}{path.suffix}"
        os.symlink(Path(path).resolve(), folder / name)
        names.append(name)
    (folder / "images.bin").write_bytes(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    height, width = images.shape[1:3]
    atomic_write_json(folder / "bundle.json", {
        "model": {"labels": [], "image_size": [int(height), int(width)]},
        "web": {"file": names[0] if names else "", "runtimes": web_bundle.RUNTIME_NAMES}})
    return names


def load_page(browser: Chromium, url: str) -> None:
    browser.goto(url)
    browser.wait_for("window.deviceReady === true", timeout=60)


def run_setting(browser: Chromium, url: str, name: str, threads: int, count: int, outputs: bool) -> dict:
    load_page(browser, url)  # a fresh page per setting: the runtime picks its WASM build once per page
    options = {"file": name, "threads": threads, "accelerator": "wasm", "count": count, "outputs": outputs, **TIMING}
    return browser.evaluate(f"window.runFile({_js(options)})", timeout=900)


def _js(value) -> str:
    return json.dumps(value)


def webgpu_note(browser: Chromium) -> str:
    adapter = browser.evaluate("window.gpuAdapter()")
    if not adapter.get("available"):
        return f"WebGPU not offered by this headless Chromium ({adapter.get('why')}): not timed"
    described = " ".join(str(adapter.get(k) or "") for k in ("vendor", "architecture", "description")).strip()
    if adapter.get("fallback") or "swiftshader" in described.lower():
        return (f"WebGPU: headless Chromium offers only a software adapter ({described or 'fallback'}); "
                "its timing says nothing about a GPU: not timed")
    return f"WebGPU adapter {described} offered; not timed by this device (WASM only)"


def figures(times_ms: list[float], threads: int) -> dict:
    summary = summary_ms(np.asarray(times_ms, dtype=np.float64) * 1e6)
    return {**summary, "threads": threads, "clock": "performance.now() in the page"}


def one_file(browser: Chromium, url: str, name: str, count: int, cost: bool, threads_n: int) -> DeviceRun:
    first = run_setting(browser, url, name, 1, count, outputs=True)
    run = DeviceRun(outputs=np.asarray(first["probs"], dtype=np.float32).reshape(count, -1),
                    notes=[f"{first['info']['runtime']} in {'a cross-origin isolated' if first['isolated'] else 'a'} page"])
    if not cost:
        return run
    latency = {"wasm-1": figures(first["times"], 1)}
    if threads_n > 1:
        try:
            many = run_setting(browser, url, name, threads_n, min(count, 1), outputs=True)
            latency[f"wasm-{threads_n}"] = figures(many["times"], threads_n)
            drift = float(np.abs(np.asarray(many["probs"][0]) - run.outputs[0]).max()) if count else 0.0
            run.notes.append(f"{threads_n} WASM threads: max|Δp| {drift:.2g} against 1 thread on the first image")
        except BrowserError as exc:  # one thread setting failing must not hide the 1-thread figures
            run.notes.append(f"{threads_n} WASM threads failed: {exc}")
    run.cost = {"latency": latency, "p50_ms": latency["wasm-1"]["p50_ms"], "p90_ms": latency["wasm-1"]["p90_ms"],
                "threads": 1}
    return run


def run(files: list[Path], formats: list[str], images: np.ndarray | list[np.ndarray], variant: str = DEFAULT_VARIANT,
        *, cost: bool = True) -> list[DeviceRun]:
    """One DeviceRun per file, in order: outputs on `images` (uint8 [N,H,W,3] RGB, or one such array per file)
    and, with `cost`, latency at 1 and N WASM threads. A file the browser cannot run gets its error, the
    others go on."""
    if isinstance(images, list):
        return per_array(run, files, formats, images, variant=variant, cost=cost)
    state = status(variant)
    if not state.ready:
        raise PocketMLError("the web device is not ready: " + "; ".join(state.missing))
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise PocketMLError(f"images must be uint8 [N, H, W, 3] RGB, not {images.dtype} {images.shape}")
    runs: list[DeviceRun] = []
    with tempfile.TemporaryDirectory(prefix="pocketml-web-") as tmp, serving(tmp) as base:
        names = site(Path(tmp), files, images)
        url = base + PAGE
        with Chromium() as browser:
            load_page(browser, url)
            cores = int(browser.evaluate("navigator.hardwareConcurrency") or 1)
            gpu = webgpu_note(browser)
            for path, fmt, name in zip(files, formats, names, strict=True):
                if fmt not in FORMATS:
                    runs.append(DeviceRun(outputs=None, error=f"the browser runs {' and '.join(FORMATS)} files, not {fmt}"))
                    continue
                try:
                    result = one_file(browser, url, name, len(images), cost, min(cores, MAX_THREADS))
                except BrowserError as exc:
                    runs.append(DeviceRun(outputs=None, error=f"{Path(path).name} in Chromium: {exc}"))
                    continue
                result.notes.append(gpu)
                runs.append(result)
    return runs

