"""Shape ops: forward against NumPy, first and second derivatives, dtypes, errors."""
import numpy as np
import pytest

import gradtensor as gt
from opcheck import OpCase, check_op

CASES = [
    # reshaping
    OpCase("reshape", lambda x: x.reshape(3, 2), lambda a: a.reshape(3, 2), [(2, 3)]),
    OpCase("reshape_-1", lambda x: gt.reshape(x, (2, -1)), lambda a: a.reshape(2, -1), [(6,)]),
    OpCase("reshape_0d", lambda x: x.reshape(1, 1), lambda a: a.reshape(1, 1), [()]),
    OpCase("reshape_to_0d", lambda x: x.reshape(()), lambda a: a.reshape(()), [(1, 1)]),
    OpCase("reshape_size0", lambda x: x.reshape(3, 0), lambda a: a.reshape(3, 0), [(0, 3)]),
    OpCase("expand_dims", lambda x: gt.expand_dims(x, 1), lambda a: np.expand_dims(a, 1), [(2, 3)]),
    OpCase("expand_dims_tuple", lambda x: x.expand_dims((0, -1)), lambda a: np.expand_dims(a, (0, -1)), [(2, 3)]),
    OpCase("expand_dims_0d", lambda x: gt.expand_dims(x, 0), lambda a: np.expand_dims(a, 0), [()]),
    OpCase("squeeze_all", gt.squeeze, np.squeeze, [(1, 3, 1)]),
    OpCase("squeeze_axis", lambda x: x.squeeze(-1), lambda a: np.squeeze(a, -1), [(1, 3, 1)]),
    OpCase("squeeze_tuple", lambda x: gt.squeeze(x, (0, 2)), lambda a: np.squeeze(a, (0, 2)), [(1, 3, 1)]),
    OpCase("squeeze_to_0d", gt.squeeze, np.squeeze, [(1,)]),
    OpCase("squeeze_0d", gt.squeeze, np.squeeze, [()]),
    OpCase("flatten", gt.flatten, lambda a: a.flatten(), [(2, 3, 2)]),
    OpCase("flatten_middle", lambda x: x.flatten(1, 2), lambda a: a.reshape(2, 6, 1), [(2, 3, 2, 1)]),
    OpCase("flatten_0d", gt.flatten, lambda a: a.flatten(), [()]),
    # permuting
    OpCase("transpose", lambda x: x.transpose(2, 0, 1), lambda a: a.transpose(2, 0, 1), [(2, 3, 4)]),
    OpCase("transpose_default", gt.transpose, np.transpose, [(2, 3)]),
    OpCase("transpose_0d", gt.transpose, np.transpose, [()]),
    OpCase("permute_dims", lambda x: gt.permute_dims(x, [1, 0, 2]), lambda a: a.transpose(1, 0, 2), [(2, 3, 1)]),
    OpCase("swapaxes", lambda x: x.swapaxes(0, -1), lambda a: a.swapaxes(0, -1), [(2, 3, 4)]),
    OpCase("mT", lambda x: x.mT, lambda a: a.swapaxes(-1, -2), [(2, 3, 4)]),
    OpCase("moveaxis", lambda x: gt.moveaxis(x, 0, -1), lambda a: np.moveaxis(a, 0, -1), [(2, 3, 4)]),
    OpCase("moveaxis_tuple", lambda x: x.moveaxis((0, 1), (2, 0)), lambda a: np.moveaxis(a, (0, 1), (2, 0)),
           [(2, 3, 4)]),
    OpCase("flip_all", gt.flip, np.flip, [(2, 3)]),
    OpCase("flip_axis", lambda x: x.flip(1), lambda a: np.flip(a, 1), [(2, 3, 2)]),
    OpCase("flip_tuple", lambda x: gt.flip(x, (0, -1)), lambda a: np.flip(a, (0, -1)), [(2, 3, 2)]),
    OpCase("flip_0d", gt.flip, np.flip, [()]),
    # broadcasting and repeating
    OpCase("broadcast_to", lambda x: x.broadcast_to((2, 3, 4)), lambda a: np.broadcast_to(a, (2, 3, 4)), [(3, 1)]),
    OpCase("broadcast_to_0d", lambda x: gt.broadcast_to(x, (2, 3)), lambda a: np.broadcast_to(a, (2, 3)), [()]),
    OpCase("tile_int", lambda x: gt.tile(x, 2), lambda a: np.tile(a, 2), [(2, 3)]),
    OpCase("tile_more_reps", lambda x: x.tile((2, 1, 3)), lambda a: np.tile(a, (2, 1, 3)), [(2, 2)]),
    OpCase("tile_fewer_reps", lambda x: gt.tile(x, (2,)), lambda a: np.tile(a, (2,)), [(2, 1, 3)]),
    OpCase("tile_zero", lambda x: gt.tile(x, (0, 2)), lambda a: np.tile(a, (0, 2)), [(2, 3)]),
    OpCase("tile_0d", lambda x: gt.tile(x, (2, 3)), lambda a: np.tile(a, (2, 3)), [()]),
    OpCase("repeat_flat", lambda x: gt.repeat(x, 2), lambda a: np.repeat(a, 2), [(2, 3)]),
    OpCase("repeat_axis", lambda x: x.repeat(3, axis=1), lambda a: np.repeat(a, 3, axis=1), [(2, 2, 1)]),
    OpCase("repeat_counts", lambda x: gt.repeat(x, [2, 0, 1], axis=0), lambda a: np.repeat(a, [2, 0, 1], axis=0),
           [(3, 2)]),
    OpCase("repeat_counts_zero_ends", lambda x: gt.repeat(x, [0, 2, 1, 0]), lambda a: np.repeat(a, [0, 2, 1, 0]),
           [(2, 2)]),
    OpCase("repeat_counts_all_zero", lambda x: gt.repeat(x, [0, 0], axis=1), lambda a: np.repeat(a, [0, 0], axis=1),
           [(3, 2)]),
    OpCase("repeat_counts_empty_axis", lambda x: gt.repeat(x, [], axis=0),
           lambda a: np.repeat(a, np.array([], int), axis=0), [(0, 2)]),
    OpCase("repeat_counts_tensor", lambda x: gt.repeat(x, gt.tensor([1, 3]), axis=-1),
           lambda a: np.repeat(a, [1, 3], axis=-1), [(3, 2)]),
    OpCase("repeat_one_count", lambda x: gt.repeat(x, np.array([2]), axis=0), lambda a: np.repeat(a, [2], axis=0),
           [(2, 2)]),
    OpCase("repeat_zero", lambda x: gt.repeat(x, 0, axis=0), lambda a: np.repeat(a, 0, axis=0), [(2, 3)]),
    OpCase("repeat_0d", lambda x: gt.repeat(x, 3), lambda a: np.repeat(a, 3), [()]),
    # joining and splitting
    OpCase("concatenate", lambda a, b: gt.concatenate([a, b]), lambda a, b: np.concatenate([a, b]), [(2, 3), (1, 3)]),
    OpCase("concatenate_axis", lambda a, b, c: gt.concatenate((a, b, c), axis=-1),
           lambda a, b, c: np.concatenate((a, b, c), axis=-1), [(2, 1), (2, 3), (2, 2)]),
    OpCase("concatenate_none", lambda a, b: gt.concatenate([a, b], axis=None),
           lambda a, b: np.concatenate([a, b], axis=None), [(2, 2), ()]),
    OpCase("concatenate_size0", lambda a, b: gt.concatenate([a, b], 1), lambda a, b: np.concatenate([a, b], 1),
           [(2, 0), (2, 3)]),
    OpCase("concatenate_one_grad", lambda a, b: gt.concatenate([a, b]), lambda a, b: np.concatenate([a, b]),
           [(2,), (3,)], grad_inputs=[1]),
    OpCase("stack", lambda a, b: gt.stack([a, b]), lambda a, b: np.stack([a, b]), [(2, 3), (2, 3)]),
    OpCase("stack_last", lambda a, b, c: gt.stack([a, b, c], axis=-1), lambda a, b, c: np.stack([a, b, c], axis=-1),
           [(2, 1), (2, 1), (2, 1)]),
    OpCase("stack_0d", lambda a, b: gt.stack([a, b]), lambda a, b: np.stack([a, b]), [(), ()]),
    OpCase("split_sections", lambda x: gt.split(x, 3), lambda a: np.split(a, 3), [(6, 2)]),
    OpCase("split_indices", lambda x: x.split([1, 3], axis=1), lambda a: np.split(a, [1, 3], axis=1), [(2, 4)]),
    OpCase("split_one_piece_used", lambda x: gt.split(x, 3)[1], lambda a: np.split(a, 3)[1], [(3, 2)]),
    OpCase("split_two_of_three_used", lambda x: gt.split(x, [1, 2], axis=1)[0] * gt.split(x, [1, 2], axis=1)[2],
           lambda a: np.split(a, [1, 2], axis=1)[0] * np.split(a, [1, 2], axis=1)[2], [(2, 3)]),
    OpCase("split_empty_pieces", lambda x: gt.split(x, [0, 2, 2, 9]), lambda a: np.split(a, [0, 2, 2, 9]), [(3,)]),
    OpCase("split_negative_points", lambda x: gt.split(x, [-2]), lambda a: np.split(a, [-2]), [(4, 1)]),
    # out-of-order points make overlapping pieces (NumPy semantics); their gradients add up
    OpCase("split_overlapping", lambda x: gt.split(x, [3, 1]), lambda a: np.split(a, [3, 1]), [(5,)]),
    # padding
    OpCase("pad_constant", lambda x: gt.pad(x, 1), lambda a: np.pad(a, 1), [(2, 3)]),
    OpCase("pad_pairs", lambda x: x.pad(((0, 2), (1, 0))), lambda a: np.pad(a, ((0, 2), (1, 0))), [(2, 3)]),
    OpCase("pad_one_pair", lambda x: gt.pad(x, (2, 1), constant_values=1.5),
           lambda a: np.pad(a, (2, 1), constant_values=1.5), [(2, 1)]),
    OpCase("pad_size0", lambda x: gt.pad(x, ((1, 1), (0, 2))), lambda a: np.pad(a, ((1, 1), (0, 2))), [(0, 2)]),
    OpCase("pad_reflect", lambda x: gt.pad(x, ((2, 1), (1, 3)), mode="reflect"),
           lambda a: np.pad(a, ((2, 1), (1, 3)), mode="reflect"), [(3, 3)]),
    OpCase("pad_reflect_size1", lambda x: gt.pad(x, 2, mode="reflect"), lambda a: np.pad(a, 2, mode="reflect"),
           [(1, 2)]),
    OpCase("pad_symmetric", lambda x: gt.pad(x, (3, 1), mode="symmetric"),
           lambda a: np.pad(a, (3, 1), mode="symmetric"), [(2,)]),
    OpCase("pad_replicate", lambda x: gt.pad(x, ((0, 0), (2, 2)), mode="replicate"),
           lambda a: np.pad(a, ((0, 0), (2, 2)), mode="edge"), [(2, 2)]),
    OpCase("pad_edge", lambda x: gt.pad(x, 1, mode="edge"), lambda a: np.pad(a, 1, mode="edge"), [(1, 1)]),
    OpCase("pad_wrap", lambda x: gt.pad(x, ((1, 4),), mode="wrap"), lambda a: np.pad(a, ((1, 4),), mode="wrap"),
           [(3,)]),
    # gathering
    OpCase("take_flat", lambda x: gt.take(x, [5, 0, 5]), lambda a: np.take(a, [5, 0, 5]), [(2, 3)]),
    OpCase("take_axis", lambda x: x.take(np.array([[1, -1], [1, 0]]), axis=1),
           lambda a: np.take(a, [[1, -1], [1, 0]], axis=1), [(2, 3, 2)]),
    OpCase("take_scalar", lambda x: gt.take(x, 1, axis=0), lambda a: np.take(a, 1, axis=0), [(2, 3)]),
    OpCase("take_tensor_indices", lambda x: gt.take(x, gt.tensor([2, 2, 2]), axis=-1),
           lambda a: np.take(a, [2, 2, 2], axis=-1), [(2, 3)]),
    OpCase("take_empty", lambda x: gt.take(x, [], axis=0), lambda a: np.take(a, np.array([], int), axis=0), [(2, 3)]),
    OpCase("take_along_axis", lambda x: gt.take_along_axis(x, np.array([[0, 0], [2, 1]]), 1),
           lambda a: np.take_along_axis(a, np.array([[0, 0], [2, 1]]), 1), [(2, 3)]),
    OpCase("take_along_axis_0", lambda x: x.take_along_axis(np.array([[1, 0, 1, 1]]), axis=0),
           lambda a: np.take_along_axis(a, np.array([[1, 0, 1, 1]]), axis=0), [(2, 4)]),
    OpCase("take_along_axis_broadcast", lambda x: gt.take_along_axis(x, np.array([[[1], [0]]]), -1),
           lambda a: np.take_along_axis(a, np.array([[[1], [0]]]), -1), [(2, 1, 3)]),
    OpCase("take_along_axis_none", lambda x: gt.take_along_axis(x, gt.tensor([3, 3, 0]), None),
           lambda a: np.take_along_axis(a, np.array([3, 3, 0]), None), [(2, 2)]),
    # copies
    OpCase("clone", gt.clone, np.copy, [(2, 3)]),
    OpCase("astype_same", lambda x: x.astype(x.dtype), lambda a: a, [(2,)]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_op(case):
    check_op(case)


def test_methods_exist():
    x = gt.ones(2, 3)
    for name in ["moveaxis", "expand_dims", "squeeze", "flatten", "split", "tile", "repeat", "flip", "pad", "take",
                 "take_along_axis"]:
        assert callable(getattr(x, name)), name


def test_shape_arguments_accept_numpy_ints_and_arrays():
    x = gt.ones(6)
    assert x.reshape(np.int64(2), np.int64(3)).shape == (2, 3)
    assert x.reshape(np.array([3, 2])).shape == (3, 2)
    assert gt.broadcast_to(gt.ones(()), np.int64(4)).shape == (4,)
    assert gt.ones(2, 3, 4).transpose(np.array([2, 0, 1])).shape == (4, 2, 3)
    assert gt.ones(2, 3, 4).transpose(None).shape == (4, 3, 2)


@pytest.mark.parametrize("op", ["concatenate", "stack"])
def test_join_promotes_dtypes_and_keeps_grad_dtypes(op):
    a = gt.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    b = gt.tensor(np.array([3.0, 4.0], np.float64), requires_grad=True)
    out = getattr(gt, op)([a, b])
    assert out.dtype == np.float64
    (out * gt.tensor(np.arange(1.0, 5.0).reshape(out.shape))).sum().backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad.numpy(), [1, 2])
    np.testing.assert_array_equal(b.grad.numpy(), [3, 4])


def test_concatenate_mixes_int_and_array_inputs():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    out = gt.concatenate([gt.tensor([7, 8]), x, np.array([9.0], np.float32)])
    assert out.dtype == np.float64  # NumPy's promotion of int64 with float32
    np.testing.assert_array_equal(out.numpy(), [7, 8, 1, 2, 9])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1])


def test_stack_accepts_numbers():
    x = gt.tensor(np.array(2.0, np.float32), requires_grad=True)
    out = gt.stack([x, 3.0])
    assert out.dtype == np.float32  # a Python float becomes a float32 tensor, as in gt.tensor(3.0)
    np.testing.assert_array_equal(out.numpy(), [2, 3])
    out.sum().backward()
    assert x.grad.item() == 1


def test_split_returns_list_and_unused_pieces_get_zero_grad():
    x = gt.tensor(np.arange(6.0), requires_grad=True)
    pieces = gt.split(x, 3)
    assert isinstance(pieces, list) and [p.shape for p in pieces] == [(2,), (2,), (2,)]
    (pieces[1] * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 3, 3, 0, 0])


def test_split_second_order_with_unused_pieces():
    x = gt.tensor(np.arange(1.0, 5.0), requires_grad=True)
    first = gt.split(x, 2)[0]
    (g,) = gt.autograd.grad((first ** 3).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), [3, 12, 0, 0])
    (gg,) = gt.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), [6, 12, 0, 0])


def test_take_repeated_indices_accumulate():
    x = gt.tensor(np.arange(4.0), requires_grad=True)
    gt.take(x, [3, 3, 0, 3]).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 0, 0, 3])


def test_repeat_counts_accumulate():
    x = gt.tensor([[1.0], [2.0]], requires_grad=True)
    gt.repeat(x, [3, 1], axis=0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[3], [1]])


def test_pad_reflect_gradient_counts_copies():
    x = gt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = gt.pad(x, (2, 1), mode="reflect")
    np.testing.assert_array_equal(out.numpy(), [3, 2, 1, 2, 3, 2])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 3, 2])


def test_take_indices_are_copied():
    x = gt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = np.array([0, 0])
    y = gt.take(x, idx)
    idx[:] = 2  # changing the caller's array must not change the recorded gather
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 0])


def test_float32_astype_round_trip_keeps_grad_dtype():
    x = gt.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = x.astype("float64")
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2, 4])


@pytest.mark.parametrize("fn, error, message", [
    (lambda x: x.reshape(4, 2), ValueError, r"reshape: cannot reshape a tensor of shape \(2, 3\)"),
    (lambda x: x.transpose(0, 0), ValueError, r"transpose: axes \(0, 0\) are not a permutation"),
    (lambda x: x.swapaxes(0, 2), ValueError, r"swapaxes: axis 2 is out of range"),
    (lambda x: x.moveaxis((0, 1), 0), ValueError, r"moveaxis: source \(0, 1\) and destination 0"),
    (lambda x: x.moveaxis((0, 0), (0, 1)), ValueError, r"moveaxis: repeated axis"),
    (lambda x: x.expand_dims(3), ValueError, r"expand_dims: axis 3 is out of range"),
    (lambda x: x.squeeze(1), ValueError, r"squeeze: axis 1 has size 3, not 1 \(shape \(2, 3\)\)"),
    (lambda x: x.flatten(1, 0), ValueError, r"flatten: start_axis 1 comes after end_axis 0 for shape \(2, 3\)"),
    (lambda x: x.broadcast_to((3, 3)), ValueError, r"broadcast_to: cannot broadcast shape \(2, 3\) to \(3, 3\)"),
    (lambda x: gt.concatenate([x, gt.ones(3, 2)]), ValueError,
     r"concatenate: shapes \(2, 3\) and \(3, 2\) differ outside axis 0"),
    (lambda x: gt.concatenate([x, gt.ones(6)]), ValueError, r"concatenate: shapes \(2, 3\) and \(6,\)"),
    (lambda x: gt.concatenate([x.sum(), x.sum()]), ValueError, r"concatenate: 0-d tensors cannot be concatenated"),
    (lambda x: gt.concatenate([]), ValueError, r"concatenate: need at least one tensor"),
    (lambda x: gt.concatenate([np.ones(2)]), TypeError, r"concatenate: expected at least one Tensor"),
    (lambda x: gt.stack([x, gt.ones(3, 2)]), ValueError, r"stack: all tensors must have the same shape"),
    (lambda x: gt.stack([x], axis=3), ValueError, r"stack: axis 3 is out of range"),
    (lambda x: gt.split(x, 4, axis=1), ValueError, r"split: axis 1 of size 3 does not divide into 4 equal sections"),
    (lambda x: gt.split(x, 0), ValueError, r"split: the number of sections must be positive"),
    (lambda x: gt.split(x.sum(), 1), ValueError, r"split: axis 0 is out of range for a 0-d tensor"),
    (lambda x: gt.tile(x, (-1,)), ValueError, r"tile: reps must be non-negative"),
    (lambda x: gt.repeat(x, [1, 2], axis=1), ValueError,
     r"repeat: repeats of shape \(2,\) do not match axis 1 of size 3 \(shape \(2, 3\)\)"),
    (lambda x: gt.repeat(x, [1, -1], axis=0), ValueError, r"repeat: repeats must be non-negative"),
    (lambda x: gt.repeat(x, -2), ValueError, r"repeat: repeats must be non-negative, got -2"),
    (lambda x: gt.repeat(x, [1.0, 2.0], axis=0), TypeError, r"repeat: repeats must be integers, got dtype float"),
    (lambda x: gt.flip(x, 2), ValueError, r"flip: axis 2 is out of range"),
    (lambda x: gt.pad(x, 1, mode="mean"), ValueError, r"pad: mode 'mean' is not supported"),
    (lambda x: gt.pad(x, ((1, 1), (1, 1), (1, 1))), ValueError, r"pad: pad_width .* has 3 pairs for a tensor with 2"),
    (lambda x: gt.pad(x, (1, -1)), ValueError, r"pad: pad_width must be non-negative"),
    (lambda x: gt.pad(x, ((1, 2, 3),)), ValueError, r"pad: pad_width .* is not \(before, after\) pairs"),
    (lambda x: gt.pad(x[:0], 1, mode="reflect"), ValueError, r"pad: cannot extend the empty axis 0 \(shape \(0, 3\)\)"),
    (lambda x: gt.take(x, [6]), IndexError,
     r"take: index 6 is out of bounds for axis 0 with size 6 \(tensor shape \(6,\)\)"),
    (lambda x: gt.take(x, -4, axis=1), IndexError, r"take: index -4 is out of bounds for axis 1 with size 3"),
    (lambda x: gt.take(x, [0.0]), TypeError, r"take: indices must be integers, got dtype float"),
    (lambda x: gt.take(x, [True]), TypeError, r"take: indices must be integers, got dtype bool"),
    (lambda x: gt.take_along_axis(x, np.array([0, 1]), 1), ValueError,
     r"take_along_axis: indices of shape \(2,\) and x of shape \(2, 3\) must have the same number of dimensions"),
    (lambda x: gt.take_along_axis(x, np.zeros((3, 1), int), 1), ValueError,
     r"take_along_axis: indices of shape \(3, 1\) do not broadcast against x of shape \(2, 3\) outside axis 1"),
    (lambda x: gt.take_along_axis(x, np.array([[3]]), 1), IndexError,
     r"take_along_axis: index 3 is out of bounds for axis 1 with size 3 \(tensor shape \(2, 3\)\)"),
    (lambda x: gt.take_along_axis(x, np.array([[0, 1]]), None), ValueError,
     r"take_along_axis: with axis=None indices must be 1-D"),
])
def test_errors(fn, error, message):
    x = gt.ones(2, 3, requires_grad=True)
    with pytest.raises(error, match=message):
        fn(x)


@pytest.mark.parametrize("shape, target", [
    ((), (3, 4)), ((1,), (5,)), ((3, 1), (2, 3, 4)), ((2, 3), (4, 2, 3)), ((2, 1), (2, 0)), ((0,), (0,)),
    ((3,), (4,)), ((2, 3), (3,)),
])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_broadcast_views_match_numpys(shape, target, layout):
    from gradtensor import backend

    size = int(np.prod(shape))
    base = np.arange(2 * size, dtype=np.float32)
    array = (base[::2] if layout == "strided" else base[:size]).reshape(shape)
    try:
        expected = np.broadcast_to(array, target)
    except ValueError:
        with pytest.raises(ValueError):
            backend.broadcast_to(array, target)
        return
    view = backend.broadcast_to(array, target)
    np.testing.assert_array_equal(view, expected)
    assert view.shape == expected.shape and not view.flags.writeable
    assert view.size == 0 or np.shares_memory(view, array)
