"""Saving and loading state dicts in the safetensors format, atomically and without pickle.

The file holds every tensor under a readable name; a flat dict of tensors (a module's state_dict) keeps its
keys as the names, so any safetensors reader (PyTorch's included) sees the same names. The nesting, key types,
Python numbers, strings and the like are described by JSON in the file's metadata (never in tensor names);
`load` rebuilds exactly the structure that was saved from that description.
"""
import json
import os
import uuid

import numpy as np
import safetensors
import safetensors.numpy

from . import backend, dtypes
from .tensor import Tensor

__all__ = ["save", "load"]

# Metadata key of the structure description, and its format version.
_STRUCTURE_KEY = "gradtensor.structure"
_FORMAT_VERSION = 1
_SCALAR_TYPES = (bool, int, str, type(None))
_KEY_TYPES = (str, int, bool, float, type(None))  # dict keys JSON writes back with their type


def save(obj, path):
    """Write `obj` to `path` in the safetensors format; the previous file survives any failure.

    `obj` is a tensor or nested dicts / lists / tuples of tensors, NumPy arrays, Python numbers, strings,
    bools and None (e.g. {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}).
    Dict keys may be strings or other Python scalars (an optimizer state's int keys round-trip).
    Data goes to a temporary file next to `path` that is flushed to disk and then renamed over `path`.
    Returns `path`.
    """
    tensors = {}
    structure = _encode(obj, "", tensors)
    metadata = {_STRUCTURE_KEY: json.dumps({"version": _FORMAT_VERSION, "root": structure}, allow_nan=False)}
    _write_atomically(path, tensors, metadata)
    return path


def load(path, map_location=None):
    """Read a file written by `save` (or any safetensors file) back; never unpickles anything.

    Returns the saved structure: tensors as gradtensor Tensors on `map_location` ("cpu", "cuda", "cuda:N";
    default CPU), NumPy arrays as NumPy arrays, numbers as Python numbers. A safetensors file from another
    writer loads as a flat dict {name: Tensor}. A file that is not valid safetensors raises ValueError.
    """
    device = backend.as_device(map_location) or backend.CPU
    try:
        with safetensors.safe_open(os.fspath(path), framework="np") as reader:
            metadata = reader.metadata() or {}
            arrays = {name: _read_tensor(reader, name, path) for name in reader.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"load: {os.fspath(path)!r} is not a valid safetensors file ({err})") from None
    description = metadata.get(_STRUCTURE_KEY)
    if description is None:
        return {name: Tensor(backend.to_device(array, device)) for name, array in arrays.items()}
    try:
        root = json.loads(description)["root"]
        return _decode(root, arrays, device)
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ValueError(f"load: {os.fspath(path)!r} has a corrupt gradtensor structure description ({err})") from None


# --- encoding: object -> (structure description, named arrays) -------------------------

def _encode(obj, name, tensors):
    """The JSON description of `obj`; its arrays go into `tensors` under names derived from `name`."""
    if isinstance(obj, Tensor):
        node = {"tensor": _add_array(tensors, name, obj.data)}
        if obj.requires_grad:
            node["requires_grad"] = True
        return node
    if isinstance(obj, np.ndarray):
        return {"ndarray": _add_array(tensors, name, obj)}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, _KEY_TYPES):
                raise TypeError(f"save: dict keys must be str, int, float, bool or None, got {type(key).__name__}")
            items.append([_encode_key(key), _encode(value, _join(name, key), tensors)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(value, _join(name, i), tensors) for i, value in enumerate(obj)]}
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":  # (before float: np.float64 is one)
        return _encode(obj.item(), name, tensors)
    if isinstance(obj, float):
        return {"float": repr(obj)}  # repr round-trips exactly and spells out nan/inf, which JSON cannot
    if isinstance(obj, _SCALAR_TYPES):
        return {"value": obj}
    raise TypeError(
        f"save: cannot store a {type(obj).__name__} (at {name or 'the top level'!r}); save stores tensors, "
        "NumPy arrays, Python numbers, strings, bools, None, and dicts/lists/tuples of them"
    )


def _encode_key(key):
    return {"float": repr(float(key))} if isinstance(key, float) else key  # (np.float64's repr names its type)


def _join(prefix, key):
    return f"{prefix}.{key}" if prefix else str(key)


def _add_array(tensors, name, array):
    """Store a host copy of `array` under `name` (or a free variant of it) and return the name used."""
    if not (array.dtype.kind in "biuf" or dtypes.is_floating(array.dtype)):
        raise TypeError(f"save: cannot store {name!r} of dtype {array.dtype} (bool, integer or floating dtypes only)")
    unique = name or "tensor"
    suffix = 1
    while unique in tensors:
        unique = f"{name}~{suffix}"
        suffix += 1
    tensors[unique] = np.asarray(backend.to_host(array), order="C")  # (np.ascontiguousarray makes 0-d 1-d)
    return unique


def _write_atomically(path, tensors, metadata):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    temp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    # Created exclusively with the umask's permissions, as a plain open() of `path` would be.
    os.close(os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        safetensors.numpy.save_file(tensors, temp_path, metadata=metadata)
        fd = os.open(temp_path, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_path, path)
    except BaseException:
        os.unlink(temp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); skipped where directories cannot be opened or synced (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


# --- decoding ----------------------------------------------------------------------------

def _read_tensor(reader, name, path):
    if reader.get_slice(name).get_dtype() == "BF16" and dtypes.bfloat16 is None:
        raise TypeError(f"load: {os.fspath(path)!r} holds bfloat16 tensor {name!r}; install ml_dtypes to read it")
    array = reader.get_tensor(name)
    return array if array.flags.writeable else array.copy()


def _decode(node, arrays, device):
    if "tensor" in node:
        tensor = Tensor(backend.to_device(arrays[node["tensor"]], device))
        return tensor.requires_grad_(True) if node.get("requires_grad") else tensor
    if "ndarray" in node:
        return arrays[node["ndarray"]]
    if "dict" in node:
        return {_decode_key(key): _decode(child, arrays, device) for key, child in node["dict"]}
    if "list" in node:
        return [_decode(child, arrays, device) for child in node["list"]]
    if "tuple" in node:
        return tuple(_decode(child, arrays, device) for child in node["tuple"])
    if "float" in node:
        return float(node["float"])
    if "value" in node:
        return node["value"]
    raise ValueError(f"unknown node {node!r}")


def _decode_key(key):
    return float(key["float"]) if isinstance(key, dict) else key
