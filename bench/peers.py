"""Hand-written peers: every forward, backward and update written out with array operations, the way
an autograd engine would compute them, for NumPy or CuPy (`xp`, the array module of the arrays).

The same code runs on the CPU (NumPy) and the GPU (CuPy), so tests/test_bench_compare.py checks it
here against gradtensor's gradients. Parameters are lists of float32 arrays in the order of
bench.workloads' initialisers; each step updates them in place and returns the loss.

Mixed precision (`compute_dtype=float16`): products (matmuls and their bias adds) take float16
operands as autocast does, layer norm, softmax, losses and the optimizer run in float32, and a
`loss_scale` multiplies the loss gradient, which is divided out of the float32 gradients before a
finiteness check (a non-finite gradient skips the update, as GradScaler.step does).
"""
import math

import numpy as np  # dtype names only; arithmetic goes through xp

F32 = np.float32


def array_module(array):
    """numpy or cupy, whichever owns `array` (without importing cupy on the CPU)."""
    return np if isinstance(array, np.ndarray) else __import__("cupy")


# --- optimizers --------------------------------------------------------------------------------


class SGD:
    def __init__(self, params, lr):
        self.params, self.lr = params, lr

    def step(self, grads):
        for param, grad in zip(self.params, grads):
            param -= self.lr * grad


class AdamW:
    """PyTorch's AdamW (defaults betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.params, self.lr, self.betas, self.eps, self.weight_decay = params, lr, betas, eps, weight_decay
        xp = array_module(params[0])
        self.exp_avgs = [xp.zeros_like(p) for p in params]
        self.exp_avg_sqs = [xp.zeros_like(p) for p in params]
        self.steps = 0

    def step(self, grads):
        self.steps += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.steps)
        root_correction2 = math.sqrt(1 - beta2**self.steps)
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avgs, self.exp_avg_sqs):
            xp = array_module(param)
            param *= 1 - self.lr * self.weight_decay
            exp_avg *= beta1
            exp_avg += (1 - beta1) * grad
            exp_avg_sq *= beta2
            exp_avg_sq += (1 - beta2) * grad * grad
            denom = xp.sqrt(exp_avg_sq) / root_correction2 + self.eps
            param -= step_size * exp_avg / denom


def make_optimizer(name, params, lr):
    return {"sgd": SGD, "adamw": AdamW}[name](params, lr)


def unscale_and_apply(optimizer, grads, loss_scale):
    """Divide the scale out of the gradients; update only when all are finite (as GradScaler.step)."""
    if loss_scale is not None:
        xp = array_module(grads[0])
        for grad in grads:
            grad *= F32(1.0 / loss_scale)
        if not bool(xp.stack([xp.isfinite(g).all() for g in grads]).all()):
            return
    optimizer.step(grads)


def _cast(array, dtype):
    return array if dtype is None or array.dtype == dtype else array.astype(dtype)


# --- per-op overhead -----------------------------------------------------------------------------


def product_sum_forward_backward(x, y):
    """(x*y).sum() and its gradients, as an engine computes them (ones for d total / d product)."""
    xp = array_module(x)
    product = x * y
    total = product.sum()
    grad_product = xp.ones_like(product)
    return total, grad_product * y, grad_product * x


# --- stacks of Linear (+ ReLU) -------------------------------------------------------------------


def linear_stack_forward(params, h, relu_last, compute_dtype=None):
    """Layer outputs [h0, h1, ..., hL], h_{i+1} = relu(h_i w_i^T + b_i) (the last relu only with
    relu_last); params is [w0, b0, w1, b1, ...] with weights (out, in) as torch.nn.Linear."""
    layers = len(params) // 2
    outputs = [_cast(h, compute_dtype)]
    for i in range(layers):
        w, b = (_cast(p, compute_dtype) for p in params[2 * i:2 * i + 2])
        z = outputs[-1] @ w.T
        z += b
        if i < layers - 1 or relu_last:
            array_module(z).maximum(z, 0, out=z)
        outputs.append(z)
    return outputs


def linear_stack_backward(params, outputs, grad, relu_last, grads, compute_dtype=None, need_input_grad=False):
    """Fill grads[0:len(params)] (float32) from d loss / d hL; returns d loss / d h0 (or None)."""
    layers = len(params) // 2
    grad = _cast(grad, compute_dtype)
    for i in reversed(range(layers)):
        if i < layers - 1 or relu_last:
            grad = grad * (outputs[i + 1] > 0)
        grads[2 * i] = (grad.T @ outputs[i]).astype(F32)
        grads[2 * i + 1] = grad.sum(axis=0, dtype=F32)
        if i > 0 or need_input_grad:
            grad = grad @ _cast(params[2 * i], compute_dtype)
    return grad if need_input_grad else None


def softmax_cross_entropy(logits, targets):
    """(mean loss, d loss / d logits) in float32 for integer targets."""
    xp = array_module(logits)
    logits = logits.astype(F32)
    rows = xp.arange(len(targets))
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    loss = xp.log(sum_exp[:, 0]).mean() - shifted[rows, targets].mean()
    grad = exp / sum_exp
    grad[rows, targets] -= 1
    grad /= len(targets)
    return loss, grad


def mse(output, target):
    """(mean squared error, its gradient) in float32."""
    diff = output.astype(F32) - target
    return (diff * diff).mean(), diff * F32(2.0 / diff.size)


def _scaled(grad, loss_scale):
    return grad if loss_scale is None else grad * F32(loss_scale)


class MLPStep:
    """Linear+ReLU layers, a linear head and softmax cross-entropy; SGD or AdamW."""

    def __init__(self, params, inputs, targets, optimizer, lr, compute_dtype=None, loss_scale=None):
        self.params, self.inputs, self.targets = params, inputs, targets
        self.optimizer = make_optimizer(optimizer, params, lr)
        self.compute_dtype, self.loss_scale = compute_dtype, loss_scale

    def __call__(self):
        outputs = linear_stack_forward(self.params, self.inputs, False, self.compute_dtype)
        loss, grad = softmax_cross_entropy(outputs[-1], self.targets)
        grads = [None] * len(self.params)
        linear_stack_backward(self.params, outputs, _scaled(grad, self.loss_scale), False, grads, self.compute_dtype)
        unscale_and_apply(self.optimizer, grads, self.loss_scale)
        return loss


class DeepMLPStep:
    """Linear+ReLU layers, a mean squared error against a fixed target, SGD; with `segments`, only
    segment inputs are kept in forward and each segment is recomputed in backward (checkpointing)."""

    def __init__(self, params, inputs, target, lr, segments=None):
        self.params, self.inputs, self.target = params, inputs, target
        self.optimizer = SGD(params, lr)
        layers = len(params) // 2
        segments = segments or 1
        self.bounds = [round(i * layers / segments) for i in range(segments + 1)]
        self.checkpointed = segments > 1

    def _segment_params(self, start, end):
        return self.params[2 * start:2 * end]

    def __call__(self):
        if not self.checkpointed:
            outputs = linear_stack_forward(self.params, self.inputs, True)
            loss, grad = mse(outputs[-1], self.target)
            grads = [None] * len(self.params)
            linear_stack_backward(self.params, outputs, grad, True, grads)
            self.optimizer.step(grads)
            return loss
        # as checkpoint_sequential does: segment inputs are kept, and the last segment's activations
        # (it is differentiated first, so recomputing it would save nothing)
        boundaries = [self.inputs]
        spans = list(zip(self.bounds, self.bounds[1:]))
        for start, end in spans[:-1]:
            boundaries.append(linear_stack_forward(self._segment_params(start, end), boundaries[-1], True)[-1])
        last_outputs = linear_stack_forward(self._segment_params(*spans[-1]), boundaries[-1], True)
        loss, grad = mse(last_outputs[-1], self.target)
        grads = [None] * len(self.params)
        for (start, end), segment_input in zip(reversed(spans), reversed(boundaries)):
            params = self._segment_params(start, end)
            if last_outputs is not None:
                outputs, last_outputs = last_outputs, None
            else:
                outputs = linear_stack_forward(params, segment_input, True)
            segment_grads = [None] * len(params)
            grad = linear_stack_backward(params, outputs, grad, True, segment_grads, need_input_grad=start > 0)
            grads[2 * start:2 * end] = segment_grads
        self.optimizer.step(grads)
        return loss


# --- conv net ------------------------------------------------------------------------------------


def _im2col3x3(x):
    """Columns (N*H*W, C*9) of the 3x3 windows of x (N, C, H, W), zero padding 1, stride 1."""
    xp = array_module(x)
    n, c, h, w = x.shape
    padded = xp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = xp.stack([padded[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
    return windows.transpose(0, 2, 3, 1, 4).reshape(n * h * w, c * 9)  # (N, H, W, C, 9)


def _col2im3x3(columns, shape):
    """Adjoint of _im2col3x3: scatter-add (N*H*W, C*9) columns back to (N, C, H, W)."""
    xp = array_module(columns)
    n, c, h, w = shape
    windows = columns.reshape(n, h, w, c, 9).transpose(0, 3, 4, 1, 2)  # (N, C, 9, H, W)
    padded = xp.zeros((n, c, h + 2, w + 2), dtype=columns.dtype)
    for k in range(9):
        i, j = divmod(k, 3)
        padded[:, :, i:i + h, j:j + w] += windows[:, :, k]
    return padded[:, :, 1:-1, 1:-1]


def conv3x3_forward(x, w, b):
    n, _, h, wd = x.shape
    columns = _im2col3x3(x)
    out = columns @ w.reshape(len(w), -1).T
    out += b
    return out.reshape(n, h, wd, len(w)).transpose(0, 3, 1, 2), columns


def conv3x3_backward(grad_out, columns, x_shape, w, need_input_grad):
    """(dx or None, dw, db) of conv3x3_forward."""
    grad_rows = grad_out.transpose(0, 2, 3, 1).reshape(-1, len(w))
    dw = (grad_rows.T @ columns).reshape(w.shape)
    db = grad_rows.sum(axis=0)
    dx = _col2im3x3(grad_rows @ w.reshape(len(w), -1), x_shape) if need_input_grad else None
    return dx, dw, db


def max_pool2x2_forward(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def max_pool2x2_backward(grad_out, x, out):
    """Gradient to the window maximum. A tie would share it; ties only occur between ReLU zeros here,
    whose gradient the ReLU backward zeroes anyway."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
    mask = windows == out[:, :, :, None, :, None]
    return (mask * grad_out[:, :, :, None, :, None]).reshape(x.shape)


class ConvNetStep:
    """[conv3x3(pad 1) + ReLU + maxpool 2x2] x 2, flatten, linear head, cross-entropy, SGD."""

    def __init__(self, params, inputs, targets, lr):
        self.params, self.inputs, self.targets = params, inputs, targets
        self.optimizer = SGD(params, lr)

    def __call__(self):
        w1, b1, w2, b2, w3, b3 = self.params
        xp = array_module(w1)
        x = self.inputs
        z1, cols1 = conv3x3_forward(x, w1, b1)
        a1 = xp.maximum(z1, 0)
        p1 = max_pool2x2_forward(a1)
        z2, cols2 = conv3x3_forward(p1, w2, b2)
        a2 = xp.maximum(z2, 0)
        p2 = max_pool2x2_forward(a2)
        flat = p2.reshape(len(p2), -1)
        logits = flat @ w3.T + b3
        loss, grad_logits = softmax_cross_entropy(logits, self.targets)

        dw3, db3 = grad_logits.T @ flat, grad_logits.sum(axis=0)
        grad_p2 = (grad_logits @ w3).reshape(p2.shape)
        grad_z2 = max_pool2x2_backward(grad_p2, a2, p2) * (z2 > 0)
        grad_p1, dw2, db2 = conv3x3_backward(grad_z2, cols2, p1.shape, w2, True)
        grad_z1 = max_pool2x2_backward(grad_p1, a1, p1) * (z1 > 0)
        _, dw1, db1 = conv3x3_backward(grad_z1, cols1, x.shape, w1, False)
        self.optimizer.step([dw1, db1, dw2, db2, dw3, db3])
        return loss


# --- LSTM ----------------------------------------------------------------------------------------


def _sigmoid(xp, x):
    return 1 / (1 + xp.exp(-x))


def lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh):
    """x (T, N, I) -> outputs (T, N, H) and the tape; zero initial state; gates i, f, g, o (PyTorch)."""
    xp = array_module(x)
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    projected = x @ w_ih.T + (b_ih + b_hh)
    h = xp.zeros((batch, hidden), dtype=x.dtype)
    c = xp.zeros_like(h)
    outputs = xp.empty((steps, batch, hidden), dtype=x.dtype)
    gates_all = xp.empty((steps, batch, 4 * hidden), dtype=x.dtype)  # activated i, f, g, o
    cells = xp.empty((steps + 1, batch, hidden), dtype=x.dtype)  # c_{-1} = 0, c_0, ...
    cells[0] = c
    for t in range(steps):
        gates = projected[t] + h @ w_hh.T
        gates[:, :2 * hidden] = _sigmoid(xp, gates[:, :2 * hidden])
        gates[:, 2 * hidden:3 * hidden] = xp.tanh(gates[:, 2 * hidden:3 * hidden])
        gates[:, 3 * hidden:] = _sigmoid(xp, gates[:, 3 * hidden:])
        i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = f * c + i * g
        h = o * xp.tanh(c)
        gates_all[t], cells[t + 1], outputs[t] = gates, c, h
    return outputs, (x, gates_all, cells)


def lstm_layer_backward(grad_outputs, tape, outputs, w_ih, w_hh, need_input_grad):
    """(dx or None, dw_ih, dw_hh, db) by backpropagation through time (db serves b_ih and b_hh)."""
    xp = array_module(grad_outputs)
    x, gates_all, cells = tape
    steps, batch, hidden = grad_outputs.shape
    grad_gates = xp.empty_like(gates_all)
    grad_h = xp.zeros((batch, hidden), dtype=x.dtype)
    grad_c = xp.zeros_like(grad_h)
    for t in reversed(range(steps)):
        i, f, g, o = (gates_all[t][:, k * hidden:(k + 1) * hidden] for k in range(4))
        tanh_c = xp.tanh(cells[t + 1])
        grad_h = grad_h + grad_outputs[t]
        grad_c = grad_c + grad_h * o * (1 - tanh_c * tanh_c)
        grad_gates[t] = xp.concatenate([
            grad_c * g * i * (1 - i),
            grad_c * cells[t] * f * (1 - f),
            grad_c * i * (1 - g * g),
            grad_h * tanh_c * o * (1 - o),
        ], axis=1)
        grad_c = grad_c * f
        grad_h = grad_gates[t] @ w_hh
    flat_grads = grad_gates.reshape(steps * batch, 4 * hidden)
    previous_h = xp.concatenate([xp.zeros((1, batch, hidden), dtype=x.dtype), outputs[:-1]])
    dw_ih = flat_grads.T @ x.reshape(steps * batch, -1)
    dw_hh = flat_grads.T @ previous_h.reshape(steps * batch, hidden)
    db = flat_grads.sum(axis=0)
    dx = (grad_gates @ w_ih) if need_input_grad else None
    return dx, dw_ih, dw_hh, db


class LSTMStep:
    """Stacked LSTM over a (T, N, I) sequence, mean squared error of the top outputs, SGD.
    params per layer: w_ih, w_hh, b_ih, b_hh (PyTorch's names and order)."""

    def __init__(self, params, inputs, target, lr):
        self.params, self.inputs, self.target = params, inputs, target
        self.optimizer = SGD(params, lr)

    def __call__(self):
        layers = len(self.params) // 4
        h, tapes, layer_outputs = self.inputs, [], []
        for layer in range(layers):
            h, tape = lstm_layer_forward(h, *self.params[4 * layer:4 * layer + 4])
            tapes.append(tape)
            layer_outputs.append(h)
        loss, grad = mse(h, self.target)
        grads = [None] * len(self.params)
        for layer in reversed(range(layers)):
            w_ih, w_hh = self.params[4 * layer:4 * layer + 2]
            grad, dw_ih, dw_hh, db = lstm_layer_backward(grad, tapes[layer], layer_outputs[layer], w_ih, w_hh,
                                                         layer > 0)
            grads[4 * layer:4 * layer + 4] = [dw_ih, dw_hh, db, db]
        self.optimizer.step(grads)
        return loss


# --- pre-LN transformer block --------------------------------------------------------------------

_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_tanh_forward(x):
    xp = array_module(x)
    return 0.5 * x * (1 + xp.tanh(_GELU_C * (x + 0.044715 * x**3)))


def gelu_tanh_backward(grad, x):
    xp = array_module(x)
    t = xp.tanh(_GELU_C * (x + 0.044715 * x**3))
    return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x * x))


def layer_norm_forward(x, w, b, eps=1e-5):
    """Float32 layer norm over the last axis: (y, (xhat, rstd))."""
    xp = array_module(x)
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    rstd = 1 / xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)
    xhat = centered * rstd
    return xhat * w + b, (xhat, rstd)


def layer_norm_backward(grad, saved, w):
    xhat, rstd = saved
    axes = tuple(range(grad.ndim - 1))
    dw, db = (grad * xhat).sum(axis=axes), grad.sum(axis=axes)
    grad_xhat = grad * w
    dx = rstd * (grad_xhat - grad_xhat.mean(axis=-1, keepdims=True)
                 - xhat * (grad_xhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dw, db


def _linear(x, w, b, compute_dtype):
    out = x @ _cast(w, compute_dtype).T
    out += _cast(b, compute_dtype)
    return out


def _linear_backward(grad, x, w, compute_dtype):
    """(dx, dw, db) of _linear: the products in the compute dtype, dw and db float32."""
    rows = grad.reshape(-1, grad.shape[-1])
    dw = (rows.T @ x.reshape(-1, x.shape[-1])).astype(F32)
    return grad @ _cast(w, compute_dtype), dw, rows.sum(axis=0, dtype=F32)


class TransformerBlockStep:
    """GPT-2 style pre-LN block: x + attn(ln1(x)), then + mlp(ln2(.)) with tanh-GELU; causal
    multi-head attention; mean squared error against a fixed target; SGD or AdamW.

    params: ln1_w, ln1_b, w_qkv (3d, d), b_qkv, w_out (d, d), b_out, ln2_w, ln2_b, w_fc (4d, d), b_fc,
    w_proj (d, 4d), b_proj.
    """

    def __init__(self, params, inputs, target, heads, optimizer, lr, compute_dtype=None, loss_scale=None):
        self.params, self.inputs, self.target, self.heads = params, inputs, target, heads
        self.optimizer = make_optimizer(optimizer, params, lr)
        self.compute_dtype, self.loss_scale = compute_dtype, loss_scale
        xp = array_module(inputs)
        seq = inputs.shape[1]
        future = xp.triu(xp.ones((seq, seq), dtype=bool), k=1)  # keys a query may not see
        self.causal_mask = xp.where(future, -xp.inf, 0.0).astype(F32)  # added to the scores

    def _split_heads(self, x):  # (B, T, d) -> (B, heads, T, d / heads)
        batch, seq, width = x.shape
        return x.reshape(batch, seq, self.heads, width // self.heads).transpose(0, 2, 1, 3)

    def _merge_heads(self, x):
        batch, heads, seq, head_width = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, seq, heads * head_width)

    def __call__(self):
        ln1_w, ln1_b, w_qkv, b_qkv, w_out, b_out, ln2_w, ln2_b, w_fc, b_fc, w_proj, b_proj = self.params
        cd, x = self.compute_dtype, self.inputs
        xp = array_module(x)
        width = x.shape[-1]
        scale = 1.0 / math.sqrt(width // self.heads)

        a, ln1_saved = layer_norm_forward(x, ln1_w, ln1_b)
        a = _cast(a, cd)
        qkv = _linear(a, w_qkv, b_qkv, cd)
        q, k, v = (self._split_heads(part) for part in xp.split(qkv, 3, axis=-1))
        scores = (q @ k.transpose(0, 1, 3, 2)).astype(F32) * F32(scale)
        scores += self.causal_mask
        probs = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        probs_cd = _cast(probs, cd)
        attended = self._merge_heads(probs_cd @ v)
        x1 = x + _linear(attended, w_out, b_out, cd)
        c, ln2_saved = layer_norm_forward(x1, ln2_w, ln2_b)
        c = _cast(c, cd)
        hidden = _linear(c, w_fc, b_fc, cd)
        activated = gelu_tanh_forward(hidden.astype(F32))
        activated_cd = _cast(activated, cd)
        out = x1 + _linear(activated_cd, w_proj, b_proj, cd)
        loss, grad_out = mse(out, self.target)

        grad_out = _scaled(grad_out, self.loss_scale)
        grad_activated, dw_proj, db_proj = _linear_backward(_cast(grad_out, cd), activated_cd, w_proj, cd)
        grad_hidden = _cast(gelu_tanh_backward(grad_activated.astype(F32), hidden.astype(F32)), cd)
        grad_c, dw_fc, db_fc = _linear_backward(grad_hidden, c, w_fc, cd)
        grad_x1, dln2_w, dln2_b = layer_norm_backward(grad_c.astype(F32), ln2_saved, ln2_w)
        grad_x1 += grad_out
        grad_attended, dw_out, db_out = _linear_backward(_cast(grad_x1, cd), attended, w_out, cd)
        grad_heads = self._split_heads(grad_attended)
        grad_v = probs_cd.transpose(0, 1, 3, 2) @ grad_heads
        grad_probs = (grad_heads @ v.transpose(0, 1, 3, 2)).astype(F32)
        grad_scores = probs * (grad_probs - (grad_probs * probs).sum(axis=-1, keepdims=True))
        grad_scores = _cast(grad_scores * F32(scale), cd)
        grad_q = grad_scores @ k
        grad_k = grad_scores.transpose(0, 1, 3, 2) @ q
        grad_qkv = xp.concatenate([self._merge_heads(g) for g in (grad_q, grad_k, grad_v)], axis=-1)
        grad_a, dw_qkv, db_qkv = _linear_backward(grad_qkv, a, w_qkv, cd)
        _, dln1_w, dln1_b = layer_norm_backward(grad_a.astype(F32), ln1_saved, ln1_w)
        # the input's gradient is not needed: the block's input is data
        grads = [dln1_w, dln1_b, dw_qkv, db_qkv, dw_out, db_out, dln2_w, dln2_b, dw_fc, db_fc, dw_proj, db_proj]
        unscale_and_apply(self.optimizer, grads, self.loss_scale)
        return loss
