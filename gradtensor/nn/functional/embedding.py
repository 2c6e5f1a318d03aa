"""embedding (a row gather whose gradient scatter-adds repeated indices) and one_hot."""
from ... import backend, dtypes, ops
from ...autograd.function import Function
from ...tensor import Tensor
from ._util import check_tensor


def _index_array(indices, name):
    data = indices.data if isinstance(indices, Tensor) else indices
    if not hasattr(data, "dtype") or data.dtype.kind not in "iu":
        kind = getattr(data, "dtype", type(data).__name__)
        raise TypeError(f"{name}: expected integer indices, got {kind}")
    return data


class _ScaleGrad(Function):
    """Identity forward; the gradient is multiplied by a constant array (0 masks it)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.data

    @staticmethod
    def backward(ctx, g):
        return g * Tensor(ctx.scale)


def _renorm_rows(weight, idx, max_norm, norm_type):
    """Rescale, in place, the referenced rows whose norm exceeds max_norm (as PyTorch's embedding_renorm_)."""
    mod = backend.xp(weight.data)
    rows = idx.reshape(-1)  # not unique()'d (a host read on CuPy): a repeated row is written the same twice
    norms = mod.linalg.norm(weight.data[rows], ord=norm_type, axis=1)  # (any p, inf included)
    scale = mod.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(weight.dtype)
    weight.data[rows] *= scale.reshape(-1, 1)
    weight._bump_version()


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of weight (num_embeddings, dim) picked by integer indices: output indices.shape + (dim,)."""
    idx = _index_array(input, "embedding")
    check_tensor(weight, "embedding", "weight")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape {weight.shape}")
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported; use sparse=False")
    num = weight.shape[0]
    if backend.host_check(((idx < 0) | (idx >= num)).any()):
        raise IndexError(
            f"embedding: indices must be in [0, {num}) for weight of shape {weight.shape}, "
            f"got values in [{int(idx.min())}, {int(idx.max())}]"
        )
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"embedding: padding_idx {padding_idx} is out of range for {num} embeddings")
        padding_idx %= num
    if max_norm is not None and idx.size:
        _renorm_rows(weight, idx, max_norm, norm_type)

    out = ops.take(weight, Tensor(idx), axis=0)
    if out.requires_grad and (padding_idx is not None or scale_grad_by_freq):
        out = _ScaleGrad.apply(out, _gradient_scale(idx, num, padding_idx, scale_grad_by_freq, weight.dtype))
    return out


def _gradient_scale(idx, num, padding_idx, scale_grad_by_freq, dtype):
    """Per looked-up row, (idx.shape + (1,)): 0 for the padding row, else 1 / its count if scale_grad_by_freq."""
    mod = backend.xp(idx)
    scale = mod.ones(idx.shape, dtype=dtype)
    if scale_grad_by_freq:  # counts by scatter-add: CuPy's bincount reads the indices' range on the host
        counts = mod.zeros(num, dtype=dtype)
        backend.scatter_add(counts, idx.reshape(-1), mod.ones(idx.size, dtype=dtype))
        scale = scale / counts[idx]
    if padding_idx is not None:
        scale = mod.where(idx == padding_idx, 0, scale)
    return scale.astype(dtype).reshape(idx.shape + (1,))


def one_hot(tensor, num_classes=-1):
    """int64 one-hot encoding: output tensor.shape + (num_classes,); -1 infers max + 1."""
    idx = _index_array(tensor, "one_hot")
    mod = backend.xp(idx)
    if num_classes == -1:
        if idx.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = int(backend.host_read(idx.max(), "one_hot(num_classes=-1)")) + 1
    if backend.host_check(((idx < 0) | (idx >= num_classes)).any()):
        raise ValueError(
            f"one_hot: class values must be in [0, {num_classes}), got values in [{int(idx.min())}, {int(idx.max())}]"
        )
    return Tensor((idx[..., None] == mod.arange(num_classes)).astype(dtypes.int64))
