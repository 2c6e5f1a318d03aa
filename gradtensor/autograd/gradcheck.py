"""Finite-difference checks of analytic gradients (float64 central differences)."""
import numpy as np

from .. import backend
from ..tensor import Tensor
from .engine import grad as autograd_grad


class GradcheckError(RuntimeError):
    pass


def _as_tuple(x):
    return x if isinstance(x, tuple) else tuple(x) if isinstance(x, list) else (x,)


def _outputs(fn, inputs):
    out = _as_tuple(fn(*inputs))
    return [o for o in out if isinstance(o, Tensor) and o.dtype.kind == "f"]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare the gradients backward computes for fn(*inputs) with central differences.

    Every floating input that requires grad is checked against every floating output. Raises
    GradcheckError naming the worst element, or returns True.
    """
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck: no input requires grad")
    for i in diff_idx:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64 inputs")

    outputs = _outputs(fn, inputs)
    for k, out in enumerate(outputs):
        analytic = _analytic_jacobian(out, [inputs[i] for i in diff_idx], k)
        numeric = _numeric_jacobian(fn, inputs, diff_idx, k, out.size, eps)
        for j, i in enumerate(diff_idx):
            _compare(analytic[j], numeric[j], atol, rtol, k, i, out.shape, inputs[i].shape)
    return True


def _analytic_jacobian(out, wrt, k):
    """Rows: output elements; one backward per element (fine at test sizes)."""
    xp = backend.xp(out.data)
    jac = [np.zeros((out.size, t.size)) for t in wrt]
    if not out.requires_grad:
        return jac
    for r in range(out.size):
        seed = xp.zeros(out.size, dtype=out.dtype)
        seed[r] = 1
        grads = autograd_grad(out, wrt, Tensor(seed.reshape(out.shape)), retain_graph=True, allow_unused=True)
        for j, (g, t) in enumerate(zip(grads, wrt)):
            if g is None:
                continue
            if g.shape != t.shape or g.dtype != t.dtype:
                raise GradcheckError(
                    f"gradcheck: gradient of output {k} w.r.t. an input of shape {t.shape} ({t.dtype}) has "
                    f"shape {g.shape} ({g.dtype})"
                )
            jac[j][r] = backend.to_host(g.data).reshape(-1)
    return jac


def _numeric_jacobian(fn, inputs, diff_idx, k, out_size, eps):
    jac = []
    # grad recording stays on: gradgradcheck differentiates inside the function
    for i in diff_idx:
        t = inputs[i]
        if not t.data.flags.c_contiguous:
            t.data = t.data.copy()
        flat = t.data.reshape(-1)  # a view: perturb in place, restore after
        cols = np.zeros((out_size, t.size))
        for c in range(t.size):
            orig = flat[c].item()
            flat[c] = orig + eps
            plus = backend.to_host(_outputs(fn, inputs)[k].data).reshape(-1).astype(np.float64)
            flat[c] = orig - eps
            minus = backend.to_host(_outputs(fn, inputs)[k].data).reshape(-1).astype(np.float64)
            flat[c] = orig
            cols[:, c] = (plus - minus) / (2 * eps)
        jac.append(cols)
    return jac


def _compare(analytic, numeric, atol, rtol, k, i, out_shape, in_shape):
    err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if err.size and err.max() > 0:
        r, c = np.unravel_index(np.argmax(err), err.shape)
        out_idx = np.unravel_index(r, out_shape) if out_shape else ()
        in_idx = np.unravel_index(c, in_shape) if in_shape else ()
        raise GradcheckError(
            f"gradcheck: d output[{k}]{tuple(int(x) for x in out_idx)} / d input[{i}]{tuple(int(x) for x in in_idx)}: "
            f"analytic {analytic[r, c]:.8g} vs numerical {numeric[r, c]:.8g} "
            f"(atol={atol}, rtol={rtol}); output shape {out_shape}, input shape {in_shape}"
        )


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check second derivatives: gradcheck of (inputs, v) -> vjp(fn, inputs, v) with create_graph=True."""
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    outputs = _outputs(fn, inputs)
    outputs = [o for o in outputs if o.requires_grad]
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = [
            Tensor(backend.to_device(rng.standard_normal(o.shape), o.device), requires_grad=True)
            for o in outputs
        ]
    n_in = len(inputs)

    def vjp_fn(*args):
        ins, vs = args[:n_in], args[n_in:]
        outs = [o for o in _outputs(fn, ins) if o.requires_grad]
        if not outs:
            return ()
        grads = autograd_grad(
            outs, [ins[i] for i in diff_idx], vs, create_graph=True, allow_unused=True
        )
        return tuple(g for g in grads if g is not None)

    return gradcheck(vjp_fn, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol, rtol=rtol)
