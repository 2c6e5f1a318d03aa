"""pytest-benchmark timings of every comparison workload (bench.workloads, quick sizes): one benchmark
per workload and implementation, grouped by workload. `python -m bench.compare` gives the side-by-side
table; this is the per-op / per-step view with pytest-benchmark's statistics:

    python -m pytest bench                        # measure
    python -m pytest -q bench --benchmark-disable  # CI: run each once
"""
import math

import pytest

import gradtensor as gt
from bench.measure import synchronizer
from bench.workloads import IMPLEMENTATIONS, Unsupported, cases

DEVICES = ["cpu"] + (["cuda"] if gt.cuda.is_available() else [])
PARAMS = [pytest.param(device, case, implementation, id=f"{device}-{case.key}-{implementation}")
          for device in DEVICES for case in cases(device, "quick") for implementation in IMPLEMENTATIONS
          if implementation in case.builders]


@pytest.mark.parametrize("device, case, implementation", PARAMS)
def test_workload(benchmark, device, case, implementation):
    try:
        runner = case.builders[implementation](device)
    except Unsupported as reason:
        pytest.skip(str(reason))
    synchronize = synchronizer(device)

    def step():
        result = runner.step()
        synchronize()
        return result

    benchmark.group = f"{device}: {case.label}"
    benchmark.extra_info["implementation"] = implementation
    result = benchmark(step)
    if case.measure_memory:  # a training step returns its loss
        assert math.isfinite(result.item())
