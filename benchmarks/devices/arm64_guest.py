"""Runs inside the emulated aarch64 Python (numpy and the aarch64 runtimes only, no pocketml):
`python3.11 arm64_guest.py JOB.json`. For each file of the job: its outputs on its share of the images, fed
exactly as pocketml's TFLitePredictor / OnnxPredictor feed them (export/tflite.py, export/onnx.py),
and when costed, one warm-up call then REPEATS calls on the file's first image, each inside a region the
instruction-count plugin (arm64_count.c) measures. One thread throughout: the cost is per core.

Writes OUT/outputs-<i>.npy per file and OUT/status.json: [{"regions": k, "error": str | None}].
"""

import ctypes
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

MARK_SYSCALL = 0x7E57  # no kernel has it: qemu answers ENOSYS, the plugin sees the call (arm64_count.c)
MARK_MAGIC = 0x706F636B65746D6C  # "pocketml"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_ulong, ctypes.c_ulong]


_closed = [0]  # regions closed so far: the plugin wrote one line for each, in this order


def mark(open_region: bool) -> None:
    _libc.syscall(MARK_SYSCALL, MARK_MAGIC, 1 if open_region else 0)
    _closed[0] += not open_region


class TFLiteFile:
    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def feed(self, image):
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return image[None].astype(np.float32)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        values = np.round(image.astype(np.float32) / scale + zero_point)
        return np.clip(values, info.min, info.max).astype(dtype)[None]

    def floats(self, raw):
        if self.output["dtype"] == np.float32:
            return raw.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, images, batch):
        rows = []
        for image in images:
            self.interpreter.set_tensor(self.input["index"], self.feed(image))
            self.interpreter.invoke()
            rows.append(self.floats(self.interpreter.get_tensor(self.output["index"]))[0])
        return np.stack(rows)

    def invoker(self, image):
        x, interpreter, index = self.feed(image), self.interpreter, self.input["index"]

        def run():
            interpreter.set_tensor(index, x)
            mark(True)
            interpreter.invoke()
            mark(False)

        return run


class OnnxFile:
    def __init__(self, path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, images, batch):
        images = images.astype(np.float32)
        parts = [self.session.run(None, {self.input: images[i : i + batch]})[0] for i in range(0, len(images), batch)]
        return np.concatenate(parts).astype(np.float32)

    def invoker(self, image):
        feed, session = {self.input: image[None].astype(np.float32)}, self.session

        def run():
            mark(True)
            session.run(None, feed)
            mark(False)

        return run


def one_file(index, unit, images, job, out):
    model = {"tflite": TFLiteFile, "onnx": OnnxFile}[unit["format"]](unit["path"])
    if unit["cost"]:
        # Counted first, on a fresh session, so the counted calls follow the same history in every process
        # (ONNX Runtime's allocator work inside a call varies with it; see region_cost on the host).
        run = model.invoker(images[0])  # the file's first image, whichever share this process has
        run()  # warm-up: weight packing, lazy allocation; its region is dropped by the host
        for _ in range(job["repeats"]):
            run()
    if unit["stop"] > unit["start"]:
        np.save(out / f"outputs-{index}.npy", model.predict(images[unit["start"]:unit["stop"]], unit["batch"]))


def main():
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(job["out"])
    arrays = {}
    status = []
    for index, unit in enumerate(job["files"]):
        start, regions = time.time(), _closed[0]
        try:
            images = arrays.setdefault(unit["images"], np.load(unit["images"], mmap_mode="r"))
            one_file(index, unit, images, job, out)
            status.append({"error": None})
        except Exception as exc:  # one file failing must not hide the others; the host reports it
            line = (str(exc).strip().splitlines() or [""])[0][:300]
            status.append({"error": f"{type(exc).__name__}: {line}", "trace": traceback.format_exc()[-2000:]})
        status[-1].update(regions=_closed[0] - regions, seconds=round(time.time() - start, 2))
        (out / "status.json").write_text(json.dumps(status))


if __name__ == "__main__":
    main()
