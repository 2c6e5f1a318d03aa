"""Benchmarks: gradtensor beside PyTorch eager and hand-written NumPy/CuPy.

`python -m bench.compare --device cpu|cuda [--quick]` prints the side-by-side table (and with
--write-readme renders it into README); `python -m pytest bench` gives pytest-benchmark timings of the
same workloads. bench/gpu_run.sh runs the GPU tests and the GPU comparison.
"""
