"""Gradient checkpointing: keep a region's inputs, drop its activations, recompute them in backward.

A checkpointed region becomes one node on the tape. Its forward runs without recording; an
observer notes every tensor from outside the region that requires grad (parameters, earlier
activations), so gradients reach them although they are not arguments. Backward replays the
region with the random and autocast state of the first run (dropout masks and casts match),
differentiates the replay and lets it go at once, so only one region's activations are alive at
a time.

checkpoint_sequential runs a chain of functions in segments. Given a memory budget it chooses the
segments itself from the bytes each function saves for backward, measured once per input layout.
"""
import functools
import numbers
import weakref
from dataclasses import dataclass

from .. import backend, dtypes
from ..ops import _autocast
from ..tensor import Tensor
from . import graph
from .engine import grad as autograd_grad
from .function import Function, _check_finite, _needs_and_edges
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
    """The tape node of a checkpointed region. Its inputs: the tensors among the region's arguments
    (in the order they appear, keyword arguments last), then the outside tensors the region read."""

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors  # version-checked: the replay must see the values of the first run
        create_graph = state.grad_enabled
        stand_ins = [_stand_in(t, create_graph) for t in saved[: ctx.n_arguments]]
        external = saved[ctx.n_arguments :]
        args, kwargs = _replace_tensors(ctx.call, iter(stand_ins))
        with _replayed_rng(ctx.rng_states), _autocast_as(ctx.autocast), enable_grad():
            outputs = _tensor_leaves(ctx.fn(*args, **kwargs))
        pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
        if not pairs:
            return (None,) * len(ctx.next_edges)
        wrt = [s for s, need in zip(stand_ins, ctx.needs_input_grad) if need] + list(external)
        with _hooks_paused(external):
            found = autograd_grad(
                [o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=create_graph, allow_unused=True
            )
        found = iter(found)
        return tuple(next(found) if need else None for need in ctx.needs_input_grad)


class _Alias(Function):
    """The same values as a new tensor on the tape, so that a replay's gradient for it is a tensor of
    its own (an argument passed twice gets both) that stays linked to the original's history."""

    @staticmethod
    def forward(ctx, x):
        return x.data

    @staticmethod
    def backward(ctx, grad):
        return grad


def _stand_in(t, create_graph):
    """What the replay receives for argument t: a fresh leaf, or with create_graph (the gradients must
    themselves be differentiable) an alias linked to t's history."""
    if not t.requires_grad:
        return t
    return _Alias.apply(t) if create_graph else t.detach().requires_grad_()


def checkpoint(fn, *args, preserve_rng_state=True, **kwargs):
    """Run fn(*args, **kwargs) keeping only its inputs; recompute its activations during backward.

    Gradients equal those of the plain call bit for bit: the random state (dropout masks) and the
    autocast state of the first run are replayed. Tensors may be passed positionally, by keyword or
    inside lists, tuples and dicts; tensors fn reads from elsewhere (parameters, closures) get their
    gradients too. The result may be any structure of tensors and other values. Works with
    create_graph and nested checkpoints. A region that reads nothing requiring grad, or runs under
    no_grad, is a plain call with nothing recorded.
    """
    if not state.grad_enabled:
        return fn(*args, **kwargs)
    call = (args, kwargs)
    inputs = _tensor_leaves(call)
    rng_states = _rng_snapshot(inputs) if preserve_rng_state else None
    autocast = _autocast_snapshot()
    observer = _ExternalTensors(inputs)
    versions = [t._version[0] for t in inputs]
    prev_observer, state.observer = state.observer, observer
    state.grad_enabled = False
    try:
        with _autocast_as(autocast):
            result = fn(*args, **kwargs)
    finally:
        state.grad_enabled = True
        state.observer = prev_observer
    for t, version in zip(inputs, versions):
        if t._version[0] != version:
            raise RuntimeError(
                f"checkpoint: the region changed its input (shape {t.shape}) in place, which its recomputation "
                "in backward would do again; change a copy (x.clone()) inside the region, or do it outside"
            )

    outputs = _tensor_leaves(result)
    tape_inputs = inputs + observer.tensors
    needs, edges = _needs_and_edges(tape_inputs)
    if not outputs or not any(needs):
        return result  # nothing to differentiate: the region ran without recording

    ctx = Checkpoint.__new__(Checkpoint)
    ctx.fn, ctx.call, ctx.n_arguments = fn, call, len(inputs)
    ctx.rng_states, ctx.autocast = rng_states, autocast
    ctx.needs_input_grad = needs
    ctx.save_for_backward(*tape_inputs)
    datas = tuple(o.data for o in outputs)
    if state.anomaly:
        _check_finite(datas, "checkpoint (forward)")
    return _replace_tensors(result, iter(ctx._record(tape_inputs, edges, datas)))


# --- checkpoint_sequential ----------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentPlan:
    """How checkpoint_sequential splits a chain: `lengths` (functions per segment; all but the last
    segment are checkpointed), `peak_bytes` (the modelled most bytes held for backward at once) and
    `plain_bytes` (the same for the chain run without checkpointing)."""

    lengths: tuple
    peak_bytes: int
    plain_bytes: int


def checkpoint_sequential(functions, segments, x, *, preserve_rng_state=True, memory_budget=None):
    """Run `functions` (a Sequential or a list of callables) as a chain on x, in segments.

    Every segment but the last is checkpointed: only its input is kept and its activations are
    recomputed during backward, one segment at a time, each freed as soon as its backward is done.
    The last segment runs plainly: its activations would be alive when backward starts anyway (it
    is the first to be recomputed, with every segment input still held), so recomputing it would
    cost time and save no peak memory.

    segments: the number of segments (near-equal lengths, longer ones first, since a later segment
    is recomputed while more segment inputs are held); a sequence of segment lengths (e.g.
    plan_segments(...).lengths); or "auto", to let plan_segments choose.
    memory_budget (with "auto"): the bytes backward may hold at its peak beyond the resting
    parameters and optimizer state (see plan_segments for the model); without one, "auto" takes the
    split with the least peak. The plan's measurements are made on the first call for a given chain
    and input layout and reused after.
    """
    functions = list(functions)
    if not state.grad_enabled or not functions:
        return _run_chain(functions, x)
    lengths = _segment_lengths(functions, segments, x, memory_budget)
    start = 0
    for length in lengths[:-1]:
        chunk = functions[start : start + length]
        x = checkpoint(lambda inp, chunk=chunk: _run_chain(chunk, inp), x, preserve_rng_state=preserve_rng_state)
        start += length
    return _run_chain(functions[start:], x)


def plan_segments(functions, x, memory_budget=None):
    """The split of `functions` for checkpoint_sequential that recomputes least while its modelled peak
    memory stays within memory_budget bytes (None: the least peak any split reaches); a SegmentPlan.

    The model works from measured bytes: each function is run once on x's layout, recording, one at a
    time, to see which of its input, its output and other arrays it saves for backward and which
    parameters it reads (the random state is given back afterwards, so the real run draws the same
    numbers; other side effects, such as batch-norm running statistics, happen once more). The
    result is cached per chain and input layout. When backward reaches a checkpointed segment and
    recomputes it, memory holds the chain's input and output, the inputs of this and every earlier
    segment, all that the recomputed segment saves (its output included), the gradient arriving at
    its output and the next one being made, and the gradients of the parameters of all later
    functions; when backward starts, the same for the last, plain segment. The peak is the largest of
    these. Resting memory (parameters, optimizer state) is not counted. Only the functions before
    the last segment are recomputed, so among the splits that fit, the one with the longest last
    segment is chosen, then the one holding the fewest bytes of segment inputs. Raises ValueError
    when no split fits, naming the least budget that would.
    """
    functions = list(functions)
    if not functions:
        raise ValueError("plan_segments: there are no functions to split")
    profile = _cached_profile(functions, x)
    if memory_budget is None:
        return _cheapest_plan(profile, _least_peak(profile))
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Real):
        raise TypeError(f"plan_segments: memory_budget must be a number of bytes, got {type(memory_budget).__name__}")
    if not memory_budget > 0:
        raise ValueError(f"plan_segments: memory_budget must be positive, got {memory_budget}")
    plan = _cheapest_plan(profile, memory_budget)
    if plan is None:
        shapes = [t.shape for t in _tensor_leaves(x)]
        raise ValueError(
            f"plan_segments: no split of the {len(functions)} functions keeps the modelled peak memory within "
            f"{int(memory_budget)} bytes for input shape {shapes[0] if len(shapes) == 1 else shapes}; the least "
            f"achievable is {_least_peak(profile)} bytes (without checkpointing: {profile.plain_bytes()} bytes)"
        )
    return plan


def _segment_lengths(functions, segments, x, memory_budget):
    n = len(functions)
    if isinstance(segments, str):
        if segments != "auto":
            raise ValueError(f"checkpoint_sequential: segments must be a count, lengths or 'auto', got {segments!r}")
        return plan_segments(functions, x, memory_budget).lengths
    if memory_budget is not None:
        raise ValueError(f"checkpoint_sequential: memory_budget needs segments='auto', got segments={segments!r}")
    if isinstance(segments, numbers.Integral) and not isinstance(segments, bool):
        if segments < 1:
            raise ValueError(f"checkpoint_sequential: segments must be at least 1, got {segments}")
        count = min(int(segments), n)
        size, longer = divmod(n, count)
        return [size + 1] * longer + [size] * (count - longer)
    if not isinstance(segments, (tuple, list)):
        raise TypeError(
            f"checkpoint_sequential: segments must be an int, a sequence of segment lengths or 'auto', "
            f"got {type(segments).__name__}"
        )
    if not all(isinstance(k, numbers.Integral) and k >= 1 for k in segments) or sum(segments) != n:
        raise ValueError(
            f"checkpoint_sequential: segment lengths must be positive integers adding up to the {n} functions, "
            f"got {list(segments)}"
        )
    return list(segments)


def _run_chain(functions, x):
    for f in functions:
        x = f(x)
    return x


@dataclass(frozen=True)
class _Profile:
    """What a chain of n functions keeps for backward, in bytes. value_bytes[k]: the k-th value of the
    chain (x is value 0, function i maps value i to value i + 1). Per function i: how much of its input
    and of its output it saves, and what else (temporaries, masks, casts). grads_after[k]: the
    gradients of the parameters that functions k.. read (each parameter once), which exist by the time
    backward reaches value k."""

    value_bytes: tuple
    saved_input: tuple
    saved_output: tuple
    saved_other: tuple
    grads_after: tuple

    def segment_cost(self):
        """cost(a, p): the bytes held while the backward of functions a..p-1 starts, besides the
        segment inputs (see plan_segments): what the segment saves, its output (the chain's own output
        is held anyway, see held_always), the gradient arriving there and the next one being made, and
        the parameter gradients made so far."""
        other = _prefix_sums(self.saved_other)
        # an inner value k (a < k < p) is held if the function making it or the one reading it saves it
        inner = _prefix_sums(
            [0] + [max(self.saved_output[k - 1], self.saved_input[k]) for k in range(1, len(self.saved_input))]
        )
        values, grads = self.value_bytes, self.grads_after
        ends = [v + g for v, g in zip(values, grads)]
        ends[-1] -= values[-1]
        return lambda a, p: other[p] - other[a] + inner[p] - inner[a + 1] + ends[p] + 2 * values[p]

    def held_always(self):
        """The chain's input and output: the caller holds them throughout backward."""
        return self.value_bytes[0] + self.value_bytes[-1]

    def plain_bytes(self):
        return self.held_always() + self.segment_cost()(0, len(self.saved_input))


def _prefix_sums(items):
    sums = [0]
    for v in items:
        sums.append(sums[-1] + v)
    return sums


def _profiled(functions, x):
    """Measure what each function saves, running the chain one function at a time (so the probe holds one
    function's activations at most). The random state is given back afterwards."""
    values, saved_in, saved_out, saved_other, parameters = [_nbytes(x)], [], [], [], []
    h = x
    with _replayed_rng(_rng_snapshot(_tensor_leaves(x))), _autocast_as(_autocast_snapshot()), enable_grad():
        for f in functions:
            leaves = [t.detach().requires_grad_(dtypes.is_floating(t.dtype)) for t in _tensor_leaves(h)]
            out = f(_replace_tensors(h, iter(leaves)))
            outputs = _tensor_leaves(out)
            kept = graph.saved_arrays(*outputs)
            in_ids = {id(graph.memory_owner(t.data)) for t in leaves}
            out_ids = {id(graph.memory_owner(t.data)) for t in outputs}
            saved_in.append(sum(a.nbytes for k, a in kept.items() if k in in_ids))
            saved_out.append(sum(a.nbytes for k, a in kept.items() if k in out_ids and k not in in_ids))
            saved_other.append(sum(a.nbytes for k, a in kept.items() if k not in in_ids and k not in out_ids))
            leaf_ids = {id(t) for t in leaves}
            parameters.append({id(p): p.data.nbytes for p in graph.leaves(*outputs) if id(p) not in leaf_ids})
            h = _replace_tensors(out, iter([t.detach() for t in outputs]))
            values.append(_nbytes(h))
    grads_after, seen = [0], {}
    for used in reversed(parameters):
        seen.update(used)
        grads_after.append(sum(seen.values()))
    return _Profile(tuple(values), tuple(saved_in), tuple(saved_out), tuple(saved_other), tuple(reversed(grads_after)))


def _nbytes(value):
    owners = {id(o): o for o in (graph.memory_owner(t.data) for t in _tensor_leaves(value))}
    return sum(o.nbytes for o in owners.values())


@functools.lru_cache(maxsize=64)
def _cheapest_plan(profile, budget):
    """The split that fits the budget with the least recompute and, among those, the least peak; or None."""
    plan = _fitting_plan(profile, budget)
    if plan is None:
        return None
    # the least budget that still allows this long a last segment (a larger budget never shortens it)
    low, high = 0, plan.peak_bytes
    while low < high:
        mid = (low + high) // 2
        tighter = _fitting_plan(profile, mid)
        if tighter is not None and tighter.lengths[-1] == plan.lengths[-1]:
            high = mid
        else:
            low = mid + 1
    return _fitting_plan(profile, high)


def _fitting_plan(profile, budget):
    """A split that fits the budget with the longest last segment (the least recompute), or None.

    held[p]: the fewest bytes of segment inputs held up to and including a segment starting at
    function p, over the splits of functions 0..p-1 into checkpointed segments that each fit (fewer
    held bytes leave every later segment more room, so keeping only the least per p loses no plan)."""
    n = len(profile.saved_input)
    cost = profile.segment_cost()
    values = profile.value_bytes
    held = [profile.held_always()] + [None] * (n - 1)
    came_from = [None] * n
    for p in range(1, n):
        for a in range(p - 1, -1, -1):
            if cost(a, p) > budget:
                break  # a segment starting earlier only holds more
            if held[a] is None or held[a] + cost(a, p) > budget:
                continue
            candidate = (held[a] + values[p], came_from[a][1] + 1 if came_from[a] else 1)
            if held[p] is None or candidate < (held[p], came_from[p][1]):
                held[p], came_from[p] = candidate[0], (a, candidate[1])
    last = next((q for q in range(n) if held[q] is not None and held[q] + cost(q, n) <= budget), None)
    if last is None:
        return None
    starts = [last]
    while came_from[starts[-1]] is not None:
        starts.append(came_from[starts[-1]][0])
    starts.reverse()
    bounds = starts + [n]
    peak = max(held[a] + cost(a, p) for a, p in zip(bounds, bounds[1:]))
    return SegmentPlan(tuple(p - a for a, p in zip(bounds, bounds[1:])), peak, profile.plain_bytes())


@functools.lru_cache(maxsize=64)
def _least_peak(profile):
    """The smallest budget any split fits (feasibility grows with the budget: bisect)."""
    low, high = 0, profile.plain_bytes()  # the plain run always fits its own peak
    while low < high:
        mid = (low + high) // 2
        if _fitting_plan(profile, mid) is None:
            low = mid + 1
        else:
            high = mid
    return high


_PROFILES_KEPT = 32
_profiles = {}  # layout key -> (references to the functions, _Profile); oldest dropped first


def _cached_profile(functions, x):
    key = (
        tuple(_identity(f) for f in functions),
        tuple(getattr(f, "training", None) for f in functions),
        _shapes(x),
        _autocast_snapshot(),
    )
    hit = _profiles.get(key)
    if hit is None or not all(_identity(ref()) == _identity(f) for ref, f in zip(hit[0], functions)):
        hit = _profiles[key] = ([_reference(f) for f in functions], _profiled(functions, x))
        while len(_profiles) > _PROFILES_KEPT:
            del _profiles[next(iter(_profiles))]
    return hit[1]


def _identity(f):
    """What makes a function the same one again: a bound method (`module.forward`, a new object at
    every access) by its object and function."""
    if f is None:
        return None
    owner, func = getattr(f, "__self__", None), getattr(f, "__func__", None)
    return (id(owner), id(func)) if owner is not None and func is not None else id(f)


def _reference(f):
    """A weak reference where the function allows one, so the cache does not keep models alive."""
    try:
        return weakref.WeakMethod(f) if hasattr(f, "__self__") and hasattr(f, "__func__") else weakref.ref(f)
    except TypeError:
        return lambda: f


def _shapes(value):
    return tuple((t.shape, str(t.dtype), str(t.device)) for t in _tensor_leaves(value))


# --- structures of tensors, random and autocast state, hooks ------------------------------------


def _tensor_leaves(obj):
    """The tensors in obj: obj itself, or those inside its (nested) tuples, lists and dict values."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensor_leaves(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensor_leaves(item)]
    return []


def _replace_tensors(obj, replacements):
    """obj with its tensors (in _tensor_leaves order) replaced by the next items of `replacements`."""
    if isinstance(obj, Tensor):
        return next(replacements)
    if isinstance(obj, (tuple, list)):
        items = [_replace_tensors(item, replacements) for item in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        return type(obj)((k, _replace_tensors(v, replacements)) for k, v in obj.items())
    return obj


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


def _autocast_snapshot():
    s = _autocast.state
    return s.enabled, s.dtype, s.device_type


class _autocast_as:
    """Within the block autocast is as in the snapshot, with a cast cache of its own (casts made without
    grad in a region's forward must not serve recorded ops outside it); afterwards as before."""

    def __init__(self, snapshot):
        self.snapshot = snapshot

    def __enter__(self):
        s = _autocast.state
        self.previous = (s.enabled, s.dtype, s.device_type, s.cache)
        (s.enabled, s.dtype, s.device_type), s.cache = self.snapshot, {}

    def __exit__(self, *exc):
        s = _autocast.state
        s.enabled, s.dtype, s.device_type, s.cache = self.previous
        return False


class _hooks_paused:
    """The gradient hooks of outside tensors fire once, when the outer backward hands them their
    gradient, not also inside the replay's autograd.grad."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __enter__(self):
        self.paused = []
        for t in self.tensors:
            if t.grad_fn is None:
                if t._hooks:
                    self.paused.append((t, t._hooks))
                    t._hooks = None
            elif t.grad_fn._hooks and t._output_nr in t.grad_fn._hooks:
                self.paused.append((t, t.grad_fn._hooks.pop(t._output_nr)))

    def __exit__(self, *exc):
        for t, hooks in self.paused:
            if t.grad_fn is None:
                t._hooks = hooks
            else:
                t.grad_fn._hooks[t._output_nr] = hooks
        return False
