"""gt.save / gt.load: exact round trips of nested structures, the safetensors layout, atomic writes,
refusal of non-safetensors (pickle) files, and interchange with PyTorch's safetensors."""
import json
import math
import os
import pickle

import numpy as np
import pytest
import safetensors
import safetensors.numpy

import gradtensor as gt
from gradtensor import optim
from gradtensor.io import load, save

FLOAT_DTYPES = [np.float16, np.float32, np.float64] + ([gt.bfloat16] if gt.bfloat16 is not None else [])


def assert_same(loaded, original, where="root"):
    """Recursive equality that also checks types (1 vs 1.0 vs True, list vs tuple, tensor dtypes)."""
    assert type(loaded) is type(original) or (isinstance(original, gt.Tensor) and type(loaded) is gt.Tensor), where
    if isinstance(original, gt.Tensor):
        assert loaded.dtype == original.dtype and loaded.shape == original.shape, where
        assert loaded.requires_grad == original.requires_grad, where
        np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=where)
    elif isinstance(original, np.ndarray):
        assert loaded.dtype == original.dtype, where
        np.testing.assert_array_equal(loaded, original, err_msg=where)
    elif isinstance(original, dict):
        assert list(loaded) == list(original), where
        for key in original:
            assert type(next(k for k in loaded if k == key)) is type(key), where
            assert_same(loaded[key], original[key], f"{where}[{key!r}]")
    elif isinstance(original, (list, tuple)):
        assert len(loaded) == len(original), where
        for i, (a, b) in enumerate(zip(loaded, original)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(original, float) and math.isnan(original):
        assert math.isnan(loaded), where
    else:
        assert loaded == original, where


def state_dict_like():
    rng = np.random.default_rng(0)
    tensors = {f"layers.{i}.weight": gt.tensor(rng.standard_normal((3, 2)).astype(dtype))
               for i, dtype in enumerate(FLOAT_DTYPES)}
    tensors.update({
        "layers.0.bias": gt.tensor(np.float32(1.5)),  # 0-d
        "empty": gt.zeros(0, 3),
        "counts": gt.tensor(np.array([1, -2], dtype=np.int32)),
        "steps": gt.tensor(np.array([2**40], dtype=np.int64)),
        "mask": gt.tensor(np.array([True, False])),
        "transposed": gt.tensor(np.arange(6.0).reshape(2, 3).T),  # not contiguous
    })
    return tensors


def file_names_and_metadata(path):
    with safetensors.safe_open(str(path), framework="np") as reader:
        return list(reader.keys()), reader.metadata()


def test_flat_state_dict_round_trip_keeps_names(tmp_path):
    state = state_dict_like()
    path = tmp_path / "model.safetensors"
    assert save(state, path) == path
    loaded = load(path)
    assert_same(loaded, state)
    names, _ = file_names_and_metadata(path)
    assert sorted(names) == sorted(state)
    raw = safetensors.numpy.load_file(str(path))  # any safetensors reader sees the same names and values
    assert sorted(raw) == sorted(state)
    np.testing.assert_array_equal(raw["transposed"], state["transposed"].numpy())


def test_nested_checkpoint_round_trip(tmp_path):
    checkpoint = {
        "model": state_dict_like(),
        "epoch": 3,
        "loss": 0.1 + 0.2,
        "best": float("inf"),
        "diverged_at": float("nan"),
        "big": 2**70,
        "name": "run-1",
        "flags": [True, False, None],
        "shape": (2, 3.0, "x"),
        "by_step": {0: 1.0, "0": 2, 1.5: "half", True: "yes", None: []},
        "nested": {"a": {"b": {"c": gt.ones(2, requires_grad=True)}}},
        "numpy": np.arange(4, dtype=np.int16),
        "empty": {},
    }
    path = tmp_path / "ckpt.safetensors"
    save(checkpoint, path)
    loaded = load(path)
    assert_same(loaded, checkpoint)
    assert loaded["nested"]["a"]["b"]["c"].is_leaf


def test_structure_lives_in_metadata_not_in_names(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save({"model": {"fc.weight": gt.ones(2)}, "epoch": 7, "opt": {"state": {0: {"step": 3}}}}, path)
    names, metadata = file_names_and_metadata(path)
    assert names == ["model.fc.weight"]  # numbers are not stored as tensors
    structure = json.loads(metadata["gradtensor.structure"])
    assert structure["root"]["dict"][1] == ["epoch", {"value": 7}]


def test_colliding_dotted_names_stay_apart(tmp_path):
    obj = {"a.b": gt.ones(1), "a": {"b": gt.zeros(1)}, "tensor": gt.full((1,), 2.0)}
    save(obj, tmp_path / "x.safetensors")
    assert_same(load(tmp_path / "x.safetensors"), obj)


def test_single_tensor_and_loaded_tensors_are_writable(tmp_path):
    x = gt.arange(4.0)
    save(x, tmp_path / "x.safetensors")
    loaded = load(tmp_path / "x.safetensors", map_location="cpu")
    assert_same(loaded, x)
    loaded.data[0] = 10.0  # parameters loaded from a checkpoint are updated in place by optimizers
    assert x.numpy()[0] == 0.0


def test_optimizer_state_round_trip_resumes_bit_for_bit(tmp_path):
    def make():
        params = [gt.tensor(np.linspace(-1, 1, 4).astype(np.float32), requires_grad=True),
                  gt.tensor(np.float32(0.5), requires_grad=True)]
        opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}], lr=0.1, amsgrad=True)
        return params, opt

    def train(params, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            sum(((p - 0.3) ** 2).sum() for p in params).backward()
            opt.step()

    straight, opt = make()
    train(straight, opt, 6)

    first, opt_first = make()
    train(first, opt_first, 3)
    path = tmp_path / "ckpt.safetensors"
    save({"params": {str(i): p for i, p in enumerate(first)}, "optimizer": opt_first.state_dict()}, path)
    checkpoint = load(path)
    assert_same(checkpoint["optimizer"], opt_first.state_dict())
    resumed, opt_resumed = make()
    for p, saved in zip(resumed, checkpoint["params"].values()):
        p.data[...] = saved.data
    opt_resumed.load_state_dict(checkpoint["optimizer"])
    train(resumed, opt_resumed, 3)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_scheduler_state_round_trip(tmp_path):
    from gradtensor.optim import lr_scheduler

    opt = optim.SGD([gt.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, total_iters=2), lr_scheduler.OneCycleLR(opt, 1.0, total_steps=10)], [2])
    for _ in range(3):
        opt.step()
        scheduler.step()
    save({"scheduler": scheduler.state_dict()}, tmp_path / "s.safetensors")
    assert_same(load(tmp_path / "s.safetensors")["scheduler"], scheduler.state_dict())


def test_numpy_scalars_round_trip_as_python_numbers(tmp_path):
    """np.float64 is a float whose repr names its type: written as a plain float, as value and as key
    (a schedule computed with NumPy makes its lr one)."""
    path = tmp_path / "c.safetensors"
    save({"lr": np.float64(0.1) ** 0.5, np.float64(1.5): np.int64(3), "flag": np.bool_(True)}, path)
    loaded = load(path)
    assert loaded == {"lr": 0.1 ** 0.5, 1.5: 3, "flag": True}
    assert [type(v) for v in loaded.values()] == [float, int, bool] and type(next(iter(loaded))) is str


def test_unsupported_values_raise_before_writing(tmp_path):
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match="cannot store a set"):
        save({"a": {1, 2}}, path)
    with pytest.raises(TypeError, match="dict keys"):
        save({(1, 2): 3}, path)
    with pytest.raises(TypeError, match="dtype object"):
        save({"a": np.array([None])}, path)
    assert os.listdir(tmp_path) == []


# --- atomic writes -------------------------------------------------------------------------------

def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    old = {"w": gt.arange(3.0)}
    save(old, path)

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"partial")  # a torn header
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save({"w": gt.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert_same(load(path), old)


def test_failed_replace_leaves_no_temp(tmp_path, monkeypatch):
    def fail(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        save({"w": gt.zeros(3)}, tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_contents(tmp_path):
    path = tmp_path / "x.safetensors"
    save({"a": gt.zeros(2)}, path)
    save({"b": 1}, path)
    assert load(path) == {"b": 1}
    assert os.listdir(tmp_path) == ["x.safetensors"]


# --- untrusted files ------------------------------------------------------------------------------

class _CreatesMarker:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    live_marker = tmp_path / "payload_is_live"
    pickle.loads(pickle.dumps(_CreatesMarker(str(live_marker))))
    assert live_marker.exists()  # the payload does run when unpickled
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model": _CreatesMarker(str(marker))}))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"\xff" * 64, b"\x08\x00\x00\x00\x00\x00\x00\x00not json"])
def test_garbage_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(path)


def test_corrupt_structure_description_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file({"a": np.zeros(2)}, str(path), metadata={"gradtensor.structure": "{\"root\": 5"})
    with pytest.raises(ValueError, match="corrupt gradtensor structure"):
        load(path)


def test_torch_pickle_checkpoint_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load(path)


# --- interchange with PyTorch's safetensors ------------------------------------------------------

def test_loads_torch_written_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    state["half"] = torch.ones(2, dtype=torch.bfloat16)
    path = tmp_path / "torch.safetensors"
    safetensors.torch.save_file(state, str(path))
    loaded = load(path)
    assert sorted(loaded) == sorted(state)
    for name, value in state.items():
        assert isinstance(loaded[name], gt.Tensor)
        np.testing.assert_array_equal(loaded[name].numpy().astype(np.float32), value.float().numpy())
    assert loaded["0.weight"].dtype == gt.float32 and loaded["0.weight"].shape == (4, 3)


def test_torch_reads_our_file(tmp_path):
    torch = pytest.importorskip("torch")
    import safetensors.torch

    state = state_dict_like()
    path = tmp_path / "ours.safetensors"
    save(state, path)
    theirs = safetensors.torch.load_file(str(path))
    assert sorted(theirs) == sorted(state)
    for name, value in state.items():
        if value.dtype == gt.bfloat16:
            np.testing.assert_array_equal(theirs[name].float().numpy(), value.numpy().astype(np.float32))
        else:
            np.testing.assert_array_equal(theirs[name].numpy(), value.numpy())
    module = torch.nn.Linear(3, 2)
    module_state = {k: gt.tensor(v.detach().numpy() + 1) for k, v in module.state_dict().items()}
    save(module_state, path)
    module.load_state_dict(safetensors.torch.load_file(str(path)))
    np.testing.assert_array_equal(module.weight.detach().numpy(), module_state["weight"].numpy())


def test_exported_at_top_level():
    assert gt.save is save and gt.load is load
