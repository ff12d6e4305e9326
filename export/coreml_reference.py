"""A numpy executor for Core ML mlprogram `.mlpackage` files, so Core ML parity can be checked on Linux.

The program comes from export/coreml_mil.py (the only module touching coremltools internals) and
runs op by op. Numerics follow Core ML's:
- every op's result is stored in the dtype the program declares for it, so an fp16 program rounds
  to float16 after each op (accumulation inside conv/matmul is float32, as Core ML's CPU and GPU do);
- image inputs arrive as 8-bit pixel values in the ImageType's channel order (RGB or BGR), shaped
  [1, C, H, W]; the ImageType's scale and bias are `mul`/`add` ops inside an mlprogram, so they
  run as part of the program;
- an op the executor does not know fails the load with the op and model named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pocketml.export.coreml_mil import MilOp, MilProgram, load_program
from pocketml.export.runtime import check_images

from pocketml.errors import PocketMLError

NAME = "coreml-reference"

# MIL dtype name -> numpy dtype of the stored value.
DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
}


class Args:
    """An op's inputs, looked up in the values computed so far."""

    def __init__(self, op: MilOp, values: dict[str, Any]):
        self.op = op
        self._values = values

    def __contains__(self, key: str) -> bool:
        return key in self.op.inputs

    def raw(self, key: str, default: Any = None) -> Any:
        ref = self.op.inputs.get(key)
        if ref is None:
            return default
        if isinstance(ref, tuple):
            return [self._values[name] for name in ref]
        return self._values[ref]

    def f(self, key: str, default: Any = None) -> Any:
        """A floating input widened to float32 for computing (the result is rounded back later)."""
        value = self.raw(key, default)
        if value is None:
            return None
        value = np.asarray(value)
        widen = value.dtype.kind in "fiub" and value.dtype != np.float64
        return value.astype(np.float32, copy=False) if widen else value

    def ints(self, key: str, default: Any = None) -> list[int] | None:
        value = self.raw(key, default)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]

    def scalar(self, key: str, default: Any = None) -> Any:
        value = self.raw(key, default)
        if isinstance(value, np.ndarray):
            return value.reshape(-1)[0].item() if value.size == 1 else value
        return value


OpFn = Callable[[Args], Any]
OPS: dict[str, OpFn] = {}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return register


# ---------------------------------------------------------------- constants and weight decompression


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Unsigned n-bit integers packed least-significant bit first (coremltools' packing order)."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8).reshape(-1), bitorder="little")
    bits = bits[: count * nbits].reshape(count, nbits).astype(np.uint32)
    return (bits << np.arange(nbits, dtype=np.uint32)).sum(axis=1)


def _axis_broadcast(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar or per-`axis` vector shaped to broadcast against a rank-`rank` tensor."""
    param = np.asarray(param)
    if param.ndim == 0:
        return param
    shape = [1] * rank
    shape[axis] = param.size
    return param.reshape(shape)


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Block-wise parameters repeated to the full tensor shape (block = data dim / param dim)."""
    for axis, (full, part) in enumerate(zip(shape, param.shape, strict=True)):
        if full != part:
            param = np.repeat(param, full // part, axis=axis)
    return param


@op("constexpr_affine_dequantize")
def _affine_dequantize(a: Args) -> np.ndarray:
    data = np.asarray(a.raw("quantized_data"))
    scale = np.asarray(a.raw("scale"))
    axis = int(a.scalar("axis")) % data.ndim
    zero = _axis_broadcast(np.asarray(a.raw("zero_point")).astype(np.float32), data.ndim, axis)
    return (data.astype(np.float32) - zero) * _axis_broadcast(scale.astype(np.float32), data.ndim, axis)


@op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(a: Args) -> np.ndarray:
    data = np.asarray(a.raw("data")).astype(np.float32)
    scale = _repeat_blocks(np.asarray(a.raw("scale")).astype(np.float32), data.shape)
    offset = a.raw("offset")
    if offset is not None:
        data = data - _repeat_blocks(np.asarray(offset).astype(np.float32), data.shape)
    return scale * data


@op("constexpr_lut_to_dense")
def _lut_to_dense(a: Args) -> np.ndarray:
    lut = np.asarray(a.raw("lut"))
    if "shape" in a:  # iOS16: one flat table, indices packed into bytes, explicit output shape
        shape = a.ints("shape")
        nbits = int(np.log2(lut.size))
        return lut.reshape(-1)[_unpack_bits(a.raw("indices"), nbits, int(np.prod(shape)))].reshape(shape)
    # iOS18: indices already unpacked, lut [*groups, 2**nbits, vector_size], one table per block.
    indices = np.asarray(a.raw("indices")).astype(np.int64)
    rank = indices.ndim
    groups = []
    for axis in range(rank):
        block = indices.shape[axis] // lut.shape[axis]
        coords = np.arange(indices.shape[axis]) // block
        groups.append(coords.reshape([-1 if i == axis else 1 for i in range(rank)]))
    dense = lut[(*groups, indices)]  # [*indices.shape, vector_size]
    vector_size = lut.shape[-1]
    if vector_size == 1:
        return dense[..., 0]
    axis = int(a.scalar("vector_axis")) % rank
    shape = list(indices.shape)
    shape[axis] *= vector_size
    return np.moveaxis(dense, -1, axis + 1).reshape(shape)


@op("constexpr_sparse_to_dense")
def _sparse_to_dense(a: Args) -> np.ndarray:
    data = np.asarray(a.raw("nonzero_data"))
    mask = np.asarray(a.raw("mask"))
    if "shape" in a:  # iOS16: mask packed 8 per byte, least-significant bit first
        shape = a.ints("shape")
        flags = np.unpackbits(mask.astype(np.uint8), bitorder="little")[: int(np.prod(shape))].astype(bool)
        dense = np.zeros(flags.size, dtype=data.dtype)
        dense[flags] = data
        return dense.reshape(shape)
    dense = np.zeros(mask.shape, dtype=data.dtype)  # iOS18: a uint1 mask with the output's shape
    dense[mask != 0] = data
    return dense


@op("constexpr_cast")
def _constexpr_cast(a: Args) -> np.ndarray:
    return np.asarray(a.raw("source_val")).astype(DTYPES[a.scalar("output_dtype")])


# ---------------------------------------------------------------- convolution and pooling


def _same_padding(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def _spatial_padding(a: Args, spatial: tuple[int, ...], kernel, strides, dilations) -> list[tuple[int, int]]:
    pad_type = a.scalar("pad_type", "valid")
    if pad_type == "valid":
        return [(0, 0)] * len(spatial)
    if pad_type in ("same", "same_lower"):
        return [
            _same_padding(s, k, st, d, pad_type == "same_lower")
            for s, k, st, d in zip(spatial, kernel, strides, dilations, strict=True)
        ]
    if pad_type == "custom":
        pad = a.ints("pad", [0] * (2 * len(spatial)))
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(len(spatial))]
    raise PocketMLError(f"op {a.op.name}: pad_type {pad_type!r}; accepted: valid, same, same_lower, custom")


def _as_2d(x: np.ndarray, rank_spatial: int) -> np.ndarray:
    """Conv1d/pool1d inputs [N,C,W] viewed as 2-D [N,C,1,W]; 2-D passes through."""
    if rank_spatial == 1:
        return x[:, :, None, :]
    if rank_spatial == 2:
        return x
    raise PocketMLError(f"{rank_spatial}-D convolution/pooling is not supported; accepted: 1-D and 2-D")


def _taps(padded: np.ndarray, kernel, strides, dilations, out_hw):
    """Every kernel tap's strided view of the padded input: ((i, j), [N, C, Ho, Wo]) — loops over taps, not pixels."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilations, out_hw
    for i in range(kh):
        for j in range(kw):
            top, left = i * dh, j * dw
            yield (i, j), padded[:, :, top : top + sh * (ho - 1) + 1 : sh, left : left + sw * (wo - 1) + 1 : sw]


def _window_geometry(a: Args, x: np.ndarray, kernel: list[int]):
    spatial = tuple(x.shape[2:])
    n_sp = len(spatial)
    strides = a.ints("strides", [1] * n_sp) or [1] * n_sp
    dilations = a.ints("dilations", [1] * n_sp) or [1] * n_sp
    pads = _spatial_padding(a, spatial, kernel, strides, dilations)
    if n_sp == 1:
        kernel, strides, dilations, pads = [1, *kernel], [1, *strides], [1, *dilations], [(0, 0), *pads]
        spatial = (1, *spatial)
    out = tuple(
        (s + p0 + p1 - ((k - 1) * d + 1)) // st + 1
        for s, (p0, p1), k, st, d in zip(spatial, pads, kernel, strides, dilations, strict=True)
    )
    return tuple(kernel), tuple(strides), tuple(dilations), pads, out


@op("conv")
def _conv(a: Args) -> np.ndarray:
    x, weight = a.f("x"), a.f("weight")
    n_sp = x.ndim - 2
    kernel = list(weight.shape[2:])
    kernel2, strides, dilations, pads, out_hw = _window_geometry(a, x, kernel)
    x2 = _as_2d(x, n_sp)
    w2 = weight[:, :, None, :] if n_sp == 1 else weight
    padded = np.pad(x2, [(0, 0), (0, 0), *pads])
    groups = int(a.scalar("groups", 1))
    batch, channels = x2.shape[:2]
    c_out, c_in_group = w2.shape[:2]
    if c_in_group * groups != channels:
        raise PocketMLError(f"op {a.op.name}: weight expects {c_in_group * groups} input channels, got {channels}")
    pixels = out_hw[0] * out_hw[1]
    if groups == 1 and kernel2 == (1, 1) and strides == (1, 1) and padded.shape[2:] == tuple(out_hw):
        # pointwise: one matrix product, no column copy (most of a MobileNet's arithmetic)
        out = np.matmul(w2.reshape(c_out, channels), padded.reshape(batch, channels, pixels))
        out = out.reshape(batch, c_out, *out_hw)
    elif groups == channels and c_out == channels:  # depthwise: one multiply-add per tap
        out = np.zeros((batch, channels, *out_hw), dtype=np.float32)
        product = np.empty_like(out)
        for (i, j), view in _taps(padded, kernel2, strides, dilations, out_hw):
            out += np.multiply(view, w2[:, 0, i, j][None, :, None, None], out=product)
    else:  # im2col per group: columns [N, G, Cin/G * kh * kw, pixels], ordered (cin, i, j) like the weight
        cols = np.stack([view for _, view in _taps(padded, kernel2, strides, dilations, out_hw)], axis=2)
        cols = cols.reshape(batch, groups, c_in_group * kernel2[0] * kernel2[1], pixels)
        w_mat = w2.reshape(groups, c_out // groups, c_in_group * kernel2[0] * kernel2[1])
        out = np.matmul(w_mat[None], cols).reshape(batch, c_out, *out_hw)
    bias = a.f("bias")
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if n_sp == 1 else out


def _pool(a: Args, reducer: str) -> np.ndarray:
    if a.scalar("ceil_mode", False):
        raise PocketMLError(f"op {a.op.name}: ceil_mode pooling is not supported by the reference executor")
    x = a.f("x")
    n_sp = x.ndim - 2
    kernel, strides, dilations, pads, out_hw = _window_geometry(a, x, a.ints("kernel_sizes"))
    x2 = _as_2d(x, n_sp)
    fill = -np.inf if reducer == "max" else 0.0
    padded = np.pad(x2, [(0, 0), (0, 0), *pads], constant_values=fill)
    views = [view for _, view in _taps(padded, kernel, strides, dilations, out_hw)]
    if reducer == "max":
        out = np.maximum.reduce(views)
    else:
        out = np.add.reduce(views)
        if a.scalar("exclude_padding_from_average", False):
            ones = np.pad(np.ones((1, 1, *x2.shape[2:]), np.float32), [(0, 0), (0, 0), *pads])
            counts = np.add.reduce([v for _, v in _taps(ones, kernel, strides, dilations, out_hw)])
            out = out / counts
        else:
            out = out / float(kernel[0] * kernel[1])
    return out[:, :, 0, :] if n_sp == 1 else out


@op("max_pool")
def _max_pool(a: Args) -> np.ndarray:
    return _pool(a, "max")


@op("avg_pool")
def _avg_pool(a: Args) -> np.ndarray:
    return _pool(a, "avg")


# ---------------------------------------------------------------- linear algebra and normalisation


@op("linear")
def _linear(a: Args) -> np.ndarray:
    out = np.matmul(a.f("x"), a.f("weight").T)
    bias = a.f("bias")
    return out if bias is None else out + bias


@op("matmul")
def _matmul(a: Args) -> np.ndarray:
    x, y = a.f("x"), a.f("y")
    if a.scalar("transpose_x", False) and x.ndim > 1:
        x = np.swapaxes(x, -1, -2)
    if a.scalar("transpose_y", False) and y.ndim > 1:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("batch_norm")
def _batch_norm(a: Args) -> np.ndarray:
    x = a.f("x")
    shape = [1, -1] + [1] * (x.ndim - 2)
    eps = float(a.scalar("epsilon", 1e-5))
    out = (x - a.f("mean").reshape(shape)) / np.sqrt(a.f("variance").reshape(shape) + eps)
    if a.raw("gamma") is not None:
        out = out * a.f("gamma").reshape(shape)
    if a.raw("beta") is not None:
        out = out + a.f("beta").reshape(shape)
    return out


@op("softmax")
def _softmax(a: Args) -> np.ndarray:
    x = a.f("x")
    axis = int(a.scalar("axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------- elementwise


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> OpFn:
    def run(a: Args) -> np.ndarray:
        x, y = np.asarray(a.raw("x")), np.asarray(a.raw("y"))
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = a.f("x"), a.f("y")
        return fn(x, y)

    return run


for _name, _fn in {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "real_div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "less": np.less,
    "less_equal": np.less_equal,
}.items():
    OPS[_name] = _binary(_fn)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@op("relu")
def _relu(a: Args) -> np.ndarray:
    return np.maximum(a.f("x"), 0.0)


@op("relu6")
def _relu6(a: Args) -> np.ndarray:
    return np.clip(a.f("x"), 0.0, 6.0)


@op("sigmoid")
def _sigmoid_op(a: Args) -> np.ndarray:
    return _sigmoid(a.f("x"))


@op("sigmoid_hard")
def _sigmoid_hard(a: Args) -> np.ndarray:
    alpha, beta = float(a.scalar("alpha", 0.2)), float(a.scalar("beta", 0.5))
    return np.clip(alpha * a.f("x") + beta, 0.0, 1.0)


@op("silu")
def _silu(a: Args) -> np.ndarray:
    x = a.f("x")
    return x * _sigmoid(x)


@op("clip")
def _clip(a: Args) -> np.ndarray:
    return np.clip(a.f("x"), float(a.scalar("alpha")), float(a.scalar("beta")))


@op("leaky_relu")
def _leaky_relu(a: Args) -> np.ndarray:
    x = a.f("x")
    return np.where(x >= 0, x, float(a.scalar("alpha", 0.01)) * x)


@op("elu")
def _elu(a: Args) -> np.ndarray:
    x = a.f("x")
    return np.where(x > 0, x, float(a.scalar("alpha", 1.0)) * np.expm1(np.minimum(x, 0)))


@op("gelu")
def _gelu(a: Args) -> np.ndarray:
    x = a.f("x")
    mode = a.scalar("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(1.702 * x)
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf, otypes=[np.float32])(x / np.sqrt(2)))


@op("rsqrt")
def _rsqrt(a: Args) -> np.ndarray:
    return 1.0 / np.sqrt(a.f("x") + float(a.scalar("epsilon", 1e-12)))


@op("inverse")
def _inverse(a: Args) -> np.ndarray:
    return 1.0 / (a.f("x") + float(a.scalar("epsilon", 1e-4)))


@op("log")
def _log(a: Args) -> np.ndarray:
    return np.log(a.f("x") + float(a.scalar("epsilon", 0.0)))


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> OpFn:
    return lambda a: fn(a.f("x"))


for _name, _fn in {
    "tanh": np.tanh,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "square": np.square,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sign": np.sign,
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "identity": lambda x: x,
}.items():
    OPS[_name] = _unary(_fn)


# ---------------------------------------------------------------- shapes


@op("pad")
def _pad(a: Args) -> np.ndarray:
    x = np.asarray(a.raw("x"))
    pad = a.ints("pad")
    padded_dims = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - padded_dims) + [(pad[2 * i], pad[2 * i + 1]) for i in range(padded_dims)]
    mode = a.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(a.scalar("constant_val", 0.0)))
    if mode in ("reflect", "replicate"):
        return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")
    raise PocketMLError(f"op {a.op.name}: pad mode {mode!r}; accepted: constant, reflect, replicate")


@op("transpose")
def _transpose(a: Args) -> np.ndarray:
    return np.transpose(np.asarray(a.raw("x")), a.ints("perm"))


@op("reshape")
def _reshape(a: Args) -> np.ndarray:
    x = np.asarray(a.raw("x"))
    shape = a.ints("shape")
    # MIL: 0 copies the input's dimension at that position, -1 is inferred.
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(shape)])


@op("squeeze")
def _squeeze(a: Args) -> np.ndarray:
    x = np.asarray(a.raw("x"))
    axes = a.ints("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(ax % x.ndim for ax in axes))


@op("expand_dims")
def _expand_dims(a: Args) -> np.ndarray:
    x = np.asarray(a.raw("x"))
    out_rank = x.ndim + len(a.ints("axes"))
    return np.expand_dims(x, tuple(ax % out_rank for ax in a.ints("axes")))


@op("concat")
def _concat(a: Args) -> np.ndarray:
    values = [np.asarray(v) for v in a.raw("values")]
    axis = int(a.scalar("axis"))
    if a.scalar("interleave", False):
        stacked = np.stack(values, axis=axis % values[0].ndim + 1)
        shape = list(values[0].shape)
        shape[axis] = sum(v.shape[axis] for v in values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@op("slice_by_index")
def _slice_by_index(a: Args) -> np.ndarray:
    x = np.asarray(a.raw("x"))
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride") or [1] * x.ndim
    begin_mask = a.raw("begin_mask", np.zeros(x.ndim, bool))
    end_mask = a.raw("end_mask", np.zeros(x.ndim, bool))
    squeeze = a.raw("squeeze_mask", np.zeros(x.ndim, bool))
    slices: list[Any] = []
    for i in range(x.ndim):
        if squeeze[i]:
            slices.append(begin[i])
            continue
        slices.append(slice(None if begin_mask[i] else begin[i], None if end_mask[i] else end[i], stride[i]))
    return x[tuple(slices)]


def _reduce(fn: Callable[..., np.ndarray]) -> OpFn:
    def run(a: Args) -> np.ndarray:
        axes = a.ints("axes")
        return fn(a.f("x"), axis=None if axes is None else tuple(axes), keepdims=bool(a.scalar("keep_dims", False)))

    return run


for _name, _fn in {"reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min}.items():
    OPS[_name] = _reduce(_fn)


@op("cast")
def _cast(a: Args) -> np.ndarray:
    dtype = a.scalar("dtype")
    if dtype not in DTYPES:
        raise PocketMLError(f"op {a.op.name}: cast to {dtype!r}; accepted: {', '.join(DTYPES)}")
    return np.asarray(a.raw("x")).astype(DTYPES[dtype])


@op("classify")
def _classify(a: Args) -> tuple[str, dict[str, float]]:
    probabilities = np.asarray(a.raw("probabilities"), dtype=np.float32).reshape(-1)
    classes = [str(c) for c in a.raw("classes")]
    return classes[int(np.argmax(probabilities))], dict(zip(classes, probabilities.tolist(), strict=True))


# ---------------------------------------------------------------- the executor


# Ops whose result is exactly representable in float16 whenever their inputs are (selection,
# clamping to fp16 constants, data movement): their fp16 results need no second rounding.
FP16_EXACT = frozenset(
    {"relu", "relu6", "clip", "max_pool", "pad", "transpose", "reshape", "squeeze", "expand_dims", "concat",
     "slice_by_index", "identity", "maximum", "minimum", "reduce_max", "reduce_min", "abs", "floor", "ceil"}
)


def _store(value: Any, dtype: str, op_type: str = "") -> Any:
    """A result as the program declares it. fp16 values are rounded to float16 and kept in float32
    arrays (exactly the same numbers; numpy computes float16 arrays far slower), so an fp16
    program's rounding after every op is real while the next op needs no conversion.
    """
    if isinstance(value, (str, dict, list)) or dtype not in DTYPES:
        return value
    value = np.asarray(value)
    if dtype == "fp16":
        if op_type in FP16_EXACT and value.dtype == np.float32:
            return value
        return value.astype(np.float16).astype(np.float32)
    return value.astype(DTYPES[dtype], copy=False)


class MilRunner:
    """Runs one MilProgram's `main`; constants and decompressed weights are computed once."""

    def __init__(self, program: MilProgram):
        self.program = program
        unknown = sorted({op.op_type for op in program.ops if op.op_type != "const" and op.op_type not in OPS})
        if unknown:
            raise PocketMLError(
                f"{program.path.name}: Core ML op(s) {', '.join(unknown)} are not supported by pocketml's "
                f"reference executor; supported: const, {', '.join(sorted(OPS))}"
            )
        self.constants: dict[str, Any] = {}
        self.body: list[MilOp] = []
        for op in program.ops:
            if op.op_type == "const":
                self.constants[op.outputs[0]] = _store(op.value, op.output_dtypes[0])
            elif op.op_type.startswith("constexpr_"):
                self._apply(op, self.constants)
            else:
                self.body.append(op)
        self._last_use = _last_uses(self.body, set(self.constants))

    def _apply(self, op: MilOp, values: dict[str, Any]) -> None:
        result = OPS[op.op_type](Args(op, values))
        results = result if len(op.outputs) > 1 else (result,)
        for name, value, dtype in zip(op.outputs, results, op.output_dtypes, strict=True):
            values[name] = _store(value, dtype, op.op_type)

    def run(self, feeds: dict[str, np.ndarray], keep: set[str] | None = None) -> dict[str, Any]:
        """The values the program computes for one set of inputs, by name: all of them, or with
        `keep` only those named (intermediates are dropped after their last use, saving memory).
        """
        values = dict(self.constants)
        for name, (shape, dtype) in self.program.inputs.items():
            if name not in feeds:
                raise PocketMLError(f"{self.program.path.name}: missing input {name!r}; inputs: {list(self.program.inputs)}")
            feed = np.asarray(feeds[name])
            if tuple(feed.shape) != tuple(shape):
                raise PocketMLError(f"{self.program.path.name}: input {name!r} must have shape {shape}, got {feed.shape}")
            values[name] = _store(feed, dtype)
        for index, op in enumerate(self.body):
            self._apply(op, values)
            if keep is not None:
                for name in self._last_use.get(index, ()):
                    if name not in keep:
                        values.pop(name, None)
        return values


def _last_uses(body: list[MilOp], constants: set[str]) -> dict[int, list[str]]:
    """For each op index, the computed values no later op reads."""
    last: dict[str, int] = {}
    for index, op in enumerate(body):
        for ref in op.inputs.values():
            for name in ref if isinstance(ref, tuple) else (ref,):
                if name not in constants:
                    last[name] = index
    by_index: dict[int, list[str]] = {}
    for name, index in last.items():
        by_index.setdefault(index, []).append(name)
    return by_index


@dataclass
class ReferencePredictor:
    """The Predictor contract over the executor: uint8|float32 [N,H,W,3] RGB 0..255 -> float32 [N, classes]."""

    executor: MilRunner
    image_name: str
    labels: tuple[str, ...]
    probabilities_var: str
    name: str = NAME

    @property
    def input_size(self) -> tuple[int, int]:
        image = self.executor.program.image_inputs[self.image_name]
        return (image.height, image.width)

    def image_feed(self, image: np.ndarray) -> np.ndarray:
        """One HWC RGB image as Core ML hands it to the program: 8-bit values, channel order, [1,C,H,W]."""
        pixels = np.clip(np.rint(image.astype(np.float32)), 0, 255)  # a CVPixelBuffer holds 8-bit values
        if self.executor.program.image_inputs[self.image_name].color_space == "BGR":
            pixels = pixels[..., ::-1]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])

    def invoker(self, image: np.ndarray):
        """One run of the program on `image` (batch 1)."""
        feed = {self.image_name: self.image_feed(check_images(image, self.input_size)[0])}
        return lambda: self.executor.run(feed, keep={self.probabilities_var})[self.probabilities_var]

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.input_size)
        rows = [np.asarray(self.invoker(image[None])(), dtype=np.float32).reshape(-1) for image in images]
        return np.stack(rows) if rows else np.zeros((0, len(self.labels)), np.float32)


def _single_image_input(program: MilProgram) -> str:
    if len(program.inputs) != 1 or len(program.image_inputs) != 1:
        raise PocketMLError(
            f"{program.path.name}: inputs {list(program.inputs)}; the reference predictor accepts one image input"
        )
    image = next(iter(program.image_inputs.values()))
    if image.color_space not in ("RGB", "BGR"):
        raise PocketMLError(f"{program.path.name}: {image.color_space} image input; accepted: RGB, BGR")
    return image.name


def _probabilities(program: MilProgram) -> tuple[str, tuple[str, ...]]:
    """The probability vector's name and its labels: the classify op's input, else the only output."""
    classify = [op for op in program.ops if op.op_type == "classify"]
    if classify:
        ref = classify[0].inputs["classes"]
        classes = next(o.value for o in program.ops if o.op_type == "const" and o.outputs[0] == ref)
        return str(classify[0].inputs["probabilities"]), tuple(str(c) for c in classes)
    if len(program.outputs) != 1:
        raise PocketMLError(f"{program.path.name}: no classifier and outputs {list(program.outputs)}; expected one")
    return program.outputs[0], _metadata_labels(program)


def _metadata_labels(program: MilProgram) -> tuple[str, ...]:
    """Labels from user metadata (a JSON list under a key ending in "labels", as pocketml export
    writes them), for a program without a classifier ending."""
    for key, value in program.metadata.items():
        if key.endswith("labels"):
            try:
                labels = json.loads(value)
            except json.JSONDecodeError:
                continue
            if isinstance(labels, list):
                return tuple(str(label) for label in labels)
    return ()


def load_reference(path: str | Path) -> ReferencePredictor:
    """A Predictor that executes the `.mlpackage` at `path` in numpy (no Core ML runtime needed)."""
    program = load_program(path)
    executor = MilRunner(program)
    probabilities, labels = _probabilities(program)
    return ReferencePredictor(executor, _single_image_input(program), labels, probabilities)
