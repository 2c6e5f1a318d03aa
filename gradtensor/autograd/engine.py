"""The backward engine: walks the tape from the outputs to the leaves, iteratively.

Nodes run in reverse topological order (a node runs once every consumer of its outputs has
handed it their gradient), so a 10,000-op chain needs no recursion, and a tensor used several
times receives the sum of its gradients before its own node runs.
"""
from .. import backend
from ..tensor import Tensor, _RetainGrad
from .function import AccumulateGrad, _check_finite, _freed_error
from .grad_mode import state


def _edge_of(tensor):
    if tensor.grad_fn is not None:
        return tensor.grad_fn, tensor._output_nr
    return tensor._get_accumulator(), 0


def _as_grad_tensor(grad, like, where):
    if not isinstance(grad, Tensor):
        grad = Tensor(backend.xp(like.data).asarray(grad, dtype=like.dtype))
    if grad.shape != like.shape:
        raise RuntimeError(f"{where}: grad has shape {grad.shape} but the output has shape {like.shape}")
    if grad.dtype != like.dtype:
        grad = grad.astype(like.dtype)
    return grad


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None, allow_unused=False):
    """Backpropagate from `roots`. With `inputs`, return their gradients instead of filling .grad."""
    where = "backward" if inputs is None else "grad"
    buffers = {}  # node -> [gradient per output]
    borrowed = set()  # ids of gradient arrays that other places may also hold
    start = []
    for t, g in zip(roots, root_grads):
        if not t.requires_grad:
            raise RuntimeError(f"{where}: output of shape {t.shape} does not require grad and has no grad_fn")
        if g is None:
            if t.size != 1:
                raise RuntimeError(
                    f"{where}: grad can be implied only for single-element outputs; pass grad_outputs for "
                    f"the output of shape {t.shape}"
                )
            g = Tensor(backend.xp(t.data).ones_like(t.data))
        else:
            g = _as_grad_tensor(g, t, where)
            borrowed.add(id(_owner(g.data)))
        node, nr = _edge_of(t)
        _add_to_buffer(buffers, node, nr, g)
        start.append(node)

    deps, order = _dependencies(start)

    targets = None
    needed = None
    if inputs is not None:
        targets = {}
        for i, t in enumerate(inputs):
            if not t.requires_grad:
                raise RuntimeError(f"grad: input {i} (shape {t.shape}) does not require grad")
            targets.setdefault(_edge_of(t), []).append(i)
        needed = _needed(order, {node for node, _ in targets})
        captured = [None] * len(inputs)

    prev_mode = state.grad_enabled
    state.grad_enabled = create_graph
    try:
        ready = [node for node in dict.fromkeys(start) if deps.get(node, 0) == 0]
        while ready:
            node = ready.pop()
            grads = buffers.pop(node, None)
            if type(node) is AccumulateGrad:
                leaf = node.variable
                if leaf is not None and grads is not None and grads[0] is not None:
                    g = _run_hooks(leaf._hooks, grads[0])
                    if targets is not None:
                        for i in targets.get((node, 0), ()):
                            captured[i] = g
                    else:
                        _accumulate(leaf, g, create_graph, borrowed)
                continue

            if grads is not None and node._hooks:
                for nr, hooks in node._hooks.items():
                    if grads[nr] is not None:
                        grads[nr] = _run_hooks(hooks, grads[nr])
            if targets is not None and grads is not None:
                for nr, g in enumerate(grads):
                    for i in targets.get((node, nr), ()):
                        captured[i] = g

            if grads is not None and (needed is None or node in needed):
                _run_node(node, grads, buffers, borrowed)
                if not retain_graph:
                    node._release()
            for edge in node.next_edges:
                if edge is not None:
                    child = edge[0]
                    deps[child] -= 1
                    if deps[child] == 0:
                        ready.append(child)
    finally:
        state.grad_enabled = prev_mode

    if inputs is None:
        return None
    for i, g in enumerate(captured):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: input {i} (shape {inputs[i].shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return tuple(captured)


def _run_node(node, grads, buffers, borrowed):
    """Call node's backward and route each input gradient to the node that produced that input."""
    if node._output_meta is not None:  # several outputs: unused ones get zero gradients
        for i, g in enumerate(grads):
            if g is None:
                shape, dtype = node._output_meta[i]
                grads[i] = Tensor(backend.xp(_first(grads).data).zeros(shape, dtype))
    if node._freed:
        raise _freed_error(node)
    if state.anomaly:  # report NaN/inf by the node whose gradients carry it, not by an op inside its backward
        state.anomaly = False
        try:
            in_grads = type(node).backward(node, *grads)
        finally:
            state.anomaly = True
    else:
        in_grads = type(node).backward(node, *grads)
    if type(in_grads) is not tuple:
        in_grads = (in_grads,)
    edges = node.next_edges
    if len(in_grads) < len(edges) and any(e is not None for e in edges[len(in_grads):]):
        raise RuntimeError(
            f"{node.name()}: backward returned {len(in_grads)} gradients but the forward took {len(edges)} inputs"
        )
    handed = []  # memory owners handed on so far
    for i, (edge, g) in enumerate(zip(edges, in_grads)):
        if edge is None or g is None:
            continue
        shape, dtype = node._input_meta[i]
        if not isinstance(g, Tensor):
            g = Tensor(g)
        data = g.data
        if data.shape != shape:
            raise RuntimeError(
                f"{node.name()}: backward returned a gradient of shape {data.shape} for input {i} of shape {shape}"
            )
        if data.dtype != dtype:
            g = g.astype(dtype)
            data = g.data
        # The incoming gradient's memory passes on (possibly as a view) exclusively unless this node hands
        # it to two inputs (add does): then both must copy before writing. Borrowed status is inherited
        # through views and pass-throughs, which keep the owner.
        owner = _owner(data)
        if any(owner is h for h in handed):
            borrowed.add(id(owner))
        handed.append(owner)
        if state.anomaly:
            _check_finite((data,), f"{node.name()} (backward of {type(node).op_name()})")
        _add_to_buffer(buffers, edge[0], edge[1], g)


def _owner(array):
    """The array that owns the memory `array` shows (itself, or the base of a view)."""
    base = array.base
    return array if base is None else base


def _first(items):
    return next(x for x in items if x is not None)


def _add_to_buffer(buffers, node, nr, g):
    buf = buffers.get(node)
    if buf is None:
        n = len(node._output_meta) if type(node) is not AccumulateGrad and node._output_meta else 1
        buf = buffers[node] = [None] * n
    buf[nr] = g if buf[nr] is None else buf[nr] + g


def _run_hooks(hooks, g):
    if hooks:
        # retain_grad stores the gradient after every other hook, whatever the order of registration
        for hook in sorted(hooks, key=lambda h: isinstance(h, _RetainGrad)):
            result = hook(g)
            if result is not None:
                g = result
    return g


def _accumulate(leaf, g, create_graph, borrowed):
    if create_graph:
        leaf.grad = g if leaf.grad is None else leaf.grad + g
        return
    if leaf.grad is None:
        data = g.data
        # .grad must be writable memory of its own: optimizers and the GradScaler update it in place
        if id(_owner(data)) in borrowed or 0 in data.strides or not getattr(data.flags, "writeable", True):
            data = data.copy()
        leaf.grad = Tensor(data)
    else:
        leaf.grad = Tensor(leaf.grad.data + g.data)


def _dependencies(start):
    """Count, for every node reachable from `start`, how many edges lead into it; also a discovery order."""
    deps = {}
    order = []
    seen = set()
    stack = list(dict.fromkeys(start))
    seen.update(stack)
    while stack:
        node = stack.pop()
        order.append(node)
        for edge in node.next_edges:
            if edge is not None:
                child = edge[0]
                deps[child] = deps.get(child, 0) + 1
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
    return deps, order


def _needed(order, target_nodes):
    """The nodes whose backward must run for autograd.grad: those with a target below them."""
    # Kahn's order over the discovered graph, then a sweep from the leaves up.
    indegree = {}
    for node in order:
        for edge in node.next_edges:
            if edge is not None:
                indegree[edge[0]] = indegree.get(edge[0], 0) + 1
    topo = []
    ready = [node for node in order if indegree.get(node, 0) == 0]
    while ready:
        node = ready.pop()
        topo.append(node)
        for edge in node.next_edges:
            if edge is not None:
                indegree[edge[0]] -= 1
                if indegree[edge[0]] == 0:
                    ready.append(edge[0])
    needed = set()  # nodes that must run: some target lies strictly below them
    for node in reversed(topo):
        if any(e is not None and (e[0] in needed or e[0] in target_nodes) for e in node.next_edges):
            needed.add(node)
    return needed


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
