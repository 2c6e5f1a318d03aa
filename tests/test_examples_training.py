"""The training examples (digits classifier, gradient flow, character LSTM) run and reach what they promise.

They run in this process (imported by path) with small settings where the defaults would be slow; the
optional example dependencies are skipped cleanly when absent (CI installs `.[test,examples]`).
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradtensor as gt

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def load_example(name, *required):
    """The example module examples/<name>.py, after skipping unless the packages it needs import."""
    for package in required:
        pytest.importorskip(package)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    return load_example("train_digits", "sklearn", "tqdm")


def run_digits(digits, tmp_path, capsys, *args):
    """main() on the CPU without a progress bar; returns (result dict, stdout)."""
    result = digits.main(["--device", "cpu", "--no-progress", "--out", str(tmp_path), *args])
    return result, capsys.readouterr().out


def printed_accuracy(output):
    (accuracy,) = re.findall(r"^test accuracy: ([\d.]+)$", output, flags=re.MULTILINE)
    return float(accuracy)


def assert_same_state(left, right):
    assert list(left) == list(right)
    for name in left:
        np.testing.assert_array_equal(left[name].numpy(), right[name].numpy(), err_msg=name)


# --- train_digits.py -------------------------------------------------------------------------------


def test_digits_mlp_defaults_reach_97_percent_and_save_the_model(digits, tmp_path, capsys):
    result, output = run_digits(digits, tmp_path, capsys)
    assert printed_accuracy(output) == pytest.approx(result["test_accuracy"], abs=5e-5)
    assert result["test_accuracy"] >= 0.97, output
    epochs = re.findall(r"^epoch\s+(\d+)/30\s+loss ([\d.]+)", output, flags=re.MULTILINE)
    assert [int(e) for e, _ in epochs] == list(range(1, 31))
    assert float(epochs[-1][1]) < 0.1 * float(epochs[0][1])
    # The saved weights alone reproduce the accuracy.
    assert result["model_path"] == str(tmp_path / "model_mlp.safetensors")
    model = digits.build_model("mlp")
    model.load_state_dict(gt.load(result["model_path"]))
    model.eval()
    _, _, x_test, y_test = digits.load_splits()
    with gt.no_grad():
        predictions = model(gt.tensor(x_test)).argmax(axis=1).numpy()
    assert np.mean(predictions == y_test) == pytest.approx(result["test_accuracy"])


def test_digits_split_is_fixed_and_stratified(digits):
    x_train, y_train, x_test, y_test = digits.load_splits()
    again = digits.load_splits()
    np.testing.assert_array_equal(again[3], y_test)
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.bincount(y_test)) <= {35, 36, 37}  # every digit about equally represented


def test_digits_cnn_learns_in_a_few_epochs(digits, tmp_path, capsys):
    result, output = run_digits(digits, tmp_path, capsys, "--model", "cnn", "--epochs", "3")
    assert "model cnn" in output
    assert result["test_accuracy"] >= 0.75, output  # chance is 0.1
    assert set(gt.load(result["model_path"])) == set(digits.build_model("cnn").state_dict())


def test_digits_resumed_run_ends_bitwise_equal_to_an_uninterrupted_one(digits, tmp_path, capsys):
    straight, output = run_digits(digits, tmp_path / "straight", capsys, "--epochs", "3", "--checkpoint-every", "2")
    checkpoint_path = tmp_path / "straight" / "checkpoint_epoch002.safetensors"
    assert f"checkpoint saved: {checkpoint_path}" in output
    assert not (tmp_path / "straight" / "checkpoint_epoch003.safetensors").exists()
    checkpoint = gt.load(checkpoint_path)
    assert checkpoint["epoch"] == 2
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "scaler", "epoch", "config"}
    assert len(checkpoint["optimizer"]["state"]) == len(checkpoint["model"])  # Adam moments of every parameter
    assert checkpoint["scheduler"]["last_epoch"] == 2

    resumed, output = run_digits(digits, tmp_path / "resumed", capsys, "--resume", str(checkpoint_path))
    assert f"resumed from {checkpoint_path} after epoch 2" in output
    assert re.findall(r"^epoch (\d)/3", output, flags=re.MULTILINE) == ["3"]  # only the missing epoch ran
    assert_same_state(gt.load(straight["model_path"]), gt.load(resumed["model_path"]))
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_digits_resume_refuses_a_different_configuration(digits, tmp_path, capsys):
    run_digits(digits, tmp_path, capsys, "--epochs", "1", "--checkpoint-every", "1")
    checkpoint_path = str(tmp_path / "checkpoint_epoch001.safetensors")
    with pytest.raises(SystemExit, match="'model': 'mlp'.*'model': 'cnn'"):
        run_digits(digits, tmp_path, capsys, "--resume", checkpoint_path, "--model", "cnn")
    with pytest.raises(SystemExit, match="epochs"):
        run_digits(digits, tmp_path, capsys, "--resume", checkpoint_path, "--epochs", "5")


def test_digits_amp_bfloat16_on_cpu_trains(digits, tmp_path, capsys):
    if gt.bfloat16 is None:
        pytest.skip("bfloat16 on the CPU needs ml_dtypes")
    result, output = run_digits(digits, tmp_path, capsys, "--amp", "--epochs", "3", "--checkpoint-every", "3")
    assert "autocast bfloat16" in output
    assert result["test_accuracy"] >= 0.85, output
    assert gt.load(tmp_path / "checkpoint_epoch003.safetensors")["scaler"] == {}  # no loss scaling for bfloat16
    assert all(t.dtype == gt.float32 for t in gt.load(result["model_path"]).values())  # master weights


def test_digits_amp_float16_on_cpu_trains_with_loss_scaling(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gt, "bfloat16", None)  # as without ml_dtypes: the CPU falls back to float16
    result, output = run_digits(digits, tmp_path, capsys, "--amp", "--epochs", "2", "--checkpoint-every", "2")
    assert "autocast float16" in output
    assert result["test_accuracy"] >= 0.85, output
    scaler_state = gt.load(tmp_path / "checkpoint_epoch002.safetensors")["scaler"]
    assert scaler_state["scale"] > 1.0 and scaler_state["_growth_tracker"] > 0  # scaled, and steps were taken


# --- gradient_flow.py ------------------------------------------------------------------------------


def test_gradient_flow_writes_a_plot_showing_sigmoid_gradients_vanish(tmp_path, capsys):
    gradient_flow = load_example("gradient_flow", "matplotlib")
    import matplotlib.image

    out = tmp_path / "flow.png"
    summary = gradient_flow.main(["--device", "cpu", "--steps", "15", "--out", str(out)])
    output = capsys.readouterr().out
    printed = dict(
        (name, (float(first), float(last)))
        for name, first, last in re.findall(
            r"^(\S+)\s+first-layer grad norm (\S+)\s+last-layer grad norm (\S+)\s+final loss", output, re.MULTILINE
        )
    )
    assert set(printed) == {"sigmoid", "tanh", "relu", "relu+residual"}
    for name, (first, last) in printed.items():
        assert (first, last) == pytest.approx(summary[name][:2], rel=0.06)  # printed with 2 digits
    first, last, _ = summary["sigmoid"]
    assert first < 1e-6 * last
    first, last, _ = summary["relu+residual"]
    assert first > 0.1 * last
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert image.std() > 0.05  # something is drawn


def test_gradient_flow_norms_come_from_utils_grad_norms(monkeypatch, tmp_path):
    gradient_flow = load_example("gradient_flow", "matplotlib")
    calls = []
    real = gt.utils.grad_norms
    monkeypatch.setattr(gt.utils, "grad_norms", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(gradient_flow, "plot", lambda *args: None)  # drawing is tested above
    gradient_flow.main(["--device", "cpu", "--steps", "2", "--depth", "4", "--out", str(tmp_path / "g.png")])
    assert len(calls) == 2 * len(gradient_flow.NETWORKS)


# --- char_rnn.py -----------------------------------------------------------------------------------


def test_char_rnn_loss_decreases_and_samples_start_from_the_prompt():
    # A subprocess, as users run it: this covers the script's entry point too.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["--device", "cpu", "--steps", "60", "--hidden", "32", "--chunk", "16", "--batch-size", "8",
            "--log-every", "20", "--sample-every", "0", "--sample-length", "30", "--prompt", "The "]
    result = subprocess.run([sys.executable, str(EXAMPLES / "char_rnn.py"), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    losses = [float(v) for v in re.findall(r"^step\s+\d+\s+loss ([\d.]+)$", result.stdout, re.MULTILINE)]
    assert len(losses) == 4, result.stdout  # steps 1, 20, 40, 60
    assert losses[0] > 3.0  # about log(43 characters) at the start
    assert losses[-1] < 0.8 * losses[0], result.stdout
    (sample,) = re.findall(r"^--- final sample ---\n(.*)\n---$", result.stdout, re.MULTILINE | re.DOTALL)
    assert sample.startswith("The ") and len(sample) == 4 + 30


def test_char_rnn_state_is_carried_but_detached_between_chunks():
    char_rnn = load_example("char_rnn")
    gt.manual_seed(0)
    model = char_rnn.CharLSTM(vocab_size=5, embed_size=3, hidden_size=4, num_layers=1)
    ids = gt.tensor(np.array([[0, 1, 2, 3], [4, 3, 2, 1]]))
    _, state = model(ids)
    carried = char_rnn.detach_state(state)
    assert all(s.grad_fn is not None for s in state)
    assert all(s.grad_fn is None and not s.requires_grad for s in carried)
    for s, c in zip(state, carried):
        np.testing.assert_array_equal(s.numpy(), c.numpy())
    # The carried state changes what the next chunk predicts (the network remembers across chunks).
    logits_fresh, _ = model(ids)
    logits_carried, _ = model(ids, carried)
    assert not np.allclose(logits_fresh.numpy(), logits_carried.numpy())


def test_char_rnn_vocabulary_round_trips_and_rejects_unknown_characters():
    char_rnn = load_example("char_rnn")
    text = Path(char_rnn.DEFAULT_TEXT).read_text(encoding="utf-8")
    assert len(text) > 3000
    vocab = char_rnn.Vocabulary(text)
    assert vocab.decode(vocab.encode(text)) == text
    with pytest.raises(ValueError, match="'#'"):
        vocab.encode("#")
