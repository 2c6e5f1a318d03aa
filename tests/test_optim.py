"""Optimizers: update equations against NumPy references on a quadratic, PyTorch agreement, param groups,
state_dict round trips, closures and errors."""
import contextlib
import math

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import backend, fused, optim

# f(x) = sum(0.5 * A * x**2 - B * x): gradient A * x - B, minimum at B / A.
A = np.array([1.0, 2.0, 0.5, 3.0])
B = np.array([0.5, -1.0, 2.0, 0.3])
X0 = np.array([1.0, -0.5, 0.25, 2.0])
STEPS = 5


def quadratic_loss(x):
    a, b = gt.tensor(A.astype(x.dtype)), gt.tensor(B.astype(x.dtype))
    return (0.5 * a * x * x - b * x).sum()


def grad_of(x):
    return A * x - B


# --- NumPy references: the published update equations, written plainly -------------------------------

def ref_sgd(x, g, s, t, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False):
    g = -g if maximize else g
    g = g + weight_decay * x
    if momentum:
        s["buf"] = g.copy() if t == 1 else momentum * s["buf"] + (1 - dampening) * g
        g = g + momentum * s["buf"] if nesterov else s["buf"]
    return x - lr * g


def ref_adam(x, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
             decoupled=False):
    b1, b2 = betas
    g = -g if maximize else g
    if decoupled:
        x = x * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * x
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    v = s["v"]
    if amsgrad:
        v = s["vmax"] = np.maximum(s.get("vmax", 0), v)
    m_hat = s["m"] / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return x - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(x, g, s, t, weight_decay=1e-2, **kw):
    return ref_adam(x, g, s, t, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(x, g, s, t, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False):
    g = g + weight_decay * x
    s["sq"] = alpha * s.get("sq", 0) + (1 - alpha) * g * g
    mean_square = s["sq"]
    if centered:
        s["mean"] = alpha * s.get("mean", 0) + (1 - alpha) * g
        mean_square = mean_square - s["mean"] ** 2
    scaled = g / (np.sqrt(mean_square) + eps)
    if momentum:
        s["buf"] = momentum * s.get("buf", 0) + scaled
        return x - lr * s["buf"]
    return x - lr * scaled


def ref_adagrad(x, g, s, t, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10):
    g = g + weight_decay * x
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return x - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


def ref_lamb(x, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0):
    b1, b2 = betas
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    update = (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps) + weight_decay * x
    w_norm, u_norm = np.linalg.norm(x), np.linalg.norm(update)
    trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
    return x - lr * trust * update


CASES = [
    ("SGD", ref_sgd, dict(lr=0.1)),
    ("SGD", ref_sgd, dict(lr=0.1, momentum=0.9)),
    ("SGD", ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)),
    ("SGD", ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.2)),
    ("SGD", ref_sgd, dict(lr=0.1, momentum=0.5, maximize=True)),
    ("Adam", ref_adam, dict(lr=0.1)),
    ("Adam", ref_adam, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    ("Adam", ref_adam, dict(lr=0.1, amsgrad=True)),
    ("Adam", ref_adam, dict(lr=0.1, amsgrad=True, weight_decay=0.3, maximize=True)),
    ("AdamW", ref_adamw, dict(lr=0.1)),
    ("AdamW", ref_adamw, dict(lr=0.1, weight_decay=0.5, amsgrad=True)),
    ("RMSprop", ref_rmsprop, dict(lr=0.01)),
    ("RMSprop", ref_rmsprop, dict(lr=0.01, alpha=0.9, weight_decay=0.1)),
    ("RMSprop", ref_rmsprop, dict(lr=0.01, centered=True)),
    ("RMSprop", ref_rmsprop, dict(lr=0.01, momentum=0.9)),
    ("RMSprop", ref_rmsprop, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", ref_adagrad, dict(lr=0.1)),
    ("Adagrad", ref_adagrad, dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.3)),
    ("LAMB", ref_lamb, dict(lr=0.1)),
    ("LAMB", ref_lamb, dict(lr=0.1, betas=(0.8, 0.95), weight_decay=0.1)),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, _, kw in CASES]


def run_gradtensor(name, kwargs, dtype=np.float64, steps=STEPS):
    x = gt.tensor(X0.astype(dtype), requires_grad=True)
    opt = getattr(optim, name)([x], **kwargs)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        quadratic_loss(x).backward()
        opt.step()
        history.append(x.numpy())
    return np.array(history), x, opt


def run_reference(ref, kwargs, steps=STEPS):
    x, state, history = X0.copy(), {}, []
    for t in range(1, steps + 1):
        x = ref(x, grad_of(x), state, t, **kwargs)
        history.append(x)
    return np.array(history)


@pytest.mark.parametrize("name,ref,kwargs", CASES, ids=CASE_IDS)
def test_matches_update_equations(name, ref, kwargs):
    got, _, _ = run_gradtensor(name, kwargs)
    expected = run_reference(ref, kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert not np.allclose(got[-1], X0)  # the steps moved the parameter


@pytest.mark.parametrize("name,ref,kwargs", CASES, ids=CASE_IDS)
def test_float32_stays_float32(name, ref, kwargs):
    got, x, opt = run_gradtensor(name, kwargs, dtype=np.float32)
    assert x.dtype == gt.float32
    for value in opt.state[x].values():
        if isinstance(value, gt.Tensor):
            assert value.dtype == gt.float32 and value.shape == x.shape
    np.testing.assert_allclose(got, run_reference(ref, kwargs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,ref,kwargs", [c for c in CASES if c[0] != "LAMB"],
                         ids=[i for i, c in zip(CASE_IDS, CASES) if c[0] != "LAMB"])
def test_matches_torch(name, ref, kwargs):
    torch = pytest.importorskip("torch")
    x = torch.tensor(X0, requires_grad=True)
    opt = getattr(torch.optim, name)([x], **kwargs)
    expected = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = (0.5 * torch.tensor(A) * x * x - torch.tensor(B) * x).sum()
        loss.backward()
        opt.step()
        expected.append(x.detach().numpy().copy())
    got, _, _ = run_gradtensor(name, kwargs)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-12, atol=1e-14)


def test_torch_state_dict_layout_matches():
    torch = pytest.importorskip("torch")
    ours = [gt.tensor(X0, requires_grad=True) for _ in range(3)]
    theirs = [torch.tensor(X0, requires_grad=True) for _ in range(3)]
    opt_ours = optim.Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": 0.1}], amsgrad=True)
    opt_theirs = torch.optim.Adam([{"params": theirs[:1]}, {"params": theirs[1:], "lr": 0.1}], amsgrad=True)
    for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        for p in params[:2]:  # the third has no gradient: no state
            p.grad = p.detach() * 0 + 1
        opt.step()
    sd_ours, sd_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert list(sd_ours["state"]) == list(sd_theirs["state"]) == [0, 1]
    assert set(sd_ours["state"][0]) == set(sd_theirs["state"][0])
    assert [g["params"] for g in sd_ours["param_groups"]] == [g["params"] for g in sd_theirs["param_groups"]]
    for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert [g[key] for g in sd_ours["param_groups"]] == [g[key] for g in sd_theirs["param_groups"]]
    np.testing.assert_allclose(sd_ours["state"][1]["exp_avg_sq"].numpy(), sd_theirs["state"][1]["exp_avg_sq"].numpy())


# --- lamb trust ratio -------------------------------------------------------------------------------

def test_lamb_trust_ratio_is_one_for_zero_weights():
    x = gt.zeros(3, dtype=gt.float64, requires_grad=True)
    x.grad = gt.tensor(np.array([1.0, -2.0, 0.5]))
    optim.LAMB([x], lr=0.1).step()
    # first step: m_hat = g, v_hat = g^2, so the update is g / (|g| + eps) and ||w|| = 0 gives trust 1
    g = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(x.numpy(), -0.1 * g / (np.abs(g) + 1e-6), rtol=1e-12)


def test_lamb_trust_ratio_scales_step_to_weight_norm():
    x = gt.tensor(np.array([3.0, 4.0]), requires_grad=True)  # ||w|| = 5
    x.grad = gt.tensor(np.array([1.0, 1.0]))
    optim.LAMB([x], lr=0.1, eps=0.0).step()
    # update = sign(g) = (1, 1), ||update|| = sqrt(2): the step has length lr * ||w||
    np.testing.assert_allclose(x.numpy(), [3.0, 4.0] - 0.1 * 5 / math.sqrt(2) * np.ones(2), rtol=1e-12)


# --- mechanics ---------------------------------------------------------------------------------------

def make_params(n=3):
    return [gt.tensor(X0 * (i + 1), requires_grad=True) for i in range(n)]


def compute_grads(params):
    for p in params:
        p.grad = None
    sum(quadratic_loss(p) for p in params).backward()


def test_params_without_grad_are_skipped():
    with_grad, without_grad = make_params(2)
    opt = optim.Adam([with_grad, without_grad], lr=0.1)
    quadratic_loss(with_grad).backward()
    opt.step()
    np.testing.assert_array_equal(without_grad.numpy(), X0 * 2)
    assert without_grad not in opt.state
    assert opt.state[with_grad]["step"] == 1
    assert not np.allclose(with_grad.numpy(), X0)


def test_param_groups_use_their_own_options():
    a, b = make_params(2)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0
    assert opt.param_groups[1]["lr"] == 0.5 and opt.param_groups[1]["momentum"] == 0.9
    compute_grads([a, b])
    ga, gb = a.grad.numpy(), b.grad.numpy()
    opt.step()
    np.testing.assert_allclose(a.numpy(), X0 - 0.1 * ga, rtol=1e-15)
    np.testing.assert_allclose(b.numpy(), 2 * X0 - 0.5 * gb, rtol=1e-15)
    assert "momentum_buffer" not in opt.state[a] and "momentum_buffer" in opt.state[b]


def test_add_param_group_fills_defaults():
    a, b = make_params(2)
    opt = optim.RMSprop([a], lr=0.02, centered=True)
    opt.add_param_group({"params": b, "alpha": 0.5})
    assert len(opt.param_groups[1]["params"]) == 1 and opt.param_groups[1]["params"][0] is b
    assert opt.param_groups[1]["alpha"] == 0.5
    assert opt.param_groups[1]["lr"] == 0.02 and opt.param_groups[1]["centered"] is True


def test_step_updates_in_place_and_bumps_version():
    x = gt.tensor(X0, requires_grad=True)
    data = x.data
    version = x._version[0]
    opt = optim.SGD([x], lr=0.1, momentum=0.9)
    for _ in range(2):
        quadratic_loss(x).backward()
        opt.step()
    assert x.data is data
    assert x._version[0] == version + 2


def test_step_does_not_modify_the_gradient():
    x = gt.tensor(X0, requires_grad=True)
    opt = optim.Adam([x], lr=0.1, weight_decay=0.5, maximize=True)
    quadratic_loss(x).backward()
    grad = x.grad.numpy()
    opt.step()
    np.testing.assert_array_equal(x.grad.numpy(), grad)


def test_closure_runs_with_grad_enabled_and_returns_loss():
    x = gt.tensor(X0, requires_grad=True)
    opt = optim.SGD([x], lr=0.1)
    calls = []

    def closure():
        calls.append(gt.is_grad_enabled())
        opt.zero_grad()
        loss = quadratic_loss(x)
        loss.backward()
        return loss

    with gt.no_grad():
        loss = opt.step(closure)
    assert calls == [True]
    assert loss.item() == pytest.approx(float(np.sum(0.5 * A * X0**2 - B * X0)))
    np.testing.assert_allclose(x.numpy(), X0 - 0.1 * grad_of(X0), rtol=1e-15)
    assert opt.step() is None


def test_zero_grad():
    x, y = make_params(2)
    opt = optim.SGD([x, y])
    compute_grads([x, y])
    grad_array = x.grad.data
    opt.zero_grad(set_to_none=False)
    assert x.grad.data is grad_array
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(4))
    np.testing.assert_array_equal(y.grad.numpy(), np.zeros(4))
    opt.zero_grad()
    assert x.grad is None and y.grad is None


# --- state_dict -------------------------------------------------------------------------------------

OPTIMIZER_CONFIGS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("LAMB", dict(lr=0.1, weight_decay=0.01)),
]


def build(name, kwargs, params):
    return getattr(optim, name)([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], **kwargs)


def train(opt, params, steps):
    for _ in range(steps):
        compute_grads(params)
        opt.step()


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CONFIGS, ids=[c[0] for c in OPTIMIZER_CONFIGS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_state_dict_round_trip_continues_bit_for_bit(name, kwargs, dtype):
    straight = [gt.tensor((X0 * (i + 1)).astype(dtype), requires_grad=True) for i in range(3)]
    opt = build(name, kwargs, straight)
    train(opt, straight, 6)

    first = [gt.tensor((X0 * (i + 1)).astype(dtype), requires_grad=True) for i in range(3)]
    opt_first = build(name, kwargs, first)
    train(opt_first, first, 3)
    saved = opt_first.state_dict()
    resumed = [gt.tensor(p.numpy(), requires_grad=True) for p in first]
    opt_resumed = build(name, {}, resumed)  # options come from the state dict
    opt_resumed.load_state_dict(saved)
    train(opt_first, first, 1)  # the loaded optimizer must not share state with the saved one
    train(opt_resumed, resumed, 3)

    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert b.dtype == dtype


def test_state_dict_layout():
    params = make_params(3)
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}], lr=0.1, momentum=0.9)
    compute_grads(params[2:])
    opt.step()
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert [g["lr"] for g in sd["param_groups"]] == [0.1, 0.5]
    assert list(sd["state"]) == [2]
    assert list(sd["state"][2]) == ["momentum_buffer"]
    np.testing.assert_array_equal(sd["state"][2]["momentum_buffer"].numpy(), params[2].grad.numpy())


def test_load_state_dict_casts_state_to_param_dtype():
    params = make_params(2)
    opt = optim.Adam(params, lr=0.1)
    train(opt, params, 2)
    params32 = [gt.tensor(p.numpy().astype(np.float32), requires_grad=True) for p in params]
    opt32 = optim.Adam(params32)
    opt32.load_state_dict(opt.state_dict())
    assert opt32.state[params32[0]]["exp_avg"].dtype == gt.float32
    assert opt32.state[params32[0]]["step"] == 2
    assert opt32.param_groups[0]["lr"] == 0.1


def test_load_state_dict_rejects_mismatched_groups():
    params = make_params(3)
    opt = optim.SGD([{"params": params[:1]}, {"params": params[1:]}])
    with pytest.raises(ValueError, match="2 parameter groups"):
        optim.SGD(params).load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="group 0 has 1 parameters"):
        optim.SGD([{"params": params[:2]}, {"params": params[2:]}]).load_state_dict(opt.state_dict())


# --- errors ------------------------------------------------------------------------------------------

def test_constructor_errors():
    x = gt.tensor(X0, requires_grad=True)
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(x)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([x * 2])
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        optim.SGD([X0])
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([x, x])
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [x]}, {"params": [x]}])
    with pytest.raises(ValueError, match="invalid lr"):
        optim.Adam([x], lr=-1)
    with pytest.raises(ValueError, match="invalid betas"):
        optim.AdamW([x], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([x], nesterov=True)


def test_defaults_are_pytorchs():
    x = gt.tensor(X0, requires_grad=True)
    assert optim.SGD([x]).defaults == dict(lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                                           maximize=False)
    adam = optim.Adam([x]).defaults
    assert (adam["lr"], adam["betas"], adam["eps"], adam["weight_decay"], adam["amsgrad"]) == (
        1e-3, (0.9, 0.999), 1e-8, 0, False)
    assert optim.AdamW([x]).defaults["weight_decay"] == 1e-2
    rms = optim.RMSprop([x]).defaults
    assert (rms["lr"], rms["alpha"], rms["eps"], rms["momentum"], rms["centered"]) == (1e-2, 0.99, 1e-8, 0, False)
    ada = optim.Adagrad([x]).defaults
    assert (ada["lr"], ada["lr_decay"], ada["initial_accumulator_value"], ada["eps"]) == (1e-2, 0, 0, 1e-10)
    assert optim.LAMB([x]).defaults == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0)


# --- the capturable form (CUDA graphs) -------------------------------------------------------------------
# gt.cuda.graph switches optimizers to a form whose changing scalars (learning rates, Adam's step counts)
# live in device arrays. Here a graph's warm-up step and its "captured" steps run through the same
# sessions eagerly (NumPy computes at once), host reads forbidden in the captured ones, and must give
# exactly the bits of plain steps, with a scheduler changing the learning rate between steps.

CAPTURABLE_CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
    ("Adam", dict(lr=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("AdamW", dict(lr=0.1)),
    ("AdamW", dict(lr=0.1, weight_decay=0.5, amsgrad=True)),
]
CAPTURABLE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CAPTURABLE_CONFIGS]


def graph_step(opt, session, warm_up):
    """One optimizer step as a graph's warm-up (warm_up) or as a captured step (host reads forbidden,
    learning rates brought to the device first, as gt.cuda.graph does before each replay)."""
    if warm_up:
        with backend.graph_warmup(session):
            opt.step()
    else:
        opt._graph_refresh()
        with backend.forbid_host_reads(session):
            opt.step()


def run_schedule(name, kwargs, dtype, graph, steps=6, emulate=False, without_grad=None):
    """Params and optimizer after `steps` steps with a StepLR halving every 2 steps; without_grad:
    (step, parameter index) whose gradient is None at that step."""
    params = [gt.tensor((X0 * (i + 1)).astype(dtype), requires_grad=True) for i in range(3)]
    opt = build(name, kwargs, params)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    session = backend.GraphSession()
    for step in range(steps):
        compute_grads(params)
        if without_grad is not None and step == without_grad[0]:
            params[without_grad[1]].grad = None
        with fused.emulate_kernels() if emulate else contextlib.nullcontext():
            if graph:
                graph_step(opt, session, warm_up=step == 0)
            else:
                opt.step()
        scheduler.step()
    return params, opt


def assert_same_run(a, b):
    (params_a, opt_a), (params_b, opt_b) = a, b
    for pa, pb in zip(params_a, params_b):
        assert pa.dtype == pb.dtype
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index, values in state_a.items():
        assert values.keys() == state_b[index].keys()
        for key, value in values.items():
            if key == "step":
                assert type(state_b[index][key]) is int and state_b[index][key] == value
            else:
                np.testing.assert_array_equal(value.numpy(), state_b[index][key].numpy())


@pytest.mark.parametrize("emulate", [False, True], ids=["reference", "emulated-kernels"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,kwargs", CAPTURABLE_CONFIGS, ids=CAPTURABLE_IDS)
def test_capturable_form_gives_the_bits_of_plain_steps(name, kwargs, dtype, emulate):
    plain = run_schedule(name, kwargs, dtype, graph=False, emulate=emulate)
    captured = run_schedule(name, kwargs, dtype, graph=True, emulate=emulate)
    assert captured[1]._graph_mode
    assert_same_run(plain, captured)


@pytest.mark.parametrize("name,kwargs", [CAPTURABLE_CONFIGS[1], CAPTURABLE_CONFIGS[5]], ids=["SGD", "Adam"])
def test_capturable_form_with_a_parameter_missing_its_gradient(name, kwargs):
    # eager steps in the capturable form may leave a parameter out: only its step count stands still
    plain = run_schedule(name, kwargs, np.float64, graph=False, without_grad=(3, 1))
    captured = run_schedule(name, kwargs, np.float64, graph=True, without_grad=(3, 1))
    assert_same_run(plain, captured)


def test_state_made_inside_a_capture_is_refused():
    # a graph that captured the state's creation would zero it again at every replay
    with pytest.raises(backend.GraphCaptureError, match="state of a parameter"):
        run_schedule("Adam", dict(lr=0.1), np.float64, graph=True, without_grad=(0, 2))


def test_leaving_the_capturable_form_continues_bit_for_bit():
    params = make_params()
    opt = build("Adam", dict(lr=0.1, amsgrad=True), params)
    session = backend.GraphSession()
    for step in range(4):
        compute_grads(params)
        graph_step(opt, session, warm_up=step == 0)
    opt._leave_graph_mode()  # what gt.cuda.graph does when it gives up before capturing
    assert not opt._graph_mode and all(type(state["step"]) is int for state in opt.state.values())
    for _ in range(2):
        compute_grads(params)
        opt.step()
    plain = make_params()
    plain_opt = build("Adam", dict(lr=0.1, amsgrad=True), plain)
    train(plain_opt, plain, 6)
    assert_same_run((plain, plain_opt), (params, opt))


def test_state_dict_of_the_capturable_form_loads_into_either_form():
    params = make_params()
    opt = build("AdamW", dict(lr=0.1), params)
    session = backend.GraphSession()
    for step in range(3):
        compute_grads(params)
        graph_step(opt, session, warm_up=step == 0)
    saved = opt.state_dict()
    assert [state["step"] for state in saved["state"].values()] == [3, 3, 3]
    runs = []
    for form in ("host", "capturable after loading", "capturable before loading"):
        resumed = [gt.tensor(p.numpy(), requires_grad=True) for p in params]
        resumed_opt = build("AdamW", {}, resumed)
        resumed_session = backend.GraphSession()
        if form == "capturable before loading":
            with backend.graph_warmup(resumed_session):
                resumed_opt.step()  # no gradients yet: it only switches forms
            assert resumed_opt._graph_mode
        resumed_opt.load_state_dict(saved)
        for step in range(2):
            compute_grads(resumed)
            if form == "host":
                resumed_opt.step()
            else:
                graph_step(resumed_opt, resumed_session, warm_up=step == 0)
        runs.append((resumed, resumed_opt))
    assert_same_run(runs[0], runs[1])
    assert_same_run(runs[0], runs[2])


def test_optimizers_without_a_capturable_form_are_noted_and_step_on_the_host():
    params = make_params(1)
    opt = optim.RMSprop(params, lr=0.01)
    compute_grads(params)
    with backend.graph_warmup() as session:
        opt.step()
    assert not opt._graph_mode
    assert len(session.blockers) == 1 and session.blockers[0].startswith("RMSprop.step() (only SGD, Adam and AdamW")
    expected = run_reference(ref_rmsprop, dict(lr=0.01), steps=1)[0]
    np.testing.assert_allclose(params[0].numpy(), expected, rtol=1e-12)
