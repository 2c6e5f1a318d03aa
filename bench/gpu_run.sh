#!/usr/bin/env bash
# On a machine with a CUDA GPU and CuPy, from anywhere: the GPU tests, then the side-by-side
# comparison on the GPU (saved to bench/results/cuda.json and rendered into README's cuda section),
# then a short table, last. Each stage has its own time limit so the whole run fits in 10 minutes.
# Exits non-zero when a test or the comparison failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0

echo "== GPU tests: python3 -m pytest -q -m gpu tests"
timeout 210 python3 -m pytest -q -m gpu tests 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
[ "$test_status" -eq 0 ] || status=1

echo
echo "== comparison: python3 -m bench.compare --device cuda --write-readme"
timeout 330 python3 -m bench.compare --device cuda --write-readme
compare_status=$?
if [ "$compare_status" -ne 0 ]; then
    status=1
    # the results are saved after each workload: render what was measured before the stop
    python3 -m bench.compare --render-readme --device cuda || true
fi

echo
echo "== summary"
python3 -c "import cupy, torch; print('CuPy', cupy.__version__, '| PyTorch', torch.__version__)" 2>/dev/null \
    || python3 -c "import cupy; print('CuPy', cupy.__version__, '| PyTorch not importable')" 2>/dev/null \
    || echo "CuPy not importable"
echo "GPU tests (exit status $test_status): $(grep -E '(passed|failed|skipped|error)' "$log" | tail -n 1)"
echo "comparison exit status $compare_status (124: stopped at its time limit)"
python3 -m bench.compare --summary --device cuda || echo "no comparison results"
exit "$status"
