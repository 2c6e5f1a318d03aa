"""Every CUDA kernel source compiles with the local nvcc for Hopper (sm_90), without warnings, and
defines the entry points gradtensor.cuda_kernels launches. Runs on CPU-only machines; skipped when
nvcc is absent. (NVRTC, which CuPy uses at run time, is exercised by tests/test_kernels_gpu.py.)"""
import re
import shutil
import subprocess

import pytest

from gradtensor._kernel_files import kernel_dir, kernel_names

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found")

SUFFIXES = ("f32", "f16")
# extern "C" kernels per file: the names gradtensor.cuda_kernels asks RawModule for
ENTRY_POINTS = {
    "bias_act.cu": {f"{name}_{s}" for name in ("bias_act_forward", "bias_act_backward", "column_sums_partial")
                    for s in SUFFIXES},
    "softmax.cu": {f"{name}_{s}" for name in ("softmax", "log_softmax", "softmax_cross_entropy") for s in SUFFIXES},
    "layer_norm.cu": {f"{name}_{s}" for name in ("layer_norm_forward", "layer_norm_backward_dx",
                                                  "layer_norm_backward_params_partial") for s in SUFFIXES},
    "multi_tensor.cu": {f"{name}_{s}" for name in ("sgd_step", "adam_step", "unscale_and_check") for s in SUFFIXES},
    "dropout.cu": {"dropout_mask"} | {f"{name}_{s}" for name in ("dropout_forward", "dropout_backward")
                                       for s in SUFFIXES},
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiles all sources at once (in parallel: nvcc is mostly single-threaded) and returns
    {name: (return code, compiler output, object path)}."""
    out_dir = tmp_path_factory.mktemp("kernels")
    jobs = {}
    for name in kernel_names():
        obj = out_dir / (name + ".o")
        command = [NVCC, "-arch=sm_90", "-c", "-I", str(kernel_dir()), "-o", str(obj), str(kernel_dir() / name)]
        jobs[name] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), obj)
    return {name: (process.wait(), process.stdout.read(), obj) for name, (process, obj) in jobs.items()}


def test_every_kernel_file_is_known():
    assert set(kernel_names()) == set(ENTRY_POINTS)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_kernel_compiles_without_warnings(compiled, name):
    returncode, output, _ = compiled[name]
    assert returncode == 0, output
    assert "warning" not in output.lower(), output


def _kernel_names_in(obj):
    """Names of the __global__ functions in a host object, from nvcc's launch stubs
    (`__device_stub__Z<length><name>...`: extern "C" names appear unmangled after the length)."""
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    names = set()
    for match in re.finditer(r"__device_stub__Z(\d+)", symbols):
        length = int(match.group(1))
        names.add(symbols[match.end():match.end() + length])
    return names


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm not found")
@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_kernel_defines_its_entry_points(compiled, name):
    returncode, output, obj = compiled[name]
    assert returncode == 0, output
    assert _kernel_names_in(obj) == ENTRY_POINTS[name]
