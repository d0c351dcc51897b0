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

Both trainers write their checkpoints here, with :func:`write_checkpoint`: the classifier's
(:func:`save_checkpoint`, ``epoch-NNNN/``) and the generator's (``step-NNNNNNN/``: the context
vectors, the trainable UNet weights, the optimiser, the RNG states with the training
generator's, ``state.json``; :mod:`trcgl.diffusion.train`).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Collection, Mapping
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


def restore_rng(path: Path) -> dict[str, torch.Tensor]:
    """Restore the global RNG states; returns the file's other tensors (a trainer's private
    generators, saved with ``rng_extra`` of :func:`write_checkpoint`)."""
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
    return {k: v for k, v in tensors.items() if k != "torch" and not k.startswith("cuda.")}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


#: What a checkpoint file holds: tensors, or a function that writes the file at a path.
CheckpointFile = Mapping[str, torch.Tensor] | Callable[[Path], None]


def write_checkpoint(
    directory: Path,
    name: str,
    files: Mapping[str, CheckpointFile],
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    *,
    state_file: str = "trainer.json",
    rng_extra: Mapping[str, torch.Tensor] | None = None,
    keep: Collection[str] = (),
) -> Path:
    """Write the checkpoint ``directory/name`` completely, point ``latest.json`` at it, and
    remove the older checkpoints of its kind (names with the same prefix before ``-``), except
    the names in ``keep``.

    ``files``: ``<stem>.safetensors`` each (an empty tensor mapping writes nothing), then
    ``optimizer.safetensors``, ``rng.safetensors`` (the global states and ``rng_extra``) and
    ``state`` as JSON in ``state_file``; all in a temporary folder renamed when complete."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for stem, content in files.items():
        path = tmp / f"{stem}.safetensors"
        if callable(content):
            content(path)
        elif content:
            save_file(dict(content), str(path))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"optimizer": meta})
    tensors, meta = rng_state()
    tensors.update(rng_extra or {})
    save_file(tensors, str(tmp / "rng.safetensors"), metadata={"rng": meta})
    (tmp / state_file).write_text(json.dumps(dict(state), indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(directory / LATEST, json.dumps({"checkpoint": name}) + "\n")
    kind = name.split("-", 1)[0]
    for old in directory.glob(f"{kind}-*"):
        if old.name != name and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path, state_file: str = "trainer.json") -> Path | None:
    """The checkpoint ``directory/latest.json`` points at (``None``: none yet); an error when
    it lacks its ``state_file``, the file written last."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    path = directory / json.loads(pointer.read_text())["checkpoint"]
    if not (path / state_file).is_file():
        raise DataError("checkpoint named by latest.json is incomplete", path=path)
    return path


def save_checkpoint(
    directory: Path,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: torch.nn.Module | None,
    trainer_state: dict[str, Any],
    keep: Collection[str] = (),
) -> Path:
    """The classifier's checkpoint ``directory/epoch-NNNN`` (:func:`write_checkpoint`): the
    model, its EMA, the optimiser, the RNG states and ``trainer.json``."""
    files: dict[str, CheckpointFile] = {"model": _state(model)}
    if ema is not None:
        files["ema"] = _state(ema)
    return write_checkpoint(
        directory, f"epoch-{epoch:04d}", files, optimizer, trainer_state, keep=keep
    )


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
