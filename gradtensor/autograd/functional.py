"""Higher-level autograd: vjp, jvp, hvp, vhp, jacobian, hessian (torch.autograd.functional's API).

Everything is built on reverse mode. Forward-mode products use the double-vjp trick: for a dummy
cotangent u, g(u) = J^T u is linear in u, so differentiating g with grad_outputs v gives J v.

`inputs` is one Tensor or a tuple of Tensors; results follow the structure of what they are shaped
like (a Tensor for a single input/output, a tuple for a tuple). Unless create_graph=True, results
are detached. With strict=False an input that the outputs do not depend on gets zeros; with
strict=True it raises.
"""
from .. import backend, dtypes
from ..tensor import Tensor
from .engine import grad as _autograd_grad
from .grad_mode import enable_grad

__all__ = ["vjp", "jvp", "hvp", "vhp", "jacobian", "hessian"]

_STRATEGIES = ("reverse-mode", "forward-mode")


# --- argument handling -------------------------------------------------------------------------


def _as_tensors(value, what, fn_name):
    """(tuple of Tensors, whether value was a tuple); raises TypeError for anything else."""
    is_tuple = isinstance(value, (tuple, list))
    items = tuple(value) if is_tuple else (value,)
    for i, item in enumerate(items):
        if not isinstance(item, Tensor):
            where = f"entry {i} of {what}" if is_tuple else what
            raise TypeError(
                f"{fn_name}: {where} must be a Tensor (or {what} a tuple of Tensors), got {type(item).__name__}"
            )
    return items, is_tuple


def _prepare_inputs(inputs, create_graph, fn_name):
    """Fresh tensors requiring grad that func is evaluated at.

    With create_graph a tensor that requires grad is cloned, so the results stay differentiable
    with respect to it; otherwise it is detached, so nothing leaks into the caller's graph.
    """
    inputs, is_tuple = _as_tensors(inputs, "inputs", fn_name)
    prepared = []
    for i, t in enumerate(inputs):
        if not dtypes.is_floating(t.dtype):
            raise TypeError(
                f"{fn_name}: input {i} has dtype {t.dtype}; only floating-point inputs can be differentiated"
            )
        prepared.append(t.clone() if create_graph and t.requires_grad else t.detach().requires_grad_(True))
    return tuple(prepared), is_tuple


def _call(func, inputs, strict, fn_name):
    outputs, is_tuple = _as_tensors(func(*inputs), "the output of func", fn_name)
    if strict:
        for i, out in enumerate(outputs):
            if not out.requires_grad:
                raise RuntimeError(
                    f"{fn_name}: output {i} of func does not require grad; with strict=True every output "
                    "must be computed differentiably from the inputs"
                )
    return outputs, is_tuple


def _call_scalar(func, inputs, strict, fn_name):
    """func's output, checked to be a single tensor with one element (hvp, vhp, hessian)."""
    outputs, is_tuple = _call(func, inputs, strict, fn_name)
    if is_tuple:
        raise RuntimeError(f"{fn_name}: func must return a single Tensor, got a tuple of {len(outputs)}")
    if outputs[0].size != 1:
        raise RuntimeError(f"{fn_name}: func must return a single-element Tensor, got shape {outputs[0].shape}")
    return outputs


def _vectors(v, like, like_is_tuple, create_graph, fn_name, what):
    """v as a tuple matching `like` (the function's inputs or outputs) in length and shapes."""
    if v is None:
        if len(like) != 1 or like[0].size != 1:
            shapes = ", ".join(str(t.shape) for t in like)
            raise RuntimeError(
                f"{fn_name}: v can be omitted only when the {what} is a single one-element Tensor; pass v "
                f"shaped like the {what} (shape {shapes})"
            )
        return (_filled_like(like[0], 1),)
    vs, _ = _as_tensors(v, "v", fn_name)
    if len(vs) != len(like):
        raise ValueError(f"{fn_name}: v has {len(vs)} tensors but the {what} has {len(like)}")
    for i, (t, ref) in enumerate(zip(vs, like)):
        if t.shape != ref.shape:
            where = f"v[{i}]" if like_is_tuple else "v"
            raise ValueError(f"{fn_name}: {where} has shape {t.shape} but the {what} has shape {ref.shape}")
    # a v that requires grad stays on the graph only when the result must be differentiable
    return tuple(t if create_graph and t.requires_grad else t.detach() for t in vs)


def _filled_like(t, value):
    return Tensor(backend.xp(t.data).full(t.shape, value, t.dtype))


def _grad(outputs, inputs, grad_outputs, create_graph, retain_graph=None):
    """autograd.grad that tolerates outputs or inputs off the graph: their entries are None."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    wrt = [i for i, t in enumerate(inputs) if t.requires_grad]
    result = [None] * len(inputs)
    if pairs and wrt:
        grads = _autograd_grad(
            [o for o, _ in pairs], [inputs[i] for i in wrt], [g for _, g in pairs],
            retain_graph=retain_graph, create_graph=create_graph, allow_unused=True,
        )
        for i, g in zip(wrt, grads):
            result[i] = g
    return tuple(result)


def _fill_zeros(grads, refs, strict, create_graph, fn_name, independence):
    """Zeros (shaped as refs) for missing gradients; in strict mode missing ones raise instead.

    `independence(i)` says in words what a missing gradient i means.
    """
    filled = []
    for i, (g, ref) in enumerate(zip(grads, refs)):
        if strict and (g is None or (create_graph and not g.requires_grad)):
            raise RuntimeError(f"{fn_name}: {independence(i)}; strict=True does not allow this")
        filled.append(_filled_like(ref, 0) if g is None else g)
    return tuple(filled)


def _result(tensors, is_tuple, create_graph):
    if not create_graph:
        tensors = tuple(t.detach() for t in tensors)
    return tensors if is_tuple else tensors[0]


def _check_strategy(name, strategy):
    if strategy not in _STRATEGIES:
        raise ValueError(f"{name}: strategy must be 'reverse-mode' or 'forward-mode', got {strategy!r}")


# --- the two primitives ------------------------------------------------------------------------


def _dummy_cotangents(outputs):
    """Zero tensors u requiring grad, one per differentiable output, for the double-vjp trick."""
    return tuple(
        Tensor(backend.xp(o.data).zeros_like(o.data), requires_grad=True)
        if o is not None and o.requires_grad else None
        for o in outputs
    )


def _transposed(outputs, inputs, strict, fn_name):
    """(u, J^T u) for dummy cotangents u: the graph that the double-vjp trick differentiates."""
    dummies = _dummy_cotangents(outputs)
    live = [i for i, u in enumerate(dummies) if u is not None]
    transposed = _grad([outputs[i] for i in live], inputs, [dummies[i] for i in live], create_graph=True)
    # a J^T u that does not depend on u means the outputs do not depend on that input
    transposed = _fill_zeros(
        transposed, inputs, strict, True, fn_name, lambda i: f"the outputs do not depend on input {i}"
    )
    return dummies, transposed


def _dummies_as_inputs(dummies, like):
    """Stand-ins for outputs that have no dummy (not differentiable): never requiring grad."""
    return tuple(u if u is not None else _filled_like(ref, 0) for u, ref in zip(dummies, like))


# --- public functions ------------------------------------------------------------------------


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product, shaped like the inputs."""
    with enable_grad():
        inputs, inputs_is_tuple = _prepare_inputs(inputs, create_graph, "vjp")
        outputs, outputs_is_tuple = _call(func, inputs, strict, "vjp")
        vs = _vectors(v, outputs, outputs_is_tuple, create_graph, "vjp", "output")
        grads = _grad(outputs, inputs, vs, create_graph)
        product = _fill_zeros(
            grads, inputs, strict, create_graph, "vjp", lambda i: f"the outputs do not depend on input {i}"
        )
    return _result(outputs, outputs_is_tuple, create_graph), _result(product, inputs_is_tuple, create_graph)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product, shaped like the outputs (double-vjp trick)."""
    with enable_grad():
        inputs, inputs_is_tuple = _prepare_inputs(inputs, create_graph, "jvp")
        vs = _vectors(v, inputs, inputs_is_tuple, create_graph, "jvp", "input")
        outputs, outputs_is_tuple = _call(func, inputs, strict, "jvp")
        product = _forward_product(outputs, inputs, vs, create_graph, strict, "jvp")
    return _result(outputs, outputs_is_tuple, create_graph), _result(product, outputs_is_tuple, create_graph)


def _forward_product(outputs, inputs, vs, create_graph, strict, fn_name):
    """J v for the Jacobian J of outputs w.r.t. inputs, by differentiating J^T u w.r.t. u."""
    dummies, transposed = _transposed(outputs, inputs, strict, fn_name)
    grads = _grad(transposed, _dummies_as_inputs(dummies, outputs), vs, create_graph)
    return _fill_zeros(
        grads, outputs, strict, create_graph, fn_name, lambda i: f"output {i} does not depend on the inputs"
    )


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H) for a function with a single-element output, shaped like the inputs."""
    with enable_grad():
        inputs, inputs_is_tuple = _prepare_inputs(inputs, create_graph, "vhp")
        vs = _vectors(v, inputs, inputs_is_tuple, create_graph, "vhp", "input")
        outputs = _call_scalar(func, inputs, strict, "vhp")
        gradient = _gradient(outputs, inputs, strict, "vhp")
        grads = _grad(gradient, inputs, vs, create_graph)
        product = _fill_zeros(
            grads, inputs, strict, create_graph, "vhp", lambda i: f"the gradient does not depend on input {i}"
        )
    return _result(outputs, False, create_graph), _result(product, inputs_is_tuple, create_graph)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v) for a function with a single-element output, shaped like the inputs."""
    with enable_grad():
        inputs, inputs_is_tuple = _prepare_inputs(inputs, create_graph, "hvp")
        vs = _vectors(v, inputs, inputs_is_tuple, create_graph, "hvp", "input")
        outputs = _call_scalar(func, inputs, strict, "hvp")
        gradient = _gradient(outputs, inputs, strict, "hvp")
        product = _forward_product(gradient, inputs, vs, create_graph, strict, "hvp")
    return _result(outputs, False, create_graph), _result(product, inputs_is_tuple, create_graph)


def _gradient(outputs, inputs, strict, fn_name):
    """The gradient of a single-element output, itself differentiable (the Jacobian for the Hessian)."""
    grads = _grad(outputs, inputs, (None,), create_graph=True)
    return _fill_zeros(
        grads, inputs, strict, True, fn_name,
        lambda i: f"the gradient with respect to input {i} does not depend on the inputs (func is linear in it)",
    )


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """The Jacobian of func at inputs: J[i][j] of shape outputs[i].shape + inputs[j].shape.

    A Tensor when both inputs and outputs are single Tensors, a tuple over whichever of them is a
    tuple, and a tuple (over outputs) of tuples (over inputs) when both are. "reverse-mode" takes one
    backward pass per output element; "forward-mode" one pass through the backward graph per input
    element (the double-vjp trick), cheaper when outputs outnumber inputs. `vectorize` is accepted
    for PyTorch compatibility; the elements are always computed one by one.
    """
    _check_strategy("jacobian", strategy)
    with enable_grad():
        inputs, inputs_is_tuple = _prepare_inputs(inputs, create_graph, "jacobian")
        outputs, outputs_is_tuple = _call(func, inputs, strict, "jacobian")
        if strategy == "reverse-mode":
            blocks = _jacobian_by_rows(outputs, inputs, create_graph, strict)
        else:
            blocks = _jacobian_by_columns(outputs, inputs, create_graph, strict)
    blocks = tuple(_result(row, True, create_graph) for row in blocks)
    if not inputs_is_tuple:
        blocks = tuple(row[0] for row in blocks)
    return blocks if outputs_is_tuple else blocks[0]


def _unit(like, index):
    """A tensor shaped like `like` that is 1 at flat position `index` and 0 elsewhere."""
    unit = backend.xp(like.data).zeros(like.size, like.dtype)
    unit[index] = 1
    return Tensor(unit.reshape(like.shape))


def _independent(i, j):
    return lambda _: f"output {i} does not depend on input {j}"


def _jacobian_by_rows(outputs, inputs, create_graph, strict):
    """One vjp per output element: row r of J[i][j] is d outputs[i].flat[r] / d inputs[j]."""
    rows = [[[] for _ in inputs] for _ in outputs]
    for i, out in enumerate(outputs):
        for r in range(out.size):
            grads = _grad((out,), inputs, (_unit(out, r),), create_graph, retain_graph=True)
            for j, g in enumerate(grads):
                (g,) = _fill_zeros((g,), (inputs[j],), strict, create_graph, "jacobian", _independent(i, j))
                rows[i][j].append(g)
    return tuple(
        tuple(_stack(rows[i][j], 0, out.shape + inp.shape, inp) for j, inp in enumerate(inputs))
        for i, out in enumerate(outputs)
    )


def _jacobian_by_columns(outputs, inputs, create_graph, strict):
    """One jvp per input element: column c of J[i][j] is d outputs[i] / d inputs[j].flat[c]."""
    dummies, transposed = _transposed(outputs, inputs, strict, "jacobian")
    wrt = _dummies_as_inputs(dummies, outputs)
    columns = [[[] for _ in inputs] for _ in outputs]
    for j, inp in enumerate(inputs):
        for c in range(inp.size):
            grads = _grad((transposed[j],), wrt, (_unit(inp, c),), create_graph, retain_graph=True)
            for i, g in enumerate(grads):
                (g,) = _fill_zeros((g,), (outputs[i],), strict, create_graph, "jacobian", _independent(i, j))
                columns[i][j].append(g)
    return tuple(
        tuple(_stack(columns[i][j], out.ndim, out.shape + inp.shape, out) for j, inp in enumerate(inputs))
        for i, out in enumerate(outputs)
    )


def _stack(parts, axis, shape, like):
    """The Jacobian block `shape` from its rows or columns (differentiable, for create_graph)."""
    if not parts:  # a size-0 output or input: no rows or columns, and no elements
        return Tensor(backend.xp(like.data).zeros(shape, like.dtype))
    from ..ops import stack  # the op families import the autograd package, not the reverse

    return stack(parts, axis=axis).reshape(shape)


def hessian(
    func, inputs, create_graph=False, strict=False, vectorize=False, outer_jacobian_strategy="reverse-mode"
):
    """The Hessian of a single-element func: H[i][j] of shape inputs[i].shape + inputs[j].shape.

    A Tensor for a single input, a tuple of tuples for a tuple of inputs. It is the Jacobian of the
    (differentiable) gradient, taken with `outer_jacobian_strategy`.
    """
    _check_strategy("hessian", outer_jacobian_strategy)
    inputs, inputs_is_tuple = _as_tensors(inputs, "inputs", "hessian")

    def gradient(*xs):
        return _gradient(_call_scalar(func, xs, strict, "hessian"), xs, strict, "hessian")

    blocks = jacobian(gradient, inputs, create_graph, strict, vectorize, outer_jacobian_strategy)
    return blocks if inputs_is_tuple else blocks[0][0]
