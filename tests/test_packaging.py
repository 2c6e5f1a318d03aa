"""Packaging and CI: the wheel carries every module and the kernel sources, an installed copy finds them,
and .ci/run runs the test command README gives."""
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gradtensor import _kernel_files

REPO = Path(__file__).resolve().parent.parent
KERNEL_SUFFIXES = (".cu", ".cuh")


def _source_kernel_files():
    return sorted(p.name for p in (REPO / "kernels").iterdir() if p.suffix in KERNEL_SUFFIXES)


def _run_pip(*args):
    result = subprocess.run([sys.executable, "-m", "pip", *args, "-q"], capture_output=True, text=True)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the source tree (the build writes build/ and *.egg-info beside its input)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gradtensor", "kernels"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    _run_pip("wheel", "--no-deps", "-w", str(tmp / "dist"), str(src))
    (path,) = (tmp / "dist").glob("gradtensor-*.whl")
    return path


def test_common_header_is_found_and_real():
    source = _kernel_files.kernel_source("common.cuh")
    assert "#define GT_GRID_STRIDE_LOOP(i, n)" in source
    assert "load_vec16" in source and "store_vec16" in source
    assert _kernel_files.kernel_path("common.cuh") == _kernel_files.kernel_dir() / "common.cuh"


def test_kernel_names_lists_the_cu_files():
    expected = sorted(p.name for p in (REPO / "kernels").glob("*.cu"))
    assert _kernel_files.kernel_names() == expected


def test_missing_kernel_names_the_file_and_the_alternatives():
    with pytest.raises(FileNotFoundError, match=r"'nope\.cu' not found .*'common\.cuh'"):
        _kernel_files.kernel_path("nope.cu")


def test_checkout_reads_the_kernels_folder_in_place():
    # gradtensor/_kernels is a symlink to kernels/: editable installs and plain checkouts see edits at once
    assert (REPO / "gradtensor" / "_kernels").is_symlink()
    assert _kernel_files.kernel_dir() == (REPO / "kernels").resolve()


def test_wheel_contains_every_module_and_kernel_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "gradtensor").rglob("*.py")}
    kernels = {f"gradtensor/_kernels/{name}" for name in _source_kernel_files() + ["__init__.py"]}
    missing = sorted((modules | kernels) - names)
    assert not missing, (
        f"missing from the wheel: {missing}; list new packages under [tool.setuptools] packages in pyproject.toml"
    )


def test_wheel_installed_elsewhere_finds_its_own_kernels(wheel, tmp_path):
    target = tmp_path / "site"
    _run_pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    script = (
        "import gradtensor._kernel_files as k; "
        "print(k.kernel_dir()); print(len(k.kernel_source('common.cuh'))); print(k.kernel_names())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
        check=True, capture_output=True, text=True,
    )
    kernel_dir, header_length, names = result.stdout.splitlines()
    assert Path(kernel_dir) == (target / "gradtensor" / "_kernels").resolve()
    assert int(header_length) == len((REPO / "kernels" / "common.cuh").read_text(encoding="utf-8"))
    assert names == str(sorted(p.name for p in (REPO / "kernels").glob("*.cu")))


def test_ci_runs_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (command,) = re.findall(r"Run the tests:\n\n```bash\n(.+)\n```", readme)
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert any(line == command or line.startswith(command + " ||") for line in ci_lines), command
