"""The benchmark workloads, each built three ways from the same initial parameters and data:

- "gradtensor" and "torch": one model function written once against a small framework adapter
  (`Framework`), since gradtensor's nn.functional, optim and amp follow PyTorch's;
- "hand": bench.peers, forward, backward and update written out with NumPy (CPU) or CuPy (GPU).

`cases(device, mode)` lists the rows of the comparison for a device ("cpu" or "cuda") and a size
mode ("full", "quick" for CI, "tiny" for the tests); rows that need a GPU (the CUDA-graph step) are
listed for "cuda" only. A case's builders take (device) and return a
Runner whose step() runs one iteration (an op, or a whole training step).
"""
import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from bench import peers

GRADTENSOR, TORCH, HAND = "gradtensor", "torch", "hand"
IMPLEMENTATIONS = (GRADTENSOR, TORCH, HAND)
MODES = ("tiny", "quick", "full")


class Unsupported(Exception):
    """This implementation cannot run this case here (e.g. bfloat16 without ml_dtypes); the reason is shown."""


@dataclass
class Runner:
    step: Callable[[], object]
    parameters: Callable[[], list] = lambda: []  # host copies, in the initialiser's order
    release: Callable[[], None] = lambda: None  # drop gradients before a memory measurement


@dataclass
class Case:
    key: str  # stable id, e.g. "mlp_small" or "transformer_fp16"
    label: str  # the table's workload column
    builders: dict  # implementation -> callable(device) -> Runner
    flops: Optional[float] = None  # model FLOPs per step, for the roofline fraction
    dtype: str = "float32"  # the matmul dtype the roofline compares with
    measure_memory: bool = True
    notes: list = field(default_factory=list)


# --- frameworks: gradtensor and PyTorch behind the same few names ----------------------------------


class Framework:
    def __init__(self, name, device):
        self.name, self.device = name, device
        if name == GRADTENSOR:
            import gradtensor as module
            import gradtensor.nn.functional as functional

            self.checkpoint_sequential = module.checkpoint_sequential
            self.autocast_factory, self.scaler_factory = module.amp.autocast, module.amp.GradScaler
        else:
            import torch as module
            import torch.nn.functional as functional
            import torch.utils.checkpoint

            def checkpoint_sequential(functions, segments, x):
                return torch.utils.checkpoint.checkpoint_sequential(functions, segments, x, use_reentrant=False)

            self.checkpoint_sequential = checkpoint_sequential
            self.autocast_factory, self.scaler_factory = torch.autocast, torch.amp.GradScaler
        self.module, self.F, self.nn, self.optim = module, functional, module.nn, module.optim

    def tensor(self, array, requires_grad=False):
        return self.module.tensor(array, device=self.device, requires_grad=requires_grad)

    def host(self, tensor):
        return tensor.numpy() if self.name == GRADTENSOR else tensor.detach().cpu().numpy()

    def dtype(self, name):
        dtype = getattr(self.module, name, None)
        if dtype is None:
            raise Unsupported(f"{self.name} has no {name} here")
        return dtype

    def autocast(self, dtype_name):
        if dtype_name is None:
            return contextlib.nullcontext()
        return self.autocast_factory(device_type=self.device, dtype=self.dtype(dtype_name))

    def scaler(self, dtype_name):
        """A GradScaler for float16 (bfloat16 and float32 need none)."""
        return self.scaler_factory(self.device) if dtype_name == "float16" else None

    def optimizer(self, name, params, lr):
        return {"sgd": self.optim.SGD, "adamw": self.optim.AdamW}[name](params, lr=lr)


def framework_step(fw, params, optimizer, loss_fn, amp_dtype=None):
    """Runner for a training step: zero_grad, forward under autocast, backward (scaled), update."""
    scaler = fw.scaler(amp_dtype)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with fw.autocast(amp_dtype):
            loss = loss_fn()
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss

    return Runner(step, lambda: [fw.host(p) for p in params], lambda: optimizer.zero_grad(set_to_none=True))


def graphed_framework_step(fw, params, optimizer, loss_of, data, torch_warmup=3):
    """Runner for a training step captured into a CUDA graph: gt.cuda.graph for gradtensor, and for
    PyTorch its documented whole-network recipe (static inputs, a few eager steps on a side stream,
    the step captured with torch.cuda.graph). Each step copies the batch into the graph's static
    inputs and replays it; loss_of(*batch) is the forward pass."""

    def train_step(*batch):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(*batch)
        loss.backward()
        optimizer.step()
        return loss

    if fw.name == GRADTENSOR:
        graphed = fw.module.cuda.graph(train_step)
        step = lambda: graphed(*data)  # noqa: E731
    else:
        step = _torch_graphed_step(fw.module, train_step, data, torch_warmup)
    return Runner(step, lambda: [fw.host(p) for p in params])


def _torch_graphed_step(torch, train_step, data, warmup):
    if not torch.cuda.is_available():
        raise Unsupported("torch.cuda.graph needs a CUDA build of PyTorch and a GPU")
    static = [d.clone() for d in data]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            train_step(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = train_step(*static)

    def step():
        for target, source in zip(static, data):
            target.copy_(source)
        graph.replay()
        return static_loss

    return step


def _framework_builder(name, build):
    """builder(device) for gradtensor or torch: build(fw) -> Runner."""

    def builder(device):
        if name == TORCH:
            try:
                import torch  # noqa: F401
            except ImportError:
                raise Unsupported("torch is not installed") from None
        return build(Framework(name, device))

    return builder


def _device_arrays(device, arrays):
    """Host arrays moved to the hand-written peer's device (CuPy on "cuda")."""
    if device == "cpu":
        return list(arrays)
    import cupy

    return [cupy.asarray(a) for a in arrays]


def to_host(array):
    """A NumPy copy of a NumPy or CuPy array."""
    return array.copy() if isinstance(array, np.ndarray) else array.get()


def _hand_runner(device, params, make_step):
    params = _device_arrays(device, params)
    step = make_step(params)
    return Runner(step, lambda: [to_host(p) for p in params])


def _builders(params, data, framework_build, hand_build):
    """The three builders of a case from its host parameters and data.

    framework_build(fw, params, data) -> Runner with params/data as framework tensors;
    hand_build(params, data) -> step callable with device arrays.
    """

    def framework(name):
        def build(fw):
            return framework_build(fw, [fw.tensor(p, requires_grad=True) for p in params],
                                   [fw.tensor(d) for d in data])

        return _framework_builder(name, build)

    def hand(device):
        return _hand_runner(device, params,
                            lambda device_params: hand_build(device_params, _device_arrays(device, data)))

    return {GRADTENSOR: framework(GRADTENSOR), TORCH: framework(TORCH), HAND: hand}


# --- initial parameters and data -----------------------------------------------------------------


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def linear_params(rng, sizes):
    """[w0, b0, w1, b1, ...] for Linear(sizes[i], sizes[i + 1]), PyTorch's default init bounds."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        params += [_uniform(rng, bound, (fan_out, fan_in)), _uniform(rng, bound, fan_out)]
    return params


def _normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


# --- per-op overhead -----------------------------------------------------------------------------

OP_SIZE = 16


def _op_cases():
    rng = np.random.default_rng(0)
    a, b = _normal(rng, OP_SIZE), _normal(rng, OP_SIZE)
    cases = []
    for op_name, op in (("add", lambda x, y: x + y), ("mul", lambda x, y: x * y)):
        for requires_grad in (False, True):
            def framework_builder(name, requires_grad=requires_grad, op=op):
                def build(fw):
                    x, y = fw.tensor(a, requires_grad), fw.tensor(b, requires_grad)
                    return Runner(lambda: op(x, y))

                return _framework_builder(name, build)

            def hand_builder(device, op=op):
                x, y = _device_arrays(device, (a, b))
                return Runner(lambda: op(x, y))

            suffix = ", requires_grad" if requires_grad else ""
            cases.append(Case(f"op_{op_name}{'_grad' if requires_grad else ''}",
                              f"{op_name}, {OP_SIZE} float32{suffix}",
                              {GRADTENSOR: framework_builder(GRADTENSOR), TORCH: framework_builder(TORCH),
                               HAND: hand_builder}, measure_memory=False,
                              notes=["hand-written = the raw array op (no tape)"] if requires_grad else []))

    def framework_builder(name):
        def build(fw):
            x, y = fw.tensor(a, True), fw.tensor(b, True)

            def step():
                x.grad = y.grad = None
                (x * y).sum().backward()

            return Runner(step, lambda: [fw.host(x.grad), fw.host(y.grad)])

        return _framework_builder(name, build)

    def hand_builder(device):
        x, y = _device_arrays(device, (a, b))
        grads = []

        def step():
            grads[:] = peers.product_sum_forward_backward(x, y)[1:]

        return Runner(step, lambda: [to_host(g) for g in grads])

    cases.append(Case("op_mul_sum_backward", f"(x*y).sum() fwd+bwd, {OP_SIZE} float32",
                      {GRADTENSOR: framework_builder(GRADTENSOR), TORCH: framework_builder(TORCH),
                       HAND: hand_builder}, measure_memory=False))
    return cases


def _hand_for(amp_dtype, hand):
    """The hand-written peer, except for bfloat16, which CuPy cannot multiply."""
    if amp_dtype != "bfloat16":
        return hand

    def unsupported(params, data):
        raise Unsupported("no hand-written bfloat16 peer: CuPy has no bfloat16 matmul")

    return unsupported


_STATIC_SCALE_NOTE = ("the hand-written peer computes products in float16 and the rest in float32, with a fixed "
                      "loss scale (unscale, finiteness check, update) instead of GradScaler's dynamic one")


# --- MLP -----------------------------------------------------------------------------------------


def mlp_loss(fw, params, inputs, targets):
    """Linear+ReLU layers and a linear head (params [w0, b0, ...]), softmax cross-entropy."""
    h = inputs
    for i in range(0, len(params), 2):
        h = fw.F.linear(h, params[i], params[i + 1])
        if i < len(params) - 2:
            h = fw.F.relu(h)
    return fw.F.cross_entropy(h, targets)


def _mlp_data(sizes, batch, seed):
    rng = np.random.default_rng(seed)
    params = linear_params(rng, sizes)
    return params, [_normal(rng, batch, sizes[0]), rng.integers(0, sizes[-1], batch)]


def mlp_case(key, sizes, batch, optimizer, lr, amp_dtype=None, seed=0):
    params, data = _mlp_data(sizes, batch, seed)

    def framework_build(fw, params, data):
        return framework_step(fw, params, fw.optimizer(optimizer, params, lr), lambda: mlp_loss(fw, params, *data),
                              amp_dtype)

    def hand(params, data):
        return peers.MLPStep(params, *data, optimizer, lr, compute_dtype=amp_dtype and np.float16,
                             loss_scale=1024.0 if amp_dtype else None)

    precision = {None: "float32", "float16": "autocast float16 + GradScaler",
                 "bfloat16": "autocast bfloat16"}[amp_dtype]
    label = f"MLP {'-'.join(map(str, sizes))}, batch {batch}, {'SGD' if optimizer == 'sgd' else 'AdamW'}, {precision}"
    flops = 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return Case(key, label, _builders(params, data, framework_build, _hand_for(amp_dtype, hand)), flops,
                amp_dtype or "float32", notes=[_STATIC_SCALE_NOTE] if amp_dtype == "float16" else [])


def graphed_mlp_case(key, sizes, batch, lr, seed=0):
    """The SGD MLP with its whole training step captured into a CUDA graph (GPU only): gradtensor's
    gt.cuda.graph beside PyTorch's torch.cuda.graph; the eager row of the same MLP gives the speed-up."""
    params, data = _mlp_data(sizes, batch, seed)

    def framework_build(fw, params, data):
        return graphed_framework_step(fw, params, fw.optimizer("sgd", params, lr),
                                      lambda *batch: mlp_loss(fw, params, *batch), data)

    def hand(params, data):
        raise Unsupported("no hand-written CUDA-graph peer")

    label = f"MLP {'-'.join(map(str, sizes))}, batch {batch}, SGD, float32, CUDA graph"
    notes = ["the training step captured into a CUDA graph and replayed: gt.cuda.graph for gradtensor, "
             "torch.cuda.graph (static inputs, side-stream warm-up) for PyTorch; each step copies the batch into "
             "the graph's inputs. Replays allocate nothing, so no memory column"]
    flops = 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return Case(key, label, _builders(params, data, framework_build, hand), flops, measure_memory=False, notes=notes)


# --- deep Linear+ReLU stack, plain and checkpointed ------------------------------------------------


def deep_mlp_case(key, layers, width, batch, segments, lr=1e-3, seed=0):
    rng = np.random.default_rng(seed)
    params = linear_params(rng, [width] * (layers + 1))
    data = [_normal(rng, batch, width), _normal(rng, batch, width)]

    def framework_build(fw, params, data):
        inputs, target = data
        functions = [(lambda h, w=params[i], b=params[i + 1]: fw.F.relu(fw.F.linear(h, w, b)))
                     for i in range(0, len(params), 2)]

        def loss_fn():
            if segments:
                out = fw.checkpoint_sequential(functions, segments, inputs)
            else:
                out = inputs
                for function in functions:
                    out = function(out)
            return fw.F.mse_loss(out, target)

        return framework_step(fw, params, fw.optimizer("sgd", params, lr), loss_fn)

    def hand(params, data):
        return peers.DeepMLPStep(params, *data, lr, segments)

    how = f"checkpoint_sequential(segments={segments})" if segments else "no checkpointing"
    label = f"{layers} x (Linear({width},{width})+ReLU), batch {batch}, SGD, {how}"
    notes = ["every implementation keeps the segment inputs and the last segment's activations (as PyTorch's "
             "checkpoint_sequential does) and recomputes the other segments in backward"] if segments else []
    return Case(key, label, _builders(params, data, framework_build, hand), 6 * batch * layers * width * width,
                notes=notes)


# --- conv net ------------------------------------------------------------------------------------


def conv_case(key, batch, image=32, channels=(32, 64), classes=10, lr=1e-2, seed=0):
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    final = image // 4
    params = [_uniform(rng, 1 / math.sqrt(3 * 9), (c1, 3, 3, 3)), _uniform(rng, 1 / math.sqrt(3 * 9), c1),
              _uniform(rng, 1 / math.sqrt(c1 * 9), (c2, c1, 3, 3)), _uniform(rng, 1 / math.sqrt(c1 * 9), c2),
              *linear_params(rng, [c2 * final * final, classes])]
    data = [_normal(rng, batch, 3, image, image), rng.integers(0, classes, batch)]

    def framework_build(fw, params, data):
        inputs, targets = data
        w1, b1, w2, b2, w3, b3 = params
        F = fw.F

        def loss_fn():
            h = F.max_pool2d(F.relu(F.conv2d(inputs, w1, b1, padding=1)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, w2, b2, padding=1)), 2)
            return F.cross_entropy(F.linear(h.reshape(batch, -1), w3, b3), targets)

        return framework_step(fw, params, fw.optimizer("sgd", params, lr), loss_fn)

    def hand(params, data):
        return peers.ConvNetStep(params, *data, lr)

    label = (f"conv net {image}x{image}x3 [conv3x3 {c1}, {c2} + ReLU + maxpool] + linear, batch {batch}, "
             f"SGD, float32")
    conv_flops = 2 * batch * image * image * (3 * c1 * 9 + c2 * c1 * 9 / 4)
    flops = 3 * (conv_flops + 2 * batch * c2 * final * final * classes)
    return Case(key, label, _builders(params, data, framework_build, hand), flops)


# --- LSTM ----------------------------------------------------------------------------------------


def lstm_case(key, steps, batch, input_size, hidden, layers=2, lr=1e-2, seed=0):
    rng = np.random.default_rng(seed)
    bound = 1 / math.sqrt(hidden)
    params = []
    for layer in range(layers):
        fan_in = input_size if layer == 0 else hidden
        params += [_uniform(rng, bound, (4 * hidden, fan_in)), _uniform(rng, bound, (4 * hidden, hidden)),
                   _uniform(rng, bound, 4 * hidden), _uniform(rng, bound, 4 * hidden)]
    data = [_normal(rng, steps, batch, input_size), _normal(rng, steps, batch, hidden)]

    def framework_build(fw, params, data):
        inputs, target = data
        lstm = fw.nn.LSTM(input_size, hidden, num_layers=layers).to(fw.device)
        lstm.load_state_dict(dict(zip((name for name, _ in lstm.named_parameters()), params)))
        module_params = list(lstm.parameters())

        def loss_fn():
            out, _ = lstm(inputs)
            return fw.F.mse_loss(out, target)

        return framework_step(fw, module_params, fw.optimizer("sgd", module_params, lr), loss_fn)

    def hand(params, data):
        return peers.LSTMStep(params, *data, lr)

    label = f"LSTM {layers} layers, input {input_size}, hidden {hidden}, BPTT over {steps} steps, batch {batch}, SGD"
    flops = 6 * steps * batch * sum(4 * hidden * ((input_size if l == 0 else hidden) + hidden) for l in range(layers))
    return Case(key, label, _builders(params, data, framework_build, hand), flops)


# --- transformer block -----------------------------------------------------------------------------


def transformer_case(key, width, heads, seq, batch, amp_dtype=None, optimizer="adamw", lr=1e-4, seed=0):
    rng = np.random.default_rng(seed)
    ones, zeros = np.ones(width, np.float32), np.zeros(width, np.float32)
    params = [ones, zeros, *linear_params(rng, [width, 3 * width]), *linear_params(rng, [width, width]),
              ones.copy(), zeros.copy(), *linear_params(rng, [width, 4 * width]),
              *linear_params(rng, [4 * width, width])]
    data = [_normal(rng, batch, seq, width), _normal(rng, batch, seq, width)]

    def framework_build(fw, params, data):
        inputs, target = data
        ln1_w, ln1_b, w_qkv, b_qkv, w_out, b_out, ln2_w, ln2_b, w_fc, b_fc, w_proj, b_proj = params
        F = fw.F

        def split_heads(t):
            return t.reshape(batch, seq, heads, width // heads).swapaxes(1, 2)

        def loss_fn():
            qkv = F.linear(F.layer_norm(inputs, (width,), ln1_w, ln1_b), w_qkv, b_qkv)
            q, k, v = (split_heads(qkv[..., i * width:(i + 1) * width]) for i in range(3))
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x1 = inputs + F.linear(attended.swapaxes(1, 2).reshape(batch, seq, width), w_out, b_out)
            hidden = F.gelu(F.linear(F.layer_norm(x1, (width,), ln2_w, ln2_b), w_fc, b_fc), approximate="tanh")
            return F.mse_loss(x1 + F.linear(hidden, w_proj, b_proj), target)

        return framework_step(fw, params, fw.optimizer(optimizer, params, lr), loss_fn, amp_dtype)

    def hand(params, data):
        return peers.TransformerBlockStep(params, *data, heads, optimizer, lr, compute_dtype=amp_dtype and np.float16,
                                          loss_scale=1024.0 if amp_dtype else None)

    precision = "float32" if amp_dtype is None else f"autocast {amp_dtype}" + (
        " + GradScaler" if amp_dtype == "float16" else "")
    notes = [_STATIC_SCALE_NOTE] if amp_dtype == "float16" else []
    label = (f"pre-LN transformer block d={width}, {heads} heads, seq {seq}, batch {batch}, causal, GELU, "
             f"{'SGD' if optimizer == 'sgd' else 'AdamW'}, {precision}")
    tokens = batch * seq
    flops = 6 * tokens * 12 * width * width + 12 * batch * seq * seq * width  # full (unmasked) attention
    return Case(key, label, _builders(params, data, framework_build, _hand_for(amp_dtype, hand)), flops,
                amp_dtype or "float32", notes=notes)


# --- the rows per device and mode -----------------------------------------------------------------


def cases(device, mode):
    """The comparison's rows for `device` ("cpu" or "cuda") in `mode` (tiny, quick or full)."""
    if mode not in MODES:
        raise ValueError(f"cases: mode must be one of {MODES}, got {mode!r}")
    rows = _op_cases()
    if mode == "tiny":
        return rows + [
            mlp_case("mlp_small", (20, 16, 16, 5), 8, "sgd", 0.01),
            mlp_case("mlp_large", (16, 32, 32, 5), 8, "adamw", 1e-3),
            transformer_case("transformer", 16, 2, 8, 2),
            conv_case("conv", 2, image=8, channels=(4, 6)),
            lstm_case("lstm", 5, 2, 4, 8),
            deep_mlp_case("checkpoint_plain", 8, 8, 4, None),
            deep_mlp_case("checkpoint_segments", 8, 8, 4, 3),
        ]
    if device == "cpu":
        quick = mode == "quick"
        rows += [mlp_case("mlp_small", (784, 512, 512, 10), 128, "sgd", 0.01)]
        if not quick:
            rows.append(mlp_case("mlp_large", (1024, 1024, 1024, 1024, 10), 256, "adamw", 1e-3))
        rows += [
            transformer_case("transformer", 128, 4, 64, 4),
            conv_case("conv", 8 if quick else 64),
            lstm_case("lstm", 16, 8, 32, 64) if quick else lstm_case("lstm", 128, 16, 32, 128),
        ]
        width, batch = (64, 128) if quick else (256, 1024)
        return rows + [deep_mlp_case("checkpoint_plain", 48, width, batch, None),
                       deep_mlp_case("checkpoint_segments", 48, width, batch, 7)]
    large = ((1024, 4096, 4096, 4096, 10), 4096, "adamw", 1e-3) if mode == "full" else (
        (1024, 1024, 1024, 10), 1024, "adamw", 1e-3)
    transformer = (768, 12, 1024, 8) if mode == "full" else (256, 4, 256, 4)
    checkpoint = (48, 1024, 16384) if mode == "full" else (48, 512, 2048)
    return rows + [
        mlp_case("mlp_small", (784, 256, 256, 10), 64, "sgd", 0.01),
        graphed_mlp_case("mlp_small_graph", (784, 256, 256, 10), 64, 0.01),
        mlp_case("mlp_large", *large),
        mlp_case("mlp_large_fp16", *large, amp_dtype="float16"),
        mlp_case("mlp_large_bf16", *large, amp_dtype="bfloat16"),
        transformer_case("transformer", *transformer),
        transformer_case("transformer_fp16", *transformer, amp_dtype="float16"),
        conv_case("conv", 256 if mode == "full" else 64),
        lstm_case("lstm", 128, 64, 128, 512) if mode == "full" else lstm_case("lstm", 32, 32, 64, 256),
        deep_mlp_case("checkpoint_plain", *checkpoint, None),
        deep_mlp_case("checkpoint_segments", *checkpoint, 7),
    ]
