"""bench.compare: the hand-written peers compute what gradtensor computes (so the comparison is
honest), and a tiny run produces the results JSON and README's generated section."""
import json

import numpy as np
import pytest

import gradtensor as gt
from bench import compare, peers, render
from bench import workloads as W

# Tiny versions of every training workload; the transformer with SGD, since AdamW's first step is
# lr * sign(grad) and amplifies rounding in gradients that are zero in exact arithmetic (the key bias).
TRAINING_CASES = [
    W.mlp_case("mlp_sgd", (20, 16, 16, 5), 8, "sgd", 0.1),
    W.mlp_case("mlp_adamw", (16, 32, 32, 5), 8, "adamw", 1e-3),
    W.transformer_case("transformer", 16, 2, 8, 2, optimizer="sgd", lr=1.0),
    W.conv_case("conv", 2, image=8, channels=(4, 6), lr=1.0),
    W.lstm_case("lstm", 5, 2, 4, 8, lr=1.0),
    W.deep_mlp_case("deep_plain", 8, 8, 4, None, lr=1.0),
    W.deep_mlp_case("deep_checkpointed", 8, 8, 4, 3, lr=1.0),
]
# Mixed precision: float16 products on NumPy's float16 here, autocast on the CPU for gradtensor.
AMP_CASES = [
    W.mlp_case("mlp_fp16", (20, 16, 16, 5), 8, "sgd", 0.1, amp_dtype="float16"),
    W.transformer_case("transformer_fp16", 16, 2, 8, 2, amp_dtype="float16", optimizer="sgd", lr=1.0),
]


def _after_one_step(case, implementation, device="cpu"):
    runner = case.builders[implementation](device)
    before = [p.copy() for p in runner.parameters()]
    runner.step()
    return before, runner.parameters()


def _assert_same_update(case, implementation, rtol, device="cpu"):
    """One step from the same start moves every parameter alike (relative to the largest move)."""
    start, expected = _after_one_step(case, W.GRADTENSOR, device)
    peer_start, actual = _after_one_step(case, implementation, device)
    assert len(actual) == len(expected) > 0
    for index, (s, p, e, a) in enumerate(zip(start, peer_start, expected, actual)):
        np.testing.assert_array_equal(s, p)
        assert a.shape == e.shape and a.dtype == e.dtype == np.float32
        move = np.abs(e - s).max()
        assert move > 0, f"{case.key}: parameter {index} did not move"
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * move + 1e-7, err_msg=f"{case.key}: parameter {index}")


@pytest.mark.parametrize("case", TRAINING_CASES, ids=lambda c: c.key)
def test_hand_written_step_matches_gradtensor(case):
    _assert_same_update(case, W.HAND, rtol=1e-4)


@pytest.mark.parametrize("case", AMP_CASES, ids=lambda c: c.key)
def test_hand_written_float16_step_matches_gradtensor_autocast(case):
    _assert_same_update(case, W.HAND, rtol=5e-3)


@pytest.mark.parametrize("case", TRAINING_CASES, ids=lambda c: c.key)
def test_torch_step_matches_gradtensor(case):
    pytest.importorskip("torch")
    _assert_same_update(case, W.TORCH, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not gt.cuda.is_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("case", TRAINING_CASES + AMP_CASES, ids=lambda c: c.key)
def test_cupy_peer_matches_gradtensor_on_gpu(case):
    _assert_same_update(case, W.HAND, rtol=5e-3 if case in AMP_CASES else 1e-4, device="cuda")


def test_mlp_step_parameters_agree_to_1e_5():
    """The CPU MLP of the core issue (784-512-512-10, batch 128, SGD): one step, same start."""
    case = W.mlp_case("mlp", (784, 512, 512, 10), 128, "sgd", 0.01)
    _, expected = _after_one_step(case, W.GRADTENSOR)
    _, actual = _after_one_step(case, W.HAND)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5)


def test_hand_written_product_sum_gradients():
    x, y = np.array([1.0, -2.0, 3.0], np.float32), np.array([4.0, 5.0, -6.0], np.float32)
    total, grad_x, grad_y = peers.product_sum_forward_backward(x, y)
    assert total == pytest.approx(-24.0)
    np.testing.assert_array_equal(grad_x, y)
    np.testing.assert_array_equal(grad_y, x)


def test_hand_written_checkpointing_matches_plain_step():
    rng = np.random.default_rng(3)
    params = W.linear_params(rng, [6] * 6)
    data = [rng.standard_normal((4, 6), dtype=np.float32) for _ in range(2)]
    plain = [p.copy() for p in params]
    checkpointed = [p.copy() for p in params]
    loss_plain = peers.DeepMLPStep(plain, *data, lr=0.5)()
    loss_checkpointed = peers.DeepMLPStep(checkpointed, *data, lr=0.5, segments=2)()
    assert loss_plain == loss_checkpointed
    for a, b, p in zip(plain, checkpointed, params):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, p)


README_TEXT = """# title

intro kept as it is

<!-- bench:cpu:start -->
old cpu table
<!-- bench:cpu:end -->

between

<!-- bench:cuda:start -->
old cuda table
<!-- bench:cuda:end -->
tail
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    results_file = tmp_path / "cpu.json"
    status = compare.main(["--device", "cpu", "--mode", "tiny", "--only", "op_add,mlp_small,checkpoint_segments",
                           "--repeats", "2", "--json", str(results_file), "--write-readme", "--readme", str(readme)])
    assert status == 0
    return json.loads(results_file.read_text()), readme, results_file


def test_tiny_run_writes_results_json(tiny_run):
    results, _, _ = tiny_run
    assert results["device"] == "cpu" and results["mode"] == "tiny" and results["repeats"] == 2
    assert results["roofline"] is None and results["kernels"] == []
    for key in ("cpu", "cores", "python"):
        assert results["machine"][key]
    assert results["versions"]["gradtensor"] and results["versions"]["numpy"] == np.__version__
    assert results["threads"] >= 1 and results["timestamp"].endswith("UTC")
    assert [row["key"] for row in results["rows"]] == ["op_add", "mlp_small", "checkpoint_segments"]
    for row in results["rows"]:
        for implementation in (W.GRADTENSOR, W.HAND):
            result = row["results"][implementation]
            assert result["seconds"] > 0 and len(result["samples"]) == 2 and result["steps_per_repeat"] >= 1
    mlp = results["rows"][1]
    assert mlp["flops"] == 6 * 8 * (20 * 16 + 16 * 16 + 16 * 5)
    assert mlp["results"][W.GRADTENSOR]["peak_memory_bytes"] > 0
    assert mlp["results"][W.HAND]["peak_memory_bytes"] > 0
    assert "peak_memory_bytes" not in results["rows"][0]["results"][W.GRADTENSOR]  # per-op rows: no memory


def test_tiny_run_renders_only_the_cpu_section(tiny_run):
    results, readme, _ = tiny_run
    text = readme.read_text()
    before, rest = text.split("<!-- bench:cpu:start -->\n")
    table, after = rest.split("\n<!-- bench:cpu:end -->")
    assert before == README_TEXT.split("<!-- bench:cpu:start -->")[0]
    assert after == README_TEXT.split("<!-- bench:cpu:end -->")[1]  # cuda section untouched
    assert "old cpu table" not in table
    assert table.startswith("| workload | gradtensor |")
    assert "| MLP 20-16-16-5, batch 8, SGD, float32 |" in table
    assert "x slower" in table or "x faster" in table
    assert table == render.markdown(results)


def test_render_readme_from_saved_results(tiny_run, tmp_path):
    _, rendered_readme, results_file = tiny_run
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT)
    status = compare.main(["--render-readme", "--json", str(results_file), "--readme", str(readme)])
    assert status == 0
    assert readme.read_text() == rendered_readme.read_text()


def test_replace_section_needs_its_markers():
    with pytest.raises(ValueError, match="bench:cuda:start"):
        render.replace_section("no markers here", "cuda", "table")
    assert render.replace_section(README_TEXT, "cuda", "new").count("new") == 1


@pytest.mark.parametrize("mine, peer, expected", [(2.0, 1.0, "2.00x slower"), (1.0, 4.0, "4.00x faster"),
                                                  (1.0, None, "-")])
def test_ratio_wording(mine, peer, expected):
    assert render.format_ratio(mine, peer) == expected
