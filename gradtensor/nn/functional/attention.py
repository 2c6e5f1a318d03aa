"""scaled_dot_product_attention: softmax(q k^T * scale + mask) v, composed of differentiable ops."""
import math

from ... import backend, dtypes, ops
from ...tensor import Tensor
from ._util import broadcast_shape, check_floating, check_tensor
from .activation import softmax
from .dropout import dropout
from ...ops._autocast import autocast_op

_NAME = "scaled_dot_product_attention"


def _masked_softmax(scores):
    """Softmax over the last axis where rows with nothing to attend to (all -inf) give zeros, not NaN."""
    dead = (scores.data == -math.inf).all(axis=-1, keepdims=True)
    # a CUDA graph cannot read the check back: it always takes the masked path, right in both cases
    if not backend.capturing() and not backend.host_check(dead.any()):
        return softmax(scores, axis=-1)
    dead = Tensor(dead)
    # the dead rows are replaced before softmax so that neither its value nor its gradient sees NaN
    return ops.where(dead, 0.0, softmax(ops.where(dead, 0.0, scores), axis=-1))


@autocast_op("scaled_dot_product_attention")
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    """Attention over (..., L, E) queries, (..., S, E) keys and (..., S, Ev) values.

    attn_mask broadcasts to (..., L, S): a bool mask is True where a query may attend, a float mask is
    added to the scores. is_causal lets query i attend keys 0..i. scale defaults to 1 / sqrt(E).
    dropout_p drops attention weights (always, as PyTorch: pass 0.0 in evaluation).
    """
    for what, t in (("query", query), ("key", key), ("value", value)):
        check_floating(t, _NAME, what)
        if t.ndim < 2:
            raise ValueError(f"{_NAME}: {what} must be at least 2-D (..., length, features), got shape {t.shape}")
    if key.shape[-1] != query.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"{_NAME}: query {query.shape}, key {key.shape} and value {value.shape} do not fit: query and key need "
            "the same feature size, key and value the same length"
        )
    if enable_gqa:
        heads_q, heads_kv = (query.shape[-3], key.shape[-3]) if min(query.ndim, key.ndim, value.ndim) >= 3 else (0, 0)
        if not heads_kv or heads_q % heads_kv or value.shape[-3] != heads_kv:
            raise ValueError(f"{_NAME}: with enable_gqa, query heads must be a multiple of key/value heads, got "
                             f"query {query.shape}, key {key.shape}, value {value.shape}")
        groups = heads_q // heads_kv  # each key/value head serves `groups` consecutive query heads
        key, value = ops.repeat(key, groups, axis=-3), ops.repeat(value, groups, axis=-3)
    length_q, length_k = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.mT) * scale
    mod = backend.xp(scores.data)
    if is_causal:
        if attn_mask is not None:
            raise ValueError(f"{_NAME}: pass either attn_mask or is_causal=True, not both")
        attn_mask = Tensor(mod.tril(mod.ones((length_q, length_k), dtype=dtypes.bool)))
    if attn_mask is None:
        probs = softmax(scores, axis=-1)
    else:
        check_tensor(attn_mask, _NAME, "attn_mask")
        if broadcast_shape(attn_mask.shape, scores.shape) != scores.shape:
            raise ValueError(
                f"{_NAME}: attn_mask of shape {attn_mask.shape} does not broadcast to the scores' shape {scores.shape}"
            )
        if attn_mask.dtype == dtypes.bool:
            scores = ops.where(attn_mask, scores, -math.inf)
        elif not dtypes.is_floating(attn_mask.dtype):
            raise TypeError(f"{_NAME}: attn_mask must be bool or floating, got dtype {attn_mask.dtype}")
        else:
            scores = scores + attn_mask.astype(scores.dtype)
        # a causal row always attends its own key, so only a user's mask can empty a row (finding out
        # takes a pass over the scores and, on the GPU, a host read)
        probs = softmax(scores, axis=-1) if is_causal else _masked_softmax(scores)
    if dropout_p > 0:
        probs = dropout(probs, dropout_p)
    return probs @ value
