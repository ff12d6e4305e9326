"""The browser as a device: exported files judged and timed in headless Chromium, through the web
bundle's own classify.js; bench's web verdict, latency and recommendation."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pocketml.benchmarks.recommend import choose

from pocketml.artifact import ExportManifest
from tests.export.web_helpers import require_web_device, web_benched_export


def device_row(name: str, fmt: str, status: str, p50: float, host_status: str = "passed") -> dict:
    return {"name": name, "format": fmt, "status": host_status, "bytes": 1_000_000, "latency": {},
            "accuracy_drop_points": 0.0, "top1_agreement": 1.0, "images": 32,
            "devices": {"web:chromium": {"status": status, "speed": p50, "cost": {"p50_ms": p50, "threads": 1}}}}


def test_the_web_group_gets_the_fastest_file_that_passed_in_the_browser():
    keras = {"name": "keras", "format": "keras"}
    rows = [keras, device_row("tflite-fp32", "tflite", "failed validation", 5.0), device_row("onnx-fp32", "onnx", "passed", 20.0),
            device_row("tflite-fp16", "tflite", "passed", 30.0), device_row("onnx-int8", "onnx", "passed", 1.0, "failed validation")]
    web = next(c for c in choose(rows, "latency", devices={"web": "web:chromium"}) if c.platform == "web")
    # tflite-fp32 is fastest but failed in the browser; onnx-int8 failed its host verdict.
    assert (web.platform, web.artifact) == ("web", "onnx-fp32")
    assert "p50 20.00 ms per inference at 1 thread(s)" in web.reason
    no_web = choose(rows, "latency")
    assert "web" not in {c.platform for c in no_web}  # without the browser there is no web group


@pytest.mark.slow
def test_classify_js_feeds_the_model_the_pixels_python_decodes(photos_dir, tmp_path):
    """classify.js's resize + centre crop in the browser gives byte-identical pixels to
    pocketml.dataset.load_image (Pillow), for JPEG photos, an EXIF-rotated JPEG, transparent PNGs and
    greyscale, downscaled and upscaled, square and not."""
    require_web_device()
    from pocketml.benchmarks.devices.chromium import Chromium
    from pocketml.export import web_bundle
    from pocketml.export.serve import serving

    from pocketml.dataset import load_image

    rng = np.random.default_rng(0)
    photos = sorted((photos_dir / "test").rglob("*.jpg"))[:4]
    exif = Image.open(photos[0]).resize((120, 80))
    tags = Image.Exif()
    tags[0x0112] = 6  # rotated 90°: a phone photo held upright
    exif.save(tmp_path / "exif.jpg", exif=tags)
    Image.fromarray(rng.integers(0, 256, (70, 130, 4), dtype=np.uint8), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (50, 90), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    files = [*photos, tmp_path / "exif.jpg", tmp_path / "alpha.png", tmp_path / "gray.png"]
    site = tmp_path / "site"
    site.mkdir()
    (site / "classify.js").write_text(web_bundle.asset_text("classify.js"))
    (site / "page.html").write_text('<script type="module">import { pixels } from "./classify.js"; '
                                    "window.pixels = pixels; window.ok = true;</script>")
    for i, path in enumerate(files):
        shutil.copy(path, site / f"{i}{path.suffix}")
    with serving(site) as url, Chromium() as browser:
        browser.goto(url + "page.html")
        browser.wait_for("window.ok")
        for size in [(96, 96), (224, 160)]:
            for i, path in enumerate(files):
                encoded = browser.evaluate(f"""(async () => {{
                    const blob = await (await fetch("{i}{path.suffix}")).blob();
                    const px = await window.pixels(blob, {size[0]}, {size[1]});
                    let s = ""; for (const v of px) s += String.fromCharCode(v); return btoa(s); }})()""")
                got = np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(*size, 3)
                np.testing.assert_array_equal(got, load_image(path, size), err_msg=f"{path.name} at {size}")


@pytest.mark.slow
def test_bench_on_the_web_device_judges_times_and_recommends(real_model_dir, photos_dir, tmp_path_factory):
    require_web_device()
    export_dir, bench_dir, _ = web_benched_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    results = json.loads((bench_dir / "results.json").read_text())
    rows = {row["name"]: row for row in results["rows"]}
    assert results["devices"] == ["web:chromium"]
    for name in ("tflite-fp32", "onnx-fp32"):
        record = rows[name]["devices"]["web:chromium"]
        assert record["status"] == "passed", record
        assert record["top1_agreement"] == 1.0 and record["max_abs_diff"] <= 1e-4
        latency = record["cost"]["latency"]
        assert latency["wasm-1"]["p50_ms"] > 0 and latency["wasm-1"]["p90_ms"] >= latency["wasm-1"]["p50_ms"]
        assert latency["wasm-1"]["clock"] == "performance.now() in the page"
        assert any("WebGPU" in note for note in record["notes"])
        assert any("cross-origin isolated" in note for note in record["notes"])
    web = results["recommendations"]["web"]
    assert web["artifact"] in ("tflite-fp32", "onnx-fp32")
    assert rows[web["artifact"]]["devices"]["web:chromium"]["status"] == "passed"
    assert "web" in rows[web["artifact"]]["recommended"]
    assert ExportManifest.load(export_dir).by_name(web["artifact"]).passed


@pytest.mark.slow
def test_a_file_the_browser_cannot_run_is_an_error_and_the_next_file_still_runs(
        real_model_dir, photos_dir, tmp_path_factory, tmp_path):
    require_web_device()
    from pocketml.benchmarks.devices import web

    from pocketml.dataset import load_images

    export_dir, _, _ = web_benched_export(real_model_dir, photos_dir, tmp_path_factory.getbasetemp())
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"TFL3" + bytes(64))
    good = export_dir / ExportManifest.load(export_dir).find("tflite", "fp32").path
    images = load_images(sorted((photos_dir / "test").rglob("*.jpg"))[:2], (96, 96))
    bad_run, good_run = web.run([broken, good], ["tflite", "tflite"], images, cost=False)
    assert bad_run.outputs is None and "broken.tflite in Chromium" in bad_run.error
    assert good_run.error is None and good_run.outputs.shape == (2, 2)
    np.testing.assert_allclose(good_run.outputs.sum(1), 1.0, atol=1e-5)
