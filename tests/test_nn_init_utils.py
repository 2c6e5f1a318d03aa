"""gt.nn.init statistics, gt.nn.utils clipping and flat vectors, gt.utils gradient norms."""
import math

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.utils
from gradtensor import nn
from gradtensor.nn import init


# --- init ----------------------------------------------------------------------------------------


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swish")


def test_fill_functions_write_in_place_without_recording():
    w = gt.zeros(3, 4, requires_grad=True)
    assert init.ones_(w) is w
    assert np.all(w.numpy() == 1) and w.is_leaf and w.requires_grad and w.dtype == np.float32
    assert np.all(init.constant_(w, 2.5).numpy() == 2.5)
    assert np.all(init.zeros_(w).numpy() == 0)
    np.testing.assert_array_equal(init.eye_(w).numpy(), np.eye(3, 4))


def test_random_fills_are_seeded_and_have_the_requested_distribution():
    gt.manual_seed(3)
    a = init.uniform_(gt.empty(200, 100), -2.0, 3.0).numpy()
    gt.manual_seed(3)
    b = init.uniform_(gt.empty(200, 100), -2.0, 3.0).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.min() >= -2 and a.max() < 3 and abs(a.mean() - 0.5) < 0.05
    n = init.normal_(gt.empty(200, 100, dtype=gt.float64), mean=1.0, std=0.5).numpy()
    assert abs(n.mean() - 1.0) < 0.02 and abs(n.std() - 0.5) < 0.02


def test_xavier_bounds_and_std():
    w = init.xavier_uniform_(gt.empty(300, 200), gain=2.0).numpy()
    bound = 2.0 * math.sqrt(6 / 500)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    w = init.xavier_normal_(gt.empty(300, 200)).numpy()
    assert w.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)


def test_kaiming_uses_the_fan_of_the_mode():
    conv = gt.empty(16, 8, 5, 5)  # fan_in 8 * 25 = 200, fan_out 16 * 25 = 400
    w = init.kaiming_uniform_(conv, a=0, mode="fan_in", nonlinearity="relu").numpy()
    bound = math.sqrt(2) * math.sqrt(3 / 200)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = init.kaiming_normal_(conv, mode="fan_out", nonlinearity="relu").numpy()
    assert w.std() == pytest.approx(math.sqrt(2 / 400), rel=0.03)
    # PyTorch's default for Linear: a = sqrt(5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = init.kaiming_uniform_(gt.empty(100, 50), a=math.sqrt(5)).numpy()
    assert np.abs(w).max() <= 1 / math.sqrt(50) and np.abs(w).max() > 0.99 / math.sqrt(50)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_uniform_(gt.empty(5))
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal_(conv, mode="fan_avg")


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5), (3, 2, 2)])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape):
    gt.manual_seed(0)
    q = init.orthogonal_(gt.empty(*shape, dtype=gt.float64), gain=1.5).numpy().reshape(shape[0], -1) / 1.5
    rows, cols = q.shape
    if rows >= cols:
        np.testing.assert_allclose(q.T @ q, np.eye(cols), atol=1e-12)
    else:
        np.testing.assert_allclose(q @ q.T, np.eye(rows), atol=1e-12)
    with pytest.raises(ValueError):
        init.orthogonal_(gt.empty(3))


# --- clipping ----------------------------------------------------------------------------------------


def _params_with_grads(grads, dtype=gt.float64):
    params = []
    for g in grads:
        p = nn.Parameter(gt.zeros(*np.shape(g), dtype=dtype))
        p.grad = gt.tensor(np.asarray(g), dtype=dtype)
        params.append(p)
    return params


def test_clip_grad_norm_returns_total_norm_and_scales_jointly():
    grads = [np.array([3.0, 0.0]), np.array([[4.0], [0.0]]), np.array(12.0)]
    params = _params_with_grads(grads)
    params.append(nn.Parameter(gt.ones(2)))  # no gradient: skipped
    total = nn.utils.clip_grad_norm_(params, max_norm=6.5)
    assert isinstance(total, gt.Tensor) and total.shape == () and total.item() == pytest.approx(13.0)
    scale = 6.5 / (13.0 + 1e-6)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * scale)
    clipped = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in params[:3]))
    assert clipped == pytest.approx(6.5, rel=1e-6)
    assert params[3].grad is None


def test_clip_grad_norm_leaves_small_gradients_and_supports_other_norms():
    params = _params_with_grads([np.array([0.3, -0.4])])
    assert nn.utils.clip_grad_norm_(params, 1.0).item() == pytest.approx(0.5)
    np.testing.assert_allclose(params[0].grad.numpy(), [0.3, -0.4])

    params = _params_with_grads([np.array([1.0, -5.0]), np.array([2.0])])
    assert nn.utils.clip_grad_norm_(params, 2.5, norm_type=float("inf")).item() == 5.0
    np.testing.assert_allclose(params[0].grad.numpy(), np.array([1.0, -5.0]) * 2.5 / (5.0 + 1e-6))
    params = _params_with_grads([np.array([1.0, -5.0]), np.array([2.0])])
    assert nn.utils.clip_grad_norm_(params, 100.0, norm_type=1).item() == pytest.approx(8.0)

    single = _params_with_grads([np.array([3.0, 4.0])], dtype=gt.float32)[0]
    total = nn.utils.clip_grad_norm_(single, 1.0)  # one tensor instead of an iterable
    assert total.dtype == np.float32 and single.grad.dtype == np.float32
    np.testing.assert_allclose(single.grad.numpy(), [0.6, 0.8], rtol=1e-5)
    assert nn.utils.clip_grad_norm_([nn.Parameter(gt.ones(1))], 1.0).item() == 0.0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_clip_grad_norm_nonfinite():
    params = _params_with_grads([np.array([np.inf, 1.0])])
    with pytest.raises(RuntimeError, match="total norm"):
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[0].grad.numpy(), [np.inf, 1.0])  # the check comes before any scaling
    assert math.isinf(nn.utils.clip_grad_norm_(params, 1.0).item())
    assert np.isnan(params[0].grad.numpy()[0])  # inf * 0, as in PyTorch
    with pytest.raises(ValueError, match="norm_type"):
        nn.utils.clip_grad_norm_(params, 1.0, norm_type=0)


def test_clip_grad_value():
    params = _params_with_grads([np.array([-3.0, 0.5, 2.0])])
    nn.utils.clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), [-1.0, 0.5, 1.0])


def test_clipping_after_a_real_backward():
    gt.manual_seed(0)
    model = nn.Linear(4, 3)
    (model(gt.randn(8, 4)) ** 2).sum().backward()
    expected = np.sqrt(sum((p.grad.numpy().astype(np.float64) ** 2).sum() for p in model.parameters()))
    total = nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    norms = gradtensor.utils.grad_norms(model)
    assert list(norms) == ["weight", "bias"]
    assert math.hypot(*norms.values()) == pytest.approx(0.1, rel=1e-5)


# --- flat vectors ------------------------------------------------------------------------------------


def test_parameters_vector_round_trip():
    model = nn.Linear(3, 2)
    vec = nn.utils.parameters_to_vector(model.parameters())
    assert vec.shape == (8,)
    np.testing.assert_array_equal(vec.numpy(), np.concatenate([model.weight.numpy().ravel(), model.bias.numpy()]))
    (vec * gt.arange(8.0)).sum().backward()  # differentiable, as in PyTorch
    np.testing.assert_array_equal(model.bias.grad.numpy(), [6.0, 7.0])

    weight = model.weight
    nn.utils.vector_to_parameters(gt.arange(8.0), model.parameters())
    assert model.weight is weight
    np.testing.assert_array_equal(model.weight.numpy(), [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(model.bias.numpy(), [6, 7])
    with pytest.raises(ValueError, match="8 elements"):
        nn.utils.vector_to_parameters(gt.zeros(7), model.parameters())
    with pytest.raises(TypeError):
        nn.utils.vector_to_parameters(np.zeros(8), model.parameters())


# --- gt.utils -------------------------------------------------------------------------------------


def test_grad_norms_per_parameter_in_order():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model[0].weight.grad = gt.tensor([[3.0, 4.0], [0.0, 0.0]])
    model[1].bias.grad = gt.tensor([-2.0])
    norms = gradtensor.utils.grad_norms(model)
    assert list(norms.items()) == [("0.weight", 5.0), ("1.bias", 2.0)]
    assert gradtensor.utils.grad_norms(dict(model.named_parameters()), norm_type=1) == {"0.weight": 7.0, "1.bias": 2.0}
    assert gradtensor.utils.grad_norms([("w", model[0].weight)], norm_type=float("inf")) == {"w": 4.0}
    assert gradtensor.utils.count_parameters(model) == 9
    model[1].requires_grad_(False)
    assert gradtensor.utils.count_parameters(model, trainable_only=True) == 6
