"""Shared checks for op tests: compare an op with its NumPy reference, forward and backward.

`check_op(case)` runs, for one table row:
  1. forward in float64 against the NumPy reference;
  2. gradcheck and gradgradcheck (float64 central differences), and the same gradients from the
     unrecorded backward (formulas run on raw arrays where the op allows) and the recorded one;
  3. a float32 run: the output stays float32 and every gradient has its input's shape and dtype.
`device` ("cpu" or "cuda") is where the inputs are made; the reference always runs on NumPy.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

import gradtensor as gt
from gradtensor.autograd import gradcheck, gradgradcheck


@dataclass
class OpCase:
    name: str
    fn: Callable  # takes gradtensor tensors
    ref: Optional[Callable]  # takes NumPy arrays; None when there is no NumPy counterpart
    shapes: Sequence[tuple]  # one shape per tensor input
    domain: tuple = (-2.0, 2.0)  # inputs are drawn uniformly from here...
    away_from: Optional[Sequence[float]] = None  # ...at least 0.1 away from these points (kinks)
    second_order: bool = True
    atol: float = 1e-5
    rtol: float = 1e-3
    seed: int = 0
    grad_inputs: Optional[Sequence[int]] = None  # which inputs require grad (default: all)
    extra: dict = field(default_factory=dict)

    def __str__(self):
        return f"{self.name}{list(self.shapes)}"


def make_inputs(case, dtype=np.float64):
    rng = np.random.default_rng(case.seed)
    arrays = []
    for shape in case.shapes:
        a = rng.uniform(*case.domain, size=shape)
        if case.away_from:
            for p in case.away_from:
                near = np.abs(a - p) < 0.1
                a = np.where(near, a + np.where(a >= p, 0.2, -0.2), a)
        arrays.append(np.asarray(a, dtype=dtype))
    return arrays


def make_tensors(case, dtype, device):
    arrays = make_inputs(case, dtype)
    grad_idx = range(len(arrays)) if case.grad_inputs is None else case.grad_inputs
    return arrays, [gt.tensor(a, device=device, requires_grad=i in grad_idx) for i, a in enumerate(arrays)]


def check_op(case, device="cpu"):
    arrays, tensors = make_tensors(case, np.float64, device)

    out = case.fn(*tensors)
    if case.ref is not None:
        expected = case.ref(*[a.copy() for a in arrays])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        exps = expected if isinstance(expected, (tuple, list)) else (expected,)
        assert len(outs) == len(exps), f"{case}: {len(outs)} outputs, reference gave {len(exps)}"
        for o, e in zip(outs, exps):
            e = np.asarray(e)
            assert o.device == gt.device(device), f"{case}: output on {o.device}, inputs on {device}"
            assert o.shape == e.shape, f"{case}: forward shape {o.shape}, reference {e.shape}"
            np.testing.assert_allclose(o.numpy(), e, rtol=1e-7, atol=1e-10, err_msg=str(case))

    assert gradcheck(case.fn, tensors, atol=case.atol, rtol=case.rtol)
    check_backward_paths_agree(case, tensors)
    if case.second_order:
        assert gradgradcheck(case.fn, tensors, atol=case.atol, rtol=case.rtol)

    check_float32(case, device)


def check_backward_paths_agree(case, tensors):
    """Gradients without create_graph (arrays through the engine) equal those with it (Tensors)."""
    wrt = [t for t in tensors if t.requires_grad]
    out = case.fn(*tensors)
    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o.requires_grad]
    if not wrt or not outs:
        return
    rng = np.random.default_rng(1)
    seeds = [gt.tensor(rng.standard_normal(o.shape), device=o.device) for o in outs]
    plain = gt.autograd.grad(outs, wrt, seeds, retain_graph=True, allow_unused=True)
    recorded = gt.autograd.grad(outs, wrt, seeds, create_graph=True, allow_unused=True)
    for i, (p, r) in enumerate(zip(plain, recorded)):
        assert (p is None) == (r is None), f"{case}: input {i} has a gradient on one backward path only"
        if p is not None:
            got, want = (p.dtype, p.shape), (r.dtype, r.shape)
            assert got == want, f"{case}: input {i}: gradient dtype/shape {got} on one path, {want} on the other"
            np.testing.assert_allclose(p.numpy(), r.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"{case}: input {i}")


def check_float32(case, device="cpu"):
    _, tensors = make_tensors(case, np.float32, device)
    out = case.fn(*tensors)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if o.dtype.kind == "f":
            assert o.dtype == np.float32, f"{case}: float32 inputs gave a {o.dtype} output"
    total = sum((o * o).sum() for o in outs if o.requires_grad)
    if not isinstance(total, gt.Tensor):
        return
    total.backward()
    for t in tensors:
        if t.requires_grad and t.grad is not None:
            assert t.grad.shape == t.shape, f"{case}: grad shape {t.grad.shape} != input shape {t.shape}"
            assert t.grad.dtype == t.dtype, f"{case}: grad dtype {t.grad.dtype} != input dtype {t.dtype}"
            assert t.grad.device == t.device, f"{case}: grad on {t.grad.device}, input on {t.device}"
