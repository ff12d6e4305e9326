// pocketml web bundle: classify a photo, a video frame or a canvas in the browser.
//
//   import { classify } from "./classify.js";
//   const top3 = await classify(document.querySelector("img"));   // [{label, score}, ...]
//
// The model file, its labels and input size come from bundle.json beside this module; the runtime
// (LiteRT.js for .tflite, onnxruntime-web for .onnx) from runtime/ beside it, loaded on first use.
// The pixels the model sees are exactly the other platforms': the image decoded at its own size
// (EXIF orientation applied, transparency on white, no colour conversion), its shorter side resized
// with Pillow's bilinear filter (integer arithmetic included), centre-cropped, RGB 0..255 as float32
// NHWC. WASM threads are used when the page is cross-origin isolated (COOP/COEP headers), else one.

const HERE = new URL(".", import.meta.url);
const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit resampling (libImaging/Resample.c)

// --- pixels ---------------------------------------------------------------------------------------

function sourceSize(source) {
  if (typeof VideoFrame !== "undefined" && source instanceof VideoFrame) return [source.displayWidth, source.displayHeight];
  if (typeof HTMLVideoElement !== "undefined" && source instanceof HTMLVideoElement) return [source.videoWidth, source.videoHeight];
  if (typeof HTMLImageElement !== "undefined" && source instanceof HTMLImageElement) return [source.naturalWidth, source.naturalHeight];
  return [source.width, source.height];
}

// RGBA pixels of `source` at its own size, drawn over white (a transparent PNG is not a black photo).
async function decoded(source) {
  if (source instanceof Blob) {
    source = await createImageBitmap(source, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  }
  const [width, height] = sourceSize(source);
  if (!width || !height) throw new Error("pocketml: the image has no pixels yet (not loaded, or a video without a frame)");
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.drawImage(source, 0, 0, width, height);
  return { data: context.getImageData(0, 0, width, height).data, width, height };
}

// Pillow's precompute_coeffs for the bilinear (triangle) filter: per output index its first input
// index, its tap count and its integer weights.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const bounds = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = new Array(xmax);
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      weights[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += weights[x];
    }
    const ints = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? weights[x] / ww : weights[x];
      ints[x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds.push([xmin, ints]);
  }
  return bounds;
}

function clip8(value) {
  if (value >= (1 << PRECISION_BITS) * 256) return 255;
  if (value <= 0) return 0;
  return Math.floor(value / (1 << PRECISION_BITS));
}

// Python's round(): halves go to the even neighbour (new_size in pocketml.dataset.load_image).
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

// uint8 RGB [height*width*3] of `source`: the model's input, as pocketml.dataset.load_image makes it.
export async function pixels(source, height, width) {
  const image = await decoded(source);
  const scale = Math.max(height / image.height, width / image.width);
  const newWidth = Math.max(width, roundHalfEven(image.width * scale));
  const newHeight = Math.max(height, roundHalfEven(image.height * scale));
  const left = Math.floor((newWidth - width) / 2), top = Math.floor((newHeight - height) / 2);
  const horizontal = newWidth !== image.width, vertical = newHeight !== image.height;
  const columns = coefficients(image.width, newWidth).slice(left, left + width);
  const rows = coefficients(image.height, newHeight).slice(top, top + height);
  const half = 1 << (PRECISION_BITS - 1);
  // Horizontal pass first (as Pillow), on the input rows the vertical pass reads, crop columns only.
  const first = vertical ? rows[0][0] : top;
  const last = vertical ? rows[height - 1][0] + rows[height - 1][1].length : top + height;
  const temp = new Uint8Array((last - first) * width * 3);
  for (let y = first; y < last; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let value;
        if (horizontal) {
          const [xmin, k] = columns[x];
          let ss = half;
          for (let i = 0; i < k.length; i++) ss += image.data[(y * image.width + xmin + i) * 4 + c] * k[i];
          value = clip8(ss);
        } else {
          value = image.data[(y * image.width + left + x) * 4 + c];
        }
        temp[((y - first) * width + x) * 3 + c] = value;
      }
    }
  }
  const out = new Uint8Array(height * width * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) {
        let value;
        if (vertical) {
          const [ymin, k] = rows[y];
          let ss = half;
          for (let i = 0; i < k.length; i++) ss += temp[((ymin - first + i) * width + x) * 3 + c] * k[i];
          value = clip8(ss);
        } else {
          value = temp[((y + top - first) * width + x) * 3 + c];
        }
        out[(y * width + x) * 3 + c] = value;
      }
    }
  }
  return out;
}

// --- runtimes ------------------------------------------------------------------------------------

export function threadCount() {
  // Threads need SharedArrayBuffer, which a browser gives only to a cross-origin isolated page.
  return globalThis.crossOriginIsolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4)) : 1;
}

async function liteRt(modelUrl, runtimeUrl, threads, accelerator) {
  const litert = await import(new URL("litert/index.js", runtimeUrl).href);
  if (!globalThis.__pocketmlLiteRt) {
    globalThis.__pocketmlLiteRt = litert.loadLiteRt(new URL("litert/", runtimeUrl).href, { threads: threads > 1 });
  }
  await globalThis.__pocketmlLiteRt;
  const options = accelerator === "webgpu" ? { accelerator: "webgpu" } : { accelerator: "wasm", cpuOptions: { numThreads: threads } };
  const model = await litert.loadAndCompile(modelUrl.href, options);
  return async (input, shape) => {
    const tensor = new litert.Tensor(input, shape);
    const results = await model.run(tensor);
    tensor.delete();
    const first = await results[0].moveTo("wasm");
    const probs = Float32Array.from(first.toTypedArray());
    first.delete();
    for (const r of results) if (r !== first && typeof r.delete === "function") r.delete();
    return probs;
  };
}

async function onnxRuntime(modelUrl, runtimeUrl, threads, accelerator) {
  // The bundle carries onnxruntime-web's WASM build only (its WebGPU build is another 30 MB).
  if (accelerator !== "wasm") throw new Error(`pocketml: this bundle runs .onnx on WASM only, not ${accelerator}`);
  const ort = await import(new URL("ort/ort.wasm.min.mjs", runtimeUrl).href);
  ort.env.wasm.wasmPaths = new URL("ort/", runtimeUrl).href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = "error";
  const session = await ort.InferenceSession.create(modelUrl.href, { executionProviders: ["wasm"] });
  const inputName = session.inputNames[0], outputName = session.outputNames[0];
  return async (input, shape) => {
    const results = await session.run({ [inputName]: new ort.Tensor("float32", input, shape) });
    return Float32Array.from(results[outputName].data);
  };
}

const RUNTIMES = { tflite: liteRt, onnx: onnxRuntime };

// --- the classifier ------------------------------------------------------------------------------

export class Classifier {
  constructor(config, run, info) {
    this.labels = config.model.labels;
    [this.height, this.width] = config.model.image_size;
    this.run = run;
    this.info = info; // {file, format, runtime, threads, accelerator}
  }

  // Probabilities per class (Float32Array, the labels' order) for uint8 RGB pixels of the input size.
  async probabilities(rgb) {
    return this.run(Float32Array.from(rgb), [1, this.height, this.width, 3]);
  }

  // [{label, score}] best first: the top `top` classes of `source` (an <img>, <video>, <canvas>,
  // ImageBitmap, VideoFrame, or a File/Blob of an image).
  async classify(source, { top = 3 } = {}) {
    const probs = await this.probabilities(await pixels(source, this.height, this.width));
    return Array.from(probs, (score, i) => ({ label: this.labels[i], score }))
      .sort((a, b) => b.score - a.score)
      .slice(0, top);
  }
}

// A Classifier for the bundle at `base` (default: this module's folder): its bundle.json names the file.
// Options: file (another file of the bundle), threads (default: threadCount()), accelerator ("wasm";
// "webgpu" for a .tflite: LiteRT.js's own WebGPU path, in browsers that offer a GPU adapter).
export async function createClassifier({ base = HERE, file, threads = threadCount(), accelerator = "wasm" } = {}) {
  base = new URL(base, location.href);
  const config = await (await fetch(new URL("bundle.json", base))).json();
  const name = file || config.web.file;
  const format = name.endsWith(".onnx") ? "onnx" : "tflite";
  const run = await RUNTIMES[format](new URL(name, base), new URL("runtime/", base), threads, accelerator);
  return new Classifier(config, run, { file: name, format, runtime: config.web.runtimes[format], threads, accelerator });
}

let shared;

// The top 3 [{label, score}] of `source` with the bundle's recommended file (loaded once).
export async function classify(source, { top = 3 } = {}) {
  shared = shared || createClassifier();
  return (await shared).classify(source, { top });
}
