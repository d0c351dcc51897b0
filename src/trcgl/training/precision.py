"""The ``mixed_precision`` setting shared by the classifier and generator trainers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator

#: The dtype of each precision setting (``no`` / ``fp32``: full precision).
DTYPES: dict[str, torch.dtype] = {
    "no": torch.float32,
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` → bf16 on a GPU that supports it, fp16 on another GPU, ``no`` on a CPU;
    any other value (``no``, ``fp16``, ``bf16``) is returned as it is, for accelerate."""
    if setting != "auto":
        return setting
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def make_accelerator(setting: str, *, cpu: bool, **kwargs: Any) -> Accelerator:
    """An ``Accelerator`` in the mixed precision ``setting`` (:func:`resolve_mixed_precision`).

    accelerate keeps one precision per process and refuses a second; a process that trains
    the generator and then the classifiers (``trcgl run``) with different settings
    (``diffusion.mixed_precision``, ``train.mixed_precision``) starts accelerate's precision
    state afresh between them. The process group and device (``PartialState``) are kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    precision = resolve_mixed_precision(setting)
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != precision:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, cpu=cpu, **kwargs)
