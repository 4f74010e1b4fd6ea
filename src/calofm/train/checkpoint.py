"""Checkpoints as safetensors + JSON, written atomically.

A checkpoint is ONE safetensors file whose metadata holds the JSON description under the key
``calofm``, so tensors and description can never disagree after a kill; a readable copy of the
JSON is written beside it. Loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from calofm.core.errors import InputError
from calofm.core.files import atomic_path

META_KEY = "calofm"


def save(path: str | Path, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write ``tensors`` and the JSON-able ``info`` to ``path`` (.safetensors) and ``path`` .json."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    text = json.dumps(info, indent=1, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: text})
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(text + "\n")


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and JSON description of a checkpoint written by :func:`save`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise InputError(path, f"not a readable safetensors checkpoint ({exc})") from None
    if META_KEY not in meta:
        raise InputError(path, "safetensors file without a calofm description (not written by calofm)")
    return tensors, json.loads(meta[META_KEY])


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state dict as (tensors, JSON): per-parameter tensors under ``optim.<i>.<key>``."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for name, value in info["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}
