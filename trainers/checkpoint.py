"""Training-state files that load without running code: tensors in safetensors, the rest in JSON.

torch.save pickles, and unpickling can run any code the file names, so a run folder that someone
else wrote (a shared drive, a copied run) must never be unpickled freely. A training state (the
optimizer's and scheduler's state_dict, RNG states) is a tree of dicts, lists, tuples, numbers,
strings and tensors: `save_state` writes that tree as JSON in which each tensor is a key into one
safetensors file, and `load_state` rebuilds it. Checkpoints written before this format
(training_state.pt) are read with torch's weights-only loader, which refuses anything but plain data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
LEGACY_STATE = "training_state.pt"
_TAGS = ("tensor", "dict", "tuple")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (or at all); the message says what to do."""


def _encode(obj, tensors: dict):
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()  # copies: safetensors refuses shared memory
        return {"tensor": key}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        return {"dict": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    raise TypeError(f"a training state holds a {type(obj).__name__}; only tensors, numbers, strings, "
                    "lists, tuples and dicts are saved")


def _decode(node, tensors: dict):
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) != 1 or next(iter(node)) not in _TAGS:
        raise CheckpointError(f"unexpected entry {sorted(node)[:3]} in {STATE_JSON}")
    tag, value = next(iter(node.items()))
    if tag == "tensor":
        if value not in tensors:
            raise CheckpointError(f"{STATE_JSON} names tensor {value!r}, which {STATE_TENSORS} lacks")
        return tensors[value]
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in value)
    return {_decode(k, tensors): _decode(v, tensors) for k, v in value}


def save_state(folder: Path, state: dict) -> None:
    """state (a tree of plain values and tensors) as training_state.json + training_state.safetensors."""
    tensors: dict = {}
    tree = _encode(state, tensors)
    save_file(tensors, str(folder / STATE_TENSORS))
    (folder / STATE_JSON).write_text(json.dumps(tree), encoding="utf-8")


def load_state(folder: Path) -> dict:
    """The state save_state wrote (tensors on the CPU); no byte of it is unpickled."""
    if (folder / STATE_JSON).exists():
        try:
            tensors = load_file(str(folder / STATE_TENSORS), device="cpu")
            return _decode(json.loads((folder / STATE_JSON).read_text(encoding="utf-8")), tensors)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {folder} is damaged ({type(exc).__name__}: {exc}); delete that "
                                  "folder to resume from the one before, or start a new run") from exc
    legacy = folder / LEGACY_STATE
    if not legacy.exists():
        raise CheckpointError(f"checkpoint {folder} has no {STATE_JSON}; delete that folder or start a new run")
    try:  # the weights-only unpickler builds tensors and plain containers only, never other objects
        return torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the file is, it is not loaded
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(f"refused to load {legacy}: it holds more than tensors and plain values "
                              f"({type(exc).__name__}: {first}), and loading it could run code. Delete "
                              f"{folder} to resume from an earlier checkpoint, or start a new run") from exc
