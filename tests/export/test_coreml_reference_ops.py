"""Per-op tests of the Core ML reference executor: small MIL programs built with coremltools' own
builder, saved as real .mlpackages, loaded back through export/coreml_mil.py and executed, against
independent TensorFlow / numpy computations (odd shapes, strides, padding modes, groups, dilations).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
tf = pytest.importorskip("tensorflow")

from coremltools.converters.mil.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402
from pocketml.export.coreml_mil import (  # noqa: E402
    SUPPORTED_COREMLTOOLS,
    load_program,
    materialize_constexpr,
    program_from_mil,
)
from pocketml.export.coreml_reference import MilRunner, load_reference  # noqa: E402

from pocketml.errors import PocketMLError  # noqa: E402

RNG = np.random.default_rng(7)
TARGETS = {"iOS16": ct.target.iOS16, "iOS18": ct.target.iOS18}


def build_program(build, shapes: dict[str, tuple[int, ...]], target: str = "iOS16"):
    """`build(**inputs)` as a coremltools MIL program (inputs named x, y)."""
    specs = [mb.TensorSpec(shape=shape) for shape in shapes.values()]
    names = list(shapes)
    program = mb.program(input_specs=specs, opset_version=TARGETS[target])
    # mb.program reads the parameter names, so one- and two-input programs are spelled out; the
    # saved inputs are named x (and y).
    if len(names) == 1:
        prog = program(lambda x: build(**{names[0]: x}))
    else:
        prog = program(lambda x, y: build(**{names[0]: x, names[1]: y}))
    return prog


def save_program(build, shapes: dict[str, tuple[int, ...]], path: Path, target: str = "iOS16", fp16: bool = False) -> Path:
    """`build(**inputs)` as a saved .mlpackage; the empty pass pipeline keeps the op under test intact
    (fp16 runs the default pipeline, which is what inserts the fp16 casts).
    """
    model = ct.convert(
        build_program(build, shapes, target),
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
        minimum_deployment_target=TARGETS[target],
        pass_pipeline=ct.PassPipeline.DEFAULT if fp16 else ct.PassPipeline.EMPTY,
    )
    model.save(str(path))
    return path


def run_program(tmp_path: Path, build, inputs: dict[str, np.ndarray], saved: bool = False, **kwargs) -> np.ndarray:
    """The executor's output for `build` on `inputs`: through a saved .mlpackage when `saved`, else
    straight from the MIL builder's program (same ops, no conversion: keeps the op grid fast).
    """
    shapes = {k: v.shape for k, v in inputs.items()}
    if saved:
        program = load_program(save_program(build, shapes, tmp_path / "op.mlpackage", **kwargs))
    else:
        program = program_from_mil(build_program(build, shapes, **kwargs), path=tmp_path / "builder")
    feeds = dict(zip(("x", "y")[: len(inputs)], inputs.values(), strict=True))
    return np.asarray(MilRunner(program).run(feeds)[program.outputs[0]])


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- adapter over coremltools internals


def test_adapter_supports_installed_coremltools():
    assert ct.__version__.startswith(SUPPORTED_COREMLTOOLS), (
        f"coremltools {ct.__version__} installed; export/coreml_mil.py was written against "
        f"{SUPPORTED_COREMLTOOLS}x internals (milproto load, MIL types) — re-check it and this test"
    )


def test_adapter_reads_back_the_converters_own_program(tmp_path):
    """The loaded program has the same ops, in order, and the same constants as the one coremltools converted."""
    weight = rand(4, 3, 3, 3)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))], opset_version=ct.target.iOS16)
    def prog(x):
        y = mb.conv(x=x, weight=weight, pad_type="same", name="conv")
        return mb.relu(x=mb.add(x=y, y=np.float32(0.5)), name="out")

    model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16, pass_pipeline=ct.PassPipeline.EMPTY)
    model.save(str(tmp_path / "m.mlpackage"))
    loaded = load_program(tmp_path / "m.mlpackage")
    original = [op for op in model._mil_program.functions["main"].operations]
    assert [op.op_type for op in loaded.ops] == [op.op_type for op in original]
    consts = [op.value for op in loaded.ops if op.op_type == "const"]
    assert any(isinstance(v, np.ndarray) and v.shape == weight.shape and np.array_equal(v, weight) for v in consts)
    assert loaded.inputs == {"x": ((1, 3, 8, 8), "fp32")}
    assert loaded.outputs == ("out",)


def test_adapter_rejects_a_path_that_is_not_an_mlpackage(tmp_path):
    (tmp_path / "model.mlpackage").mkdir()
    with pytest.raises(PocketMLError, match="not a saved .mlpackage"):
        load_program(tmp_path / "model.mlpackage")


# ---------------------------------------------------------------- convolution


def _conv_reference(x, w, bias, stride, dilation, pads, groups):
    """TensorFlow conv2d per group on an explicitly padded NHWC input."""
    xs = np.pad(x, [(0, 0), (0, 0), *pads]).transpose(0, 2, 3, 1)
    cin_g, cout_g = w.shape[1], w.shape[0] // groups
    outs = []
    for g in range(groups):
        kernel = w[g * cout_g : (g + 1) * cout_g].transpose(2, 3, 1, 0)  # HWIO
        outs.append(
            tf.nn.conv2d(xs[..., g * cin_g : (g + 1) * cin_g], kernel, strides=stride, padding="VALID", dilations=dilation)
        )
    out = np.concatenate([o.numpy() for o in outs], axis=-1).transpose(0, 3, 1, 2)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _same_pads(size, k, s, d, lower=False):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    before = total - total // 2 if lower else total // 2
    return (before, total - before)


CONV_CASES = [
    # (cin, cout, k, stride, dilation, pad_type, custom pad, groups, H, W, bias)
    (3, 5, 3, 2, 1, "same", None, 1, 7, 9, True),
    (4, 6, 3, 1, 2, "valid", None, 1, 11, 8, False),
    (6, 6, 3, 2, 1, "same", None, 6, 9, 9, True),  # depthwise, stride 2
    (6, 12, 5, 1, 1, "custom", (1, 2, 0, 3), 3, 10, 7, True),  # grouped, asymmetric custom pad
    (4, 8, 3, 1, 1, "same_lower", None, 4, 8, 6, False),  # depthwise multiplier 2
    (8, 5, 1, 1, 1, "valid", None, 1, 5, 5, True),  # pointwise
    (3, 4, 7, 2, 1, "same", None, 1, 13, 13, False),  # ResNet-style stem
    (5, 5, 3, 1, 3, "same", None, 5, 9, 10, False),  # dilated depthwise
]


@pytest.mark.parametrize("cin,cout,k,stride,dil,pad_type,pad,groups,h,w,has_bias", CONV_CASES)
def test_conv_matches_tensorflow(tmp_path, cin, cout, k, stride, dil, pad_type, pad, groups, h, w, has_bias):
    x, weight = rand(1, cin, h, w), rand(cout, cin // groups, k, k)
    bias = rand(cout) if has_bias else None
    kwargs = {"strides": [stride, stride], "dilations": [dil, dil], "pad_type": pad_type, "groups": groups}
    if pad is not None:
        kwargs["pad"] = list(pad)
    if bias is not None:
        kwargs["bias"] = bias
    got = run_program(tmp_path, lambda x: mb.conv(x=x, weight=weight, **kwargs), {"x": x})
    if pad_type in ("same", "same_lower"):
        pads = [_same_pads(n, k, stride, dil, pad_type == "same_lower") for n in (h, w)]
    elif pad_type == "custom":
        pads = [(pad[0], pad[1]), (pad[2], pad[3])]
    else:
        pads = [(0, 0), (0, 0)]
    if pad_type == "same":  # TensorFlow's own SAME padding, not this test's arithmetic, when it can
        assert pads == [_same_pads(n, k, stride, dil) for n in (h, w)]
    want = _conv_reference(x, weight, bias, stride, dil, pads, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_same_padding_agrees_with_tensorflow_same(tmp_path):
    x, weight = rand(1, 3, 10, 7), rand(4, 3, 4, 4)  # even kernel: SAME pads more at the end
    got = run_program(tmp_path, lambda x: mb.conv(x=x, weight=weight, strides=[3, 2], pad_type="same"), {"x": x}, saved=True)
    want = tf.nn.conv2d(x.transpose(0, 2, 3, 1), weight.transpose(2, 3, 1, 0), strides=[3, 2], padding="SAME")
    np.testing.assert_allclose(got, want.numpy().transpose(0, 3, 1, 2), rtol=1e-4, atol=1e-4)


def test_conv1d_matches_tensorflow(tmp_path):
    x, weight = rand(1, 3, 11), rand(4, 3, 3)
    got = run_program(tmp_path, lambda x: mb.conv(x=x, weight=weight, strides=[2], pad_type="same"), {"x": x})
    want = tf.nn.conv1d(x.transpose(0, 2, 1), weight.transpose(2, 1, 0), stride=2, padding="SAME")
    np.testing.assert_allclose(got, want.numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k,stride,pad_type,h,w", [(3, 2, "same", 9, 7), (2, 2, "valid", 7, 8), (3, 1, "same", 5, 6)])
def test_pool_matches_tensorflow(tmp_path, kind, k, stride, pad_type, h, w):
    x = rand(1, 4, h, w)
    op = mb.max_pool if kind == "max" else mb.avg_pool
    extra = {"exclude_padding_from_average": True} if kind == "avg" else {}
    got = run_program(
        tmp_path, lambda x: op(x=x, kernel_sizes=[k, k], strides=[stride, stride], pad_type=pad_type, **extra), {"x": x}
    )
    ref = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d  # TF's SAME average excludes padding
    want = ref(x.transpose(0, 2, 3, 1), ksize=k, strides=stride, padding=pad_type.upper()).numpy()
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


def test_avg_pool_counting_padding(tmp_path):
    x = rand(1, 2, 5, 5)
    got = run_program(
        tmp_path,
        lambda x: mb.avg_pool(x=x, kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1],
                              exclude_padding_from_average=False),
        {"x": x},
    )
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)]).transpose(0, 2, 3, 1)
    want = tf.nn.avg_pool2d(padded, ksize=3, strides=2, padding="VALID").numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- linear algebra, normalisation


def test_linear_and_matmul(tmp_path):
    x, weight, bias = rand(3, 7), rand(5, 7), rand(5)
    got = run_program(tmp_path, lambda x: mb.linear(x=x, weight=weight, bias=bias), {"x": x})
    np.testing.assert_allclose(got, x @ weight.T + bias, rtol=1e-5, atol=1e-5)
    a, b = rand(2, 5, 3), rand(2, 4, 5)
    got = run_program(tmp_path, lambda a, b: mb.matmul(x=a, y=b, transpose_x=True, transpose_y=True), {"a": a, "b": b})
    np.testing.assert_allclose(got, tf.linalg.matmul(a, b, transpose_a=True, transpose_b=True).numpy(), rtol=1e-5, atol=1e-5)


def test_batch_norm_matches_tensorflow(tmp_path):
    x = rand(1, 6, 4, 3)
    mean, var, gamma, beta = rand(6), np.abs(rand(6)) + 0.1, rand(6), rand(6)
    got = run_program(
        tmp_path, lambda x: mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), {"x": x}
    )
    r = (1, 6, 1, 1)
    want = tf.nn.batch_normalization(x, mean.reshape(r), var.reshape(r), beta.reshape(r), gamma.reshape(r), 1e-3)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_matches_tensorflow(tmp_path, axis):
    x = rand(2, 5, 3) * 4
    got = run_program(tmp_path, lambda x: mb.softmax(x=x, axis=axis), {"x": x})
    np.testing.assert_allclose(got, tf.nn.softmax(x, axis=axis).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axes,keep", [([2, 3], True), ([1], False), ([-1], True)])
def test_reduce_mean_matches_tensorflow(tmp_path, axes, keep):
    x = rand(1, 3, 5, 7)
    got = run_program(tmp_path, lambda x: mb.reduce_mean(x=x, axes=axes, keep_dims=keep), {"x": x})
    np.testing.assert_allclose(got, tf.reduce_mean(x, axis=axes, keepdims=keep).numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- elementwise


@pytest.mark.parametrize(
    "name,ref",
    [("add", tf.add), ("sub", tf.subtract), ("mul", tf.multiply), ("real_div", tf.divide),
     ("maximum", tf.maximum), ("minimum", tf.minimum)],
)
def test_binary_ops_broadcast_like_tensorflow(tmp_path, name, ref):
    x, y = rand(2, 3, 1, 5), rand(3, 4, 1) + 3.0
    got = run_program(tmp_path, lambda x, y: getattr(mb, name)(x=x, y=y), {"x": x, "y": y})
    np.testing.assert_allclose(got, ref(x, y).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "build,ref",
    [
        (lambda x: mb.relu(x=x), tf.nn.relu),
        (lambda x: mb.relu6(x=x), tf.nn.relu6),
        (lambda x: mb.sigmoid(x=x), tf.sigmoid),
        (lambda x: mb.silu(x=x), tf.nn.silu),
        (lambda x: mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5), lambda x: tf.nn.relu6(x + 3) / 6),  # hard_sigmoid
        (lambda x: mb.mul(x=x, y=mb.sigmoid(x=x)), tf.nn.silu),  # the unfused swish form
        (lambda x: mb.mul(x=x, y=mb.sigmoid_hard(x=x, alpha=1 / 6, beta=0.5)), lambda x: x * tf.nn.relu6(x + 3) / 6),
        (lambda x: mb.clip(x=x, alpha=-0.5, beta=1.25), lambda x: tf.clip_by_value(x, -0.5, 1.25)),
        (lambda x: mb.tanh(x=x), tf.tanh),
        (lambda x: mb.leaky_relu(x=x, alpha=0.2), lambda x: tf.nn.leaky_relu(x, 0.2)),
        (lambda x: mb.gelu(x=x, mode="TANH_APPROXIMATION"), lambda x: tf.nn.gelu(x, approximate=True)),
    ],
)
def test_activations_match_tensorflow(tmp_path, build, ref):
    x = rand(1, 4, 5, 3) * 4
    got = run_program(tmp_path, build, {"x": x})
    np.testing.assert_allclose(got, ref(x).numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "mode,pad,value",
    [("constant", [1, 2, 0, 3], 0.5), ("reflect", [2, 1, 1, 2], 0.0), ("replicate", [0, 1, 3, 0], 0.0),
     ("constant", [0, 0, 1, 1, 2, 0], 0.0)],
)
def test_pad_matches_numpy(tmp_path, mode, pad, value):
    x = rand(1, 2, 5, 6)
    got = run_program(tmp_path, lambda x: mb.pad(x=x, pad=np.array(pad, np.int32), mode=mode, constant_val=value), {"x": x})
    dims = len(pad) // 2
    widths = [(0, 0)] * (4 - dims) + [(pad[2 * i], pad[2 * i + 1]) for i in range(dims)]
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    want = np.pad(x, widths, mode=np_mode, **({"constant_values": value} if mode == "constant" else {}))
    np.testing.assert_array_equal(got, want)


def test_shape_ops_match_numpy(tmp_path):
    x = rand(1, 3, 4, 5)
    got = run_program(tmp_path, lambda x: mb.transpose(x=x, perm=[0, 2, 3, 1]), {"x": x})
    np.testing.assert_array_equal(got, x.transpose(0, 2, 3, 1))
    got = run_program(tmp_path, lambda x: mb.reshape(x=x, shape=[3, -1, 2]), {"x": x})
    np.testing.assert_array_equal(got, x.reshape(3, -1, 2))
    got = run_program(tmp_path, lambda x: mb.expand_dims(x=mb.squeeze(x=x, axes=[0]), axes=[-1]), {"x": x})
    np.testing.assert_array_equal(got, x[0][..., None])
    y = rand(1, 2, 4, 5)
    got = run_program(tmp_path, lambda x, y: mb.concat(values=[x, y, x], axis=1), {"x": x, "y": y})
    np.testing.assert_array_equal(got, np.concatenate([x, y, x], axis=1))
    got = run_program(tmp_path, lambda x: mb.slice_by_index(x=x, begin=[0, 1, 0, 1], end=[1, 3, 4, 5], stride=[1, 1, 2, 2]),
                      {"x": x})
    np.testing.assert_array_equal(got, x[:, 1:3, 0:4:2, 1:5:2])


def test_cast_to_fp16_rounds(tmp_path):
    x = np.array([[1.0001, 65519.0, 3.14159265, -2e-8]], np.float32)
    got = run_program(tmp_path, lambda x: mb.cast(x=mb.cast(x=x, dtype="fp16"), dtype="fp32"), {"x": x})
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))


def test_fp16_program_rounds_after_every_op(tmp_path):
    """An fp16 program's result equals float16 arithmetic step by step, and visibly differs from fp32."""
    x = (RNG.random((1, 64)) * 100).astype(np.float32)
    c = np.float32(1.0003)  # rounds to 1.0 in float16

    def build(x):
        return mb.sub(x=mb.mul(x=x, y=c), y=x)

    got = run_program(tmp_path, build, {"x": x}, saved=True, fp16=True)
    x16 = x.astype(np.float16)
    want = (x16 * np.float16(c)).astype(np.float16) - x16
    np.testing.assert_array_equal(got.astype(np.float16), want.astype(np.float16))
    assert np.abs(got.astype(np.float32) - (x * c - x)).max() > 5e-3


# ---------------------------------------------------------------- weight compression


def _pack_lsb_first(values: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned n-bit values into bytes, least-significant bit first (Core ML's layout)."""
    out = np.zeros(-(-values.size * nbits // 8), np.uint8)
    for i, value in enumerate(values.reshape(-1)):
        for b in range(nbits):
            if (int(value) >> b) & 1:
                pos = i * nbits + b
                out[pos // 8] |= 1 << (pos % 8)
    return out


def _weight_through_program(tmp_path, make_weight, shape, target) -> tuple[np.ndarray, np.ndarray]:
    """MilRunner's view of a decompressed weight (x + weight with x = 0), and coremltools' own."""
    path = save_program(lambda x: mb.add(x=x, y=make_weight()), {"x": shape}, tmp_path / "w.mlpackage", target=target)
    program = load_program(path)
    got = np.asarray(MilRunner(program).run({"x": np.zeros(shape, np.float32)})[program.outputs[0]])
    (theirs,) = materialize_constexpr(path).values()
    return got, theirs


def test_constexpr_affine_dequantize(tmp_path):
    q = RNG.integers(-128, 127, (4, 3, 2, 2)).astype(np.int8)
    zp, scale = np.array([0, 3, -2, 1], np.int8), np.array([0.1, 0.02, 0.5, 1.5], np.float32)
    got, theirs = _weight_through_program(
        tmp_path, lambda: mb.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=0),
        (4, 3, 2, 2), "iOS16",
    )
    want = (q.astype(np.float32) - zp.reshape(4, 1, 1, 1)) * scale.reshape(4, 1, 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got, theirs, rtol=1e-6)


def test_constexpr_blockwise_shift_scale(tmp_path):
    data = RNG.integers(-8, 7, (4, 6)).astype(types.np_int4_dtype)
    scale = (RNG.random((2, 3)) + 0.1).astype(np.float32)
    offset = RNG.integers(-2, 2, (2, 3)).astype(types.np_int4_dtype)
    got, theirs = _weight_through_program(
        tmp_path, lambda: mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset), (4, 6), "iOS18"
    )
    full = lambda p: np.kron(p.astype(np.float32), np.ones((2, 2), np.float32))  # noqa: E731 — blocks of 2x2
    np.testing.assert_allclose(got, full(scale) * (data.astype(np.float32) - full(offset)), rtol=1e-6)
    np.testing.assert_allclose(got, theirs, rtol=1e-6)


@pytest.mark.parametrize("nbits", [4, 6])
def test_constexpr_lut_to_dense_ios16(tmp_path, nbits):
    shape = (5, 3, 3)  # 45 values: the packed bits do not end on a byte boundary
    indices = RNG.integers(0, 2**nbits, shape)
    lut = rand(2**nbits)
    packed = _pack_lsb_first(indices, nbits)
    got, theirs = _weight_through_program(
        tmp_path, lambda: mb.constexpr_lut_to_dense(indices=packed, lut=lut, shape=np.array(shape, np.uint32)),
        shape, "iOS16",
    )
    np.testing.assert_array_equal(got, lut[indices])
    np.testing.assert_array_equal(got, theirs)


def test_constexpr_lut_to_dense_ios18_per_group(tmp_path):
    indices = RNG.integers(0, 16, (4, 6)).astype(types.np_uint4_dtype)
    lut = rand(2, 1, 16, 1)  # one table for rows 0-1, one for rows 2-3
    got, theirs = _weight_through_program(
        tmp_path, lambda: mb.constexpr_lut_to_dense(indices=indices, lut=lut), (4, 6), "iOS18"
    )
    want = np.concatenate([lut[0, 0, :, 0][indices[:2]], lut[1, 0, :, 0][indices[2:]]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, theirs)


def test_constexpr_lut_to_dense_ios18_vector(tmp_path):
    indices = RNG.integers(0, 4, (2, 3)).astype(types.np_uint2_dtype)
    lut = rand(1, 1, 4, 2)  # 2-element vectors laid along axis 0
    got, theirs = _weight_through_program(
        tmp_path, lambda: mb.constexpr_lut_to_dense(indices=indices, lut=lut, vector_axis=0), (4, 3), "iOS18"
    )
    want = np.zeros((4, 3), np.float32)
    for i in range(2):
        for j in range(3):
            want[2 * i : 2 * i + 2, j] = lut[0, 0, indices[i, j]]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, theirs)


def test_constexpr_sparse_to_dense_ios16_and_ios18(tmp_path):
    dense = rand(3, 5) * (RNG.random((3, 5)) > 0.5)
    mask = (dense != 0).reshape(-1)
    got, theirs = _weight_through_program(
        tmp_path,
        lambda: mb.constexpr_sparse_to_dense(
            nonzero_data=dense.reshape(-1)[mask], mask=_pack_lsb_first(mask.astype(np.uint8), 1),
            shape=np.array((3, 5), np.uint32),
        ),
        (3, 5), "iOS16",
    )
    np.testing.assert_array_equal(got, dense)
    np.testing.assert_array_equal(got, theirs)
    got, theirs = _weight_through_program(
        tmp_path,
        lambda: mb.constexpr_sparse_to_dense(
            nonzero_data=dense.reshape(-1)[mask], mask=(dense != 0).astype(types.np_uint1_dtype)
        ),
        (3, 5), "iOS18",
    )
    np.testing.assert_array_equal(got, dense)
    np.testing.assert_array_equal(got, theirs)


# ---------------------------------------------------------------- image input, unknown ops


def test_image_input_applies_channel_order_scale_and_bias(tmp_path):
    """BGR ImageType with scale and bias: the program sees B,G,R pixel values * scale + bias, as Core ML documents."""
    import keras

    inputs = keras.Input((6, 5, 3), name="image")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    scale, bias = 2 / 255, [-1.0, -0.5, 0.25]
    mlmodel = ct.convert(
        model,
        convert_to="mlprogram",
        inputs=[ct.ImageType(name="image", shape=(1, 6, 5, 3), color_layout=ct.colorlayout.BGR, scale=scale, bias=bias)],
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS16,
    )
    mlmodel.save(str(tmp_path / "bgr.mlpackage"))
    predictor = load_reference(tmp_path / "bgr.mlpackage")
    images = RNG.integers(0, 256, (2, 6, 5, 3)).astype(np.uint8)
    got = predictor.predict(images)
    means = images.astype(np.float64).mean(axis=(1, 2))[:, ::-1]  # B, G, R
    np.testing.assert_allclose(got, means * scale + np.array(bias), rtol=1e-5, atol=1e-5)
    assert predictor.input_size == (6, 5)


def test_unknown_op_names_the_op_and_the_model(tmp_path):
    path = save_program(lambda x: mb.erf(x=x), {"x": (1, 4)}, tmp_path / "odd_model.mlpackage")
    with pytest.raises(PocketMLError, match=r"odd_model\.mlpackage.*\berf\b"):
        MilRunner(load_program(path))
