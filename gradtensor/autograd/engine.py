"""The backward engine: walks the tape from the outputs to the leaves, iteratively.

Nodes run latest-recorded first. Every node gets a sequence number when it is recorded, after
the nodes of its inputs, so by the time a node comes off the queue every consumer of its outputs
has run and handed it their gradient: a tensor used several times receives the sum of its
gradients before its own node runs, with no dependency count to take first, and a 10,000-op chain
needs no recursion.

Without create_graph nothing of the backward pass is recorded, so gradients travel as raw arrays,
and a node whose formula allows it (`backward_on_arrays`) computes on them directly, without a
Tensor per step; with create_graph they travel as Tensors, and the formulas are recorded for the
next derivative.
"""
from heapq import heappop, heappush

from .. import backend
from ..tensor import Tensor, _RetainGrad
from .function import AccumulateGrad, _as_array, _check_finite, _freed_error, _ndarray
from .grad_mode import state


def _edge_of(tensor):
    if tensor.grad_fn is not None:
        return tensor.grad_fn, tensor._output_nr
    acc = tensor._accumulator
    return (acc if acc is not None else tensor._get_accumulator()), 0


def _root_grad(grad, like, where, as_tensor):
    """The seed gradient of one output: ones when implied, else `grad` checked against the output."""
    if grad is None:
        if like.size != 1:
            raise RuntimeError(
                f"{where}: grad can be implied only for single-element outputs; pass grad_outputs for "
                f"the output of shape {like.shape}"
            )
        data = backend.ones_like(like.data)
    else:
        data = grad.data if isinstance(grad, Tensor) else backend.xp(like.data).asarray(grad, dtype=like.dtype)
        if data.shape != like.shape:
            raise RuntimeError(f"{where}: grad has shape {data.shape} but the output has shape {like.shape}")
        if data.dtype != like.dtype:
            data = data.astype(like.dtype)
        elif as_tensor and isinstance(grad, Tensor):
            return grad  # keeps its own graph: create_graph differentiates through it
    return Tensor(data) if as_tensor else data


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None, allow_unused=False):
    """Backpropagate from `roots`. With `inputs`, return their gradients instead of filling .grad."""
    where = "backward" if inputs is None else "grad"
    # node -> [gradient per output]: arrays, or Tensors under create_graph. Leaves' nodes stay here,
    # off the heap, until every other node has run (nothing lies below a leaf): then each holds its sum.
    buffers = {}
    pending = []  # heap of (-sequence number, node) of the non-leaf nodes holding a gradient: latest first
    summed = None if create_graph else set()  # see _receive
    borrowed = set()  # ids of gradient arrays that other places may also hold
    for t, g in zip(roots, root_grads):
        if not t.requires_grad:
            raise RuntimeError(f"{where}: output of shape {t.shape} does not require grad and has no grad_fn")
        seed = _root_grad(g, t, where, create_graph)
        if g is not None:
            borrowed.add(id(_owner(_array(seed))))
        node, nr = _edge_of(t)
        _receive(buffers, pending, node, nr, seed, summed)

    targets = None
    needed = None
    if inputs is not None:
        targets = {}
        for i, t in enumerate(inputs):
            if not t.requires_grad:
                raise RuntimeError(f"grad: input {i} (shape {t.shape}) does not require grad")
            targets.setdefault(_edge_of(t), []).append(i)
        needed = _needed([node for _, node in pending], {node for node, _ in targets})
        captured = [None] * len(inputs)

    prev_mode, prev_on_arrays = state.grad_enabled, state.backward_on_arrays
    state.grad_enabled = create_graph
    state.backward_on_arrays = not create_graph  # (_call_backward turns it off for a formula on Tensors)
    try:
        while pending:
            node = heappop(pending)[1]
            grads = buffers.pop(node)
            if node._hooks:
                for nr, hooks in node._hooks.items():
                    if grads[nr] is not None:
                        grads[nr] = _run_hooks(hooks, grads[nr], create_graph, borrowed)
            if targets is not None:
                for nr, g in enumerate(grads):
                    for i in targets.get((node, nr), ()):
                        captured[i] = g
                if node not in needed:
                    continue
            _run_node(node, grads, buffers, pending, borrowed, summed)
            if not retain_graph:
                node._release()

        for node, (g,) in buffers.items():  # only leaves' nodes are left
            leaf = node._variable()
            if leaf is None:
                continue
            if leaf._hooks:
                g = _run_hooks(leaf._hooks, g, create_graph, borrowed)
            if targets is not None:
                for i in targets.get((node, 0), ()):
                    captured[i] = g
            else:
                _accumulate(leaf, g, create_graph, borrowed)
    finally:
        state.grad_enabled, state.backward_on_arrays = prev_mode, prev_on_arrays

    if inputs is None:
        return None
    for i, g in enumerate(captured):
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"grad: input {i} (shape {inputs[i].shape}) was not used to compute the outputs; "
                    "pass allow_unused=True to get None for it"
                )
        elif not create_graph:
            captured[i] = Tensor(g)
    return tuple(captured)


def _call_backward(node, grads, create_graph, anomaly):
    """node's backward, for the cases off _run_node's fast path: a formula written on Tensors in a
    pass on arrays (it gets Tensors, unrecorded), and anomaly detection (which reports NaN/inf by the
    node whose gradients carry it, not by an op inside its backward)."""
    fn = type(node)
    if anomaly:
        state.anomaly = False
    try:
        if create_graph or fn.backward_on_arrays:
            return fn.backward(node, *grads)
        state.backward_on_arrays = False
        try:
            return fn.backward(node, *[None if g is None else Tensor(g) for g in grads])
        finally:
            state.backward_on_arrays = True
    finally:
        if anomaly:
            state.anomaly = True


def _run_node(node, grads, buffers, pending, borrowed, summed):
    """Call node's backward and route each input gradient to the node that produced that input (which
    joins `pending` with its first gradient, unless it is a leaf's)."""
    create_graph = summed is None
    if node._output_meta is not None:  # several outputs: unused ones get zero gradients
        for i, g in enumerate(grads):
            if g is None:
                shape, dtype = node._output_meta[i]
                zero = backend.xp(_array(_first(grads))).zeros(shape, dtype)
                grads[i] = Tensor(zero) if create_graph else zero
    if node._freed:
        raise _freed_error(node)
    fn = type(node)
    anomaly = state.anomaly
    if (create_graph or fn.backward_on_arrays) and not anomaly:
        in_grads = fn.backward(node, *grads)
    else:
        in_grads = _call_backward(node, grads, create_graph, anomaly)
    edges = node.next_edges
    if type(in_grads) is not tuple:
        in_grads = (in_grads,)
        owners = None
    else:
        # A gradient whose memory goes to two inputs (add passes g to both, possibly as views) may be
        # written by neither: both copy before writing (see _accumulate). Views keep their owner.
        owners = None if create_graph or len(in_grads) < 2 else []
    if len(in_grads) < len(edges) and any(edges[len(in_grads):]):  # (edges: tuples, or None for no gradient)
        raise RuntimeError(
            f"{node.name()}: backward returned {len(in_grads)} gradients but the forward took {len(edges)} inputs"
        )
    for edge, g in zip(edges, in_grads):
        if edge is None or g is None:
            continue
        child, nr, shape, dtype = edge
        if create_graph:
            if not isinstance(g, Tensor):
                g = Tensor(g)
        elif type(g) is not _ndarray:
            g = _as_array(g)  # a Tensor, or NumPy's scalar for a 0-d result
        if g.shape != shape:
            raise RuntimeError(
                f"{node.name()}: backward returned a gradient of shape {g.shape} for input "
                f"{next(i for i, e in enumerate(edges) if e is edge)} of shape {shape}"
            )
        if g.dtype is not dtype and g.dtype != dtype:
            g = g.astype(dtype)
        if owners is not None:
            base = g.base  # (ids: `in` on arrays would compare them elementwise)
            owner = id(g if base is None else base)
            if owner in owners:
                borrowed.add(owner)
            owners.append(owner)
        if anomaly:
            _check_finite((_array(g),), f"{node.name()} (backward of {type(node).op_name()})")
        if child in buffers or child._output_meta is not None:
            _receive(buffers, pending, child, nr, g, summed)
        else:  # (_receive's first case, inline: the common one)
            buffers[child] = [g]
            if type(child) is not AccumulateGrad:
                heappush(pending, (-child._seq, child))


def _array(g):
    return g.data if isinstance(g, Tensor) else g


def _owner(array):
    """The array that owns the memory `array` shows (itself, or the base of a view)."""
    base = array.base
    return array if base is None else base


def _first(items):
    return next(x for x in items if x is not None)


def _receive(buffers, pending, node, nr, g, summed):
    """Add g to the gradient waiting for output nr of node, which joins `pending` with its first one
    (unless it is a leaf's: see run_backward). `summed` (arrays only) names the slots that hold a sum
    the engine made, which nobody else has seen: further gradients add into it in place (a weight
    used at every step of a sequence gathers its gradient without a new array per step)."""
    buf = buffers.get(node)
    if buf is None:
        meta = node._output_meta
        if meta is None:
            buffers[node] = [g]
        else:
            buf = buffers[node] = [None] * len(meta)
            buf[nr] = g
        if type(node) is not AccumulateGrad:
            heappush(pending, (-node._seq, node))
        return
    current = buf[nr]
    if current is None:
        buf[nr] = g
    elif summed is None:
        buf[nr] = current + g
    elif (node, nr) in summed:
        current += g
    else:
        buf[nr] = _plus(current, g)
        summed.add((node, nr))


def _plus(a, b):
    """a + b as an array (NumPy gives a scalar for 0-d operands, which cannot be added into in place)."""
    total = a + b
    return total if type(total) is _ndarray else _as_array(total)


def _run_hooks(hooks, g, create_graph, borrowed):
    """Hooks see (and may replace) the gradient as a Tensor, whichever form it travels in. A hook may
    keep what it sees (retain_grad does): that memory is borrowed from then on, and a .grad made from
    it gets a copy of its own."""
    t = g if create_graph else Tensor(g)
    on_arrays, state.backward_on_arrays = state.backward_on_arrays, False  # (hooks compute on Tensors)
    try:
        # retain_grad stores the gradient after every other hook, whatever the order of registration
        for hook in sorted(hooks, key=lambda h: isinstance(h, _RetainGrad)):
            borrowed.add(id(_owner(_array(t))))
            result = hook(t)
            if result is not None:
                t = _checked_hook_result(hook, result, t)
    finally:
        state.backward_on_arrays = on_arrays
    borrowed.add(id(_owner(_array(t))))
    return t if create_graph else t.data


def _checked_hook_result(hook, result, g):
    """A hook's replacement for gradient g, which must look like g (as PyTorch checks)."""
    name = getattr(hook, "__name__", type(hook).__name__)
    if not isinstance(result, Tensor):
        raise TypeError(f"backward: hook {name!r} returned a {type(result).__name__}; return a Tensor or None")
    if result.shape != g.shape or result.dtype != g.dtype:
        raise RuntimeError(
            f"backward: hook {name!r} changed the gradient from shape {g.shape}, dtype {g.dtype} to shape "
            f"{result.shape}, dtype {result.dtype}; a hook's result replaces the gradient and must look like it"
        )
    return result


def _accumulate(leaf, g, create_graph, borrowed):
    if create_graph:
        # a copy: g may be another leaf's gradient too (add hands one on to both) or the caller's seed
        leaf.grad = g.clone() if leaf.grad is None else leaf.grad + g
        return
    if leaf.grad is None:
        # .grad must be writable memory of its own: optimizers and the GradScaler update it in place.
        # (An array that owns its memory has no zero strides; a read-only one came from a hook or the
        # caller's seed, which are borrowed.)
        if g.base is None:
            if borrowed and id(g) in borrowed:
                g = g.copy()
        elif id(g.base) in borrowed or 0 in g.strides or not getattr(g.flags, "writeable", True):
            g = g.copy()
        leaf.grad = Tensor(g)
    else:
        backend.accumulating_into(leaf.grad)
        leaf.grad = Tensor(_plus(leaf.grad.data, g))


def _needed(start, target_nodes):
    """The nodes whose backward must run for autograd.grad: those with a target below them."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for edge in stack.pop().next_edges:
            if edge is not None and edge[0] not in seen:
                seen.add(edge[0])
                stack.append(edge[0])
    needed = set()
    for node in sorted(seen, key=_sequence_nr):  # inputs' nodes before their consumers'
        if any(e is not None and (e[0] in needed or e[0] in target_nodes) for e in node.next_edges):
            needed.add(node)
    return needed


def _sequence_nr(node):
    return node._seq


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of `outputs` with respect to `inputs`, returned as a tuple (leaves' .grad untouched)."""
    single_out = isinstance(outputs, Tensor)
    outputs = (outputs,) if single_out else tuple(outputs)
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = (grad_outputs,)
    else:
        grad_outputs = tuple(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    if retain_graph is None:
        retain_graph = create_graph
    return run_backward(
        outputs, grad_outputs, retain_graph=retain_graph, create_graph=create_graph,
        inputs=inputs, allow_unused=allow_unused,
    )
