"""In-place ops (gradtensor.ops.inplace): x += y, x.add_(y), ..., off the tape and on it."""
import numpy as np
import pytest

import gradtensor as gt


def leaf(values):
    return gt.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_augmented_assignment_changes_the_tensor_itself_as_numpy_does():
    x = gt.tensor(np.arange(4.0))
    alias, view = x, x[1:3]
    memory = x.data
    x += 1
    x *= 2
    x -= gt.tensor([1.0, 1.0, 1.0, 1.0])
    x /= 2
    x **= 2
    assert x is alias and x.data is memory
    expected = (((np.arange(4.0) + 1) * 2 - 1) / 2) ** 2
    np.testing.assert_array_equal(x.numpy(), expected)
    np.testing.assert_array_equal(view.numpy(), expected[1:3])  # a view sees the writes
    assert x._version[0] == 5


def test_a_parameter_update_under_no_grad_keeps_the_parameter_and_its_memory():
    p = gt.nn.Parameter(gt.tensor([1.0, 2.0]))
    (p * p).sum().backward()
    state = {"momentum": gt.zeros(2)}
    buf = state["momentum"]
    memory = p.data
    with gt.no_grad():
        buf.mul_(0.9).add_(p.grad)
        p -= 0.5 * buf
    assert state["momentum"] is buf
    np.testing.assert_array_equal(buf.numpy(), [2.0, 4.0])
    assert p.data is memory and p.requires_grad and p.is_leaf
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])


def test_methods_return_the_tensor_and_match_their_out_of_place_forms():
    a = np.array([-2.0, -0.5, 0.5, 3.0])
    cases = {
        "add_": ((gt.tensor([1.0, 1.0, 1.0, 1.0]),), {"alpha": 2}, a + 2),
        "sub_": ((1.0,), {"alpha": 3}, a - 3),
        "mul_": ((2.0,), {}, a * 2),
        "div_": ((4.0,), {}, a / 4),
        "pow_": ((2,), {}, a ** 2),
        "neg_": ((), {}, -a),
        "clip_": ((-1.0, 1.0), {}, np.clip(a, -1, 1)),
        "clamp_": ((), {"min": 0.0}, np.maximum(a, 0)),
        "copy_": ((np.array([9.0]),), {}, np.full(4, 9.0)),  # src broadcasts, as PyTorch's copy_
        "fill_": ((7.0,), {}, np.full(4, 7.0)),
        "zero_": ((), {}, np.zeros(4)),
    }
    for name, (args, kwargs, expected) in cases.items():
        x = gt.tensor(a.copy())
        assert getattr(x, name)(*args, **kwargs) is x, name
        np.testing.assert_allclose(x.numpy(), expected, err_msg=name)


def test_on_the_tape_gradients_equal_the_out_of_place_ones():
    def chain(w, inplace):
        h = w * 2.0
        if inplace:
            h += w
            h.mul_(w)
            h.clip_(max=10.0)
            h.sub_(w, alpha=0.5)
        else:
            h = ((h + w) * w).clip(max=10.0) - 0.5 * w
        return h

    grads = []
    for inplace in (False, True):
        w = leaf([-1.0, 0.5, 1.5, 3.0])
        out = chain(w, inplace)
        (out * gt.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
        grads.append((out.detach().numpy(), w.grad.numpy()))
    np.testing.assert_allclose(grads[1][0], grads[0][0], rtol=1e-15)
    np.testing.assert_allclose(grads[1][1], grads[0][1], rtol=1e-15)


def test_a_tensor_without_grad_joins_the_tape_when_an_operand_needs_one():
    w = leaf([1.0, 2.0])
    total = gt.zeros(2, dtype=gt.float64)
    total += w * w
    assert total.requires_grad and not total.is_leaf
    total.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 4.0])


def test_copy_and_fill_on_the_tape_route_gradients_to_the_source_only():
    w, src = leaf([1.0, 2.0]), leaf([5.0, 6.0])
    h = w * 3.0
    h.copy_(src * 2.0)
    g = w * 1.0
    g.fill_(4.0)
    (h.sum() + (g * w).sum()).backward()
    np.testing.assert_array_equal(src.grad.numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(w.grad.numpy(), [4.0, 4.0])  # only through g * w: h's and g's old values get 0


def test_in_place_refusals_name_the_op_and_the_reason():
    w = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"__iadd__: the tensor \(shape \(2,\)\) is a leaf that requires grad"):
        w += 1.0
    h = w * 2.0
    view = h[0:1]
    with pytest.raises(RuntimeError, match=r"mul_: .* shares its memory"):
        h.mul_(w)
    del view
    x = gt.tensor([1, 2, 3])
    with pytest.raises(TypeError, match=r"__iadd__: a float32 result cannot be stored in the tensor's dtype int64"):
        x += 1.5
    y = gt.tensor([1.0, 2.0])
    with pytest.raises(ValueError, match=r"add_: the result has shape \(2, 2\) but the tensor has shape \(2,\)"):
        y.add_(gt.ones(2, 2))
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])  # refused before anything was written
    z = gt.tensor(np.array([1.0, 2.0], np.float32))
    z += gt.tensor(np.array([0.5, 0.5]))  # float64 into float32: same kind, cast as NumPy's same_kind
    assert z.dtype == gt.float32
    np.testing.assert_array_equal(z.numpy(), [1.5, 2.5])


def test_a_node_that_saved_the_tensor_raises_after_an_in_place_change():
    w = leaf([1.0, 2.0])
    h = w * 2.0
    out = (h * h).sum()  # saved h
    h += 1.0
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()


def test_in_place_matches_torch():
    torch = pytest.importorskip("torch")
    data = np.array([0.3, -1.2, 2.0])
    ours, theirs = leaf(data), torch.tensor(data, requires_grad=True)
    results = []
    for w in (ours, theirs):
        h = w * 1.5
        h *= w
        h.add_(w, alpha=2.0)
        h.clamp_(min=0.0)
        h.sum().backward()
        results.append((h.detach().numpy(), w.grad.numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-14)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-14)
    assert np.any(results[0][1] == 0) and np.any(results[0][1] != 0)  # the clamp cut one element off


def test_an_in_place_change_of_a_saved_output_raises():
    """exp, relu, sigmoid... keep their output for backward: writing into it is caught by its version."""
    for make in (lambda w: w.exp(), lambda w: w.relu(), lambda w: w.sigmoid()):
        w = leaf([0.5, -1.0])
        h = make(w)
        with gt.no_grad():
            h *= 2.0
        with pytest.raises(RuntimeError, match=r"its output \(shape \(2,\)\), which backward needs, was modified in place"):
            h.sum().backward()


def test_an_output_its_node_keeps_can_be_changed_in_place_on_the_tape():
    """The node that kept its output is no other tensor sharing its memory: the in-place op goes
    ahead (it was refused as shared), and backward raises only where the kept output is needed."""
    w = leaf([1.0, -2.0])
    h = w ** 2  # (pow keeps its output only for the exponent's gradient: not needed here)
    h += 1.0
    gt.nn.ReLU(inplace=True)(h).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, -4.0], rtol=1e-15)
    h = w.exp()
    h += 1.0
    with pytest.raises(RuntimeError, match=r"ExpBackward: its output .* was modified in place"):
        h.sum().backward()


def test_products_keep_an_operand_only_for_the_other_ones_gradient():
    """h * 0.5 does not need h for any gradient, so changing h afterwards is fine (as in PyTorch)."""
    w = leaf([0.5, -1.0, 2.0])
    h = w * 2.0
    h += h * 0.5
    h -= h / 4.0
    h += h @ gt.tensor(np.eye(3))
    h.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [4.5, 4.5, 4.5], rtol=1e-15)  # 2 * 1.5 * 0.75 * 2


def test_fill_copy_and_zero_cast_as_pytorch_does():
    assert gt.tensor([True, False]).zero_().tolist() == [False, False]
    assert gt.tensor([True, False]).fill_(1).tolist() == [True, True]
    assert gt.tensor([5, -3, 7]).fill_(2.7).tolist() == [2, 2, 2]
    assert gt.tensor([1, 2]).copy_(gt.tensor([3.9, -1.2])).tolist() == [3, -1]
    x = gt.tensor(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(x.copy_(3.0).numpy(), [3.0, 3.0])
    np.testing.assert_array_equal(x.add_([0.5], alpha=2).numpy(), [4.0, 4.0])  # a list is an operand, not repeated


def test_a_retained_gradient_is_a_copy_of_its_own():
    w = leaf([1.0, 2.0])
    h = w * 2.0
    h.retain_grad()
    k = h + 0.0
    k.retain_grad()
    (k * gt.tensor([3.0, 4.0])).sum().backward()
    h.grad *= 10.0
    np.testing.assert_array_equal(k.grad.numpy(), [3.0, 4.0])
    np.testing.assert_array_equal(h.grad.numpy(), [30.0, 40.0])


def test_an_in_place_change_of_a_where_condition_raises():
    w = leaf([1.0, 2.0])
    mask = gt.tensor([True, False])
    y = gt.where(mask, w, 0.0)
    mask.fill_(True)
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


def test_changing_targets_or_indices_in_place_after_use_leaves_the_gradient_as_computed():
    """Class labels and index arrays are copied when used (PyTorch raises here instead)."""
    F = gt.nn.functional
    logits = gt.tensor(np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]]), requires_grad=True)
    target = gt.tensor([0, 2])
    loss = F.cross_entropy(logits, target)
    target += 1
    loss.backward()
    expected = gt.tensor(logits.numpy(), requires_grad=True)
    F.cross_entropy(expected, gt.tensor([0, 2])).backward()
    np.testing.assert_allclose(logits.grad.numpy(), expected.grad.numpy(), rtol=1e-15)
    w = leaf([1.0, 2.0, 3.0])
    index = gt.tensor([0, 0, 2])
    picked = w[index]
    index.zero_()
    picked.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 0.0, 1.0])
