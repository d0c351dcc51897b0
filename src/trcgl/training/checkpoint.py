"""Training checkpoints in safetensors only: weights, EMA, optimiser, RNG states, counters.

A checkpoint is a folder ``checkpoints/epoch-NNNN/``:

* ``model.safetensors`` / ``ema.safetensors``: state dicts;
* ``optimizer.safetensors``: the optimiser's per-parameter tensors (``state.<i>.<name>``),
  with its ``param_groups`` as JSON in the file's metadata;
* ``rng.safetensors``: torch CPU (and CUDA) generator states, with NumPy's and Python's
  states as JSON in the metadata;
* ``trainer.json``: epoch, step, best score, patience counter, metric history.

The folder is written under a temporary name and renamed when complete, then
``checkpoints/latest.json`` is replaced atomically to point at it, so a kill at any moment
leaves the previous checkpoint usable. Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trcgl.errors import DataError
from trcgl.files import atomic_write_text

LATEST = "latest.json"


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """Flatten an optimiser state dict into tensors plus JSON for the rest."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    meta = json.dumps({"param_groups": state["param_groups"], "scalars": scalars})
    return tensors, meta


def load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["optimizer"])
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, extra in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(extra)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], str]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = json.dumps(
        {
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "python": [py_version, list(py_state), py_gauss],
        }
    )
    return tensors, meta


def restore_rng(path: Path) -> None:
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["rng"])
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(
    directory: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    trainer_state: dict[str, Any],
    keep: set[str] = frozenset(),
) -> Path:
    """Write ``directory/epoch-NNNN`` completely, point ``latest.json`` at it, prune older ones
    (except the names in ``keep``)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    final = directory / name
    tmp = directory / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_state(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_state(ema), str(tmp / "ema.safetensors"))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"optimizer": meta})
    tensors, meta = rng_state()
    save_file(tensors, str(tmp / "rng.safetensors"), metadata={"rng": meta})
    (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(directory / LATEST, json.dumps({"checkpoint": name}) + "\n")
    for old in directory.glob("epoch-*"):
        if old.name != name and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    path = directory / json.loads(pointer.read_text())["checkpoint"]
    if not (path / "trainer.json").is_file():
        raise DataError("checkpoint named by latest.json is incomplete", path=path)
    return path


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ema: torch.nn.Module | None,
) -> dict[str, Any]:
    """Restore weights, optimiser (unless ``None``: a new stage starts) and RNG states;
    return the trainer state."""
    from trcgl.models.base import load_state

    load_state(model, path / "model.safetensors", "checkpoint model")
    if ema is not None:
        load_state(ema, path / "ema.safetensors", "checkpoint EMA")
    if optimizer is not None:
        load_optimizer(optimizer, path / "optimizer.safetensors")
    restore_rng(path / "rng.safetensors")
    return json.loads((path / "trainer.json").read_text())
