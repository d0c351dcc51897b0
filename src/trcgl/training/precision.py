"""The ``mixed_precision`` setting shared by the classifier and generator trainers."""

from __future__ import annotations

import torch


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` → bf16 on a GPU that supports it, fp16 on another GPU, ``no`` on a CPU;
    any other value (``no``, ``fp16``, ``bf16``) is returned as it is, for accelerate."""
    if setting != "auto":
        return setting
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
