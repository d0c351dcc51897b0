"""The optimisers of both trainers: AdamW from torch, or bitsandbytes' 8-bit AdamW.

``adamw8bit`` keeps Adam's two moments in 8 bits with block-wise quantisation (Dettmers et
al., 2022): a quarter of the optimiser state's memory (e.g. 0.9 of 3.4 GB for a full SD 1.5
UNet), same parameter groups (learning rates, weight decay, eps). It is bitsandbytes' own, an
optional extra (``pip install 'trcgl[bnb]'``, CUDA); the configuration check
(:func:`trcgl.config.check_optimizer`) says so when it is missing.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch

from trcgl.config import check_optimizer

__all__ = ["build_optimizer"]


def build_optimizer(
    groups: Iterable[dict[str, Any]], name: str = "adamw", *, eps: float = 1e-8, key: str = ""
) -> torch.optim.Optimizer:
    """AdamW (``name="adamw"``) or bitsandbytes' ``AdamW8bit`` over parameter ``groups``
    (each with ``params``, ``lr``, ``weight_decay``); ``key`` names the setting in errors."""
    check_optimizer(name, key or "optimizer")
    groups = list(groups)
    if name == "adamw8bit":
        bnb = importlib.import_module("bitsandbytes.optim")
        return bnb.AdamW8bit(groups, eps=eps)
    return torch.optim.AdamW(groups, eps=eps)
