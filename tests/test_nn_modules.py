"""gt.nn: Module plumbing, containers, and every non-recurrent layer (shapes, values, gradients)."""
import collections
import copy
import math

import numpy as np
import pytest

import gradtensor as gt
from gradtensor import nn
from gradtensor.autograd import gradcheck

F = nn.functional


def assert_module_gradcheck(module, *arrays, **kwargs):
    """Finite-difference check of the gradients w.r.t. the inputs and every parameter, in float64."""
    module.to(dtype=gt.float64)
    inputs = [gt.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]
    params = list(module.parameters())

    def run(*args):
        out = module(*args[: len(inputs)], **kwargs)
        return tuple(_flatten(out))

    assert gradcheck(run, tuple(inputs) + tuple(params))


def _flatten(out):
    if isinstance(out, gt.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from _flatten(o)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(gt.ones(3))
        self.inner = nn.Linear(3, 2)
        self.register_buffer("count", gt.zeros(()))
        self.register_buffer("cache", gt.zeros(2), persistent=False)
        self.plain = gt.zeros(4)  # a tensor attribute that is neither parameter nor buffer

    def forward(self, x):
        return self.inner(x * self.scale)


# --- registration and traversal ------------------------------------------------------------------


def test_attribute_assignment_registers_parameters_buffers_and_children():
    block = Block()
    assert [n for n, _ in block.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [n for n, _ in block.named_buffers()] == ["count", "cache"]
    assert [n for n, _ in block.named_children()] == ["inner"]
    assert [n for n, _ in block.named_modules()] == ["", "inner"]
    assert [n for n, _ in block.named_parameters(recurse=False)] == ["scale"]
    assert isinstance(block.scale, nn.Parameter) and isinstance(block.scale, gt.Tensor)
    assert block.scale.requires_grad and block.scale.is_leaf
    assert "plain" not in dict(block.named_buffers()) and block.plain.shape == (4,)
    assert list(block.children()) == [block.inner]
    assert len(list(block.parameters())) == 3 and len(list(block.buffers())) == 2


def test_nested_names_are_dotted_and_shared_parameters_listed_once():
    outer = nn.Sequential(Block(), nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    names = [n for n, _ in outer.named_parameters()]
    assert names == ["0.scale", "0.inner.weight", "0.inner.bias", "1.0.weight", "1.0.bias"]
    assert [n for n, _ in outer.named_modules()] == ["", "0", "0.inner", "1", "1.0", "1.1"]

    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight = a.weight  # tied weights
    tied = nn.Sequential(a, b, a)  # and a module used twice
    assert [n for n, _ in tied.named_parameters()] == ["0.weight", "0.bias", "1.bias"]
    assert len(list(tied.modules())) == 3
    assert len(list(tied.named_parameters(remove_duplicate=False))) == 6


def test_parameter_shares_memory_and_has_a_clear_repr():
    t = gt.tensor([1.0, 2.0])
    p = nn.Parameter(t)
    p.data[0] = 5.0
    assert t.numpy().tolist() == [5.0, 2.0]
    assert p.requires_grad and not nn.Parameter(t, requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor([5., 2.]")
    y = (p * p).sum()
    y.backward()
    np.testing.assert_allclose(p.grad.numpy(), [10.0, 4.0])


def test_assignment_rules_and_errors():
    block = Block()
    with pytest.raises(TypeError, match="parameter 'scale'"):
        block.scale = gt.ones(3)  # a plain tensor cannot replace a parameter
    block.scale = None
    assert [n for n, _ in block.named_parameters()] == ["inner.weight", "inner.bias"]
    block.count = gt.ones(())  # buffers can be replaced by tensors
    assert block.count.item() == 1.0
    with pytest.raises(TypeError, match="buffer 'count'"):
        block.count = 3
    block.inner = nn.Linear(3, 5)  # replacing a child
    assert block.inner.out_features == 5
    del block.inner
    assert [n for n, _ in block.named_children()] == []
    with pytest.raises(AttributeError, match="has no attribute 'inner'"):
        block.inner
    with pytest.raises(KeyError, match="already exists"):
        block.register_buffer("plain", gt.zeros(1))

    class Forgetful(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gt.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Forgetful()


def test_train_eval_propagate_to_every_submodule():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(2)))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model[1].train()
    assert [m.training for m in model.modules()] == [False, False, True, True, True]
    with pytest.raises(TypeError):
        model.train("yes")


def test_forward_hooks_see_inputs_and_outputs_and_can_be_removed():
    layer = nn.Linear(2, 2)
    seen = []

    def hook(module, inputs, output):
        seen.append((module, inputs[0].shape, output.shape))

    handle = layer.register_forward_hook(hook)
    layer(gt.ones(3, 2))
    assert seen == [(layer, (3, 2), (3, 2))]
    replace = layer.register_forward_hook(lambda m, i, o: o * 0)
    assert np.all(layer(gt.ones(1, 2)).numpy() == 0)
    handle.remove()
    replace.remove()
    layer(gt.ones(1, 2))
    assert len(seen) == 2

    pre = layer.register_forward_pre_hook(lambda m, inputs: (inputs[0] * 0,))
    np.testing.assert_allclose(layer(gt.ones(1, 2)).numpy(), layer.bias.numpy()[None])
    pre.remove()


def test_zero_grad_to_none_or_zeros():
    layer = nn.Linear(2, 1)
    layer(gt.ones(1, 2)).sum().backward()
    grad = layer.weight.grad
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is grad and np.all(grad.numpy() == 0)
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_apply_visits_children_first_then_self():
    model = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.ReLU()))
    order = []
    assert model.apply(lambda m: order.append(type(m).__name__)) is model
    assert order == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_to_dtype_keeps_parameter_identity_and_casts_only_floating_state():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    weight = model[0].weight
    model(gt.ones(2, 2)).sum().backward()
    assert model.to(gt.float64) is model
    assert model[0].weight is weight and weight.dtype == np.float64
    assert weight.grad.dtype == np.float64
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    assert model(gt.ones(2, 2, dtype=gt.float64)).dtype == np.float64
    model.to(dtype=gt.float32, device="cpu")
    assert weight.dtype == np.float32 and model[1].running_var.dtype == np.float32
    with pytest.raises(TypeError, match="floating"):
        model.to(dtype=gt.int32)


def test_repr_matches_pytorch_layout():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Dropout(0.1)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=3, bias=True)\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Dropout(p=0.1, inplace=False)\n"
        "  )\n"
        ")"
    )


def test_deepcopy_gives_independent_parameters():
    model = nn.Linear(2, 1)
    clone = copy.deepcopy(model)
    assert clone.weight is not model.weight
    np.testing.assert_array_equal(clone.weight.numpy(), model.weight.numpy())
    clone(gt.ones(1, 2)).sum().backward()
    assert clone.weight.grad is not None and model.weight.grad is None
    clone.weight.data[...] = 0
    assert np.any(model.weight.numpy() != 0)


# --- state_dict ----------------------------------------------------------------------------------


def test_state_dict_holds_parameters_and_persistent_buffers_detached():
    model = nn.Sequential(Block(), nn.BatchNorm1d(2))
    state = model.state_dict()
    assert list(state) == [
        "0.scale", "0.count", "0.inner.weight", "0.inner.bias",
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
    ]
    assert not state["0.scale"].requires_grad and state["0.scale"].is_leaf
    assert not isinstance(state["0.scale"], nn.Parameter)
    model[0].scale.data[0] = 7.0  # the values share memory with the module, as PyTorch's do
    assert state["0.scale"].numpy()[0] == 7.0
    assert model.state_dict(keep_vars=True)["0.scale"] is model[0].scale


def test_state_dict_round_trip_restores_outputs_in_place():
    gt.manual_seed(1)
    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    source(gt.randn(8, 3))  # moves the running statistics
    source.eval()
    target = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    weight = target[0].weight
    result = target.load_state_dict(source.state_dict())
    assert result == ([], []) and result.missing_keys == []
    assert target[0].weight is weight  # loaded in place
    x = gt.randn(5, 3)
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())
    assert target[1].num_batches_tracked.item() == 1
    # NumPy arrays are accepted as values too
    target.load_state_dict({k: v.numpy() * 0 for k, v in source.state_dict().items()})
    assert np.all(target[0].weight.numpy() == 0)


def test_load_state_dict_reports_every_problem():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    state = model.state_dict()
    del state["1.bias"]
    state["extra.weight"] = gt.zeros(1)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "1.bias"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert "Sequential" in message

    missing, unexpected = model.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["1.bias"], ["extra.weight"])

    state = model.state_dict()
    state["0.weight"] = gt.zeros(3, 3)
    with pytest.raises(ValueError, match=r"size mismatch for 0\.weight: copying a tensor of shape \(3, 3\), "
                                         r"the shape in the current model is \(3, 2\)"):
        model.load_state_dict(state, strict=False)


def test_non_persistent_buffers_stay_out_of_state_dict():
    block = Block()
    assert "cache" not in block.state_dict()
    assert block.load_state_dict(block.state_dict()) == ([], [])


# --- containers ----------------------------------------------------------------------------------


def test_sequential_indexing_and_editing():
    layers = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers
    assert model[0] is layers[0] and model[-1] is layers[2]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    with pytest.raises(IndexError):
        model[3]
    model.append(nn.Sigmoid())
    assert len(model) == 4 and isinstance(model[3], nn.Sigmoid)
    del model[1]
    assert [n for n, _ in model.named_children()] == ["0", "1", "2"] and model[1] is layers[2]
    x = gt.ones(4, 2)
    np.testing.assert_allclose(model(x).numpy(), F.sigmoid(layers[2](layers[0](x))).numpy())

    named = nn.Sequential(collections.OrderedDict(encoder=nn.Linear(2, 3), act=nn.Tanh()))
    assert [n for n, _ in named.named_parameters()] == ["encoder.weight", "encoder.bias"]
    assert list(named[1:].named_children())[0][0] == "act"
    named[0] = nn.Linear(2, 5)
    assert named.encoder.out_features == 5


def test_module_list_and_dict_register_their_modules():
    blocks = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
    blocks.append(nn.Linear(2, 3))
    blocks.insert(0, nn.Identity())
    assert len(blocks) == 4 and isinstance(blocks[0], nn.Identity) and blocks[-1].out_features == 3
    assert isinstance(blocks[1:3], nn.ModuleList) and len(blocks[1:3]) == 2
    blocks += [nn.Tanh()]
    assert len(blocks) == 5

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = blocks
            self.heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
            self.heads["b"] = nn.Linear(2, 4)

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names[:2] == ["blocks.1.weight", "blocks.1.bias"]
    assert names[-4:] == ["heads.a.weight", "heads.a.bias", "heads.b.weight", "heads.b.bias"]
    assert list(net.heads) == ["a", "b"] and "a" in net.heads and len(net.heads) == 2
    assert net.heads.pop("a").out_features == 1 and list(net.heads.keys()) == ["b"]
    with pytest.raises(TypeError):
        blocks.append(3)


def test_identity_passes_input_through():
    x = gt.ones(2)
    assert nn.Identity(54, unused="yes")(x) is x


# --- layers: shapes, initialisation, gradients --------------------------------------------------


def test_linear_shapes_default_init_and_gradients():
    gt.manual_seed(0)
    layer = nn.Linear(20, 30)
    bound = 1 / math.sqrt(20)
    assert layer.weight.shape == (30, 20) and layer.bias.shape == (30,)
    assert layer.weight.dtype == np.float32
    for p in (layer.weight, layer.bias):
        assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.8 * bound
    assert layer(gt.ones(7, 5, 20)).shape == (7, 5, 30)
    no_bias = nn.Linear(3, 2, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    assert nn.Linear(3, 2, dtype=gt.float64).weight.dtype == np.float64
    assert_module_gradcheck(nn.Linear(3, 2), randn(2, 3))


@pytest.mark.parametrize(
    "layer, in_shape, out_shape",
    [
        (lambda: nn.Conv1d(2, 4, 3), (2, 2, 7), (2, 4, 5)),
        (lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1), (1, 2, 7), (1, 4, 4)),
        (lambda: nn.Conv2d(3, 6, 3), (2, 3, 6, 5), (2, 6, 4, 3)),
        (lambda: nn.Conv2d(4, 6, (3, 1), stride=(2, 1), padding=(1, 0), groups=2), (1, 4, 5, 5), (1, 6, 3, 5)),
        (lambda: nn.Conv2d(2, 2, 3, dilation=2, bias=False), (1, 2, 6, 6), (1, 2, 2, 2)),
    ],
)
def test_conv_output_shapes(layer, in_shape, out_shape):
    conv = layer()
    assert conv(gt.ones(*in_shape)).shape == out_shape


def test_conv_weights_init_and_gradients():
    gt.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, groups=2)
    assert conv.weight.shape == (8, 2, 3, 3)
    bound = 1 / math.sqrt(2 * 9)
    assert np.abs(conv.weight.numpy()).max() <= bound and np.abs(conv.bias.numpy()).max() <= bound
    assert repr(conv) == "Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1), groups=2)"
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    assert_module_gradcheck(nn.Conv1d(2, 2, 2, stride=2, padding=1), randn(1, 2, 4))
    assert_module_gradcheck(nn.Conv2d(1, 2, 2), randn(1, 1, 3, 3))


def test_conv2d_matches_torch_with_loaded_weights():
    torch = pytest.importorskip("torch")
    reference = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, groups=1)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    conv.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = randn(2, 3, 7, 6).astype(np.float32)
    np.testing.assert_allclose(conv(gt.tensor(x)).numpy(), reference(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_pooling_layers():
    x = gt.tensor(np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4))
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x).numpy(), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(nn.AvgPool2d(2)(x).numpy(), [[[[2.5, 4.5], [10.5, 12.5]]]])
    assert nn.MaxPool2d(3, stride=1, padding=1)(x).shape == (1, 1, 4, 4)
    # with count_include_pad=False the corner window averages only its 4 real entries
    avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x)
    assert avg.numpy()[0, 0, 0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(x).numpy().ravel(), [7.5])
    assert nn.AdaptiveAvgPool2d((2, 1))(x).shape == (1, 1, 2, 1)
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0)"


def test_flatten_merges_the_requested_axes():
    x = gt.ones(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Flatten(-2)(x).shape == (2, 3, 20)
    with pytest.raises(ValueError, match="Flatten"):
        nn.Flatten(2, 1)(x)


def test_dropout_scales_in_training_and_is_identity_in_eval():
    gt.manual_seed(0)
    drop = nn.Dropout(0.25)
    y = drop(gt.ones(4000)).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.03
    drop.eval()
    x = gt.randn(10)
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def _batch_norm_reference(x, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


@pytest.mark.parametrize("cls, shape, axes", [
    (nn.BatchNorm1d, (6, 3), (0,)),
    (nn.BatchNorm1d, (4, 3, 5), (0, 2)),
    (nn.BatchNorm2d, (2, 3, 4, 2), (0, 2, 3)),
])
def test_batch_norm_training_statistics_and_eval(cls, shape, axes):
    x = randn(*shape) * 2 + 1
    bn = cls(3).to(dtype=gt.float64)
    np.testing.assert_allclose(bn(gt.tensor(x)).numpy(), _batch_norm_reference(x, axes), atol=1e-10)
    count = x.size // 3
    mean = x.mean(axis=axes)
    unbiased_var = x.var(axis=axes) * count / (count - 1)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * unbiased_var)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    channel = (1, 3) + (1,) * (len(shape) - 2)
    expected = (x - bn.running_mean.numpy().reshape(channel)) / np.sqrt(bn.running_var.numpy().reshape(channel) + 1e-5)
    np.testing.assert_allclose(bn(gt.tensor(x)).numpy(), expected, atol=1e-10)
    assert bn.num_batches_tracked.item() == 1


def test_batch_norm_options():
    x1, x2 = randn(5, 2, seed=1), randn(5, 2, seed=2)
    cumulative = nn.BatchNorm1d(2, momentum=None).to(dtype=gt.float64)
    cumulative(gt.tensor(x1))
    cumulative(gt.tensor(x2))
    np.testing.assert_allclose(cumulative.running_mean.numpy(), (x1.mean(0) + x2.mean(0)) / 2)

    untracked = nn.BatchNorm1d(2, track_running_stats=False, affine=False).to(dtype=gt.float64)
    assert list(untracked.state_dict()) == [] and untracked.running_mean is None
    untracked.eval()  # no running statistics: batch statistics even in eval
    np.testing.assert_allclose(untracked(gt.tensor(x1)).numpy(), _batch_norm_reference(x1, (0,)), atol=1e-10)

    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input, got 2D"):
        nn.BatchNorm2d(2)(gt.tensor(x1))
    assert repr(nn.BatchNorm2d(4)) == "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert_module_gradcheck(nn.BatchNorm1d(2), randn(4, 2) + 0.5)


def test_layer_norm_normalises_trailing_axes():
    x = randn(2, 3, 4) * 3 + 2
    ln = nn.LayerNorm((3, 4)).to(dtype=gt.float64)
    y = ln(gt.tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1, rtol=1e-4)
    assert ln.weight.shape == (3, 4) and np.all(ln.weight.numpy() == 1) and np.all(ln.bias.numpy() == 0)
    assert list(nn.LayerNorm(4, elementwise_affine=False).parameters()) == []
    assert nn.LayerNorm(4, bias=False).bias is None
    assert_module_gradcheck(nn.LayerNorm(3), randn(2, 3))


def test_embedding_lookup_padding_and_pretrained():
    gt.manual_seed(0)
    emb = nn.Embedding(10, 3, padding_idx=0)
    assert np.all(emb.weight.numpy()[0] == 0)
    idx = gt.tensor([[1, 0], [4, 1]])
    out = emb(idx)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.numpy()[1, 0], emb.weight.numpy()[4])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[0], 0)  # padding row gets no gradient
    np.testing.assert_array_equal(emb.weight.grad.numpy()[1], 2)

    weights = nn.Embedding(1000, 50).weight.numpy()
    assert abs(weights.mean()) < 0.02 and abs(weights.std() - 1) < 0.02  # N(0, 1) initialisation

    table = gt.tensor([[1.0, 2.0], [3.0, 4.0]])
    frozen = nn.Embedding.from_pretrained(table)
    assert not frozen.weight.requires_grad
    np.testing.assert_array_equal(frozen(gt.tensor([1])).numpy(), [[3.0, 4.0]])


@pytest.mark.parametrize("factory, shape", [
    (lambda: nn.BatchNorm2d(2), (2, 2, 2, 2)),
    (lambda: nn.MaxPool2d(2), (1, 1, 4, 4)),
    (lambda: nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False), (1, 1, 2, 3)),
    (lambda: nn.AdaptiveAvgPool2d((1, 2)), (1, 2, 3, 4)),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 2), nn.ELU(), nn.Linear(2, 2), nn.Softmax()), (2, 2, 3)),
], ids=["BatchNorm2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Sequential"])
def test_layer_gradients(factory, shape):
    assert_module_gradcheck(factory(), randn(*shape))


def test_embedding_gradients():
    emb = nn.Embedding(4, 2).to(dtype=gt.float64)  # (padding_idx zeroes a gradient on purpose)
    idx = gt.tensor([[0, 1], [3, 0]])
    assert gradcheck(lambda w: emb(idx), (emb.weight,))


# --- activations and losses ------------------------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


_erf = np.vectorize(math.erf)

ACTIVATIONS = [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), _sigmoid),
    (nn.SiLU(), lambda x: x * _sigmoid(x)),
    (nn.GELU(), lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    (nn.GELU(approximate="tanh"), lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    (nn.Softplus(beta=2.0), lambda x: np.log1p(np.exp(2 * x)) / 2),
    (nn.Softmax(axis=0), lambda x: np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)),
    (nn.LogSoftmax(), lambda x: x - np.log(np.exp(x).sum(axis=-1, keepdims=True))),
]


@pytest.mark.parametrize("module, reference", ACTIVATIONS, ids=lambda v: repr(v) if isinstance(v, nn.Module) else "")
def test_activation_modules(module, reference):
    x = randn(3, 4)
    np.testing.assert_allclose(module(gt.tensor(x)).numpy(), reference(x), rtol=1e-7, atol=1e-10)


def test_activation_reprs():
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert repr(nn.Softmax(axis=1)) == "Softmax(axis=1)"
    assert repr(nn.ReLU()) == "ReLU()"


def _log_softmax(x):
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_regression_losses():
    x, y = randn(4, 3, seed=1), randn(4, 3, seed=2)
    xt, yt = gt.tensor(x), gt.tensor(y)
    assert nn.MSELoss()(xt, yt).item() == pytest.approx(((x - y) ** 2).mean())
    assert nn.L1Loss(reduction="sum")(xt, yt).item() == pytest.approx(np.abs(x - y).sum())
    diff = np.abs(x - y)
    huber = np.where(diff < 0.5, 0.5 * diff**2, 0.5 * (diff - 0.25))
    np.testing.assert_allclose(nn.HuberLoss(reduction="none", delta=0.5)(xt, yt).numpy(), huber)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="average")


def test_classification_losses():
    logits = randn(5, 3)
    target = np.array([0, 2, 1, 2, 0])
    picked = -_log_softmax(logits)[np.arange(5), target]
    lt, tt = gt.tensor(logits), gt.tensor(target)
    assert nn.CrossEntropyLoss()(lt, tt).item() == pytest.approx(picked.mean())
    assert nn.NLLLoss(reduction="sum")(F.log_softmax(lt, axis=1), tt).item() == pytest.approx(picked.sum())

    weight = np.array([1.0, 2.0, 0.5])
    weighted = nn.CrossEntropyLoss(weight=gt.tensor(weight))
    expected = (picked * weight[target]).sum() / weight[target].sum()
    assert weighted(lt, tt).item() == pytest.approx(expected)
    assert list(weighted.state_dict()) == ["weight"]  # class weights are buffers, as in PyTorch
    ignoring = nn.CrossEntropyLoss(ignore_index=2)
    assert ignoring(lt, tt).item() == pytest.approx(picked[target != 2].mean())

    p = _sigmoid(randn(4))
    t = np.array([1.0, 0.0, 1.0, 0.0])
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert nn.BCELoss()(gt.tensor(p), gt.tensor(t)).item() == pytest.approx(bce.mean())
    z = randn(4)
    pos_weight = np.array([2.0])
    expected = -(2.0 * t * np.log(_sigmoid(z)) + (1 - t) * np.log(1 - _sigmoid(z)))
    loss = nn.BCEWithLogitsLoss(pos_weight=gt.tensor(pos_weight))(gt.tensor(z), gt.tensor(t))
    assert loss.item() == pytest.approx(expected.mean())


def test_kl_div_loss():
    log_q = _log_softmax(randn(2, 3, seed=1))
    p = np.exp(_log_softmax(randn(2, 3, seed=2)))
    pointwise = p * (np.log(p) - log_q)
    assert nn.KLDivLoss(reduction="batchmean")(gt.tensor(log_q), gt.tensor(p)).item() == pytest.approx(pointwise.sum() / 2)
    assert nn.KLDivLoss(log_target=True)(gt.tensor(log_q), gt.tensor(np.log(p))).item() == pytest.approx(pointwise.mean())


# --- attention -----------------------------------------------------------------------------------------


def _attention_reference(mha, q, k, v, additive_mask=None):
    """NumPy multi-head attention with mha's weights, batch-first inputs; returns (output, mean weights)."""
    heads, d = mha.num_heads, mha.head_dim
    w = mha.in_proj_weight.numpy()
    b = mha.in_proj_bias.numpy()
    e = mha.embed_dim

    def project(x, i):
        y = x @ w[i * e:(i + 1) * e].T + b[i * e:(i + 1) * e]
        return y.reshape(y.shape[0], y.shape[1], heads, d).transpose(0, 2, 1, 3)

    qh, kh, vh = project(q, 0), project(k, 1), project(v, 2)
    extra = []  # keys and values appended per head: the learned bias_k/bias_v, then zeros
    if mha.bias_k is not None:
        extra.append((mha.bias_k.numpy(), mha.bias_v.numpy()))
    if mha.add_zero_attn:
        extra.append((np.zeros(e), np.zeros(e)))
    for extra_k, extra_v in extra:
        kh, vh = (np.concatenate([h, np.broadcast_to(a.reshape(1, heads, 1, d), (len(q), heads, 1, d))], axis=2)
                  for h, a in ((kh, extra_k), (vh, extra_v)))
    scores = qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(d)
    if additive_mask is not None:
        scores = scores + additive_mask
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ vh).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], e)
    out = out @ mha.out_proj.weight.numpy().T + mha.out_proj.bias.numpy()
    return out, weights.mean(axis=1)


def test_multihead_attention_matches_reference_in_both_layouts():
    gt.manual_seed(0)
    mha = nn.MultiheadAttention(6, 2, batch_first=True).to(dtype=gt.float64)
    assert [n for n, _ in mha.named_parameters()] == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert np.all(mha.in_proj_bias.numpy() == 0) and np.all(mha.out_proj.bias.numpy() == 0)
    mha.in_proj_bias.data[...] = randn(18)  # non-zero biases so the test sees them
    q, k = randn(2, 3, 6, seed=1), randn(2, 4, 6, seed=2)
    out, weights = mha(gt.tensor(q), gt.tensor(k), gt.tensor(k))
    ref_out, ref_weights = _attention_reference(mha, q, k, k)
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-10)
    np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-10)
    assert weights.shape == (2, 3, 4)

    mha.batch_first = False
    out_seq, _ = mha(*(gt.tensor(a.transpose(1, 0, 2)) for a in (q, k, k)))
    np.testing.assert_allclose(out_seq.numpy().transpose(1, 0, 2), ref_out, atol=1e-10)

    single, single_weights = mha(gt.tensor(q[0]), gt.tensor(k[0]), gt.tensor(k[0]))  # unbatched (L, E)
    np.testing.assert_allclose(single.numpy(), ref_out[0], atol=1e-10)
    assert single_weights.shape == (3, 4)

    per_head = mha(gt.tensor(q[0]), gt.tensor(k[0]), gt.tensor(k[0]), average_attn_weights=False)[1]
    assert per_head.shape == (2, 3, 4)


def test_multihead_attention_masks():
    gt.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, batch_first=True).to(dtype=gt.float64)
    x = randn(2, 3, 4)
    xt = gt.tensor(x)
    padding = np.array([[False, False, True], [False, False, False]])
    out, weights = mha(xt, xt, xt, key_padding_mask=gt.tensor(padding))
    assert np.all(weights.numpy()[0, :, 2] == 0)
    additive = np.where(padding, -np.inf, 0.0)[:, None, None, :]
    np.testing.assert_allclose(out.numpy(), _attention_reference(mha, x, x, x, additive)[0], atol=1e-10)

    _, causal_weights = mha(xt, xt, xt, is_causal=True)
    assert np.all(np.triu(causal_weights.numpy()[1], 1) == 0)
    causal_bool = gt.tensor(np.triu(np.ones((3, 3), dtype=bool), 1))
    np.testing.assert_allclose(mha(xt, xt, xt, attn_mask=causal_bool)[0].numpy(),
                               mha(xt, xt, xt, is_causal=True)[0].numpy(), atol=1e-12)

    bias = randn(4, 3, 3, seed=3)  # a float mask per (batch, head) is added to the scores
    out, _ = mha(xt, xt, xt, attn_mask=gt.tensor(bias))
    np.testing.assert_allclose(out.numpy(), _attention_reference(mha, x, x, x, bias.reshape(2, 2, 3, 3))[0], atol=1e-10)

    fused, none = mha(xt, xt, xt, key_padding_mask=gt.tensor(padding), need_weights=False)
    assert none is None
    np.testing.assert_allclose(fused.numpy(), mha(xt, xt, xt, key_padding_mask=gt.tensor(padding))[0].numpy(), atol=1e-10)
    with pytest.raises(ValueError, match="attn_mask must have shape"):
        mha(xt, xt, xt, attn_mask=gt.zeros(2, 2))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(5, 2)


def test_multihead_attention_gradients_and_separate_key_dims():
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=2)
    assert [n for n, _ in mha.named_parameters()] == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert mha(gt.ones(5, 1, 4), gt.ones(2, 1, 3), gt.ones(2, 1, 2))[0].shape == (5, 1, 4)
    small = nn.MultiheadAttention(2, 1)
    assert_module_gradcheck(small, randn(2, 1, 2, seed=1), randn(3, 1, 2, seed=2), randn(3, 1, 2, seed=3))


@pytest.mark.parametrize("add_bias_kv, add_zero_attn", [(True, False), (False, True), (True, True)])
def test_multihead_attention_appends_a_learned_or_zero_key(add_bias_kv, add_zero_attn):
    gt.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
                                batch_first=True).to(dtype=gt.float64)
    names = [n for n, _ in mha.named_parameters()]
    assert names == ["in_proj_weight", "in_proj_bias"] + ["bias_k", "bias_v"] * add_bias_kv + [
        "out_proj.weight", "out_proj.bias"]
    mha.in_proj_bias.data[...] = randn(12)
    x = randn(2, 3, 4)
    xt = gt.tensor(x)
    extra = add_bias_kv + add_zero_attn
    padding = np.array([[False, True, False], [True, True, True]])  # the second sequence masks every input key
    for need_weights in (True, False):
        out, weights = mha(xt, xt, xt, key_padding_mask=gt.tensor(padding), need_weights=need_weights)
        additive = np.concatenate([np.where(padding, -np.inf, 0.0), np.zeros((2, extra))], axis=1)[:, None, None]
        ref_out, ref_weights = _attention_reference(mha, x, x, x, additive)
        np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-10)  # finite: the appended keys stay open
    _, weights = mha(xt, xt, xt, key_padding_mask=gt.tensor(padding))
    assert weights.shape == (2, 3, 3 + extra)
    np.testing.assert_allclose(weights.numpy(), ref_weights, atol=1e-12)
    _, causal = mha(xt, xt, xt, is_causal=True)
    assert np.all(np.triu(causal.numpy()[0, :, :3], 1) == 0) and np.all(causal.numpy()[0, :, 3:] > 0)
    assert_module_gradcheck(mha, randn(1, 2, 4, seed=1), randn(1, 3, 4, seed=2), randn(1, 3, 4, seed=3))


@pytest.mark.parametrize("extra_keys", [{}, {"add_bias_kv": True}, {"add_bias_kv": True, "add_zero_attn": True}])
def test_multihead_attention_matches_torch(extra_keys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64, **extra_keys)
    mha = nn.MultiheadAttention(6, 3, batch_first=True, dtype=gt.float64, **extra_keys)
    mha.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    q, k = randn(2, 4, 6, seed=1), randn(2, 5, 6, seed=2)
    padding = np.zeros((2, 5), dtype=bool)
    padding[1, 3:] = True
    out, weights = mha(gt.tensor(q), gt.tensor(k), gt.tensor(k), key_padding_mask=gt.tensor(padding))
    ref_out, ref_weights = reference(torch.tensor(q), torch.tensor(k), torch.tensor(k),
                                     key_padding_mask=torch.tensor(padding))
    np.testing.assert_allclose(out.numpy(), ref_out.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(weights.numpy(), ref_weights.detach().numpy(), atol=1e-10)
