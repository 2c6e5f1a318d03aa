"""The examples run as README tells users to run them, and reach what they promise."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_example(name, *args):
    # PYTHONPATH makes a checkout that was never pip-installed import the same gradtensor.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_spiral_reaches_95_percent_training_accuracy():
    output = run_example("spiral.py")
    losses = [float(v) for v in re.findall(r"^step\s+\d+\s+loss ([\d.]+)$", output, flags=re.MULTILINE)]
    assert len(losses) >= 5, output
    assert losses[-1] < 0.5 * losses[0], output
    (accuracy,) = re.findall(r"^final training accuracy: ([\d.]+)$", output, flags=re.MULTILINE)
    assert float(accuracy) >= 0.95, output


def _readme_python_blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_python_blocks_run():
    blocks = _readme_python_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
