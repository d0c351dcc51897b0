"""Exported classifiers for deployment without trcgl: ONNX, TorchScript, ``torch.export``.

:func:`export_model` writes a model folder's classifier as one file that maps normalised
images (``images``: B×3×S×S float32, the model's own input size S, mean and std) to
``probabilities`` (B×C, σ of the logits) and, with ``attention=True``, the class attention
maps a_c (``attention``: B×C×h×w, Eq. 12; only for architectures that have them). Beside it,
``<file>.json`` says what a consumer needs: the classes, the input size, mean and std, the
output names and the model folder's tuned thresholds and temperature when it has them.

* ``onnx``: ``torch.onnx.export`` (the TorchScript-based exporter, opset 17), the batch
  dimension dynamic; runs in ONNX Runtime.
* ``torchscript``: ``torch.jit.trace`` (``torch.jit.load`` reads it back).
* ``exported-program``: ``torch.export.export`` with a dynamic batch, saved by
  ``torch.export.save`` (``.pt2``; ``torch.export.load``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_path, atomic_write_text
from trcgl.models.base import Classifier

__all__ = ["FORMATS", "export_model"]

#: Format → file suffix.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


class _Deployed(nn.Module):
    """The classifier with plain tensor outputs: probabilities (and attention maps)."""

    def __init__(self, model: Classifier, attention: bool) -> None:
        super().__init__()
        self.model = model
        self.attention = attention

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, return_attention=self.attention)
        probabilities = torch.sigmoid(out["logits"].float())
        if self.attention:
            return probabilities, out["attention"].float()
        return (probabilities,)


def export_model(
    model: Classifier,
    path: str | Path,
    fmt: str = "onnx",
    *,
    attention: bool = False,
    size: int | None = None,
) -> tuple[Path, Path]:
    """Write ``model`` to ``path`` in format ``fmt`` (see the module docstring) and its
    description to ``<path>.json``; returns both paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; one of: {', '.join(FORMATS)}")
    pre = model.preprocessing or {}
    size = int(size or pre.get("image_size") or 0)
    if size < 16:
        raise DataError("the model folder does not record its input size; pass --size")
    mean, std = model.normalization
    model = model.eval().cpu()
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        out = model(example, return_attention=attention)
    if attention and "attention" not in out:
        raise ConfigError(
            f"{model.architecture} has no class attention maps to export (leave out --attention)"
        )
    deployed = _Deployed(model, attention).eval()
    names = ["probabilities", *(["attention"] if attention else [])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, torch.no_grad():
        if fmt == "onnx":
            axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in ("images", *names)}
            torch.onnx.export(
                deployed,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=names,
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        elif fmt == "torchscript":
            torch.jit.trace(deployed, (example,), check_trace=False).save(str(tmp))
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(deployed, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(tmp))
    decisions = model.decisions or {}
    description: dict[str, Any] = {
        "format": fmt,
        "architecture": model.architecture,
        "classes": list(model.classes),
        "input": {
            "name": "images",
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "mean": list(pre.get("mean", mean)),
            "std": list(pre.get("std", std)),
            "preprocessing": "grayscale radiograph, Lanczos resize to size × size, scaled to "
            "[0, 1], replicated to 3 channels, normalised with mean / std",
        },
        "outputs": names,
        "thresholds": decisions.get("thresholds"),
        "temperature": decisions.get("temperature"),
    }
    meta = path.with_name(path.name + ".json")
    atomic_write_text(meta, json.dumps(description, indent=2) + "\n")
    return path, meta
