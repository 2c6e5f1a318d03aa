"""Where the CUDA kernel sources are, in any install.

They live in the repository's top-level kernels/ folder; gradtensor/_kernels is a symlink to it,
so wheels carry the sources inside the package (as gradtensor/_kernels/) and editable installs
and plain checkouts read them in place. Either way they sit beside this module.
"""
from pathlib import Path

_KERNEL_DIR = (Path(__file__).parent / "_kernels").resolve()


def kernel_dir():
    """The folder holding the kernel sources; pass it as `-I` when compiling them."""
    return _KERNEL_DIR


def kernel_names():
    """File names of the kernels (`*.cu`), sorted."""
    return sorted(path.name for path in _KERNEL_DIR.glob("*.cu"))


def kernel_path(name):
    """Path of the kernel source or header `name` (e.g. "common.cuh")."""
    path = _KERNEL_DIR / name
    if not path.is_file():
        available = sorted(p.name for p in _KERNEL_DIR.iterdir() if p.suffix in (".cu", ".cuh"))
        raise FileNotFoundError(f"kernel source {name!r} not found in {_KERNEL_DIR}; available: {available}")
    return path


def kernel_source(name):
    """Text of the kernel source or header `name`."""
    return kernel_path(name).read_text(encoding="utf-8")
