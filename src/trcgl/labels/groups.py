"""Head / medium / tail frequency groups from training counts (docs/method.md §0).

The paper's groups use absolute thresholds on the number of training images n_c: head
n_c > 5000, medium 500 ≤ n_c ≤ 5000, tail n_c < 500. Small data sets need relative thresholds:
with ``mode="quantile"`` the two thresholds are quantiles of the per-class counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from trcgl.errors import ConfigError

GROUPS: tuple[str, ...] = ("head", "medium", "tail")


@dataclass(frozen=True)
class FrequencyGroups:
    """Group of each class, and the thresholds (in images) that produced them."""

    classes: tuple[str, ...]
    counts: tuple[int, ...]
    group_of: tuple[str, ...]
    head_above: float
    tail_below: float

    def members(self, group: str) -> list[str]:
        return [c for c, g in zip(self.classes, self.group_of, strict=True) if g == group]

    def as_dict(self) -> dict[str, list[str]]:
        """Group name → class names (every group present, possibly empty)."""
        return {g: self.members(g) for g in GROUPS}


def frequency_groups(
    classes: Sequence[str],
    counts: Sequence[int] | np.ndarray,
    mode: Literal["absolute", "quantile"] = "absolute",
    head: float = 5000,
    tail: float = 500,
) -> FrequencyGroups:
    """Assign each class to head (n_c > head threshold), tail (n_c < tail threshold) or medium.

    ``mode="absolute"``: ``head`` and ``tail`` are image counts. ``mode="quantile"``: they are
    quantiles in [0, 1] of the class counts (e.g. head=2/3, tail=1/3 gives thirds).
    """
    counts_arr = np.asarray(counts, dtype=np.int64)
    if len(counts_arr) != len(classes):
        raise ValueError("one count per class expected")
    if mode == "absolute":
        head_above, tail_below = float(head), float(tail)
    elif mode == "quantile":
        if not (0 <= tail <= head <= 1):
            raise ConfigError("groups: quantile thresholds need 0 <= tail <= head <= 1")
        head_above = float(np.quantile(counts_arr, head))
        tail_below = float(np.quantile(counts_arr, tail))
    else:
        raise ConfigError(f"groups.mode must be 'absolute' or 'quantile', not {mode!r}")
    if tail_below > head_above:
        raise ConfigError("groups: the tail threshold must not exceed the head threshold")
    group_of = tuple(
        "head" if n > head_above else "tail" if n < tail_below else "medium" for n in counts_arr
    )
    return FrequencyGroups(
        tuple(classes), tuple(int(n) for n in counts_arr), group_of, head_above, tail_below
    )
