"""Linear algebra: matmul, dot, outer, tensordot, einsum against NumPy, with gradcheck + gradgradcheck,
NumPy's 1-D rules, broadcasting, size-0 operands and error messages."""
import numpy as np
import pytest

import gradtensor as gt
from gradtensor.autograd import gradcheck, gradgradcheck
from opcheck import OpCase, check_op


def _binary_cases(name, fn, ref, shape_pairs):
    return [OpCase(name, fn, ref, list(shapes)) for shapes in shape_pairs]


MATMUL_SHAPES = [
    ((2, 3), (3, 4)),
    ((3,), (3,)),  # inner product: 0-d result
    ((3,), (3, 2)),  # row vector
    ((2, 3), (3,)),  # column vector
    ((2, 2, 3), (2, 3, 2)),  # batched
    ((2, 1, 2, 3), (3, 3, 2)),  # batch dims broadcast against each other
    ((3, 2, 3), (3, 2)),  # one matrix for the whole batch (folded weight gradient)
    ((2, 2, 3), (3,)),
    ((3,), (2, 3, 2)),
    ((1, 3), (3, 1)),
    ((0, 3), (3, 2)),  # size 0
    ((2, 0), (0, 3)),  # empty contraction: zeros
]

DOT_SHAPES = [
    ((), (3,)),
    ((2, 3), ()),
    ((3,), (3,)),
    ((2, 3), (3, 2)),
    ((2, 2, 3), (3,)),
    ((3,), (2, 3, 2)),
    ((2, 3), (2, 3, 2)),  # N-D . M-D: last axis of a with the second-to-last of b
    ((2, 1, 3), (2, 3, 1)),
]

OUTER_SHAPES = [((3,), (2,)), ((2, 2), (3,)), ((), (2,)), ((0,), (2,))]

TENSORDOT_CASES = [
    ((2, 3, 2), (3, 2, 2), 2),
    ((2, 3), (3, 2), 1),
    ((2,), (3,), 0),
    ((2, 3, 2), (2, 2, 3), ([1, 0], [2, 0])),
    ((2, 3), (3, 2), (1, 0)),
    ((3, 2), (3, 2), ([0, 1], [0, 1])),
    ((), (2,), 0),
    ((0, 2), (2, 3), 1),
]

EINSUM_CASES = [
    ("ij,jk->ik", [(2, 3), (3, 2)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ii->i", [(3, 3)]),  # diagonal
    ("ii", [(3, 3)]),  # trace (implicit output)
    ("...ij,...jk", [(2, 1, 2, 3), (3, 3, 2)]),  # ellipsis broadcasting
    ("i,i->", [(3,), (3,)]),
    ("ij,jk", [(2, 3), (3, 2)]),  # implicit: 'ik'
    ("ba", [(2, 3)]),  # implicit: alphabetical order transposes
    ("ij->", [(2, 3)]),
    ("ij->ji", [(2, 3)]),
    ("i,j->ij", [(3,), (2,)]),
    ("ij,k->ik", [(2, 3), (2,)]),  # j is summed within the first operand alone
    ("ij,kl->il", [(2, 3), (2, 2)]),  # each operand has a label of its own to sum
    ("iij->j", [(2, 2, 3)]),
    ("iji->ij", [(2, 3, 2)]),
    ("iii->", [(2, 2, 2)]),
    ("ij,ij->ij", [(2, 1), (2, 3)]),  # a size-1 dimension broadcasts, as in NumPy
    ("...ii->...i", [(2, 3, 3)]),
    ("i...,i...->...", [(2, 3), (2, 1)]),
    ("...,...", [(3,), (2, 1)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 2)]),
    ("ij,jj->i", [(2, 2), (2, 2)]),
    ("i,", [(3,), ()]),
    (" i j , j k -> i k ", [(2, 3), (3, 2)]),
    ("ij,jk->ik", [(0, 3), (3, 2)]),
    ("ij,jk->ik", [(2, 0), (0, 2)]),
]

CASES = (
    _binary_cases("matmul", gt.matmul, np.matmul, MATMUL_SHAPES)
    + [OpCase("matmul@", lambda a, b: a @ b, np.matmul, [(2, 3), (3,)])]
    + _binary_cases("dot", gt.dot, np.dot, DOT_SHAPES)
    + _binary_cases("outer", gt.outer, np.outer, OUTER_SHAPES)
    + [
        OpCase(f"tensordot(axes={axes})", lambda a, b, axes=axes: gt.tensordot(a, b, axes),
               lambda a, b, axes=axes: np.tensordot(a, b, axes), [sa, sb])
        for sa, sb, axes in TENSORDOT_CASES
    ]
    + [
        OpCase(f"einsum({spec!r})", lambda *ops, spec=spec: gt.einsum(spec, *ops),
               lambda *ops, spec=spec: np.einsum(spec, *ops), shapes)
        for spec, shapes in EINSUM_CASES
    ]
)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_linalg_op(case):
    check_op(case)


def _t(a, requires_grad=True):
    return gt.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# --- NumPy's 1-D rules, by value --------------------------------------------------------------------


def test_matmul_vector_rules_and_gradients():
    v, w = _t([1.0, 2.0, 3.0]), _t([4.0, 5.0, 6.0])
    inner = v @ w
    assert inner.shape == () and inner.item() == 32.0
    inner.backward()
    np.testing.assert_array_equal(v.grad.numpy(), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 2.0, 3.0])

    m = _t(np.arange(6.0).reshape(3, 2))
    row = gt.matmul(v, m)  # v is a row: (3,) @ (3, 2) -> (2,)
    np.testing.assert_array_equal(row.numpy(), [16.0, 22.0])
    v.grad = None
    row.sum().backward()
    np.testing.assert_array_equal(v.grad.numpy(), [1.0, 5.0, 9.0])
    np.testing.assert_array_equal(m.grad.numpy(), [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])


def test_dot_follows_numpy_rules():
    a = np.arange(12.0).reshape(2, 2, 3)
    b = np.arange(12.0).reshape(2, 3, 2)
    assert gt.dot(_t(a), _t(b)).shape == (2, 2, 2, 2)  # matmul would give (2, 2, 2)
    np.testing.assert_array_equal(gt.dot(_t(a), _t(b)).numpy(), np.dot(a, b))
    np.testing.assert_array_equal(gt.dot(_t(a), _t([1.0, 0.0, 2.0])).numpy(), np.dot(a, [1.0, 0.0, 2.0]))
    assert gt.dot(_t([1.0, 2.0]), 3.0).tolist() == [3.0, 6.0]
    assert gt.dot(2.0, gt.ones(2, dtype=gt.float16)).dtype == gt.float16  # a Python number stays weak
    assert _t(a).dot(_t(b)).shape == (2, 2, 2, 2)


def test_matmul_accepts_numpy_operands_and_keeps_float32():
    x = gt.ones((2, 3), dtype=gt.float32, requires_grad=True)
    out = np.ones((4, 2), dtype=np.float32) @ x
    assert isinstance(out, gt.Tensor) and out.shape == (4, 3) and out.dtype == np.float32
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 4.0, np.float32))


def test_batched_matmul_gradient_shapes_with_shared_matrix():
    a = _t(np.random.default_rng(0).standard_normal((4, 3, 2)))
    w = _t(np.random.default_rng(1).standard_normal((2, 5)))
    (a @ w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), a.numpy().sum(axis=(0, 1))[:, None] * np.ones((1, 5)))
    np.testing.assert_allclose(a.grad.numpy(), np.broadcast_to(w.numpy().sum(axis=1), (4, 3, 2)))


def test_size_zero_contraction_gives_zeros_and_gradients():
    a = gt.zeros((2, 0), dtype=gt.float64, requires_grad=True)
    b = gt.zeros((0, 3), dtype=gt.float64, requires_grad=True)
    out = a @ b
    np.testing.assert_array_equal(out.numpy(), np.zeros((2, 3)))
    out.sum().backward()
    assert a.grad.shape == (2, 0) and b.grad.shape == (0, 3)


# --- einsum ------------------------------------------------------------------------------------------------


def test_einsum_trace_and_diagonal_gradients():
    x = _t(np.arange(9.0).reshape(3, 3))
    gt.einsum("ii", x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.eye(3))
    x.grad = None
    (gt.einsum("ii->i", x) * _t([1.0, 2.0, 3.0], requires_grad=False)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.diag([1.0, 2.0, 3.0]))


def test_einsum_broadcast_gradient_is_summed():
    a = _t(np.ones((2, 1)))
    b = _t(np.arange(6.0).reshape(2, 3))
    gt.einsum("ij,ij->ij", a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [[3.0], [12.0]])
    np.testing.assert_array_equal(b.grad.numpy(), np.ones((2, 3)))


def test_einsum_double_backward_through_three_operands():
    rng = np.random.default_rng(2)
    ops = [_t(rng.standard_normal(s)) for s in [(2, 2), (2, 2), (2,)]]
    fn = lambda a, b, c: gt.einsum("ij,jk,k->i", a, b, c)  # noqa: E731
    assert gradcheck(fn, ops)
    assert gradgradcheck(fn, ops)


def test_einsum_gradient_only_for_operands_that_need_it():
    a = _t(np.ones((2, 3)))
    b = gt.ones((3,), dtype=gt.float64)
    gt.einsum("ij,j->i", a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.ones((2, 3)))
    assert b.grad is None


def test_einsum_is_not_a_method():
    assert not hasattr(gt.Tensor, "einsum")


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, shapes, message",
    [
        (gt.matmul, [(2, 3), (4, 5)], r"^matmul: shapes \(2, 3\) and \(4, 5\) are not aligned \(3 != 4\)$"),
        (gt.matmul, [(3,), (4,)], r"^matmul: shapes \(3,\) and \(4,\) are not aligned \(3 != 4\)$"),
        (gt.matmul, [(), (3,)], r"^matmul: operands must be at least 1-D, got shapes \(\) and \(3,\)$"),
        (gt.matmul, [(2, 2, 3), (3, 3, 2)],
         r"^matmul: batch dimensions \(2,\) and \(3,\) of shapes \(2, 2, 3\) and \(3, 3, 2\) cannot be broadcast"),
        (gt.dot, [(2, 2, 3), (2, 4, 2)], r"^dot: shapes \(2, 2, 3\) and \(2, 4, 2\) are not aligned \(3 != 4\)$"),
        (lambda a, b: gt.tensordot(a, b, 1), [(2, 3), (4, 2)],
         r"^tensordot: shapes \(2, 3\) and \(4, 2\) are not aligned: axis 1 of a has size 3 but axis 0 of b has "
         r"size 4$"),
        (lambda a, b: gt.tensordot(a, b, 3), [(2, 3), (3, 2)], "tensordot: axes=3 must be between 0 and"),
        (lambda a, b: gt.tensordot(a, b, ([0, 1], [0])), [(2, 3), (3, 2)], r"tensordot: 2 axes of a \(0, 1\) but 1"),
        (lambda a, b: gt.tensordot(a, b, ([0, 0], [0, 1])), [(2, 3), (2, 2)], r"tensordot: repeated axis in \(0, 0\)"),
        (lambda a, b: gt.tensordot(a, b, ([2], [0])), [(2, 3), (2, 2)], "tensordot: axis 2 is out of range"),
        (lambda a, b: gt.einsum("ij,jk->ik", a, b), [(2, 3), (4, 2)],
         r"einsum: label 'j' has sizes 3 and 4 in operands of shapes \(\(2, 3\), \(4, 2\)\)"),
        (lambda a: gt.einsum("ijk->i", a), [(2, 3)],
         r"einsum: operand 0 has shape \(2, 3\) \(2 dimensions\) but its subscripts 'ijk' name 3"),
        (lambda a: gt.einsum("ij,jk->ik", a), [(2, 3)],
         "einsum: subscripts 'ij,jk->ik' name 2 operands but 1 were given"),
        (lambda a: gt.einsum("ij->k", a), [(2, 3)], "einsum: output label 'k' of 'ij->k' must appear once"),
        (lambda a: gt.einsum("ij->ii", a), [(2, 3)], "einsum: output label 'i' of 'ij->ii' must appear once"),
        (lambda a: gt.einsum("...i->i", a), [(2, 3)], r"einsum: the output of '...i->i' needs '...'"),
        (lambda a: gt.einsum("i1->i", a), [(2, 3)], "einsum: invalid subscripts 'i1->i'"),
        (lambda a: gt.einsum("ii->i", a), [(2, 3)],
         r"einsum: label 'i' repeats in operand 0 with different sizes \(shape \(2, 3\)\)"),
    ],
)
def test_errors(fn, shapes, message):
    with pytest.raises(ValueError, match=message):
        fn(*[gt.ones(s) for s in shapes])


def test_einsum_argument_errors():
    with pytest.raises(TypeError, match="einsum: subscripts must be a string"):
        gt.einsum(gt.ones(2), [0])
    with pytest.raises(ValueError, match="einsum: needs at least one operand"):
        gt.einsum("i")
    with pytest.raises(TypeError, match="einsum: expected at least one Tensor operand"):
        gt.einsum("i", np.ones(2))


def test_torch_oracle_for_einsum_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 3)), rng.standard_normal((3, 4))
    ga, gb = _t(a), _t(b)
    gt.einsum("bii,ij->bj", ga, gb).sum().backward()
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    torch.einsum("bii,ij->bj", ta, tb).sum().backward()
    np.testing.assert_allclose(ga.grad.numpy(), ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gb.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


def test_parameters_are_tensors_here():
    w = gt.nn.Parameter(gt.ones((3, 2), dtype=gt.float64))
    x = _t(np.arange(6.0).reshape(2, 3))
    (gt.matmul(x, w).sum() + gt.einsum("ij,jk->", x, w) + gt.tensordot(w, w, 2)).backward()
    np.testing.assert_array_equal(w.grad.numpy(), 2 * np.broadcast_to(x.numpy().sum(0)[:, None], (3, 2)) + 2)


@pytest.mark.parametrize(
    "fn", [gt.matmul, gt.dot, gt.outer, gt.tensordot, lambda a, b: gt.einsum("ij,jk->ik", a, b)],
)
def test_products_run_in_low_precision_under_autocast(fn):
    a = gt.ones((2, 2), requires_grad=True)
    b = gt.ones((2, 2))
    with gt.amp.autocast("cpu", dtype=gt.float16):
        out = fn(a, b)
    assert out.dtype == gt.float16
    out.sum().backward()
    assert a.grad.dtype == gt.float32  # the gradient reaching the float32 leaf is float32
