import warnings

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import backend
from gradtensor.ops import _autocast

cpu_fp16 = dict(device_type="cpu", dtype=gt.float16)


def _params():
    gt.manual_seed(0)
    x = gt.randn(4, 3)
    w = gt.randn(3, 2, requires_grad=True)
    return x, w


def test_autocast_runs_products_low_and_reductions_and_exp_in_float32():
    x, w = _params()
    with gt.amp.autocast(**cpu_fp16):
        y = x @ w
        assert y.dtype == gt.float16
        assert y.sum().dtype == gt.float32
        assert y.mean().dtype == gt.float32
        assert y.exp().dtype == gt.float32
        assert y.relu().dtype == gt.float16  # not on either list: runs in its input's dtype
        assert gt.einsum("ij,jk->ik", x, w).dtype == gt.float16
    assert (x @ w).dtype == gt.float32


def test_gradients_reaching_float32_parameters_are_float32_and_correct():
    x, w = _params()
    with gt.amp.autocast(**cpu_fp16):
        loss = (x @ w).sum()
    loss.backward()
    assert w.grad.dtype == gt.float32
    expected = x.numpy().T @ np.ones((4, 2))
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-2)


def test_parameter_is_cast_once_per_region():
    x, w = _params()
    with gt.amp.autocast(**cpu_fp16):
        a = x @ w
        b = x @ w
        assert len(_autocast.state.cache) == 1
        (a.sum() + b.sum()).backward()
    assert not _autocast.state.cache  # cleared on leaving the outermost region
    np.testing.assert_allclose(w.grad.numpy(), 2 * x.numpy().T @ np.ones((4, 2)), rtol=1e-2)


def test_cast_made_without_grad_does_not_cut_a_later_recorded_use():
    x, w = _params()
    with gt.amp.autocast(**cpu_fp16):
        with gt.no_grad():
            x @ w  # e.g. an evaluation inside the region
        loss = (x @ w).sum()
    assert loss.requires_grad
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), x.numpy().T @ np.ones((4, 2)), rtol=1e-2)


def test_nested_and_disabled_regions():
    x, w = _params()
    with gt.amp.autocast(**cpu_fp16):
        with gt.amp.autocast(device_type="cpu", enabled=False):
            assert (x @ w).dtype == gt.float32
            assert not gt.amp.is_autocast_enabled()
        assert (x @ w).dtype == gt.float16
        assert gt.amp.is_autocast_enabled()
    assert not gt.amp.is_autocast_enabled()


def test_autocast_as_decorator_and_other_device_untouched():
    x, w = _params()

    @gt.amp.autocast(**cpu_fp16)
    def product():
        return x @ w

    assert product().dtype == gt.float16
    with gt.amp.autocast(device_type="cuda", dtype=gt.float16):
        assert (x @ w).dtype == gt.float32  # CPU tensors are not touched by a CUDA region


@pytest.mark.skipif(gt.bfloat16 is None, reason="bfloat16 on the CPU needs ml_dtypes")
def test_bfloat16_autocast_on_cpu():
    x, w = _params()
    with gt.amp.autocast(device_type="cpu", dtype=gt.bfloat16):
        y = x @ w
        loss = y.sum()
    assert y.dtype == gt.bfloat16
    loss.backward()
    assert w.grad.dtype == gt.float32


def test_bad_autocast_arguments():
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        gt.amp.autocast(device_type="cpu", dtype=gt.float64)
    with pytest.raises(ValueError, match="device_type"):
        gt.amp.autocast(device_type="tpu")


# --- GradScaler ---------------------------------------------------------------------------------


def _scaler(**kw):
    return gt.amp.GradScaler(device="cpu", **kw)


def _step_with_grad(scaler, opt, p, grad_value):
    """One scaler iteration where the parameter's (scaled) gradient is `grad_value`."""
    opt.zero_grad()
    p.grad = gt.full(p.shape, grad_value)
    result = scaler.step(opt)
    scaler.update()
    return result


def test_scaler_state_sequence_with_injected_overflow():
    p = gt.zeros(3, requires_grad=True)
    opt = gt.optim.SGD([p], lr=1.0)
    scaler = _scaler(init_scale=8.0, growth_interval=2)
    scales = []
    stepped = []
    for g in [1.0, 1.0, float("inf"), 1.0, float("nan"), 1.0, 1.0]:
        before = p.numpy().copy()
        _step_with_grad(scaler, opt, p, g)
        stepped.append(not np.array_equal(before, p.numpy()))
        scales.append(scaler.get_scale())
    assert scales == [8.0, 16.0, 8.0, 8.0, 4.0, 4.0, 8.0]
    assert stepped == [True, True, False, True, False, True, True]
    assert np.isfinite(p.numpy()).all()


def test_step_returns_optimizer_result_or_none_when_skipped():
    p = gt.zeros(2, requires_grad=True)
    opt = gt.optim.SGD([p], lr=0.5)
    scaler = _scaler(init_scale=4.0)
    p.grad = gt.full((2,), 8.0)
    assert scaler.step(opt, closure=lambda: 3.0) == 3.0
    np.testing.assert_array_equal(p.numpy(), [-1.0, -1.0])  # unscaled gradient 2, lr 0.5
    scaler.update()
    p.grad = gt.full((2,), float("inf"))
    assert scaler.step(opt) is None
    np.testing.assert_array_equal(p.numpy(), [-1.0, -1.0])


def test_unscale_twice_raises_and_unscales_in_place():
    p = gt.zeros(2, requires_grad=True)
    opt = gt.optim.SGD([p], lr=0.1)
    scaler = _scaler(init_scale=4.0)
    p.grad = gt.full((2,), 2.0)
    scaler.unscale_(opt)
    np.testing.assert_array_equal(p.grad.numpy(), [0.5, 0.5])
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.step(opt)
    scaler.update()
    scaler.unscale_(opt)  # allowed again after update


def test_scale_and_state_dict_round_trip():
    scaler = _scaler(init_scale=2.0**10, growth_factor=3.0, backoff_factor=0.25, growth_interval=5)
    loss = gt.tensor(1.5)
    assert scaler.scale(loss).item() == 1.5 * 1024
    a, b = scaler.scale([loss, loss * 2])
    assert (a.item(), b.item()) == (1536.0, 3072.0)
    sd = scaler.state_dict()
    assert sd == {"scale": 1024.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 5,
                  "_growth_tracker": 0}
    other = _scaler()
    other.load_state_dict(sd)
    assert other.state_dict() == sd
    other.update(new_scale=7.0)
    assert other.get_scale() == 7.0


def test_disabled_scaler_is_a_pass_through():
    p = gt.zeros(1, requires_grad=True)
    opt = gt.optim.SGD([p], lr=1.0)
    scaler = _scaler(enabled=False)
    loss = gt.tensor(2.0)
    assert scaler.scale(loss) is loss
    p.grad = gt.full((1,), 1.0)
    scaler.step(opt)
    scaler.update()
    assert p.item() == -1.0 and scaler.get_scale() == 1.0 and scaler.state_dict() == {}


@pytest.mark.skipif(gt.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_scaler_without_cuda_warns_and_disables():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scaler = gt.amp.GradScaler()
    assert not scaler.is_enabled()
    assert any("CUDA is not available" in str(w.message) for w in caught)


def _train_float16(use_scaler, steps=30):
    """Linear regression whose float16 gradients are so small (loss scaled by 1e-7) that they flush to zero."""
    gt.manual_seed(1)
    x = gt.randn(64, 8)
    true_w = gt.randn(8, 1)
    y = x @ true_w
    w = gt.zeros(8, 1, requires_grad=True)
    opt = gt.optim.SGD([w], lr=2e6)
    scaler = _scaler(init_scale=2.0**16, enabled=use_scaler)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        with gt.amp.autocast(**cpu_fp16):
            pred = x @ w
            loss = ((pred - y) ** 2).mean() * 1e-7
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item() / 1e-7)
    return losses, w


def test_float16_training_underflows_without_scaling_and_trains_with_it():
    plain, w_plain = _train_float16(use_scaler=False)
    scaled, _ = _train_float16(use_scaler=True)
    assert np.all(w_plain.numpy() == 0)  # every gradient flushed to zero in float16
    assert plain[-1] == plain[0]
    assert scaled[-1] < 0.05 * scaled[0]


def test_nn_functions_follow_the_autocast_lists():
    F = gt.nn.functional
    gt.manual_seed(0)
    x = gt.randn(4, 3)
    linear = gt.nn.Linear(3, 5)
    norm = gt.nn.BatchNorm1d(5)
    with gt.amp.autocast(**cpu_fp16):
        y = linear(x)
        z = norm(y)
        loss = F.cross_entropy(z, gt.tensor([0, 1, 2, 3]))
        assert y.dtype == gt.float16
        assert F.conv2d(gt.randn(1, 2, 5, 5), gt.randn(3, 2, 3, 3)).dtype == gt.float16
        assert F.relu(y).dtype == gt.float16
        assert F.softmax(y).dtype == gt.float32
        assert F.layer_norm(y, (5,)).dtype == gt.float32
        assert z.dtype == gt.float32 and loss.dtype == gt.float32
    assert norm.running_mean.dtype == gt.float32  # running stats are updated in place, never cast copies
    assert np.abs(norm.running_mean.numpy()).sum() > 0
    loss.backward()
    assert linear.weight.grad.dtype == gt.float32 and linear.bias.grad.dtype == gt.float32


# --- the device form (inside a step captured by gt.cuda.graph) -------------------------------------------
# A graph's warm-up switches the scaler to device arrays; "captured" iterations run here eagerly with host
# reads forbidden (NumPy computes at once), as a captured graph would, and must follow the host rule.

class GraphRun:
    """Runs scaler iterations as gt.cuda.graph would: the first as the warm-up, later ones captured."""

    def __init__(self):
        self.session = backend.GraphSession()
        self.calls = 0

    def __call__(self, body):
        self.calls += 1
        if self.calls == 1:
            with backend.graph_warmup(self.session):
                return body()
        for participant in self.session.participants:
            participant._graph_refresh()
        with backend.forbid_host_reads(self.session):
            return body()


SCALER_CONFIGS = [dict(init_scale=8.0, growth_interval=2),
                  dict(init_scale=1000.0, growth_factor=3.0, backoff_factor=0.3, growth_interval=3)]
GRADIENT_SEQUENCE = [1.0, 1.0, float("inf"), 1.0, float("nan"), 1.0, 1.0, 1.0, float("inf"), float("inf"), 1.0, 1.0]


@pytest.mark.parametrize("config", SCALER_CONFIGS, ids=["powers-of-two", "other-factors"])
def test_device_form_follows_the_host_rule_on_injected_overflows(config):
    runs = {}
    for form in ("host", "device"):
        p = gt.zeros(3, requires_grad=True)
        opt = gt.optim.SGD([p], lr=0.25, momentum=0.5)
        scaler = _scaler(**config)
        run = GraphRun() if form == "device" else (lambda body: body())
        history = []
        for g in GRADIENT_SEQUENCE:
            run(lambda: _step_with_grad(scaler, opt, p, g))
            history.append((scaler.state_dict(), p.numpy().tolist()))
        assert (scaler._device_state is not None) == (form == "device")
        runs[form] = history
    assert runs["device"] == runs["host"]
    scales = [state["scale"] for state, _ in runs["host"]]
    assert len(set(scales)) > 3  # the sequence both backs off and grows


def test_device_form_masks_the_optimizer_step():
    p = gt.tensor([1.0, -2.0, 3.0], requires_grad=True)
    opt = gt.optim.Adam([p], lr=0.1, amsgrad=True)
    scaler = _scaler(init_scale=4.0)
    run = GraphRun()
    run(lambda: _step_with_grad(scaler, opt, p, 2.0))  # warm-up: the state exists from here on
    params, state = p.numpy(), {k: v.numpy() for k, v in opt.state[p].items()}
    p.grad = gt.full((3,), float("nan"))
    result = run(lambda: scaler.step(opt, closure=lambda: 7.0))
    assert result == 7.0  # on the device the skip is not known on the host: the optimizer's value comes back
    np.testing.assert_array_equal(p.numpy(), params)
    for key, value in opt.state[p].items():
        np.testing.assert_array_equal(value.numpy(), state[key])
    run(scaler.update)
    assert scaler.get_scale() == 2.0


def test_device_form_reads_the_host_only_when_asked():
    p = gt.zeros(2, requires_grad=True)
    opt = gt.optim.SGD([p], lr=0.1)
    scaler = _scaler(init_scale=16.0)
    run = GraphRun()
    run(lambda: _step_with_grad(scaler, opt, p, 1.0))
    with pytest.raises(backend.HostReadError, match=r"GradScaler.get_scale\(\)"):
        run(scaler.get_scale)
    session = backend.GraphSession()
    with backend.graph_warmup(session):
        scaler.state_dict()
    assert "GradScaler.get_scale()/state_dict() reads a device value on the host" in session.blockers[0]
    run(lambda: scaler.update(new_scale=gt.tensor(64.0)))
    assert scaler.get_scale() == 64.0
    run(lambda: scaler.update(new_scale=32.0))
    scaler.load_state_dict(dict(scaler.state_dict(), _growth_tracker=5))
    assert scaler.state_dict()["scale"] == 32.0 and scaler.state_dict()["_growth_tracker"] == 5


def test_leaving_the_device_form_keeps_the_numbers():
    p = gt.zeros(2, requires_grad=True)
    opt = gt.optim.SGD([p], lr=0.1)
    scaler = _scaler(init_scale=8.0, growth_interval=2)
    run = GraphRun()
    for g in (1.0, float("inf"), 1.0):
        run(lambda: _step_with_grad(scaler, opt, p, g))
    state = scaler.state_dict()
    scaler._leave_graph_mode()  # what gt.cuda.graph does when it gives up before capturing
    assert scaler._device_state is None and scaler.state_dict() == state == dict(state, scale=4.0, _growth_tracker=1)
    assert _step_with_grad(scaler, opt, p, float("inf")) is None  # the host form skips on the host again
    assert scaler.get_scale() == 2.0


def test_device_form_with_an_optimizer_that_cannot_skip_on_the_device():
    p = gt.zeros(2, requires_grad=True)
    opt = gt.optim.RMSprop([p], lr=0.1)
    scaler = _scaler(init_scale=8.0)
    session = backend.GraphSession()
    with backend.graph_warmup(session):
        _step_with_grad(scaler, opt, p, float("inf"))
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])  # skipped, decided by a (noted) host read
    assert any("RMSprop cannot skip a step on the device" in blocker for blocker in session.blockers)
    assert scaler.get_scale() == 4.0


def test_sgd_first_momentum_step_with_dampening_under_a_device_mask_reads_the_flag():
    # a masked first step would leave a zero buffer, and dampening would then make the next step differ
    # from the first step's buf = g: that one case asks the host whether the step is skipped
    p = gt.ones(2, requires_grad=True)
    opt = gt.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    scaler = _scaler(init_scale=8.0)
    with backend.graph_warmup() as session:
        _step_with_grad(scaler, opt, p, float("inf"))
    assert session.blockers[0].startswith("SGD's first momentum step with dampening under a GradScaler")
    assert "momentum_buffer" not in opt.state[p] and p.tolist() == [1.0, 1.0]  # skipped, as on the host
