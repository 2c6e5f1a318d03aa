"""Tensor.__getitem__: NumPy semantics forward, gradients that scatter-add back, double backward, errors."""
import numpy as np
import pytest

import gradtensor as gt
from opcheck import OpCase, check_op

ROWS = np.array([2, 0, 2])
MASK_2x3 = np.array([[True, False, True], [False, False, True]])

# (name, input shape, index): the same index is applied to the NumPy array and to the tensor
INDEXES = [
    ("int", (3, 4), 1),
    ("negative_int", (3, 4), -1),
    ("int_to_0d", (4,), 2),
    ("two_ints", (3, 4), (2, -3)),
    ("slice", (5, 2), slice(1, 4)),
    ("slice_step", (6,), slice(None, None, 2)),
    ("slice_negative_step", (3, 5), (slice(None), slice(4, 0, -2))),
    ("slice_out_of_range_bounds", (3,), slice(-10, 10)),
    ("slice_empty", (3, 2), slice(2, 1)),
    ("ellipsis", (2, 3, 4), (Ellipsis, 1)),
    ("ellipsis_middle", (2, 3, 4), (0, Ellipsis, slice(1, 3))),
    ("none", (2, 3), (None, slice(None), None)),
    ("none_0d", (), None),
    ("empty_tuple_0d", (), ()),
    ("int_array_repeats", (3, 2), [0, 0, 1]),
    ("int_array_negative", (4,), np.array([-1, 0, -1])),
    ("int_array_2d", (3, 2), np.array([[0, 2], [2, 2]])),
    ("int_array_empty", (3, 2), []),
    ("int_array_0d", (3, 2), np.array(1)),
    ("two_int_arrays", (3, 4), ([0, 2, 2], [1, 1, 3])),
    ("int_arrays_broadcast", (3, 4), (np.array([[0], [2]]), np.array([1, 3, 1]))),
    ("bool_mask_full", (2, 3), MASK_2x3),
    ("bool_mask_axis0", (3, 2), np.array([True, False, True])),
    ("bool_mask_none_true", (3, 2), np.zeros(3, bool)),
    ("bool_mask_after_slice", (2, 3), (slice(None), np.array([False, True, True]))),
    ("bool_scalar_true", (2,), True),
    ("bool_scalar_false", (2,), False),
    ("advanced_then_slice", (3, 4, 2), (ROWS, slice(1, 3))),
    ("slice_then_advanced", (3, 4, 2), (slice(None), [3, 3], 1)),
    ("separated_advanced", (3, 4, 2), ([0, 2], slice(None), [1, 1])),
    ("ellipsis_advanced_none", (3, 4, 2), (None, Ellipsis, [1, 0, 1])),
    ("mask_and_int_array", (2, 3, 2), (MASK_2x3, [1, 1, 0])),
    ("size0_input", (0, 3), (slice(None), [0, 2])),
]


def _index_case(name, shape, index, as_tensor=False):
    def to_gt(item):
        if as_tensor and isinstance(item, (np.ndarray, list)):
            return gt.tensor(np.asarray(item, dtype=bool if np.asarray(item).dtype == bool else np.int64))
        return item

    gt_index = tuple(map(to_gt, index)) if isinstance(index, tuple) else to_gt(index)
    return OpCase(f"{name}{'_tensor' if as_tensor else ''}", lambda x: x[gt_index], lambda a: a[index], [shape])


CASES = [_index_case(*row) for row in INDEXES] + [
    _index_case(*row, as_tensor=True)
    for row in INDEXES
    if any(isinstance(i, (np.ndarray, list)) for i in (row[2] if isinstance(row[2], tuple) else (row[2],)))
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_getitem(case):
    check_op(case)


def test_repeated_indices_accumulate():
    x = gt.tensor(np.arange(4.0), requires_grad=True)
    x[[0, 0, 1]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 1, 0, 0])


def test_repeated_indices_accumulate_in_double_backward():
    x = gt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x[[2, 2, 0]]
    (g,) = gt.autograd.grad((y ** 2).sum(), x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), [2, 0, 12])  # 2*1 once, 2*3 twice
    (gg,) = gt.autograd.grad((g * g).sum(), x)
    np.testing.assert_allclose(gg.numpy(), [8, 0, 96])  # d/dx of (2x)^2 + (4x)^2 terms


def test_mixed_advanced_gradient_values():
    x = gt.tensor(np.zeros((2, 3, 4)), requires_grad=True)
    weights = gt.tensor(np.arange(1.0, 7.0).reshape(2, 3))
    out = x[[1, 1], :, [0, 0]]  # separated advanced indices: the index axis comes first, shape (2, 3)
    assert out.shape == (2, 3)
    (out * weights).sum().backward()
    expected = np.zeros((2, 3, 4))
    expected[1, :, 0] = [5, 7, 9]
    np.testing.assert_array_equal(x.grad.numpy(), expected)


def test_bool_tensor_mask_from_comparison():
    x = gt.tensor([[-1.0, 2.0], [3.0, -4.0]], requires_grad=True)
    picked = x[x > 0]
    np.testing.assert_array_equal(picked.numpy(), [2, 3])
    (picked * gt.tensor([10.0, 20.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 10], [20, 0]])


def test_size0_result_backward_gives_zeros():
    x = gt.tensor(np.ones((2, 3)), requires_grad=True)
    empty = x[x > 5]
    assert empty.shape == (0,)
    (empty.sum() + x[[]].sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))


def test_basic_slice_gradient_and_dtype_float32():
    x = gt.tensor(np.ones((3, 4), np.float32), requires_grad=True)
    y = x[1:, ::2]
    assert y.dtype == np.float32 and y.shape == (2, 2)
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0, 0, 0], [3, 0, 3, 0], [3, 0, 3, 0]])


def test_integer_tensor_scalar_index():
    x = gt.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    row = x[gt.tensor(1)]
    np.testing.assert_array_equal(row.numpy(), [3, 4])
    row.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 0], [1, 1]])


def test_index_array_is_copied():
    x = gt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = gt.tensor([0, 0])
    y = x[idx]
    idx.data[:] = 2  # changing the index afterwards must not change the recorded gather
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 0])


def test_iteration_and_integer_tensors():
    x = gt.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    rows = list(x)
    assert [r.tolist() for r in rows] == [[0, 1], [2, 3], [4, 5]]
    (rows[0] + 2 * rows[2]).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 1], [0, 0], [2, 2]])
    ints = gt.tensor([5, 6, 7])
    assert ints[[2, 0]].tolist() == [7, 5] and not ints[1:].requires_grad


def test_no_grad_indexing_records_nothing():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    with gt.no_grad():
        y = x[[1, 1]]
    assert not y.requires_grad and y.grad_fn is None
    assert y.tolist() == [2, 2]


@pytest.mark.parametrize("index, message", [
    (3, r"getitem: index 3 is out of bounds for axis 0 with size 3 \(tensor shape \(3, 4\)\)"),
    ((0, -5), r"getitem: index -5 is out of bounds for axis 1 with size 4 \(tensor shape \(3, 4\)\)"),
    ([0, 3], r"getitem: index 3 is out of bounds for axis 0 with size 3 \(tensor shape \(3, 4\)\)"),
    ((Ellipsis, np.array([[4]])), r"getitem: index 4 is out of bounds for axis 1 with size 4"),
    ((slice(None), gt.tensor([-5])), r"getitem: index -5 is out of bounds for axis 1 with size 4"),
    ((0, 0, 0), r"getitem: too many indices for a tensor of shape \(3, 4\): 3 axes are indexed"),
    ((Ellipsis, 0, Ellipsis), r"getitem: an index can only have a single ellipsis"),
    (1.5, r"getitem: only integers, slices, Ellipsis, None and integer or boolean arrays are valid indices"),
    (np.array([0.0]), r"got an array of dtype float64"),
    (gt.tensor([0.0], requires_grad=True), r"a tensor that requires grad cannot be an index"),
    (np.array([True, False]), r"getitem: a boolean index of shape \(2,\) does not match the indexed axes \(3,\)"),
    ((0, np.ones((3,), bool)), r"boolean index of shape \(3,\) does not match the indexed axes \(4,\) of shape"),
    (([0, 1], [0, 1, 2]), r"getitem: shape mismatch.*\(tensor shape \(3, 4\)\)"),
])
def test_index_errors(index, message):
    x = gt.ones(3, 4, requires_grad=True)
    with pytest.raises(IndexError, match=message):
        x[index]
