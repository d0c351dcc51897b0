"""Figures: Fig. 2 (label distribution and co-occurrence)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from trcgl.files import atomic_path
from trcgl.labels.groups import FrequencyGroups

GROUP_COLOURS = {"head": "#1f77b4", "medium": "#ff7f0e", "tail": "#d62728"}


def plot_label_statistics(
    groups: FrequencyGroups,
    cooccurrence: np.ndarray,
    path: str | Path,
    title: str = "",
) -> None:
    """Fig. 2: training images per class (log scale, coloured by group, thresholds dashed)
    beside the co-occurrence heat-map P(j | i) = Q_ij / Q_ii (rows: conditioning class)."""
    classes = list(groups.classes)
    counts = np.asarray(groups.counts)
    order = np.argsort(-counts, kind="stable")
    c = len(classes)
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(8 + 0.45 * c, 4 + 0.22 * c), gridspec_kw={"width_ratios": [1.1, 1]}
    )
    colours = [GROUP_COLOURS[groups.group_of[i]] for i in order]
    ax1.bar(range(c), np.maximum(counts[order], 0.8), color=colours)
    ax1.set_yscale("log")
    ax1.set_xticks(range(c), [classes[i] for i in order], rotation=75, ha="right", fontsize=8)
    ax1.set_ylabel("training images")
    for value, label in ((groups.head_above, "head >"), (groups.tail_below, "tail <")):
        if value > 0:
            ax1.axhline(value, ls="--", lw=0.8, color="grey")
            ax1.text(c - 0.5, value, f"{label} {value:g}", ha="right", va="bottom", fontsize=7)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=col, label=f"{g} ({len(groups.members(g))})")
        for g, col in GROUP_COLOURS.items()
    ]
    ax1.legend(handles=handles, fontsize=8)
    ax1.set_title("Label distribution")

    q = np.asarray(cooccurrence, dtype=np.float64)[np.ix_(order, order)]
    diag = np.diag(q).copy()
    cond = np.divide(q, diag[:, None], out=np.zeros_like(q), where=diag[:, None] > 0)
    np.fill_diagonal(cond, np.nan)  # P(i | i) = 1 would drown the off-diagonal structure
    vmax = float(np.nanmax(cond)) if c > 1 and np.nanmax(cond) > 0 else 1.0
    im = ax2.imshow(np.ma.masked_invalid(cond), cmap="viridis", vmin=0, vmax=vmax)
    names = [classes[i] for i in order]
    ax2.set_xticks(range(c), names, rotation=75, ha="right", fontsize=7)
    ax2.set_yticks(range(c), names, fontsize=7)
    ax2.set_title("Co-occurrence P(column | row), diagonal masked")
    fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
