"""Linear algebra: matmul, dot, outer, tensordot, einsum; batched and broadcasting as NumPy."""
import math
import numbers
import string

from .. import backend, dtypes
from ..autograd.grad_mode import state as grad_state
from ..autograd.function import Function
from ..tensor import Tensor
from ._autocast import cast_inputs
from ._util import as_tensor_like, binary_operands, matmul_of, normalize_axis, sum_to
from .elementwise import mul

__all__ = ["matmul", "dot", "outer", "tensordot", "einsum"]


def _operand(x, like):
    """A Tensor from an operand; Python numbers follow gradtensor's dtype inference (floats: default float)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, numbers.Number):
        return Tensor(backend.xp(like.data).asarray(x, dtype=dtypes.infer_dtype(x)))
    return as_tensor_like(x, like)


def _operands(operands, op):
    """The operands as Tensors, in the dtype autocast gives op (low precision for these products)."""
    like = next((x for x in operands if isinstance(x, Tensor)), None)
    if like is None:
        names = ", ".join(type(x).__name__ for x in operands)
        raise TypeError(f"{op}: expected at least one Tensor operand, got {names}")
    return cast_inputs(op, *[_operand(x, like) for x in operands])


def _broadcast_shapes(shape_a, shape_b):
    """NumPy's broadcast of two shapes, or None when they do not broadcast."""
    out = []
    for i in range(1, max(len(shape_a), len(shape_b)) + 1):
        n_a = shape_a[-i] if i <= len(shape_a) else 1
        n_b = shape_b[-i] if i <= len(shape_b) else 1
        if n_a != n_b and 1 not in (n_a, n_b):
            return None
        out.append(n_b if n_a == 1 else n_a)
    return tuple(reversed(out))


# --- matmul ---------------------------------------------------------------------------------------


class Matmul(Function):
    backward_on_arrays = True

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad  # each operand is kept only for the other's gradient
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        ctx.shapes = a.shape, b.shape
        return backend.matmul(a.data, b.data)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        need_a, need_b = ctx.needs_input_grad
        a_shape, b_shape = ctx.shapes
        # NumPy's 1-D rules: a vector is a row on the left and a column on the right, and that axis
        # is dropped from the result; put it back so that every operand is a (batch of) matrix.
        a2_shape = (1, a_shape[0]) if len(a_shape) == 1 else a_shape
        b2_shape = (b_shape[0], 1) if len(b_shape) == 1 else b_shape
        g2 = g.reshape(_broadcast_shapes(a2_shape[:-2], b2_shape[:-2]) + (a2_shape[-2], b2_shape[-1]))
        ga = gb = None
        if need_a:
            b2 = b.reshape(b2_shape)
            ga = sum_to(matmul_of(g2, b2.swapaxes(-1, -2)), a2_shape).reshape(a_shape)
        if need_b:
            a2 = a.reshape(a2_shape)
            if len(b2_shape) == 2 and a2.ndim > 2:
                # b is shared by the whole batch: fold the batch into the contraction (one GEMM, no
                # (batch, k, n) temporary to sum; the weight gradient of a linear layer on sequences)
                rows = math.prod(a2.shape[:-1])
                gb = matmul_of(a2.reshape(rows, a2.shape[-1]).T, g2.reshape(rows, g2.shape[-1]))
            else:
                gb = sum_to(matmul_of(a2.swapaxes(-1, -2), g2), b2_shape)
            gb = gb.reshape(b_shape)
        return ga, gb


def _check_aligned(shape_a, shape_b, op):
    """The last axis of a against the second-to-last of b (the only one of a 1-D b)."""
    k_a = shape_a[-1]
    k_b = shape_b[-2] if len(shape_b) > 1 else shape_b[0]
    if k_a != k_b:
        raise ValueError(f"{op}: shapes {shape_a} and {shape_b} are not aligned ({k_a} != {k_b})")


def _check_matmul_shapes(shape_a, shape_b):
    if not shape_a or not shape_b:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {shape_a} and {shape_b}")
    _check_aligned(shape_a, shape_b, "matmul")
    if _broadcast_shapes(shape_a[:-2], shape_b[:-2]) is None:
        raise ValueError(
            f"matmul: batch dimensions {shape_a[:-2]} and {shape_b[:-2]} of shapes {shape_a} and {shape_b} "
            "cannot be broadcast together"
        )


def matmul(a, b):
    """Matrix product as numpy.matmul: batched with broadcasting; a 1-D operand is a vector."""
    a, b = _operands((a, b), "matmul")
    _check_matmul_shapes(a.shape, b.shape)
    return Matmul.apply(a, b)


def dot(a, b):
    """numpy.dot: products with a 0-d operand; 1-D.1-D inner; matmul for 2-D; otherwise the last axis
    of a contracts with the second-to-last of b (the last when b is 1-D)."""
    if isinstance(a, numbers.Number) or isinstance(b, numbers.Number):  # stays a weak scalar: keeps the dtype
        return mul(*binary_operands(a, b, "dot"))
    a, b = _operands((a, b), "dot")
    if a.ndim == 0 or b.ndim == 0:
        return mul(a, b)
    _check_aligned(a.shape, b.shape, "dot")
    if b.ndim <= 2 or a.ndim == 1:  # here dot and matmul agree
        return Matmul.apply(a, b)
    return _tensordot(a, b, (a.ndim - 1,), (b.ndim - 2,))


def outer(a, b):
    """numpy.outer: out[i, j] = a.flat[i] * b.flat[j]."""
    a, b = _operands((a, b), "outer")
    return mul(a.reshape(a.size, 1), b.reshape(1, b.size))


# --- tensordot ------------------------------------------------------------------------------------


def _tensordot_axes(a, b, axes):
    if isinstance(axes, numbers.Integral):
        if not 0 <= axes <= min(a.ndim, b.ndim):
            raise ValueError(
                f"tensordot: axes={axes} must be between 0 and the smaller rank of shapes {a.shape} and {b.shape}"
            )
        return tuple(range(a.ndim - axes, a.ndim)), tuple(range(axes))
    try:
        axes_a, axes_b = axes
    except (TypeError, ValueError):
        raise ValueError(f"tensordot: axes must be an int or a pair of axis sequences, got {axes!r}") from None
    axes_a = (axes_a,) if isinstance(axes_a, numbers.Integral) else tuple(axes_a)
    axes_b = (axes_b,) if isinstance(axes_b, numbers.Integral) else tuple(axes_b)
    if len(axes_a) != len(axes_b):
        raise ValueError(f"tensordot: {len(axes_a)} axes of a {axes_a} but {len(axes_b)} axes of b {axes_b}")
    axes_a = tuple(normalize_axis(int(i), a.ndim, "tensordot") for i in axes_a)
    axes_b = tuple(normalize_axis(int(i), b.ndim, "tensordot") for i in axes_b)
    for axes_x, x in ((axes_a, a), (axes_b, b)):
        if len(set(axes_x)) != len(axes_x):
            raise ValueError(f"tensordot: repeated axis in {axes_x} for shape {x.shape}")
    return axes_a, axes_b


def _tensordot(a, b, axes_a, axes_b):
    """Contract axes_a of a with axes_b of b as one matrix product (what numpy.tensordot does)."""
    for i, j in zip(axes_a, axes_b):
        if a.shape[i] != b.shape[j]:
            raise ValueError(
                f"tensordot: shapes {a.shape} and {b.shape} are not aligned: axis {i} of a has size "
                f"{a.shape[i]} but axis {j} of b has size {b.shape[j]}"
            )
    free_a = [i for i in range(a.ndim) if i not in axes_a]
    free_b = [j for j in range(b.ndim) if j not in axes_b]
    out_shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[j] for j in free_b)
    inner = math.prod(a.shape[i] for i in axes_a)
    a2 = _permuted(a, free_a + list(axes_a)).reshape(math.prod(a.shape[i] for i in free_a), inner)
    b2 = _permuted(b, list(axes_b) + free_b).reshape(inner, math.prod(b.shape[j] for j in free_b))
    return Matmul.apply(a2, b2).reshape(out_shape)


def _permuted(x, axes):
    return x if axes == list(range(x.ndim)) else x.transpose(tuple(axes))


def tensordot(a, b, axes=2):
    """numpy.tensordot: axes=N contracts the last N axes of a with the first N of b; a pair of
    sequences names the axes explicitly. The result has a's free axes, then b's."""
    a, b = _operands((a, b), "tensordot")
    return _tensordot(a, b, *_tensordot_axes(a, b, axes))


# --- einsum ---------------------------------------------------------------------------------------

_LABELS = string.ascii_letters


class Einsum(Function):
    """einsum over explicit labels (no ellipsis, no broadcasting: `einsum` removes both first)."""

    @staticmethod
    def forward(ctx, spec, *operands):
        ctx.spec = spec
        ctx.save_for_backward(*operands)
        terms, output = spec
        arrays = [op.data for op in operands]
        return backend.einsum(",".join(terms) + "->" + output, *arrays)

    @staticmethod
    def backward(ctx, g):
        operands = ctx.saved_tensors
        return (None,) + tuple(
            _einsum_operand_grad(k, g, operands, *ctx.spec) if need else None
            for k, need in enumerate(ctx.needs_input_grad[1:])
        )


def _einsum_operand_grad(k, g, operands, terms, output):
    """The gradient of operand k: the einsum of g with the other operands, back onto operand k's labels."""
    term = terms[k]
    sizes = dict(zip(term, operands[k].shape))
    source_terms = (output,) + terms[:k] + terms[k + 1:]
    sources = (g,) + operands[:k] + operands[k + 1:]
    available = set("".join(source_terms))
    labels = "".join(dict.fromkeys(term))  # each label once, in order
    reachable = "".join(label for label in labels if label in available)
    grad = Einsum.apply((source_terms, reachable), *sources)
    if reachable != labels:  # labels summed within operand k alone: the gradient is constant along them
        grad = grad.reshape(tuple(sizes[label] if label in available else 1 for label in labels))
        grad = grad.broadcast_to(tuple(sizes[label] for label in labels))
    if labels != term:  # a repeated label takes a diagonal: put the gradient back onto it
        grad = _onto_diagonals(grad, labels, term, sizes)
    return grad


def _onto_diagonals(grad, labels, term, sizes):
    """Embed grad (over `labels`) into the shape of `term`, whose repeated labels are diagonals."""
    mod = backend.xp(grad.data)
    fresh = iter(label for label in _LABELS if label not in term)
    out_term, eye_terms, eyes, seen = [], [], [], set()
    for label in term:
        if label in seen:  # a fresh label tied to the first occurrence by an identity matrix
            new = next(fresh)
            out_term.append(new)
            eye_terms.append(label + new)
            eyes.append(Tensor(mod.eye(sizes[label], dtype=grad.dtype)))
        else:
            seen.add(label)
            out_term.append(label)
    return Einsum.apply(((labels,) + tuple(eye_terms), "".join(out_term)), grad, *eyes)


def _parse_einsum(subscripts, shapes):
    """Explicit label strings for every operand and the output, the ellipsis replaced by unused labels."""
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    input_terms = inputs.split(",")
    if len(input_terms) != len(shapes):
        raise ValueError(
            f"einsum: subscripts {subscripts!r} name {len(input_terms)} operands but {len(shapes)} were given"
        )
    parts = [_split_ellipsis(term, subscripts) for term in input_terms]
    ellipsis_ndims = []
    for i, ((head, has_ellipsis, tail), shape) in enumerate(zip(parts, shapes)):
        named = len(head) + len(tail)
        if named > len(shape) or (named != len(shape) and not has_ellipsis):
            raise ValueError(
                f"einsum: operand {i} has shape {shape} ({len(shape)} dimensions) but its subscripts "
                f"{input_terms[i]!r} name {named}"
            )
        ellipsis_ndims.append(len(shape) - named)
    unused = [label for label in _LABELS if label not in spec]
    if max(ellipsis_ndims, default=0) > len(unused):
        raise ValueError(f"einsum: too many dimensions under '...' in {subscripts!r}")
    ellipsis = "".join(unused[: max(ellipsis_ndims, default=0)])
    # operands with fewer ellipsis dimensions broadcast against the trailing ones, as NumPy
    terms = tuple(
        head + ellipsis[len(ellipsis) - n:] + tail for (head, _, tail), n in zip(parts, ellipsis_ndims)
    )
    if arrow:
        head, has_ellipsis, tail = _split_ellipsis(output, subscripts)
        if not has_ellipsis and any(ellipsis_ndims):
            raise ValueError(f"einsum: the output of {subscripts!r} needs '...' for the operands' ellipsis dimensions")
        out = head + (ellipsis if has_ellipsis else "") + tail
        for label in out:
            if out.count(label) > 1 or label not in "".join(terms):
                raise ValueError(
                    f"einsum: output label {label!r} of {subscripts!r} must appear once and in some operand"
                )
    else:  # implicit mode: the ellipsis, then the labels that appear once, in alphabetical order
        named = "".join(head + tail for head, _, tail in parts)
        out = ellipsis + "".join(sorted(label for label in set(named) if named.count(label) == 1))
    return terms, out


def _split_ellipsis(term, subscripts):
    head, dots, tail = term.partition("...")
    if any(c not in _LABELS for c in head + tail):
        raise ValueError(f"einsum: invalid subscripts {subscripts!r}: use letters, ',', '->' and '...'")
    return head, bool(dots), tail


def _drop_broadcast_dims(terms, operands, shapes):
    """Sizes of the labels; size-1 dimensions broadcast against a larger size are reshaped away."""
    sizes = {}
    for i, (term, op) in enumerate(zip(terms, operands)):
        for label, n in zip(term, op.shape):
            in_operand = {m for lab, m in zip(term, op.shape) if lab == label}
            if len(in_operand) > 1:
                raise ValueError(
                    f"einsum: label {label!r} repeats in operand {i} with different sizes (shape {op.shape})"
                )
            if n != 1:
                if sizes.get(label, n) != n:
                    raise ValueError(
                        f"einsum: label {label!r} has sizes {sizes[label]} and {n} in operands of shapes {shapes}"
                    )
                sizes[label] = n
    kept_terms, kept_operands = [], []
    for term, op in zip(terms, operands):
        keep = [j for j, (label, n) in enumerate(zip(term, op.shape)) if n == sizes.get(label, 1)]
        if len(keep) < len(term):
            op = op.reshape(tuple(op.shape[j] for j in keep))
            term = "".join(term[j] for j in keep)
        kept_terms.append(term)
        kept_operands.append(op)
    return tuple(kept_terms), kept_operands


def einsum(subscripts, *operands):
    """numpy.einsum (string subscripts): implicit and explicit output, '...' with broadcasting,
    repeated labels (diagonals, traces) and labels summed within one operand; differentiable."""
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a string such as 'ij,jk->ik', got {type(subscripts).__name__}")
    if not operands:
        raise ValueError("einsum: needs at least one operand")
    operands = _operands(operands, "einsum")
    shapes = tuple(op.shape for op in operands)
    terms, output = _parse_einsum(subscripts, shapes)
    terms, operands = _drop_broadcast_dims(terms, operands, shapes)
    return Einsum.apply((terms, output), *operands)


# --- singular values (the matrix norms 2, -2 and 'nuc') ----------------------------------------------
# Singular vectors carry a sign per pair that no input fixes, so only what does not depend on it (the
# singular values, and functions of them) is differentiable in a meaningful way: the SVD stays internal.


def _svd_factors(ctx, x):
    """U, S, Vh of x as Tensors: under create_graph recomputed on the tape (so the gradient formula is
    itself differentiable, to any order), else the forward's arrays."""
    if grad_state.grad_enabled:
        return _Svd.apply(x)
    return tuple(Tensor(a) for a in ctx.factors)


class _SingularValues(Function):
    """S of the reduced SVD of a stack of matrices (..., m, n): (..., min(m, n)), descending.
    dS = U^T dA V on the diagonal, so the gradient is U diag(g) Vh."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.factors = backend.svd(x.data)
        return ctx.factors[1]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        u, _, vh = _svd_factors(ctx, x)
        return u @ (g[..., :, None] * vh)


class _Svd(Function):
    """The reduced SVD (U, S, Vh) with the full gradient (PyTorch's linalg_svd_backward, real case):
    U [skew(U^T gU) / E S + S skew(V^T gV) / E + diag(gS)] Vh + (I - U U^T) gU S^-1 Vh
    + U S^-1 gVh (I - V Vh), E_ij = s_j^2 - s_i^2 (1 on the diagonal). Repeated singular values make
    the vectors' part undefined (inf), as in PyTorch."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.factors = backend.svd(x.data)
        return ctx.factors

    @staticmethod
    def backward(ctx, g_u, g_s, g_vh):
        (x,) = ctx.saved_tensors
        u, s, vh = _svd_factors(ctx, x)
        k = s.shape[-1]
        eye = Tensor(backend.xp(s.data).eye(k, dtype=s.dtype))
        squares = s * s
        gap = (squares[..., None, :] - squares[..., :, None]) + eye  # E, with 1 on the diagonal
        u_g = u.swapaxes(-1, -2) @ g_u
        vh_g = vh @ g_vh.swapaxes(-1, -2)  # V^T gV
        middle = (g_s[..., :, None] * eye + ((u_g - u_g.swapaxes(-1, -2)) / gap) * s[..., None, :]
                  + s[..., :, None] * ((vh_g - vh_g.swapaxes(-1, -2)) / gap))
        grad = u @ middle @ vh
        if u.shape[-2] > k:  # the part of gU outside U's columns
            grad = grad + ((g_u - u @ u_g) / s[..., None, :]) @ vh
        if vh.shape[-1] > k:  # and of gVh outside Vh's rows
            grad = grad + u @ ((g_vh - vh_g.swapaxes(-1, -2) @ vh) / s[..., :, None])
        return grad


def singular_values(x):
    """The singular values of each matrix in x (..., m, n), descending: (..., min(m, n))."""
    if x.ndim < 2:
        raise ValueError(f"singular_values: expected a matrix or a stack of them, got shape {x.shape}")
    return _SingularValues.apply(x)
