"""Looking at a recorded graph: its nodes, and how much memory its saved arrays hold."""
from ..tensor import AccumulateGrad, Tensor


def nodes(*outputs):
    """Every Function node reachable from the outputs' grad_fn (each once)."""
    seen = set()
    stack = [t.grad_fn for t in outputs if isinstance(t, Tensor) and t.grad_fn is not None]
    found = []
    while stack:
        node = stack.pop()
        if id(node) in seen or type(node) is AccumulateGrad:
            continue
        seen.add(id(node))
        found.append(node)
        stack.extend(edge[0] for edge in node.next_edges if edge is not None)
    return found


def leaves(*outputs):
    """The distinct leaf tensors requiring grad that the graph behind `outputs` delivers gradients to."""
    found = {}
    for node in nodes(*outputs):
        for edge in node.next_edges:
            leaf = edge[0].variable if edge is not None and type(edge[0]) is AccumulateGrad else None
            if leaf is not None:
                found[id(leaf)] = leaf
    return list(found.values())


def memory_owner(array):
    """The array that owns the memory `array` shows: itself, or the base of a view."""
    base = getattr(array, "base", None)
    return array if base is None or not hasattr(base, "nbytes") else base


def saved_arrays(*outputs):
    """The distinct memory (owner arrays, by id) that the graph behind `outputs` keeps for backward.

    Covers saved tensors, saved outputs and array extras that ops keep on ctx; a view counts as the
    memory it shows. Leaves that require grad (parameters, inputs) live on anyway and are left out.
    """
    arrays = {}
    for node in nodes(*outputs):
        values = list(node._saved or ()) + [node._saved_output] + list(vars(node).values())
        for v in values:
            for item in v if isinstance(v, (list, tuple)) else (v,):
                if isinstance(item, Tensor):
                    if item.is_leaf and item.requires_grad:
                        continue
                    item = item.data
                if hasattr(item, "nbytes") and hasattr(item, "shape"):
                    owner = memory_owner(item)
                    arrays[id(owner)] = owner
    return arrays


def saved_nbytes(*outputs):
    """Bytes the graph behind `outputs` keeps for backward (see saved_arrays): the activation memory
    that checkpointing trades for recompute."""
    return sum(a.nbytes for a in saved_arrays(*outputs).values())
