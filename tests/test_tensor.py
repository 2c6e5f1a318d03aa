"""Tensor creation, conversion and attributes (API.md "Tensor creation" and "Tensor")."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradtensor as gt

# --- dtype inference -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, dtype",
    [
        (1.5, np.float32),
        ([1.0, 2.0], np.float32),
        ([[1, 2.5]], np.float32),  # mixed ints and floats: a float list
        (3, np.int64),
        ([1, 2], np.int64),
        (True, np.bool_),
        (np.array([1.0, 2.0]), np.float64),  # arrays keep their dtype
        (np.array([1.0], dtype=np.float32), np.float32),
        (np.array([1, 2], dtype=np.int32), np.int32),
        (np.float64(2.0), np.float64),
    ],
    ids=repr,
)
def test_dtype_inference(data, dtype):
    t = gt.tensor(data)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.numpy(), np.asarray(data))


def test_explicit_dtype_wins():
    t = gt.tensor([1, 2], dtype=gt.float64)
    assert t.dtype == np.float64
    np.testing.assert_array_equal(t.numpy(), [1.0, 2.0])
    assert gt.tensor(np.array([1.5, 2.5]), dtype="float32").dtype == np.float32


def test_default_float_dtype_is_float32_and_settable():
    assert gt.get_default_dtype() == np.float32
    try:
        gt.set_default_dtype(gt.float64)
        assert gt.tensor(1.5).dtype == np.float64
        assert gt.zeros(2).dtype == np.float64
    finally:
        gt.set_default_dtype(gt.float32)
    assert gt.tensor(1.5).dtype == np.float32
    with pytest.raises(TypeError):
        gt.set_default_dtype(gt.int64)


def test_tensor_copies_and_asarray_shares():
    source = np.array([1.0, 2.0])
    copied, shared = gt.tensor(source), gt.asarray(source)
    source[0] = 9.0
    np.testing.assert_array_equal(copied.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(shared.numpy(), [9.0, 2.0])
    from_tensor = gt.tensor(copied)
    assert not np.shares_memory(from_tensor.data, copied.data)


def test_tensor_rejects_unsupported_data():
    with pytest.raises(TypeError, match="tensor"):
        gt.tensor(None)
    with pytest.raises(TypeError, match="tensor"):
        gt.tensor({"a": 1})


def test_tensor_with_requires_grad():
    t = gt.tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf and t.grad is None
    with pytest.raises(TypeError):
        gt.tensor([1, 2], requires_grad=True)


# --- filled tensors and ranges ------------------------------------------------------------------------


@pytest.mark.parametrize("make, value", [(gt.zeros, 0.0), (gt.ones, 1.0)], ids=["zeros", "ones"])
def test_zeros_and_ones(make, value):
    for t in (make(2, 3), make((2, 3))):
        assert t.shape == (2, 3) and t.dtype == np.float32
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
    assert make(4, dtype=gt.int64).dtype == np.int64
    assert make((), dtype=gt.float64).shape == ()
    assert make(2, requires_grad=True).requires_grad
    assert make(0, 3).shape == (0, 3)


def test_empty_has_shape_and_dtype():
    t = gt.empty(2, 3, dtype=gt.float64)
    assert t.shape == (2, 3) and t.dtype == np.float64


def test_full():
    t = gt.full((2, 2), 1.5)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.numpy(), np.full((2, 2), 1.5))
    assert gt.full((3,), 7).dtype == np.int64
    assert gt.full(3, 7.0, dtype=gt.float64).dtype == np.float64
    assert gt.full((2,), 0.5, requires_grad=True).requires_grad


def test_like_functions_keep_shape_and_dtype():
    base = gt.tensor(np.arange(6.0).reshape(2, 3))
    for t, value in ((gt.zeros_like(base), 0.0), (gt.ones_like(base), 1.0), (gt.full_like(base, 4.0), 4.0)):
        assert t.shape == (2, 3) and t.dtype == np.float64
        np.testing.assert_array_equal(t.numpy(), np.full((2, 3), value))
        assert not t.requires_grad
    assert gt.zeros_like(base, dtype=gt.float32).dtype == np.float32
    assert gt.ones_like(base, requires_grad=True).requires_grad
    assert gt.empty_like(base).shape == (2, 3)


def test_arange():
    t = gt.arange(5)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(t.numpy(), np.arange(5))
    np.testing.assert_array_equal(gt.arange(1, 7, 2).numpy(), [1, 3, 5])
    f = gt.arange(0.0, 1.0, 0.25)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f.numpy(), [0.0, 0.25, 0.5, 0.75])
    assert gt.arange(3, dtype=gt.float64).dtype == np.float64
    assert gt.arange(3.0, requires_grad=True).requires_grad


def test_linspace():
    t = gt.linspace(0, 1, 5)
    assert t.dtype == np.float32
    np.testing.assert_allclose(t.numpy(), [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(gt.linspace(0, 1, 4, endpoint=False).numpy(), [0.0, 0.25, 0.5, 0.75])
    assert gt.linspace(0, 1, 3, dtype=gt.float64).dtype == np.float64
    assert gt.linspace(0, 1, 3, requires_grad=True).requires_grad


def test_eye():
    t = gt.eye(3)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t.numpy(), np.eye(3))
    np.testing.assert_array_equal(gt.eye(2, 3, 1).numpy(), np.eye(2, 3, 1))
    assert gt.eye(2, dtype=gt.int64).dtype == np.int64
    assert gt.eye(2, requires_grad=True).requires_grad


# --- random ---------------------------------------------------------------------------------------------


def _draws():
    return [
        gt.rand(2, 3), gt.randn((4,)), gt.randint(0, 10, (5,)), gt.uniform(-1.0, 1.0, (3,)),
        gt.normal(2.0, 0.5, (3,)),
    ]


def test_manual_seed_makes_random_draws_reproducible():
    gt.manual_seed(1234)
    first = [t.numpy() for t in _draws()]
    gt.manual_seed(1234)
    second = [t.numpy() for t in _draws()]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    gt.manual_seed(4321)
    third = [t.numpy() for t in _draws()]
    assert not np.array_equal(first[1], third[1])


def test_random_shapes_dtypes_and_ranges():
    gt.manual_seed(0)
    r = gt.rand(1000)
    assert r.dtype == np.float32 and r.shape == (1000,)
    assert 0.0 <= r.numpy().min() and r.numpy().max() < 1.0
    assert gt.rand((2, 3)).shape == (2, 3)
    assert gt.randn(2, 3, dtype=gt.float64).dtype == np.float64
    assert gt.randn(3, requires_grad=True).requires_grad
    i = gt.randint(3, 6, (1000,))
    assert i.dtype == np.int64 and set(np.unique(i.numpy())) == {3, 4, 5}
    u = gt.uniform(-2.0, -1.0, (1000,))
    assert u.dtype == np.float32 and -2.0 <= u.numpy().min() and u.numpy().max() < -1.0
    n = gt.normal(5.0, 0.1, (10_000,), dtype=gt.float64)
    assert abs(n.numpy().mean() - 5.0) < 0.01 and abs(n.numpy().std() - 0.1) < 0.01


def test_uniform_and_normal_are_numpys_draws_from_the_basic_ones():
    # built from random() and standard_normal() (CuPy's generator has no normal()): on the CPU the very
    # numbers numpy.random.Generator.uniform / normal give, also for a 0-d shape
    gt.manual_seed(7)
    got = [gt.uniform(-2.0, 3.0, (5,), dtype=gt.float64), gt.normal(2.0, 0.5, (4,), dtype=gt.float64),
           gt.normal(1.0, 2.0, dtype=gt.float64)]
    rng = np.random.default_rng(7)
    expected = [rng.uniform(-2.0, 3.0, (5,)), rng.normal(2.0, 0.5, (4,)), rng.normal(1.0, 2.0, ())]
    for tensor, values in zip(got, expected):
        assert tensor.shape == np.shape(values)
        np.testing.assert_array_equal(tensor.numpy(), values)


# --- interop ----------------------------------------------------------------------------------------------


def test_from_numpy_shares_memory():
    source = np.arange(3.0)
    t = gt.from_numpy(source)
    assert t.dtype == np.float64 and np.shares_memory(t.data, source)
    source[0] = 7.0
    assert t.numpy()[0] == 7.0
    with pytest.raises(TypeError, match="from_numpy"):
        gt.from_numpy([1.0, 2.0])


def test_dlpack_round_trips_with_numpy():
    source = np.arange(4.0).reshape(2, 2)
    t = gt.from_dlpack(source)
    assert np.shares_memory(t.data, source)
    np.testing.assert_array_equal(t.numpy(), source)
    back = np.from_dlpack(t)
    assert np.shares_memory(back, t.data)
    assert back.dtype == np.float64


def test_array_protocol():
    t = gt.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(np.asarray(t), [1.0, 2.0])
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    copied = np.array(t)  # np.array copies by default, also through __array__
    assert not np.shares_memory(copied, t.data)


def test_numpy_returns_a_copy_also_for_tensors_requiring_grad():
    t = gt.tensor([1.0, 2.0], requires_grad=True)
    out = t.numpy()
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    out[0] = 100.0
    assert t.data[0] == 1.0
    y = t * 2.0
    np.testing.assert_array_equal(y.numpy(), [2.0, 4.0])


def test_item_and_tolist():
    assert gt.tensor(2.5).item() == 2.5 and isinstance(gt.tensor(2.5).item(), float)
    assert gt.tensor([[3]]).item() == 3 and isinstance(gt.tensor(3).item(), int)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        gt.tensor([1.0, 2.0]).item()
    assert gt.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert gt.tensor(1.5).tolist() == 1.5


def test_python_number_conversions():
    assert float(gt.tensor(2.5)) == 2.5
    assert int(gt.tensor(3)) == 3
    assert bool(gt.tensor(1.0)) is True
    assert len(gt.zeros(4, 2)) == 4
    with pytest.raises(ValueError, match="ambiguous"):
        bool(gt.tensor([1.0, 2.0]))


def test_repr():
    assert repr(gt.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert repr(gt.tensor([1, 2])) == "tensor([1, 2])"
    assert repr(gt.tensor(np.array([1.0, 2.0]))) == "tensor([1., 2.], dtype=float64)"
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2.0) == "tensor([2., 4.], grad_fn=<MulBackward>)"


# --- attributes --------------------------------------------------------------------------------------------


def test_basic_attributes():
    t = gt.tensor(np.arange(24.0).reshape(2, 3, 4))
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.ndim == 3 and t.size == 24 and t.dtype == np.float64
    assert t.device == "cpu" and str(t.device) == "cpu" and t.device == gt.device("cpu")


def test_T_and_mT():
    m = gt.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.T.numpy(), np.arange(6.0).reshape(2, 3).T)
    batch = np.arange(24.0).reshape(2, 3, 4)
    b = gt.tensor(batch)
    np.testing.assert_array_equal(b.T.numpy(), batch.transpose(2, 1, 0))
    np.testing.assert_array_equal(b.mT.numpy(), batch.swapaxes(-1, -2))


def test_is_leaf_and_grad_fn():
    x = gt.tensor([1.0], requires_grad=True)
    c = gt.tensor([1.0])
    assert x.is_leaf and x.grad_fn is None and c.is_leaf
    y = x * 2.0
    assert not y.is_leaf and y.grad_fn.name() == "MulBackward"
    assert (c * 2.0).is_leaf  # nothing to differentiate: no node recorded


# --- conversion and copies -------------------------------------------------------------------------------------


def test_to_and_astype_cast_and_are_differentiable():
    x = gt.tensor([1.5, 2.5], requires_grad=True)
    for y in (x.to(gt.float64), x.to(dtype=gt.float64), x.astype("float64"), x.to("cpu", gt.float64)):
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y.numpy(), [1.5, 2.5])
    (x.to(gt.float64) * 2.0).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    assert gt.tensor([1.7, -1.7]).astype(gt.int64).tolist() == [1, -1]


def test_to_the_same_device_and_dtype_returns_the_tensor():
    x = gt.tensor([1.0])
    assert x.to("cpu") is x and x.cpu() is x and x.astype(gt.float32) is x


def test_clone_copies_memory_and_passes_gradients():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    c = x.clone()
    assert not np.shares_memory(c.data, x.data) and c.grad_fn.name() == "CloneBackward"
    (c * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 3.0])


# --- operators with NumPy arrays and Python scalars ---------------------------------------------------------------


@pytest.mark.parametrize(
    "op, expected",
    [
        (lambda a, x: a + x, [3.0, 5.0]),
        (lambda a, x: a - x, [1.0, 1.0]),
        (lambda a, x: a * x, [2.0, 6.0]),
        (lambda a, x: a / x, [2.0, 1.5]),
        (lambda a, x: a ** x, [2.0, 9.0]),
        (lambda a, x: a @ x, 8.0),
    ],
    ids=["add", "sub", "mul", "div", "pow", "matmul"],
)
def test_reflected_operators_with_numpy_arrays_give_tensors(op, expected):
    x = gt.tensor(np.array([1.0, 2.0]), requires_grad=True)
    out = op(np.array([2.0, 3.0]), x)
    assert type(out) is gt.Tensor and out.requires_grad
    np.testing.assert_allclose(out.numpy(), expected)


def test_reflected_operators_with_python_scalars_keep_float32():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    for out, expected in ((2 - x, [1.0, 0.0]), (2 / x, [2.0, 1.0]), (2 ** x, [2.0, 4.0]), (3 * x, [3.0, 6.0])):
        assert type(out) is gt.Tensor and out.dtype == np.float32
        np.testing.assert_allclose(out.numpy(), expected)
    (2 - x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-3.0, -3.0])


# --- import without CUDA --------------------------------------------------------------------------------------------


def _run_without_cupy(code):
    """Run code in a fresh interpreter where `import cupy` fails, as on a machine without CUDA."""
    prelude = "import sys\nsys.modules['cupy'] = None\nsys.modules['cupyx'] = None\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_and_backward_work_without_cupy():
    result = _run_without_cupy(
        """
        import gradtensor as gt
        x = gt.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        assert x.grad.tolist() == [2.0, 4.0], x.grad
        assert x.device == "cpu"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cuda_reports_unavailable_without_cupy():
    result = _run_without_cupy(
        """
        import gradtensor as gt
        assert gt.cuda.is_available() is False
        assert gt.cuda.device_count() == 0
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_moving_to_cuda_without_cupy_raises_a_clear_error():
    result = _run_without_cupy(
        """
        import gradtensor as gt
        try:
            gt.tensor([1.0]).to("cuda")
        except RuntimeError as e:
            assert "CUDA is not available" in str(e), e
            print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- edge cases: data kinds, bounds, operators and formatting as in NumPy and PyTorch ----------------------


def test_data_holding_float64_arrays_or_scalars_keeps_float64():
    """Only Python floats take the default float dtype; arrays, NumPy scalars and tensors inside a
    list keep theirs (as a bare array does)."""
    assert gt.tensor([np.ones(2), np.zeros(2)]).dtype == gt.float64
    assert gt.tensor([np.float64(1.5), 2.0]).dtype == gt.float64
    assert gt.tensor([gt.tensor(1.0, dtype=gt.float64)]).dtype == gt.float64
    assert gt.tensor([[1.0, 2], [3, True]]).dtype == gt.float32


@pytest.mark.parametrize("make,match", [
    (lambda: gt.tensor(np.array([1j])), "tensor: expected numbers .* complex128"),
    (lambda: gt.from_numpy(np.array(["a"])), "from_numpy: expected numbers .* <U1"),
    (lambda: gt.full((2,), None), "full: fill_value must be a number, got NoneType"),
    (lambda: gt.zeros((2.5, 3)), r"zeros: sizes must be integers, got \(2.5, 3\)"),
    (lambda: gt.rand(2.7), "rand: sizes must be integers, got 2.7"),
    (lambda: gt.rand(3, dtype=gt.int64), "rand: samples are floating point, got dtype int64"),
    (lambda: gt.zeros_like(np.ones(2)), "expected a Tensor to take the shape of, got ndarray"),
    (lambda: gt.set_default_dtype(None), "set_default_dtype: expected a floating dtype, got None"),
])
def test_creation_refuses_what_a_tensor_cannot_hold(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@pytest.mark.parametrize("make,match", [
    (lambda: gt.arange(0, 5, 0), "arange: step must be nonzero"),
    (lambda: gt.normal(0.0, -1.0, (2,)), "normal: std must be non-negative"),
    (lambda: gt.uniform(1.0, 0.0), "uniform: expected low <= high"),
])
def test_creation_refuses_bad_ranges(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_arange_takes_numpy_and_tensor_floats_and_rounds_once():
    np.testing.assert_array_equal(gt.arange(0, 1, np.float32(0.25)).numpy(), [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(gt.arange(0, 1, gt.tensor(0.25)).numpy(), [0.0, 0.25, 0.5, 0.75])
    assert gt.arange(np.float32(2.5)).dtype == gt.float32
    # float32 values computed in float64 and rounded once (NumPy's float32 arange accumulates error)
    assert gt.arange(-5, 5, 0.3)[-1].item() == np.float32(4.9)
    assert gt.arange(0, 1, 0.1)[-1].item() == np.float32(0.9)


@pytest.mark.parametrize("dtype", [gt.float16, gt.float32] + ([gt.bfloat16] if gt.bfloat16 is not None else []))
def test_uniform_samples_never_reach_the_upper_bound(dtype):
    """A float64 draw just below 1 rounds up to 1 in a narrow dtype: samples are kept below it."""
    gt.manual_seed(0)
    assert gt.rand(200_000, dtype=dtype).max().item() < 1.0
    assert gt.uniform(-1.0, 1.0, (200_000,), dtype=dtype).max().item() < 1.0
    assert gt.nn.init.uniform_(gt.zeros(200_000, dtype=dtype), -2.0, 2.0).max().item() < 2.0


def test_negative_seeds_are_taken_as_pytorch_takes_them():
    gt.manual_seed(-1)
    first = gt.rand(3).numpy()
    gt.manual_seed(2**64 - 1)
    np.testing.assert_array_equal(gt.rand(3).numpy(), first)


def test_bitwise_operators_as_numpy_and_pytorch():
    x, b = gt.tensor([1, 2, 3]), gt.tensor([True, False, True])
    assert (x & 2).tolist() == [0, 2, 2] and (x | 4).tolist() == [5, 6, 7] and (x ^ 1).tolist() == [0, 3, 2]
    assert (~x).tolist() == [-2, -3, -4] and (3 & x).tolist() == [1, 2, 3]
    assert (b & gt.tensor([True, True, False])).tolist() == [True, False, False] and (~b).dtype == gt.bool
    view = x[:]
    x &= gt.tensor([1, 1, 1])  # in place, as NumPy: a view sees it
    assert view.tolist() == [1, 0, 1]
    with pytest.raises(TypeError, match="bitwise_or: bitwise operators take bool and integer operands, got float32"):
        gt.tensor([0.5]) | 2


def test_equality_with_other_objects_is_false():
    x = gt.tensor([1.0, 2.0])
    assert (x == "a") is False and (x != "a") is True and (x == None) is False  # noqa: E711
    assert x in ["a", None, x]
    assert gt.device("cpu") != "banana"
    assert (x == [1.0, 0.0]).tolist() == [True, False]


def test_format_repr_and_array_protocol_details():
    assert f"{gt.tensor(1.5):.2f}" == "1.50"
    assert repr(gt.zeros(0, 3)) == "tensor([], size=(0, 3))"
    if gt.bfloat16 is not None:
        assert repr(gt.tensor([1.0, 2.5], dtype=gt.bfloat16)) == "tensor([1. , 2.5], dtype=bfloat16)"
    x = gt.tensor([1.0, 2.0])
    assert np.shares_memory(np.array(x, copy=False), x.data)
    with pytest.raises(ValueError, match="copy=False"):
        np.array(x, dtype=np.float64, copy=False)
    assert x.to(gt.zeros(1, dtype=gt.float64)).dtype == gt.float64  # x.to(other): other's dtype and device
    with pytest.raises(RuntimeError, match="'cuda:'"):
        gt.device("cuda:")
