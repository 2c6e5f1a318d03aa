"""scaled_dot_product_attention: values against NumPy, first and second order gradients with no mask,
a causal mask, bool and float masks (the float mask differentiable too), GQA, dropout and errors."""
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from opcheck import OpCase, check_op


def np_attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if mask.dtype == bool else scores + mask
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=-1, keepdims=True) @ v


def causal(length_q, length_k):
    return np.tril(np.ones((length_q, length_k), dtype=bool))


BOOL_MASK = np.array([[True, False, True], [False, True, True]])
def _shapes(lead=(), length_q=2):
    """q (..., L, E), k (..., S, E), v (..., S, Ev) with S = 3."""
    return [lead + (length_q, 3), lead + (3, 3), lead + (3, 2)]


CASES = [
    OpCase("sdpa", F.scaled_dot_product_attention, np_attention, _shapes((2,))),
    OpCase("sdpa(batch, heads)", F.scaled_dot_product_attention, np_attention, _shapes((1, 2))),
    OpCase("sdpa(scale)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.7),
           lambda q, k, v: np_attention(q, k, v, scale=0.7), _shapes()),
    OpCase("sdpa(is_causal)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
           lambda q, k, v: np_attention(q, k, v, causal(3, 3)), _shapes((2,), length_q=3)),
    OpCase("sdpa(is_causal, L < S)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
           lambda q, k, v: np_attention(q, k, v, causal(2, 3)), _shapes()),
    OpCase("sdpa(bool mask)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=gt.tensor(BOOL_MASK)),
           lambda q, k, v: np_attention(q, k, v, BOOL_MASK), _shapes((2,))),
    OpCase("sdpa(float mask)", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
           lambda q, k, v, m: np_attention(q, k, v, m), _shapes((2,)) + [(2, 3)]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attention(case):
    check_op(case)


def test_attention_gqa():
    q, k, v = (np.random.default_rng(i).standard_normal(s) for i, s in enumerate([(1, 4, 2, 3), (1, 2, 3, 3), (1, 2, 3, 2)]))
    out = F.scaled_dot_product_attention(gt.tensor(q), gt.tensor(k), gt.tensor(v), enable_gqa=True)
    # query heads 0, 1 use key/value head 0; heads 2, 3 use head 1
    expected = np_attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    check_op(OpCase("sdpa(gqa)", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                    lambda q, k, v: np_attention(q, np.repeat(k, 2, axis=-3), np.repeat(v, 2, axis=-3)),
                    [(4, 2, 3), (2, 3, 3), (2, 3, 2)]))


def test_fully_masked_query_gives_zeros_and_finite_gradients():
    mask = np.array([[True, True, False], [False, False, False]])
    q = gt.tensor(np.ones((2, 3)), requires_grad=True)
    k = gt.tensor(np.eye(3), requires_grad=True)
    v = gt.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=gt.tensor(mask))
    np.testing.assert_allclose(out.numpy()[0], [1.0, 2.0])  # the mean of v's first two rows
    np.testing.assert_array_equal(out.numpy()[1], [0.0, 0.0])
    out.sum().backward()
    for t in (q, k, v):
        assert np.isfinite(t.grad.numpy()).all()
    np.testing.assert_array_equal(q.grad.numpy()[1], 0.0)


def test_causal_mask_blocks_the_future():
    """Changing a later key or value leaves earlier outputs unchanged."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((4, 3)) for _ in range(3))
    out = F.scaled_dot_product_attention(gt.tensor(q), gt.tensor(k), gt.tensor(v), is_causal=True).numpy()
    k[3], v[3] = 10.0, -10.0
    changed = F.scaled_dot_product_attention(gt.tensor(q), gt.tensor(k), gt.tensor(v), is_causal=True).numpy()
    np.testing.assert_array_equal(out[:3], changed[:3])
    assert not np.allclose(out[3], changed[3])


def test_attention_dropout_is_seeded():
    q = k = v = gt.tensor(np.random.default_rng(1).standard_normal((3, 4)))
    gt.manual_seed(3)
    first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy()
    gt.manual_seed(3)
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).numpy(), first)
    assert not np.allclose(first, F.scaled_dot_product_attention(q, k, v).numpy())
    np.testing.assert_array_equal(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0).numpy(), 0.0)


def test_attention_float32():
    q = gt.randn(2, 3, 4, requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=gt.tensor(causal(3, 3)))
    assert out.dtype == gt.float32
    out.sum().backward()
    assert q.grad.dtype == gt.float32


@pytest.mark.parametrize("call,match", [
    (lambda: F.scaled_dot_product_attention(gt.zeros(2, 3), gt.zeros(4, 5), gt.zeros(4, 2)), "do not fit"),
    (lambda: F.scaled_dot_product_attention(gt.zeros(2, 3), gt.zeros(4, 3), gt.zeros(5, 2)), "do not fit"),
    (lambda: F.scaled_dot_product_attention(gt.zeros(2, 3), gt.zeros(4, 3), gt.zeros(4, 2),
                                            attn_mask=gt.zeros(3, 4)), r"attn_mask of shape \(3, 4\)"),
    (lambda: F.scaled_dot_product_attention(gt.zeros(2, 3), gt.zeros(4, 3), gt.zeros(4, 2), is_causal=True,
                                            attn_mask=gt.zeros(2, 4)), "either attn_mask or is_causal"),
    (lambda: F.scaled_dot_product_attention(gt.zeros(3), gt.zeros(4, 3), gt.zeros(4, 2)), "at least 2-D"),
    (lambda: F.scaled_dot_product_attention(gt.zeros(1, 3, 2, 3), gt.zeros(1, 2, 4, 3), gt.zeros(1, 2, 4, 2),
                                            enable_gqa=True), "multiple of key/value heads"),
])
def test_attention_errors(call, match):
    with pytest.raises(ValueError, match=f"scaled_dot_product_attention: .*{match}"):
        call()


def test_attention_refuses_an_integer_mask():
    """An integer mask is neither a bool mask nor additive scores (PyTorch raises too)."""
    q = gt.zeros(2, 2)
    with pytest.raises(TypeError, match="scaled_dot_product_attention: attn_mask must be bool or floating"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=gt.tensor([[1, 0], [1, 1]]))
