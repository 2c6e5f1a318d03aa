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


def saved_nbytes(*outputs):
    """Bytes of the distinct arrays that the graph behind `outputs` keeps for backward.

    Counts saved tensors, saved outputs and array extras that ops keep on ctx; leaves that require
    grad (parameters, inputs) live on anyway and are not counted. This is the activation memory
    that checkpointing trades for recompute.
    """
    arrays = {}
    for node in nodes(*outputs):
        values = list(node._saved or ()) + [node._saved_output] + list(vars(node).values())
        for v in values:
            for item in v if isinstance(v, (list, tuple)) else (v,):
                if isinstance(item, Tensor) and item.is_leaf and item.requires_grad:
                    continue
                data = item.data if isinstance(item, Tensor) else item
                if hasattr(data, "nbytes") and hasattr(data, "shape"):
                    arrays[id(data)] = data.nbytes
    return sum(arrays.values())
