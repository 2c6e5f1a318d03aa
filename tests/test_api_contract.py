"""The public surface checked against the binding API contract (API.md).

1. Existence: every name API.md lists is where API.md puts it (and is what it should be).
2. Signatures API.md writes out: parameter names, order and defaults, via inspect.signature.
3. PyTorch-shaped surfaces (nn.functional, nn modules, nn.init/utils, optim, lr_scheduler, amp),
   whose signatures API.md says are PyTorch's: compared with torch's own, torch as the oracle.
   These skip when torch is not installed (CI has none).

Each table row is one test whose id names the symbol; a failing signature check lists every
parameter that differs. Rules for comparing signatures (see `contract_mismatches`):
- the contract's parameters must come first, in order, with its names and kinds; a positional
  parameter the contract names must not be positional-only (users may pass it by keyword);
- a default the contract gives must be the library's default; where the contract gives none, the
  library may add one (every call the contract allows still works);
- anything beyond the contract ("anything not listed is free") must be optional: defaulted,
  *args or **kwargs; extra positional parameters only where the contract has no *args.
"""
import ast
import inspect
import operator
import re

import numpy as np
import pytest

import gradtensor as gt

EMPTY = inspect.Parameter.empty
P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
VARIADIC = (P.VAR_POSITIONAL, P.VAR_KEYWORD)


# --- helpers ------------------------------------------------------------------------------------


def resolve(root, dotted):
    """root.a.b.c for "a.b.c"; AttributeError names the missing part."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def leading_call(text):
    """'name(a, b=(1, 2)) -> T ...' -> 'name(a, b=(1, 2))' (parentheses balanced), or None."""
    text = (text or "").strip()
    if not re.match(r"[\w.]+\s*\(", text):
        return None
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ")" and depth == 0:
            return text[: i + 1]
    return None


def parse_signature(text):
    """'name(a, b=1, *args, c=2)' -> inspect.Signature (defaults must be Python literals)."""
    inside = text[text.index("(") + 1: text.rindex(")")]
    args = ast.parse(f"def f({inside}): pass").body[0].args
    params = []
    positional = [(a, P.POSITIONAL_ONLY) for a in args.posonlyargs] + [(a, P.POSITIONAL_OR_KEYWORD) for a in args.args]
    defaults = [EMPTY] * (len(positional) - len(args.defaults)) + [ast.literal_eval(d) for d in args.defaults]
    params += [P(a.arg, kind, default=d) for (a, kind), d in zip(positional, defaults)]
    if args.vararg:
        params.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    params += [P(a.arg, P.KEYWORD_ONLY, default=EMPTY if d is None else ast.literal_eval(d))
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


def signature_of(path):
    """inspect.signature of gt.<path>; for a method looked up on its class, without self."""
    parent_path, _, name = path.rpartition(".")
    parent = resolve(gt, parent_path) if parent_path else gt
    obj = getattr(parent, name)
    sig = inspect.signature(obj)
    if isinstance(parent, type) and inspect.isfunction(inspect.getattr_static(parent, name)):
        sig = sig.replace(parameters=list(sig.parameters.values())[1:])
    return sig


def same_default(a, b):
    if a is b:
        return True
    if isinstance(a, bool) != isinstance(b, bool):  # True == 1, but a bool flag is not a count
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


def fmt(default):
    return "no default" if default is EMPTY else f"default {default!r}"


def default_mismatch(name, actual, expected, source):
    """A problem when `source` gives a default the library does not have (None if fine)."""
    if expected.default is EMPTY or same_default(actual.default, expected.default):
        return None
    return f"'{name}' has {fmt(actual.default)}, {source} says {fmt(expected.default)}"


def contract_mismatches(actual, expected, source="API.md"):
    """Every way `actual` (inspect.Signature) breaks the contract `expected`; [] when it keeps it."""
    problems = []
    act = list(actual.parameters.values())
    exp = list(expected.parameters.values())
    exp_pos = [p for p in exp if p.kind in POSITIONAL]
    act_pos = [p for p in act if p.kind in POSITIONAL]
    for i, e in enumerate(exp_pos):
        if i >= len(act_pos):
            problems.append(f"positional parameter {i + 1} '{e.name}' is missing")
            continue
        a = act_pos[i]
        if a.name != e.name:
            problems.append(f"positional parameter {i + 1} is '{a.name}', {source} says '{e.name}'")
            continue
        if a.kind is P.POSITIONAL_ONLY and e.kind is not P.POSITIONAL_ONLY:
            problems.append(f"'{a.name}' is positional-only, so it cannot be passed by keyword as {source} allows")
        problems.append(default_mismatch(a.name, a, e, source))
    extra_pos = act_pos[len(exp_pos):]
    if any(p.kind is P.VAR_POSITIONAL for p in exp):
        if not any(p.kind is P.VAR_POSITIONAL for p in act):
            problems.append(f"takes no *args, {source} says {expected}")
        else:  # they would swallow what the contract passes as *args
            problems += [f"extra positional parameter '{p.name}' before *args" for p in extra_pos]
    else:
        problems += [f"extra parameter '{p.name}' has no default" for p in extra_pos if p.default is EMPTY]
    by_name = {p.name: p for p in act}
    for e in (p for p in exp if p.kind is P.KEYWORD_ONLY):
        a = by_name.get(e.name)
        if a is None or a.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
            problems.append(f"keyword '{e.name}' is missing")
        else:
            problems.append(default_mismatch(e.name, a, e, source))
    exp_names = {p.name for p in exp}
    problems += [f"extra keyword-only parameter '{p.name}' has no default"
                 for p in act if p.kind is P.KEYWORD_ONLY and p.name not in exp_names and p.default is EMPTY]
    return [p for p in problems if p]


def keyword_mismatches(actual, keywords):
    """Each keyword of `keywords` ('a, b=1') must be accepted by keyword, with that default if one is given."""
    by_name = actual.parameters
    problems = []
    for e in parse_signature(f"f(*, {keywords})").parameters.values():
        a = by_name.get(e.name)
        if a is None or a.kind not in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY):
            problems.append(f"keyword '{e.name}' is missing (signature {actual})")
        else:
            problems.append(default_mismatch(e.name, a, e, "API.md"))
    return [p for p in problems if p]


def test_contract_mismatches_reports_each_difference():
    """The comparison helper itself: it must catch each kind of difference (or every check is void)."""
    sig = parse_signature

    def check(actual, expected):
        return contract_mismatches(sig(actual), sig(expected))

    assert check("f(x, axis=None, keepdims=False, *, out=None)", "f(x, axis=None, keepdims=False)") == []
    assert check("f(x, n=None)", "f(x, n)") == []  # a default the contract lacks widens it
    assert check("f(y, axis=None)", "f(x, axis=None)") == ["positional parameter 1 is 'y', API.md says 'x'"]
    assert check("f(x, axis=0)", "f(x, axis=None)") == ["'axis' has default 0, API.md says default None"]
    assert check("f(x, keepdims=1)", "f(x, keepdims=True)") == ["'keepdims' has default 1, API.md says default True"]
    assert check("f(x, /)", "f(x)") == ["'x' is positional-only, so it cannot be passed by keyword as API.md allows"]
    assert check("f(x, y)", "f(x)") == ["extra parameter 'y' has no default"]
    assert check("f(x, *, k)", "f(x)") == ["extra keyword-only parameter 'k' has no default"]
    assert check("f(x)", "f(x, axis=None)") == ["positional parameter 2 'axis' is missing"]
    assert check("f(fn, args)", "f(fn, *args)") == ["takes no *args, API.md says (fn, *args)"]
    assert check("f(fn, *args)", "f(fn, *args, flag=True)") == ["keyword 'flag' is missing"]
    assert keyword_mismatches(sig("f(a, b=2)"), "b=2, c") == ["keyword 'c' is missing (signature (a, b=2))"]
    assert leading_call("conv(input, w=(1, 2)) -> Tensor\n\nText (more)") == "conv(input, w=(1, 2))"


# --- 1. existence -------------------------------------------------------------------------------

ELEMENTWISE = """add sub mul div pow neg abs sign exp exp2 log log2 log10 log1p expm1 sqrt rsqrt square
reciprocal sin cos tan tanh sinh cosh arcsin arccos arctan arctan2 sigmoid relu maximum minimum clip where
erf floor ceil round""".split()
REDUCTIONS = "sum mean var std prod max min logsumexp norm".split()
NON_DIFFERENTIABLE_REDUCTIONS = "argmax argmin all any".split()
LINALG = "matmul dot outer einsum tensordot".split()
SHAPE = """reshape transpose permute_dims swapaxes moveaxis expand_dims squeeze broadcast_to flatten
concatenate stack split tile repeat flip pad take take_along_axis""".split()
DIFFERENTIABLE = ELEMENTWISE + REDUCTIONS + NON_DIFFERENTIABLE_REDUCTIONS + LINALG + SHAPE

CREATION = "zeros ones empty full zeros_like ones_like full_like arange linspace eye".split()
TOP_LEVEL = CREATION + """tensor asarray manual_seed rand randn randint uniform normal from_numpy from_dlpack
device no_grad enable_grad set_grad_enabled checkpoint checkpoint_sequential save load Tensor""".split()
CUDA = [f"cuda.{n}" for n in
        "is_available device_count synchronize memory_allocated max_memory_allocated reset_peak_memory_stats".split()]
AUTOGRAD = [f"autograd.{n}" for n in "grad Function gradcheck gradgradcheck detect_anomaly".split()]
AUTOGRAD_FUNCTIONAL = [f"autograd.functional.{n}" for n in "vjp jvp hvp vhp jacobian hessian".split()]
NN_FUNCTIONAL = """linear relu leaky_relu elu gelu silu softplus sigmoid tanh softmax log_softmax dropout conv1d
conv2d max_pool2d avg_pool2d adaptive_avg_pool2d layer_norm batch_norm embedding one_hot
scaled_dot_product_attention mse_loss l1_loss huber_loss binary_cross_entropy binary_cross_entropy_with_logits
cross_entropy nll_loss kl_div""".split()
LOSSES = """mse_loss l1_loss huber_loss binary_cross_entropy binary_cross_entropy_with_logits cross_entropy
nll_loss kl_div""".split()
NN_MODULES = """Sequential ModuleList ModuleDict Identity Linear Conv1d Conv2d MaxPool2d AvgPool2d Flatten Dropout
BatchNorm1d BatchNorm2d LayerNorm Embedding RNN LSTM GRU MultiheadAttention ReLU GELU Tanh Sigmoid SiLU LeakyReLU
Softmax MSELoss CrossEntropyLoss BCEWithLogitsLoss""".split()
NN_INIT = """xavier_uniform_ xavier_normal_ kaiming_uniform_ kaiming_normal_ zeros_ ones_ normal_ uniform_
orthogonal_""".split()
NN_UTILS = "clip_grad_norm_ clip_grad_value_ parameters_to_vector vector_to_parameters".split()
OPTIMIZERS = "SGD Adam AdamW RMSprop Adagrad LAMB".split()
SCHEDULERS = """StepLR MultiStepLR ExponentialLR CosineAnnealingLR LinearLR OneCycleLR LambdaLR ReduceLROnPlateau
SequentialLR""".split()

CALLABLES = (
    TOP_LEVEL + DIFFERENTIABLE + CUDA + AUTOGRAD + AUTOGRAD_FUNCTIONAL
    + [f"nn.functional.{n}" for n in NN_FUNCTIONAL]
    + [f"nn.{n}" for n in ["Module", "Parameter"] + NN_MODULES]
    + [f"nn.init.{n}" for n in NN_INIT] + [f"nn.utils.{n}" for n in NN_UTILS]
    + [f"optim.{n}" for n in OPTIMIZERS] + [f"optim.lr_scheduler.{n}" for n in SCHEDULERS]
    + ["amp.autocast", "amp.GradScaler"]
)


@pytest.mark.parametrize("path", CALLABLES)
def test_name_exists_and_is_callable(path):
    assert callable(resolve(gt, path)), f"gt.{path} is not callable"


@pytest.mark.parametrize("path, base", (
    [(f"nn.{n}", "nn.Module") for n in NN_MODULES]
    + [("nn.Parameter", "Tensor")]
    + [(f"optim.{n}", "optim.Optimizer") for n in OPTIMIZERS]
))
def test_class_derives_from(path, base):
    assert issubclass(resolve(gt, path), resolve(gt, base))


@pytest.mark.parametrize("name", ["float16", "float32", "float64", "int32", "int64", "bool"])
def test_dtype(name):
    assert np.dtype(getattr(gt, name)) == np.dtype(name)


def test_dtype_bfloat16():
    assert hasattr(gt, "bfloat16")  # None without ml_dtypes on a CPU-only install
    pytest.importorskip("ml_dtypes")
    assert np.dtype(gt.bfloat16).name == "bfloat16"


def test_default_float_dtype_and_devices():
    assert gt.tensor(1.0).dtype == gt.float32
    assert gt.tensor([1, 2]).dtype == gt.int64
    assert gt.tensor(np.zeros(2)).dtype == gt.float64
    assert gt.device("cpu") == "cpu"
    assert str(gt.device("cuda:1")) == "cuda:1"
    assert isinstance(gt.cuda.is_available(), bool)
    assert isinstance(gt.cuda.device_count(), int)


@pytest.mark.parametrize("name", ["rand", "randn"])
def test_random_shape_as_ints_or_one_tuple(name):
    fn = getattr(gt, name)
    assert fn(2, 3).shape == fn((2, 3)).shape == (2, 3)


TENSOR_ATTRIBUTES = {  # attribute -> check on x = tensor([[1., 2., 3.], [4., 5., 6.]], requires_grad=True)
    "shape": lambda v: v == (2, 3),
    "ndim": lambda v: v == 2,
    "size": lambda v: v == 6,  # NumPy's size (an int), not torch's size()
    "dtype": lambda v: v == gt.float32,
    "device": lambda v: v == gt.device("cpu"),
    "grad": lambda v: v is None,
    "requires_grad": lambda v: v is True,
    "is_leaf": lambda v: v is True,
    "grad_fn": lambda v: v is None,
    "T": lambda v: v.shape == (3, 2),
    "mT": lambda v: v.shape == (3, 2),
    "data": lambda v: isinstance(v, np.ndarray) and v.shape == (2, 3),
}


@pytest.mark.parametrize("attr", list(TENSOR_ATTRIBUTES))
def test_tensor_attribute(attr):
    x = gt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    value = getattr(x, attr)
    assert TENSOR_ATTRIBUTES[attr](value), f"x.{attr} = {value!r}"


TENSOR_METHODS = """backward register_hook retain_grad detach requires_grad_ numpy item tolist to cpu cuda astype clone
__dlpack__ __array__ __getitem__ __setitem__ __add__ __sub__ __mul__ __truediv__ __floordiv__ __mod__ __pow__
__matmul__ __radd__ __rsub__ __rmul__ __rtruediv__ __rfloordiv__ __rmod__ __rpow__ __rmatmul__ __neg__ __abs__
__eq__ __ne__ __lt__ __le__ __gt__ __ge__""".split()


@pytest.mark.parametrize("name", TENSOR_METHODS)
def test_tensor_method_exists(name):
    assert callable(getattr(gt.Tensor, name, None))


@pytest.mark.parametrize("left", [2.0, np.ones((2, 3))], ids=["python_scalar", "numpy_array"])
@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv, operator.pow],
                         ids=lambda op: op.__name__)
def test_reflected_operator_gives_a_tensor(left, op):
    """2 * x and np_array + x: a gradtensor Tensor, never a NumPy object array."""
    result = op(left, gt.tensor(np.full((2, 3), 2.0)))
    assert isinstance(result, gt.Tensor), type(result)
    np.testing.assert_allclose(result.numpy(), op(left, np.full((2, 3), 2.0)))


# "Every differentiable function whose first argument is a tensor is also a method", except:
METHOD_EXCLUSIONS = {
    "where": "its first argument is the condition; cond.where(a, b) reads wrongly (torch's x.where differs too)",
    "einsum": "its first argument is the subscripts string",
    "concatenate": "its first argument is a sequence of tensors",
    "stack": "its first argument is a sequence of tensors",
}
_X = np.array([[0.2, 0.5, 0.3], [0.9, 0.4, 0.7]])
_Y = np.array([[0.6, 0.1, 0.8], [0.3, 0.5, 0.2]])
METHOD_ARGS = {  # arguments after the tensor itself, for x of shape (2, 3); none when not listed
    **{name: ("Y",) for name in "add sub mul div pow maximum minimum arctan2 outer tensordot".split()},
    "matmul": ("Y.T",), "dot": ("Y.T",),
    "clip": (0.3, 0.6), "reshape": (3, -1), "transpose": (1, 0), "permute_dims": ((1, 0),),
    "swapaxes": (0, 1), "moveaxis": (0, 1), "expand_dims": (0,), "broadcast_to": ((4, 2, 3),),
    "split": (3, 1), "tile": ((2, 1),), "repeat": (2,), "pad": (1,), "take": ([0, 4],),
    "take_along_axis": ("I", 1),
}


def _materialize(arg):
    return {"Y": gt.tensor(_Y), "Y.T": gt.tensor(_Y.T), "I": gt.tensor([[2], [0]])}.get(arg, arg) \
        if isinstance(arg, str) else arg


def _arrays(result):
    return [r.numpy() for r in result] if isinstance(result, (list, tuple)) else [result.numpy()]


def test_method_exclusions_are_listed_functions():
    assert set(METHOD_EXCLUSIONS) <= set(DIFFERENTIABLE)
    assert set(METHOD_ARGS) <= set(DIFFERENTIABLE) - set(METHOD_EXCLUSIONS)


@pytest.mark.parametrize("name", [n for n in DIFFERENTIABLE if n not in METHOD_EXCLUSIONS])
def test_differentiable_function_is_a_method(name):
    assert callable(getattr(gt.Tensor, name, None)), f"Tensor.{name} is missing"
    args = [_materialize(a) for a in METHOD_ARGS.get(name, ())]
    x = gt.tensor(_X)
    method_result = getattr(x, name)(*args)
    function_result = getattr(gt, name)(x, *args)
    for m, f in zip(_arrays(method_result), _arrays(function_result), strict=True):
        np.testing.assert_array_equal(m, f)


def test_api_md_method_examples():
    x = gt.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.sum(axis=0, keepdims=True).numpy(), [[3.0, 5.0, 7.0]])
    assert x.reshape(2, -1).shape == (2, 3)
    np.testing.assert_array_equal(x.transpose(1, 0).numpy(), np.arange(6.0).reshape(2, 3).T)
    np.testing.assert_array_equal(x.clip(0, 1).numpy(), [[0, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(x.exp().numpy(), np.exp(np.arange(6.0).reshape(2, 3)))


# --- 2. signatures API.md writes out ----------------------------------------------------------

# API.md gives some positional parameters a descriptive name where the library keeps the name
# PyTorch (or NumPy) users already pass by keyword. Judged harmless: these are passed
# positionally in practice, and renaming them would break the established keyword instead.
# (symbol, name in API.md) -> (the library's name, why). The check still requires that exact name.
PLACEHOLDER_NAMES = {
    ("full", "fill"): ("fill_value", "numpy.full / the Array API, whose names API.md adopts for array "
                                     "functions; full_like uses fill_value too"),
    ("manual_seed", "n"): ("seed", "numpy.random.seed(seed) and torch.manual_seed(seed)"),
    ("set_grad_enabled", "flag"): ("mode", "torch.set_grad_enabled(mode)"),
    ("Tensor.register_hook", "fn"): ("hook", "torch.Tensor.register_hook(hook); Module.register_forward_hook(hook)"),
    ("Tensor.requires_grad_", "flag"): ("requires_grad", "torch.Tensor.requires_grad_(requires_grad=True), as "
                                                        "Module.requires_grad_ here"),
    ("nn.Parameter", "tensor"): ("data", "torch.nn.Parameter(data=None, requires_grad=True)"),
    ("nn.utils.clip_grad_norm_", "params"): ("parameters", "torch's name, shared with clip_grad_value_ and "
                                                           "parameters_to_vector"),
    ("amp.GradScaler.scale", "loss"): ("outputs", "torch.amp.GradScaler.scale(outputs) (a loss or a list of them)"),
}

# gt.nn.functional: API.md says its names are PyTorch's, so its `x`, `indices`, `q, k, v` stand for
# PyTorch's `input`, `input`, `query, key, value`; the rows below use PyTorch's names.
CONTRACT_SIGNATURES = [
    # creation and random
    ("tensor", "tensor(data, dtype=None, device=None, requires_grad=False)"),
    ("asarray", "asarray(data, dtype=None, device=None, requires_grad=False)"),
    ("full", "full(shape, fill)"),
    ("rand", "rand(*shape)"),
    ("randn", "randn(*shape)"),
    ("manual_seed", "manual_seed(n)"),
    ("randint", "randint(low, high, shape)"),
    ("uniform", "uniform(low, high, shape)"),
    ("normal", "normal(mean, std, shape)"),
    ("from_numpy", "from_numpy(a)"),
    ("from_dlpack", "from_dlpack(x)"),
    # Tensor. retain_graph: PyTorch's None ("same as create_graph") in place of API.md's False. Without
    # create_graph both free the graph (test_backward_default_frees_the_graph); with create_graph=True,
    # which double backward needs again, the graph is kept, as PyTorch users expect.
    ("Tensor.backward", "backward(grad=None, retain_graph=None, create_graph=False)"),
    ("Tensor.register_hook", "register_hook(fn)"),
    ("Tensor.retain_grad", "retain_grad()"),
    ("Tensor.detach", "detach()"),
    ("Tensor.requires_grad_", "requires_grad_(flag=True)"),
    ("Tensor.numpy", "numpy()"),
    ("Tensor.item", "item()"),
    ("Tensor.tolist", "tolist()"),
    ("Tensor.to", "to(device=None, dtype=None)"),
    ("Tensor.cpu", "cpu()"),
    ("Tensor.cuda", "cuda()"),
    ("Tensor.astype", "astype(dtype)"),
    ("Tensor.clone", "clone()"),
    # differentiable functions with NumPy's signatures
    *[(name, f"{name}(x, axis=None, keepdims=False)") for name in REDUCTIONS + NON_DIFFERENTIABLE_REDUCTIONS
      if name != "norm"],
    ("norm", "norm(x, ord=None, axis=None, keepdims=False)"),
    ("split", "split(x, indices_or_sections, axis=0)"),
    ("repeat", "repeat(x, repeats, axis=None)"),
    ("pad", "pad(x, pad_width, mode='constant', constant_values=0)"),
    ("flatten", "flatten(x, start_axis=0, end_axis=-1)"),
    ("einsum", "einsum(subscripts, *operands)"),
    ("transpose", "transpose(x, axes=None)"),  # API.md "transpose (axes)": numpy.transpose(a, axes=None)
    ("expand_dims", "expand_dims(x, axis)"),
    # autograd and checkpointing
    ("no_grad", "no_grad()"),
    ("enable_grad", "enable_grad()"),
    ("set_grad_enabled", "set_grad_enabled(flag)"),
    ("autograd.grad",
     "grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False)"),
    ("autograd.gradcheck", "gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)"),
    ("autograd.detect_anomaly", "detect_anomaly()"),
    ("checkpoint", "checkpoint(fn, *args, preserve_rng_state=True)"),
    ("checkpoint_sequential", "checkpoint_sequential(functions, segments, x)"),
    # amp. autocast: API.md lists the choices of device_type and dtype, not defaults
    ("amp.autocast", "autocast(device_type, dtype, enabled=True)"),
    ("amp.GradScaler", "GradScaler(device='cuda', init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, "
                       "growth_interval=2000, enabled=True)"),  # init_scale=2.**16
    ("amp.GradScaler.scale", "scale(loss)"),
    ("amp.GradScaler.unscale_", "unscale_(optimizer)"),
    ("amp.GradScaler.step", "step(optimizer)"),
    ("amp.GradScaler.update", "update(new_scale=None)"),
    ("amp.GradScaler.get_scale", "get_scale()"),
    ("amp.GradScaler.state_dict", "state_dict()"),
    ("amp.GradScaler.load_state_dict", "load_state_dict(state_dict)"),  # API.md: load_state_dict(); torch's name
    # nn
    *[(f"nn.Module.{name}", f"{name}()") for name in
      "parameters named_parameters buffers children modules train eval state_dict".split()],
    ("nn.Module.to", "to(device=None, dtype=None)"),  # API.md: to(device/dtype)
    ("nn.Module.zero_grad", "zero_grad(set_to_none=True)"),
    ("nn.Module.load_state_dict", "load_state_dict(state_dict, strict=True)"),
    ("nn.Module.register_forward_hook", "register_forward_hook(hook)"),
    ("nn.Parameter", "Parameter(tensor, requires_grad=True)"),
    ("nn.utils.clip_grad_norm_", "clip_grad_norm_(params, max_norm, norm_type=2)"),
    ("nn.functional.softmax", "softmax(input, axis=-1)"),
    ("nn.functional.log_softmax", "log_softmax(input, axis=-1)"),
    ("nn.functional.layer_norm", "layer_norm(input, normalized_shape, weight, bias, eps)"),
    ("nn.functional.batch_norm",
     "batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)"),
    ("nn.functional.embedding", "embedding(input, weight)"),
    ("nn.functional.gelu", "gelu(input, approximate='none')"),
    ("nn.functional.scaled_dot_product_attention",
     "scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None)"),
    # optimizers (each class: a subclass may override step)
    *[(f"optim.{cls}.{method}", spec) for cls in OPTIMIZERS for method, spec in [
        ("zero_grad", "zero_grad(set_to_none=True)"), ("step", "step(closure=None)"),
        ("state_dict", "state_dict()"), ("load_state_dict", "load_state_dict(state_dict)")]],
    # persistence
    ("save", "save(obj, path)"),
    ("load", "load(path, map_location=None)"),
]


def _with_placeholders(path, expected):
    params = [p.replace(name=PLACEHOLDER_NAMES.get((path, p.name), (p.name,))[0])
              for p in expected.parameters.values()]
    return expected.replace(parameters=params)


def test_placeholder_table_entries_are_used():
    rows = {path: parse_signature(spec) for path, spec in CONTRACT_SIGNATURES}
    for path, name in PLACEHOLDER_NAMES:
        assert name in rows[path].parameters, f"{path}: no parameter '{name}' in its CONTRACT_SIGNATURES row"


@pytest.mark.parametrize("path, spec", CONTRACT_SIGNATURES, ids=[p for p, _ in CONTRACT_SIGNATURES])
def test_signature_matches_api_md(path, spec):
    expected = _with_placeholders(path, parse_signature(spec))
    problems = contract_mismatches(signature_of(path), expected)
    assert not problems, f"gt.{path}{signature_of(path)}: " + "; ".join(problems)


CONTRACT_KEYWORDS = [  # keywords API.md names without fixing the order of the parameters
    *[(name, "dtype=None, device=None, requires_grad=False") for name in CREATION],
    ("var", "ddof=0"), ("std", "ddof=0"),  # NumPy's default
    ("optim.SGD", "momentum, dampening, nesterov, weight_decay"),
    ("optim.Adam", "amsgrad"),
    ("optim.RMSprop", "alpha, eps, weight_decay, momentum, centered"),
    ("optim.Adagrad", "lr_decay, initial_accumulator_value"),
    *[(f"nn.{name}", "batch_first") for name in ("RNN", "LSTM", "GRU")],
    ("nn.functional.dropout", "p, training"),
    ("nn.functional.conv1d", "stride, padding, dilation, groups"),
    ("nn.functional.conv2d", "stride, padding, dilation, groups"),
    ("nn.functional.max_pool2d", "kernel_size, stride, padding"),
    ("nn.functional.avg_pool2d", "kernel_size, stride, padding, count_include_pad=True"),
    ("nn.functional.leaky_relu", "negative_slope"),
    ("nn.functional.elu", "alpha"),
    ("nn.functional.softplus", "beta, threshold"),
    *[(f"nn.functional.{name}", "reduction='mean'" + extra) for name, extra in [
        ("mse_loss", ""), ("l1_loss", ""), ("huber_loss", ", delta"), ("binary_cross_entropy", ""),
        ("binary_cross_entropy_with_logits", ", weight, pos_weight"),
        ("cross_entropy", ", weight, ignore_index, label_smoothing"), ("nll_loss", ""),
        ("kl_div", ", log_target")]],
]


def test_keyword_table_covers_every_loss():
    assert {p.rpartition(".")[2] for p, kw in CONTRACT_KEYWORDS if "reduction='mean'" in kw} == set(LOSSES)


@pytest.mark.parametrize("path, keywords", CONTRACT_KEYWORDS, ids=[p for p, _ in CONTRACT_KEYWORDS])
def test_keywords_match_api_md(path, keywords):
    problems = keyword_mismatches(signature_of(path), keywords)
    assert not problems, f"gt.{path}: " + "; ".join(problems)


# behaviour behind signatures this module checks (accepted deviations and keywords added for them)


def test_backward_default_frees_the_graph():
    """retain_graph=None (see CONTRACT_SIGNATURES) acts as API.md's retain_graph=False by default."""
    x = gt.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError):
        y.backward()
    z = (x * x).sum()
    z.backward(retain_graph=True)
    z.backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 12.0])  # 2x from y, then 2x twice from z


def test_transpose_takes_axes_by_keyword_and_positionally():
    a = np.arange(24.0).reshape(2, 3, 4)
    x = gt.tensor(a)
    for result in (gt.transpose(x, axes=(2, 0, 1)), gt.transpose(x, (2, 0, 1)), x.transpose(2, 0, 1),
                   x.transpose((2, 0, 1))):
        np.testing.assert_array_equal(result.numpy(), np.transpose(a, (2, 0, 1)))
    np.testing.assert_array_equal(gt.transpose(x).numpy(), a.T)
    np.testing.assert_array_equal(x.transpose().numpy(), a.T)


def test_functional_sigmoid_and_tanh_take_input_by_keyword():
    x = gt.tensor([0.0, 1.0])
    np.testing.assert_allclose(gt.nn.functional.sigmoid(input=x).numpy(), [0.5, 1 / (1 + np.exp(-1))], rtol=1e-6)
    np.testing.assert_allclose(gt.nn.functional.tanh(input=x).numpy(), np.tanh([0.0, 1.0]), rtol=1e-6)


def test_pooling_modules_pass_torch_keywords_on():
    F = gt.nn.functional
    x = gt.tensor(np.arange(25.0).reshape(1, 1, 5, 5))
    out = gt.nn.MaxPool2d(2, ceil_mode=True)(x)
    assert out.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(out.numpy()[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    values, indices = gt.nn.MaxPool2d(2, return_indices=True)(x)
    np.testing.assert_array_equal(indices.numpy()[0, 0], [[6, 8], [16, 18]])
    np.testing.assert_array_equal(gt.nn.MaxPool2d(2, dilation=2)(x).numpy(), F.max_pool2d(x, 2, dilation=2).numpy())
    sums = gt.nn.AvgPool2d(2, divisor_override=1)(x)  # window sums
    np.testing.assert_array_equal(sums.numpy()[0, 0], [[12, 20], [52, 60]])
    np.testing.assert_array_equal(gt.nn.AvgPool2d(2, 2, 0, True)(x).numpy(),  # torch's order: ceil_mode 4th
                                  F.avg_pool2d(x, 2, ceil_mode=True).numpy())


def test_embedding_module_passes_torch_keywords_on():
    emb = gt.nn.Embedding(4, 2, max_norm=1.0)
    emb.weight.data[...] = [[3.0, 4.0], [0.3, 0.4], [0.0, 2.0], [1.0, 0.0]]
    out = emb(gt.tensor([0, 1, 2]))
    np.testing.assert_allclose(out.numpy(), [[0.6, 0.8], [0.3, 0.4], [0.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(emb.weight.numpy()[0], [0.6, 0.8], rtol=1e-6)  # renormalised in place
    emb = gt.nn.Embedding(4, 2, scale_grad_by_freq=True)
    emb(gt.tensor([1, 1, 2])).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy(), [[0, 0], [1, 1], [1, 1], [0, 0]])
    with pytest.raises(NotImplementedError, match="sparse"):
        gt.nn.Embedding(4, 2, sparse=True)


# --- 3. PyTorch-shaped surfaces, torch as the oracle ------------------------------------------

# Parameters torch has that gradtensor may lack: the one place this is decided. Where gradtensor
# has one of them anyway (nn.functional keeps size_average/reduce/inplace), its default is compared.
TORCH_ONLY = {
    "size_average": "deprecated since PyTorch 0.4, superseded by reduction= (F accepts it; loss modules do not)",
    "reduce": "deprecated since PyTorch 0.4, superseded by reduction= (F accepts it; loss modules do not)",
    "foreach": "torch's choice of optimizer kernels; gradtensor has one implementation",
    "fused": "torch's choice of optimizer kernels; gradtensor has one implementation",
    "capturable": "torch's CUDA-graph capture of optimizer state",
    "differentiable": "differentiating through optimizer.step() is not supported",
    "generator": "torch.Generator objects; gradtensor draws from the generator gt.manual_seed seeds",
    "cache_enabled": "torch's autocast weight-cast cache, an implementation detail",
    "_stacklevel": "private to torch (warning stack level)",
    "_weight": "private to torch (Embedding.from_pretrained covers it)",
    "_freeze": "private to torch (Embedding.from_pretrained covers it)",
}
TORCH_ONLY_FOR = {  # (symbol, parameter): why it may be absent from that symbol only
    ("nn.BatchNorm1d", "bias"): "keyword-only switch new in recent torch (affine weight without bias); not implemented",
    ("nn.BatchNorm2d", "bias"): "keyword-only switch new in recent torch (affine weight without bias); not implemented",
}
# API.md's one exception to PyTorch's names: softmax and log_softmax (and their modules) take axis=-1.
TORCH_RENAMED = {path: {"dim": ("axis", -1)} for path in (
    "nn.functional.softmax", "nn.functional.log_softmax", "nn.Softmax", "nn.LogSoftmax")}
# device= and dtype= factory keywords: every gradtensor module with parameters has them, so they are
# compared like any other keyword (none needs to be ignored).


def torch_mismatches(path, ours, theirs):
    """How gt's signature `ours` differs from torch's `theirs` beyond what the tables above allow."""
    renamed = TORCH_RENAMED.get(path, {})
    expected = []
    for p in theirs.parameters.values():
        if p.name in renamed:
            name, default = renamed[p.name]
            p = p.replace(name=name, default=default)
        expected.append(p)
    have = ours.parameters
    problems, prefix = [], []
    for p in expected:
        allowed = TORCH_ONLY.get(p.name) or TORCH_ONLY_FOR.get((path, p.name))
        if p.kind in VARIADIC:
            if not any(q.kind is p.kind for q in have.values()):
                stars = "*" if p.kind is P.VAR_POSITIONAL else "**"
                problems.append(f"torch takes {stars}{p.name}; gradtensor does not")
        elif p.name not in have:
            if not allowed:
                problems.append(f"missing torch parameter '{p.name}' ({fmt(p.default)})")
        else:
            problems.append(default_mismatch(p.name, have[p.name], p, "torch"))
            if have[p.name].kind is P.POSITIONAL_ONLY:
                problems.append(f"'{p.name}' is positional-only in gradtensor")
    # torch's leading positional parameters, up to the first one gradtensor lacks, in torch's order
    for p in expected:
        if p.kind is not P.POSITIONAL_OR_KEYWORD or p.name not in have:
            break
        prefix.append(p.name)
    ours_positional = [p.name for p in have.values() if p.kind in POSITIONAL][:len(prefix)]
    if ours_positional != prefix:
        problems.append(f"leading positional parameters are {ours_positional}, torch's are {prefix}")
    theirs_names = {p.name for p in expected}
    problems += [f"required parameter '{p.name}' that torch does not have"
                 for p in have.values() if p.name not in theirs_names and p.kind not in VARIADIC and p.default is EMPTY]
    return [p for p in problems if p]


def torch_signature(torch, obj):
    """torch's signature of obj (without self); for C builtins and *args/**kwargs wrappers, the one
    their docstring opens with (e.g. 'conv2d(input, weight, bias=None, ...)', '__init__(input_size, ...)')."""
    if isinstance(obj, type) and obj.__init__ is torch.nn.Module.__init__:
        return inspect.Signature()  # e.g. nn.Tanh: no constructor arguments
    try:
        sig = inspect.signature(obj)
    except ValueError:
        sig = None
    if sig is None or all(p.kind in VARIADIC for p in sig.parameters.values()):
        call = leading_call(obj.__doc__)
        if call is not None:
            sig = parse_signature(call)
    assert sig is not None, f"no signature for torch's {obj!r}"
    params = [p for p in sig.parameters.values() if p.name != "self"]
    return sig.replace(parameters=params, return_annotation=EMPTY)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_torch_mismatches_reports_each_difference():
    sig = parse_signature
    assert torch_mismatches("f", sig("f(params, lr=0.1)"), sig("f(params, lr=0.1, foreach=None)")) == []
    assert torch_mismatches("f", sig("f(input, p=0.1)"), sig("f(input, p=0.5)")) == [
        "'p' has default 0.1, torch says default 0.5"]
    assert torch_mismatches("f", sig("f(input)"), sig("f(input, alpha=1.0)")) == [
        "missing torch parameter 'alpha' (default 1.0)"]
    assert torch_mismatches("f", sig("f(input, b=0, a=0)"), sig("f(input, a=0, b=0)")) == [
        "leading positional parameters are ['input', 'b', 'a'], torch's are ['input', 'a', 'b']"]
    assert torch_mismatches("f", sig("f(input, extra)"), sig("f(input)")) == [
        "required parameter 'extra' that torch does not have"]
    assert torch_mismatches("nn.Softmax", sig("f(axis=-1)"), sig("f(dim=None)")) == []
    assert torch_mismatches("nn.Softmax", sig("f(axis=None)"), sig("f(dim=None)")) == [
        "'axis' has default None, torch says default -1"]


TORCH_MODULES = """Linear Conv1d Conv2d MaxPool2d AvgPool2d AdaptiveAvgPool2d BatchNorm1d BatchNorm2d LayerNorm
Embedding RNN LSTM GRU RNNCell LSTMCell GRUCell MultiheadAttention Dropout Flatten Identity Sequential ModuleList
ModuleDict Parameter ReLU GELU Tanh Sigmoid SiLU LeakyReLU ELU Softplus Softmax LogSoftmax MSELoss L1Loss HuberLoss
BCELoss BCEWithLogitsLoss CrossEntropyLoss NLLLoss KLDivLoss""".split()
TORCH_MODULES_NOT_COMPARED = {
    "Module": "the base class: torch's takes *args/**kwargs only to pass on to object.__init__",
}
TORCH_COMPARED = (
    [f"nn.functional.{n}" for n in NN_FUNCTIONAL]
    + [f"nn.{n}" for n in TORCH_MODULES]
    + [f"nn.init.{n}" for n in NN_INIT] + [f"nn.utils.{n}" for n in NN_UTILS]
    + [f"optim.{n}" for n in OPTIMIZERS if n != "LAMB"]  # LAMB: torch has none
    + [f"optim.lr_scheduler.{n}" for n in SCHEDULERS]
    + AUTOGRAD_FUNCTIONAL + ["amp.autocast", "amp.GradScaler"]
)


def test_torch_tables_cover_the_public_nn_surface(torch):
    functional = set(gt.nn.functional.__all__) & set(dir(torch.nn.functional))
    assert functional <= set(NN_FUNCTIONAL)
    modules = {n for n in dir(gt.nn) if isinstance(getattr(gt.nn, n), type) and hasattr(torch.nn, n)}
    assert modules - set(TORCH_MODULES) == set(TORCH_MODULES_NOT_COMPARED)


@pytest.mark.parametrize("path", TORCH_COMPARED)
def test_signature_matches_torch(torch, path):
    theirs = torch_signature(torch, resolve(torch, path))
    ours = inspect.signature(resolve(gt, path))
    problems = torch_mismatches(path, ours, theirs)
    assert not problems, f"gt.{path}{ours} vs torch.{path}{theirs}: " + "; ".join(problems)
