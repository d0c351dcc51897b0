"""Learning-rate schedule: linear warm-up then cosine decay, as a pure function of the step
(so that resuming needs no scheduler state)."""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
