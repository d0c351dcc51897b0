"""Learning-rate schedule: linear warm-up then cosine decay, as a pure function of the step
(so that resuming needs no scheduler state)."""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """Multiplier of the base learning rate at step ``step`` (0-based; an optimiser step, or
    an epoch for a per-epoch schedule): ``(step + 1) / warmup_steps`` during the warm-up, then
    ``floor + (1 − floor) · ½ (1 + cos(π · progress))`` (``floor``: the authors' 0.01)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
