"""Gradient checkpointing: gradients equal to the plain run bit for bit (dropout, autocast, hooks,
create_graph, nesting, keyword and nested arguments), what is recorded and what is not, and the
memory it saves: live saved arrays counted during backward and tracemalloc peaks on the CPU, the
CuPy pool's peak on a GPU; the memory-budget planner."""
import copy
import re
import tracemalloc
import weakref

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import backend, nn
from gradtensor.autograd import Function, gradcheck, gradgradcheck, plan_segments
from gradtensor.autograd.graph import saved_nbytes


def _grads(tensors):
    return [t.grad.numpy().copy() for t in tensors]


def _dropout_net(width=8, depth=4, p=0.3):
    gt.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU(), nn.Dropout(p)]
    return nn.Sequential(*layers)


def _run(net, x, segments=None, **kwargs):
    """Loss and the gradients of x and every parameter, with the random stream seeded alike."""
    gt.manual_seed(1)
    net.zero_grad()
    x.grad = None
    out = net(x) if segments is None else gt.checkpoint_sequential(net, segments, x, **kwargs)
    loss = (out * out).sum()
    loss.backward()
    after = gt.rand(3).numpy()  # the random stream continues where the plain run left it
    return loss.item(), _grads([x, *net.parameters()]), after


@pytest.mark.parametrize("segments", [1, 2, 5, 12, 40, [4, 1, 7]])
def test_checkpoint_sequential_gradients_are_bitwise_identical_with_dropout(segments):
    net = _dropout_net()
    x = gt.randn(5, 8, requires_grad=True)
    plain_loss, plain_grads, plain_after = _run(net, x)
    loss, grads, after = _run(net, x, segments)
    assert loss == plain_loss
    for got, want in zip(grads, plain_grads):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(after, plain_after)


@pytest.mark.parametrize("budget_between_least_and_plain", [None, 0.5])
def test_auto_form_gradients_are_bitwise_identical_with_dropout(budget_between_least_and_plain):
    net = _dropout_net(depth=6)
    x = gt.randn(5, 8, requires_grad=True)
    plain_loss, plain_grads, plain_after = _run(net, x)
    twin = copy.deepcopy(net)  # planned on a copy: the first call below still measures net itself
    least = plan_segments(twin, x)
    budget = None
    if budget_between_least_and_plain is not None:
        budget = least.peak_bytes + budget_between_least_and_plain * (least.plain_bytes - least.peak_bytes)
    assert len(plan_segments(twin, x, budget).lengths) > 1
    # twice: the first call measures the chain (drawing random numbers it must give back), the second reuses it
    for _ in range(2):
        loss, grads, after = _run(net, x, "auto", memory_budget=budget)
        assert loss == plain_loss
        for got, want in zip(grads, plain_grads):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(after, plain_after)


def test_parameters_read_inside_get_gradients_when_input_needs_none():
    w = gt.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gt.float64, requires_grad=True)
    x = gt.tensor([[1.0, -1.0]], dtype=gt.float64)
    out = gt.checkpoint(lambda t: (t @ w).sin(), x)
    assert out.grad_fn is not None
    out.sum().backward()
    expected = x.numpy().T @ np.cos(x.numpy() @ w.numpy())
    np.testing.assert_allclose(w.grad.numpy(), expected)


def test_region_with_nothing_to_differentiate_is_not_recorded():
    x = gt.tensor([1.0, 2.0])
    out = gt.checkpoint(lambda t: t * 2, x)
    assert out.grad_fn is None and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [2.0, 4.0])
    chained = gt.checkpoint_sequential([lambda t: t * 2, lambda t: t + 1, lambda t: t * 3], 3, x)
    assert chained.grad_fn is None
    np.testing.assert_array_equal(chained.numpy(), [9.0, 15.0])


def test_under_no_grad_checkpoint_is_a_plain_call():
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    with gt.no_grad():
        out = gt.checkpoint(lambda t: t * 3, x)
        chained = gt.checkpoint_sequential([lambda t: t * 3, lambda t: t - 1], "auto", x, memory_budget=1)
    assert out.grad_fn is None and chained.grad_fn is None
    np.testing.assert_array_equal(out.numpy(), [3.0, 6.0])
    np.testing.assert_array_equal(chained.numpy(), [2.0, 5.0])


def test_keyword_tensor_arguments_get_gradients():
    x = gt.tensor([0.5, 1.5], dtype=gt.float64, requires_grad=True)
    scale = gt.tensor(3.0, dtype=gt.float64, requires_grad=True)

    def fn(t, scale, power=2):
        return (t * scale) ** power, (t * t).sum()

    a, b = gt.checkpoint(fn, x, scale=scale, power=2)
    (a.sum() + b).backward()
    xv = x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), 2 * 9.0 * xv + 2 * xv)
    np.testing.assert_allclose(scale.grad.numpy(), 2 * 3.0 * (xv * xv).sum())


def test_nested_arguments_and_results_with_non_tensor_items():
    a = gt.tensor([1.0, 2.0], dtype=gt.float64, requires_grad=True)
    b = gt.tensor([3.0, -1.0], dtype=gt.float64, requires_grad=True)

    def fn(pair, options):
        product = pair[0] * pair[1]
        return {"product": product, "twice": [product * 2, "label"], "count": options["count"]}

    out = gt.checkpoint(fn, [a, b], {"count": 7})
    assert out["count"] == 7 and out["twice"][1] == "label"
    (out["product"].sum() + out["twice"][0].sum()).backward()
    np.testing.assert_allclose(a.grad.numpy(), 3 * b.numpy())
    np.testing.assert_allclose(b.grad.numpy(), 3 * a.numpy())


def test_result_without_tensors_is_returned_as_is():
    x = gt.tensor([1.0], requires_grad=True)
    assert gt.checkpoint(lambda t: ("no tensors", 3), x) == ("no tensors", 3)


def test_only_one_output_used():
    x = gt.tensor([0.5, 1.5], dtype=gt.float64, requires_grad=True)
    a, _ = gt.checkpoint(lambda t: (t.exp(), t * 5), x)
    a.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(x.numpy()))


def test_nested_checkpoints():
    x = gt.tensor([0.3, -0.7], dtype=gt.float64, requires_grad=True)
    inner = lambda t: (t * t).sin()  # noqa: E731
    outer = lambda t: gt.checkpoint(inner, t).exp()  # noqa: E731
    gt.checkpoint(outer, x).sum().backward()
    xv = x.numpy()
    expected = np.exp(np.sin(xv * xv)) * np.cos(xv * xv) * 2 * xv
    np.testing.assert_allclose(x.grad.numpy(), expected)


def test_create_graph_through_checkpoint_equals_plain_second_derivatives():
    gt.manual_seed(3)
    w = gt.randn(3, 3, dtype=gt.float64, requires_grad=True)
    x = gt.randn(2, 3, dtype=gt.float64, requires_grad=True)
    layer = lambda t: (t @ w).tanh()  # noqa: E731

    def second_derivatives(run):
        (gx,) = gt.autograd.grad(run(x).sum(), x, create_graph=True)
        return [g.numpy() for g in gt.autograd.grad((gx * gx).sum(), (x, w))]

    plain = second_derivatives(layer)
    checked = second_derivatives(lambda t: gt.checkpoint(layer, t))
    for got, want in zip(checked, plain):
        np.testing.assert_array_equal(got, want)


def test_create_graph_with_an_argument_passed_twice():
    x = gt.tensor([0.5, -1.0, 2.0], dtype=gt.float64, requires_grad=True)
    y = gt.checkpoint(lambda a, b: (a * a * b).sum(), x, x)
    (g,) = gt.autograd.grad(y, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2)
    (gg,) = gt.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), 6 * x.numpy())


def test_gradcheck_and_gradgradcheck_through_checkpoint():
    w = gt.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=gt.float64, requires_grad=True)
    x = gt.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=gt.float64, requires_grad=True)
    fn = lambda a, b: gt.checkpoint(lambda u, v: (u @ v).tanh() * u, a, b)  # noqa: E731
    assert gradcheck(fn, (x, w))
    assert gradgradcheck(fn, (x, w))


def test_hooks_of_outside_tensors_fire_once():
    x = gt.tensor([[1.0, 2.0]], dtype=gt.float64, requires_grad=True)
    w = gt.tensor([[0.5], [-1.0]], dtype=gt.float64, requires_grad=True)
    h = x * 3  # a non-leaf the region reads from its closure
    calls = []
    w.register_hook(lambda g: calls.append("w") or g * 2)
    h.register_hook(lambda g: calls.append("h") or g * 10)
    gt.checkpoint(lambda t: (t @ w).sum() + (h @ w).sum(), x).backward()
    assert sorted(calls) == ["h", "w"]
    np.testing.assert_allclose(w.grad.numpy(), 2 * (x.numpy() + h.numpy()).T)
    np.testing.assert_allclose(x.grad.numpy(), w.numpy().T + 30 * w.numpy().T)


def test_input_modified_in_place_before_backward_raises():
    w = gt.tensor([2.0, 3.0], dtype=gt.float64, requires_grad=True)
    x = gt.tensor([1.0, 1.0], dtype=gt.float64)
    y = gt.checkpoint(lambda t: (t * w).sum(), x)
    x[0] = 5.0  # the replay would see other values than the first run
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def _autocast_grads(w, x, region, use_w_again):
    w.grad = x.grad = None
    with gt.amp.autocast("cpu", dtype=gt.float16):
        out = region(x)
        if use_w_again:  # w again outside the region, in the same autocast block
            out = out + gt.nn.functional.linear(x, w)
    out.astype(gt.float32).sum().backward()  # backward runs outside autocast
    return out.numpy(), w.grad.numpy(), x.grad.numpy()


def _plain_and_checkpointed_autocast_grads(use_w_again):
    gt.manual_seed(2)
    w = gt.randn(4, 4, requires_grad=True)
    x = gt.randn(3, 4, requires_grad=True)
    linear = lambda t: gt.nn.functional.linear(t, w).tanh()  # noqa: E731
    plain = _autocast_grads(w, x, linear, use_w_again)
    checked = _autocast_grads(w, x, lambda t: gt.checkpoint(linear, t), use_w_again)
    return plain, checked


def test_autocast_state_is_replayed():
    plain, checked = _plain_and_checkpointed_autocast_grads(use_w_again=False)
    assert checked[0].dtype == np.float16
    for got, want in zip(checked, plain):
        np.testing.assert_array_equal(got, want)


def test_casts_made_without_grad_in_a_region_do_not_serve_later_uses():
    plain, checked = _plain_and_checkpointed_autocast_grads(use_w_again=True)
    # the plain run shares one float16 cast of w between both uses, so sums differ in rounding only;
    # a cached cast without grad would drop the second use's gradient of w altogether
    for got, want in zip(checked, plain):
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def test_second_backward_through_checkpoint_raises():
    x = gt.tensor([1.0, 2.0], dtype=gt.float64, requires_grad=True)
    y = gt.checkpoint(lambda t: (t * t).sum(), x)
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


# --- memory ------------------------------------------------------------------------------------


def _relu_chain(depth, width, dtype=gt.float64, device=None):
    """depth layers h -> relu(h @ w): each keeps its input (shared with the layer before) and its output."""
    gt.manual_seed(4)
    weights = [(gt.randn(width, width, dtype=dtype, device=device) / width**0.5).requires_grad_() for _ in range(depth)]
    return weights, [lambda h, w=w: (h @ w).relu() for w in weights]


class _LiveSavedArrays:
    """Counts the distinct arrays that recorded nodes keep for backward and are still alive (weak
    references to their memory owners), with the peak and samples taken on request."""

    def __init__(self, monkeypatch):
        self.live, self.total, self.peak = {}, 0, 0
        record = Function._record

        def counting_record(node, args, needs, out):
            linked = record(node, args, needs, out)
            values = list(node._saved or ()) + [node._saved_output] + list(vars(node).values())
            for v in values:
                for item in v if isinstance(v, (list, tuple)) else (v,):
                    if isinstance(item, gt.Tensor) and not (item.is_leaf and item.requires_grad):
                        self._add(item.data)
                    elif isinstance(item, np.ndarray):
                        self._add(item)
            return linked

        monkeypatch.setattr(Function, "_record", counting_record)

    def _add(self, array):
        owner = array if array.base is None else array.base
        if id(owner) in self.live:
            return

        def freed(_, key=id(owner), nbytes=owner.nbytes):
            del self.live[key]
            self.total -= nbytes

        self.live[id(owner)] = weakref.ref(owner, freed)
        self.total += owner.nbytes
        self.peak = max(self.peak, self.total)


def test_checkpointed_segments_free_their_activations(monkeypatch):
    act = 32 * 16 * 8  # bytes of one activation
    weights, layers = _relu_chain(depth=12, width=16)
    x = gt.randn(32, 16, dtype=gt.float64)

    plain = _LiveSavedArrays(monkeypatch)
    h = x
    for f in layers:
        h = f(h)
    (h * h).sum().backward()
    assert plain.peak == 13 * act  # x and the 12 layer outputs

    for w in weights:
        w.grad = None
    live = _LiveSavedArrays(monkeypatch)
    samples = {}
    for i, w in enumerate(weights[:9]):
        w.register_hook(lambda g, i=i: samples.setdefault(i, live.total) and None)
    # segments of 3 layers, the last one plain; the output is not held beyond the loss's backward
    gt.checkpoint_sequential(layers, 4, x).sum().backward()
    # at backward's start: the inputs x0, x3, x6 of the checkpointed segments and the plain segment's
    # x9..x12; recomputing segment 2 later holds x0, x3, x6 and x7..x9 again
    assert live.peak == 7 * act
    # a segment's gradients arrive once its replay is gone: only the inputs of earlier segments remain
    for i, held in samples.items():
        assert held <= (i // 3 + 1) * act
    assert live.total == act  # all that is left is x, which the test holds


def test_saved_nbytes_counts_segment_inputs_and_the_plain_segment():
    act = 4 * 8 * 8
    _, layers = _relu_chain(depth=6, width=8)
    x = gt.randn(4, 8, dtype=gt.float64)
    h = x
    for f in layers:
        h = f(h)
    assert saved_nbytes(h) == 7 * act
    # checkpointed [0:4] keeps x; the plain [4:6] keeps x4, x5, x6
    assert saved_nbytes(gt.checkpoint_sequential(layers, [4, 2], x)) == 4 * act


def _traced_peak(step):
    """tracemalloc's peak (NumPy reports its allocations to it) during step(), above what was live before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        step()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _training_step(weights, layers, x, segments=None, **kwargs):
    def step():
        for w in weights:
            w.grad = None
        out = _run_chain(layers, x) if segments is None else gt.checkpoint_sequential(layers, segments, x, **kwargs)
        (out * out).mean().backward()

    return step


def _run_chain(layers, x):
    for f in layers:
        x = f(x)
    return x


def test_memory_budget_plans_fit_and_the_measured_peak_follows_them():
    weights, layers = _relu_chain(depth=16, width=32)
    x = gt.randn(1024, 32, dtype=gt.float64)  # activations large enough for Python objects not to matter
    act = x.data.nbytes
    plain_peak = _traced_peak(_training_step(weights, layers, x))
    least = plan_segments(layers, x)  # measures the chain; the runs below reuse the measurement
    assert 0.9 * least.plain_bytes <= plain_peak <= 1.1 * least.plain_bytes
    peaks = []
    for budget in (least.peak_bytes + 3 * act, least.peak_bytes):
        plan = plan_segments(layers, x, budget)
        assert plan.peak_bytes <= budget and sum(plan.lengths) == 16
        measured = _traced_peak(_training_step(weights, layers, x, "auto", memory_budget=budget))
        assert 0.9 * plan.peak_bytes <= measured <= 1.1 * plan.peak_bytes, (measured / act, plan.peak_bytes / act)
        peaks.append(measured)
    assert peaks[1] < peaks[0] < plain_peak and peaks[1] < 0.55 * plain_peak


def test_memory_budget_that_fits_without_checkpointing_keeps_one_plain_segment():
    _, layers = _relu_chain(depth=5, width=8)
    x = gt.randn(4, 8, dtype=gt.float64)
    plan = plan_segments(layers, x, 10**9)
    assert plan.lengths == (5,) and plan.peak_bytes == plan.plain_bytes


def test_impossible_memory_budget_names_the_least_achievable():
    _, layers = _relu_chain(depth=10, width=8)
    x = gt.randn(16, 8, dtype=gt.float64)
    with pytest.raises(ValueError, match=r"least achievable is \d+ bytes") as info:
        gt.checkpoint_sequential(layers, "auto", x, memory_budget=1000)
    least = int(re.search(r"least achievable is (\d+) bytes", str(info.value)).group(1))
    assert plan_segments(layers, x, least).peak_bytes == least
    with pytest.raises(ValueError, match="least achievable"):
        plan_segments(layers, x, least - 1)


def test_the_chain_is_measured_once_per_input_layout():
    calls = []
    w = gt.randn(4, 4, dtype=gt.float64, requires_grad=True)
    layers = [lambda h: calls.append(1) or (h @ w).relu() for _ in range(6)]
    x = gt.randn(3, 4, dtype=gt.float64)
    least = plan_segments(layers, x)
    measured = len(calls)
    assert measured == 6
    for _ in range(2):
        calls.clear()
        gt.checkpoint_sequential(layers, "auto", x).sum().backward()
        recomputed = sum(least.lengths[:-1])
        assert recomputed > 0
        assert len(calls) == 6 + recomputed  # forward and replay, no new measurement
    calls.clear()
    plan_segments(layers, gt.randn(5, 4, dtype=gt.float64))  # another shape is measured anew
    assert len(calls) == 6


def test_bound_methods_are_recognised_again():
    class Layer:
        calls = 0

        def __init__(self):
            self.w = gt.randn(4, 4, dtype=gt.float64, requires_grad=True)

        def run(self, h):
            Layer.calls += 1
            return (h @ self.w).tanh()

    layers = [Layer() for _ in range(4)]
    x = gt.randn(3, 4, dtype=gt.float64)
    plan_segments([layer.run for layer in layers], x)
    Layer.calls = 0
    plan_segments([layer.run for layer in layers], x)  # new bound method objects, the same functions
    assert Layer.calls == 0


@pytest.mark.parametrize(
    "segments, budget, error, message",
    [
        (3, 1000, ValueError, "memory_budget needs segments='auto'"),
        ("some", None, ValueError, "count, lengths or 'auto'"),
        (0, None, ValueError, "at least 1"),
        ([2, 2], None, ValueError, "adding up to the 3 functions"),
        (2.5, None, TypeError, "segments must be an int"),
        ("auto", "lots", TypeError, "number of bytes"),
        ("auto", -5, ValueError, "must be positive"),
    ],
)
def test_checkpoint_sequential_argument_errors(segments, budget, error, message):
    x = gt.tensor([1.0], requires_grad=True)
    with pytest.raises(error, match=re.escape(message)):
        gt.checkpoint_sequential([lambda t: t * 2] * 3, segments, x, memory_budget=budget)


@pytest.mark.gpu
@pytest.mark.skipif(backend.cupy_module() is None, reason="needs CuPy and a CUDA device")
def test_gpu_peak_memory_follows_the_plan():
    weights, layers = _relu_chain(depth=24, width=256, dtype=gt.float32, device="cuda")
    x = gt.randn(4096, 256, device="cuda")

    def peak(step):
        step()  # warm: the plan's measurement and the pool's first allocations happen here
        for w in weights:
            w.grad = None
        gt.cuda.synchronize()
        resting = gt.cuda.memory_allocated()
        gt.cuda.reset_peak_memory_stats()
        step()
        gt.cuda.synchronize()
        return gt.cuda.max_memory_allocated() - resting, [w.grad.numpy() for w in weights]

    plain_peak, plain_grads = peak(_training_step(weights, layers, x))
    plan = plan_segments(layers, x)
    assert 0.85 * plan.plain_bytes <= plain_peak <= 1.2 * plan.plain_bytes
    peak_bytes, grads = peak(_training_step(weights, layers, x, "auto"))
    assert 0.85 * plan.peak_bytes <= peak_bytes <= 1.2 * plan.peak_bytes
    assert peak_bytes <= 0.55 * plain_peak
    for got, want in zip(grads, plain_grads):
        np.testing.assert_array_equal(got, want)


def test_a_region_returning_its_input_shares_its_version_counter():
    """Writing into the returned tensor is writing into the input, which nodes may have saved."""
    w = gt.tensor([1.0, 2.0], requires_grad=True)
    h = w * 2.0
    same = gt.checkpoint(lambda a, b: (a, a * b), h, w)[0]
    assert same.data is h.data and same._version is h._version
    out = (h * w).sum()
    with gt.no_grad():
        same[0] = 5.0
    with pytest.raises(RuntimeError, match="modified in place"):
        out.backward()


def test_a_region_changing_its_input_in_place_is_refused():
    w = gt.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"checkpoint: the region changed its input \(shape \(2,\)\) in place"):
        gt.checkpoint(lambda x: x.add_(1.0) * 2.0, w * 1.0)
    blocks = gt.nn.Sequential(gt.nn.Linear(2, 2), gt.nn.ReLU(inplace=True), gt.nn.Linear(2, 2), gt.nn.ReLU(inplace=True))
    with pytest.raises(RuntimeError, match="checkpoint: the region changed its input"):
        gt.checkpoint_sequential(blocks, [1, 2, 1], gt.randn(3, 2))  # segment 2 starts with ReLU(inplace)
    out = gt.checkpoint_sequential(blocks, [2, 2], gt.randn(3, 2))  # in place on the regions' own intermediates
    out.sum().backward()
    assert blocks[0].weight.grad is not None
