"""Gradient checkpointing: keep a region's inputs, drop its activations, recompute them in backward.

A checkpointed region becomes one node on the tape. Its forward runs without recording; an
observer notes every tensor from outside the region that requires grad (parameters, earlier
activations), so gradients reach them although they are not arguments. Backward replays the
region with the random state of the first run (dropout masks match), differentiates the replay
and lets it go at once, so only one region's activations are alive at a time.
"""
from .. import backend
from ..tensor import Tensor
from .engine import grad as autograd_grad
from .function import Function, _check_finite
from .grad_mode import enable_grad, state


class _ExternalTensors:
    """Collects the distinct tensors requiring grad that ops inside a region read."""

    def __init__(self, inputs):
        self.seen = {id(t) for t in inputs}
        self.tensors = []

    def __call__(self, args, needs):
        for a, need in zip(args, needs):
            if need and id(a) not in self.seen:
                self.seen.add(id(a))
                self.tensors.append(a)


class Checkpoint(Function):
    """The tape node of a checkpointed region; its inputs are the region's tensor arguments plus the
    outside tensors it read."""

    @staticmethod
    def backward(ctx, *grads):
        fn, args, kwargs = ctx.fn, ctx.args, ctx.kwargs
        create_graph = state.grad_enabled
        # Replay on detached inputs unless the gradient must itself be differentiable (create_graph):
        # then on the originals, so the result stays connected to their history.
        replay_args = [
            a if create_graph or not isinstance(a, Tensor) else a.detach().requires_grad_(a.requires_grad)
            for a in args
        ]
        with _replayed_rng(ctx.rng_states), enable_grad():
            outputs = _as_outputs(fn(*replay_args, **kwargs), "checkpoint")
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
        wrt = [a for a, need in zip(replay_args, ctx.arg_needs) if need] + ctx.external
        if not pairs:
            return (None,) * len(ctx.next_edges)
        found = autograd_grad(
            [o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=create_graph, allow_unused=True
        )
        found = iter(found)
        return tuple(next(found) if need else None for need in ctx.needs_input_grad)


def checkpoint(fn, *args, preserve_rng_state=True, **kwargs):
    """Run fn(*args, **kwargs) keeping only its inputs; recompute its activations during backward.

    Gradients equal those of the plain call (dropout included: the random state is replayed).
    Works with create_graph, nesting, inputs that need no grad and keyword arguments.
    """
    if not state.grad_enabled:
        return fn(*args, **kwargs)
    tensors = [a for a in args if isinstance(a, Tensor)]
    rng_states = _rng_snapshot(tensors) if preserve_rng_state else None
    observer = _ExternalTensors(tensors)
    prev_observer, state.observer = state.observer, observer
    state.grad_enabled = False
    try:
        result = fn(*args, **kwargs)
    finally:
        state.grad_enabled = True
        state.observer = prev_observer

    outputs = _as_outputs(result, "checkpoint")
    arg_needs = [isinstance(a, Tensor) and a.requires_grad for a in args]
    needs = [n for a, n in zip(args, arg_needs) if isinstance(a, Tensor)] + [True] * len(observer.tensors)
    if not any(needs):
        return result  # nothing to differentiate: the region ran without recording

    ctx = Checkpoint.__new__(Checkpoint)
    ctx.fn, ctx.args, ctx.kwargs = fn, args, kwargs
    ctx.arg_needs = [n for a, n in zip(args, arg_needs) if isinstance(a, Tensor)]
    ctx.external = observer.tensors
    ctx.rng_states = rng_states
    ctx.needs_input_grad = needs
    datas = tuple(o.data for o in outputs)
    if state.anomaly:
        _check_finite(datas, "checkpoint (forward)")
    linked = ctx._record(tensors + observer.tensors, needs, datas, single=False)
    return linked[0] if isinstance(result, Tensor) else type(result)(linked)


def checkpoint_sequential(functions, segments, x, preserve_rng_state=True):
    """Run functions (a Sequential or a list of callables) in order as `segments` checkpointed chunks.

    Every chunk is checkpointed, the last one too, so between forward and backward only the chunk
    boundaries are kept.
    """
    functions = list(functions)
    if not functions:
        return x
    segments = max(1, min(int(segments), len(functions)))
    bounds = [round(i * len(functions) / segments) for i in range(segments + 1)]

    def run_chunk(chunk):
        def run(inp):
            for f in chunk:
                inp = f(inp)
            return inp

        return run

    for start, end in zip(bounds, bounds[1:]):
        x = checkpoint(run_chunk(functions[start:end]), x, preserve_rng_state=preserve_rng_state)
    return x


def _as_outputs(result, where):
    outputs = [result] if isinstance(result, Tensor) else list(result) if isinstance(result, (tuple, list)) else None
    if outputs is None or not all(isinstance(o, Tensor) for o in outputs):
        raise TypeError(f"{where}: the function must return a Tensor or a tuple/list of Tensors, got {type(result).__name__}")
    return outputs


def _rng_snapshot(tensors):
    devices = {backend.CPU} | {t.device for t in tensors}
    return {d: backend.get_rng_state(d) for d in devices}


class _replayed_rng:
    """Within the block the generators are as they were at the snapshot; afterwards as before the block."""

    def __init__(self, snapshot):
        self.snapshot = snapshot

    def __enter__(self):
        if self.snapshot:
            self.current = {d: backend.get_rng_state(d) for d in self.snapshot}
            for d, s in self.snapshot.items():
                backend.set_rng_state(d, s)

    def __exit__(self, *exc):
        if self.snapshot:
            for d, s in self.current.items():
                backend.set_rng_state(d, s)
        return False
