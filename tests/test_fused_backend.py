"""gradtensor without a usable GPU: no CuPy at all, or CuPy installed on a machine without a device or
driver. Everything CPU works, gt.cuda answers "nothing there", GPU requests fail with a clear error,
and no fused kernel path is chosen. Also the kernel loader's cache stamp."""
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor import backend, cuda_kernels, fused
from gradtensor._kernel_files import kernel_dir


def test_import_and_cpu_training_without_cupy():
    # in a fresh interpreter where importing cupy fails, whatever is installed here
    script = textwrap.dedent("""
        import importlib.abc, sys

        class NoCupy(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "cupy" or name.startswith(("cupy.", "cupyx")):
                    raise ImportError("cupy is not installed")
                return None

        sys.meta_path.insert(0, NoCupy())
        import numpy as np
        import gradtensor as gt
        import gradtensor.nn.functional as F

        assert not gt.cuda.is_available() and gt.cuda.device_count() == 0
        gt.manual_seed(0)
        model = gt.nn.Sequential(gt.nn.Linear(4, 8), gt.nn.GELU(), gt.nn.LayerNorm(8), gt.nn.Dropout(0.1),
                                 gt.nn.Linear(8, 3))
        optimizer = gt.optim.AdamW(model.parameters(), lr=1e-2)
        x, y = gt.randn(5, 4), gt.tensor(np.array([0, 1, 2, 1, 0]))
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        assert np.isfinite(loss.item())
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class _CudaRuntimeError(RuntimeError):
    pass


def _fake_cupy(device_count):
    """A stand-in for an installed CuPy on a machine whose driver reports `device_count` devices
    (None: the runtime call fails, as CuPy's does without a driver)."""
    def get_device_count():
        if device_count is None:
            raise _CudaRuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return device_count

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return cupy


@pytest.fixture(params=[None, 0], ids=["driver-error", "zero-devices"])
def cupy_without_gpu(request, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(request.param))
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", False)


def test_cupy_without_a_gpu_is_not_available(cupy_without_gpu):
    assert gt.cuda.is_available() is False
    assert gt.cuda.device_count() == 0
    assert gt.cuda.memory_allocated() == 0 and gt.cuda.max_memory_allocated() == 0
    gt.cuda.synchronize()
    gt.cuda.reset_peak_memory_stats()


def test_cupy_without_a_gpu_keeps_cpu_work_and_refuses_cuda(cupy_without_gpu):
    x = gt.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    F.cross_entropy(F.layer_norm(F.gelu(x), (3,)), gt.tensor(np.array([0, 2]))).backward()
    assert x.grad.shape == (2, 3) and np.isfinite(x.grad.numpy()).all()
    assert not fused.available_for(x.data)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        gt.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        x.cuda()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cuda_kernels.get_function("softmax.cu", "softmax_f32")
    with pytest.warns(UserWarning, match="GradScaler: CUDA is not available"):
        assert not gt.amp.GradScaler().is_enabled()


def test_kernel_sources_are_stamped_with_their_headers(monkeypatch, tmp_path):
    # CuPy caches compiled modules by source text: a header edit must change the text it is given
    (tmp_path / "common.cuh").write_text("// v1\n")
    (tmp_path / "k.cu").write_text('#include "common.cuh"\n')
    monkeypatch.setattr(cuda_kernels, "kernel_dir", lambda: tmp_path)
    monkeypatch.setattr(cuda_kernels, "kernel_source", lambda name: (tmp_path / name).read_text())
    first = cuda_kernels._module_source("k.cu")
    assert first.startswith('#include "common.cuh"\n')
    assert cuda_kernels._module_source("k.cu") == first
    (tmp_path / "common.cuh").write_text("// v2\n")
    assert cuda_kernels._module_source("k.cu") != first


def test_kernel_sources_include_only_their_own_headers():
    # NVRTC has no host or standard-library headers, and toolkit headers are not always installed
    sources = sorted(kernel_dir().glob("*.cu")) + sorted(kernel_dir().glob("*.cuh"))
    assert len(sources) >= 6
    for path in sources:
        for bracket, name in re.findall(r'^\s*#\s*include\s*([<"])([^>"]+)', path.read_text(), re.MULTILINE):
            assert bracket == '"' and (kernel_dir() / name).is_file(), f"{path.name} includes {name}"


def test_multi_tensor_pointer_table_layout():
    # what kernels/multi_tensor.cu's block_chunk reads: lists * tensors pointers, tensors sizes, then blocks
    chunk = cuda_kernels.MULTI_TENSOR_CHUNK
    pointers = (0x7F0000000000, 0x7F0000001000, 0, 2**63 + 16)  # two lists (operands) of two tensors
    table, blocks = cuda_kernels.host_pointer_table(pointers, (5, 2 * chunk + 1))
    assert table.dtype == np.int64 and blocks == 4
    assert [int(v) % 2**64 for v in table[:4]] == list(pointers)
    assert table[4:6].tolist() == [5, 2 * chunk + 1]
    assert [(int(e) >> 32, int(e) & 0xFFFFFFFF) for e in table[6:]] == [(0, 0), (1, 0), (1, 1), (1, 2)]
