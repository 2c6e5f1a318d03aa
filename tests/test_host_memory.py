"""Host memory: glibc keeps freed blocks for reuse once gradtensor is imported (backend.keep_freed_host_memory)."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from gradtensor import backend

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# A step whose arrays come and go: 40 MiB allocated, written and freed, counted in page faults.
STEP_FAULTS = textwrap.dedent("""
    import resource
    import numpy as np
    import gradtensor

    def faults_of_a_step():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        live = [np.ones(1 << 18, np.float32) for _ in range(40)]
        del live
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults_of_a_step()
    print(faults_of_a_step())
""")


def _faults_of_a_second_step(**env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "GRADTENSOR_KEEP"))}
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS], env={**environ, **env},
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@glibc_only
def test_freed_host_memory_is_reused_without_page_faults():
    pages = 40 * (1 << 20) // 4096
    assert _faults_of_a_second_step() < pages // 20
    # as glibc does by default: the freed 40 MiB went back to the system and fault in again
    assert _faults_of_a_second_step(GRADTENSOR_KEEP_FREED_MEMORY="0") > pages // 2


@glibc_only
def test_keeping_freed_memory_yields_to_the_users_settings():
    assert backend.keep_freed_host_memory({}) is True
    assert backend.keep_freed_host_memory({"GRADTENSOR_KEEP_FREED_MEMORY": "0"}) is False
    assert backend.keep_freed_host_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is False
    assert backend.keep_freed_host_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) is False
    assert backend.keep_freed_host_memory({"MALLOC_ARENA_MAX": "2"}) is True  # other malloc settings do not count
