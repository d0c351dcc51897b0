"""Every figure trcgl draws, in one module.

* Fig. 2: label distribution and co-occurrence (:func:`plot_label_statistics`);
* Fig. 3: synthetic samples per tail class (:func:`plot_class_grid`, :func:`plot_grid`);
* Fig. 4: class decision regions (:func:`plot_regions`); Fig. 5: prediction confidences
  (:func:`plot_confidence`);
* the report's curves: the generator's loss, the classifier's training curve,
  precision–recall curves and reliability diagrams (:func:`diffusion_loss_figure`,
  :func:`training_curve_figure`, :func:`pr_curves_figure`, :func:`reliability_figure`,
  returned as figures for :func:`figure_png`).

Files are written atomically; the report's figures use matplotlib's object API (no global
pyplot state), so they can be drawn from several threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_path
from trcgl.labels.groups import FrequencyGroups

GROUP_COLOURS = {"head": "#1f77b4", "medium": "#ff7f0e", "tail": "#d62728"}
GROUPS = ("head", "medium", "tail")


def is_number(value: Any) -> bool:
    """A real number (not a bool)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` as PNG bytes, cropped to what it draws."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


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


def plot_grid(
    images: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: str | Path,
    columns: int = 4,
    title: str = "",
    cell_inches: float = 2.0,
) -> None:
    """A grid of grayscale images with a title each (Fig. 3 style), written atomically.

    ``None`` entries leave an empty cell (used to start each class on its own row).
    """
    if len(images) != len(titles):
        raise DataError(f"{len(images)} images but {len(titles)} titles")
    if columns < 1:
        raise ConfigError(f"columns must be >= 1, got {columns}")
    if not images:
        raise DataError("no images to plot")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(cell_inches * columns, cell_inches * rows + 0.4), squeeze=False
    )
    try:
        for ax in axes.ravel():
            ax.axis("off")
        for ax, image, text in zip(axes.ravel(), images, titles, strict=False):
            if image is None:
                continue
            ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255)
            ax.set_title(text, fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def plot_class_grid(
    images: Sequence[np.ndarray],
    target_classes: Sequence[str],
    path: str | Path,
    per_class: int = 4,
    title: str = "Synthetic samples per tail class",
) -> None:
    """Fig. 3: one row per tail class (order of first appearance), up to ``per_class`` samples."""
    if len(images) != len(target_classes):
        raise DataError(f"{len(images)} images but {len(target_classes)} target classes")
    if per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {per_class}")
    cells: list[np.ndarray | None] = []
    titles: list[str] = []
    for name in dict.fromkeys(target_classes):
        chosen = [im for im, c in zip(images, target_classes, strict=True) if c == name]
        chosen = chosen[:per_class]
        cells += [*chosen, *([None] * (per_class - len(chosen)))]
        titles += [name] * per_class
    plot_grid(cells, titles, path, columns=per_class, title=title)


def plot_regions(
    shown: np.ndarray,
    probs: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[str],
    path: Path,
    top_k: int = 3,
    title: str = "",
) -> None:
    """Fig. 4: the radiograph and the attention maps of its top-k classes."""
    top = np.argsort(-probs)[:top_k]
    fig, axes = plt.subplots(1, len(top) + 1, figsize=(3.2 * (len(top) + 1), 3.5))
    axes[0].imshow(shown, cmap="gray")
    axes[0].set_title(title or "input", fontsize=9)
    for ax, c in zip(axes[1:], top, strict=True):
        ax.imshow(shown, cmap="gray")
        ax.imshow(maps[c], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(f"{classes[c]}  p={probs[c]:.2f}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_confidence(
    probs: np.ndarray,
    classes: Sequence[str],
    path: Path,
    thresholds: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    title: str = "",
) -> None:
    """Fig. 5: every class's probability, sorted, with its threshold; true labels starred."""
    order = np.argsort(probs)
    thr = np.full(len(classes), 0.5) if thresholds is None else np.asarray(thresholds)
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(classes) + 1.2))
    colours = ["#d62728" if probs[i] >= thr[i] else "#7f7f7f" for i in order]
    ax.barh(range(len(order)), probs[order], color=colours)
    ax.scatter(thr[order], range(len(order)), marker="|", color="black", s=120, label="threshold")
    names = [classes[i] + (" ★" if labels is not None and labels[i] else "") for i in order]
    ax.set_yticks(range(len(order)), names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "prediction confidence (★ = true label)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def diffusion_loss_figure(records: list[dict[str, Any]]) -> Figure:
    """The generator's training loss (Eq. 3) per step, with a running mean from 20 steps on."""
    pts = [(r["step"], r["loss"]) for r in records if "step" in r and is_number(r.get("loss"))]
    steps = np.array([p[0] for p in pts], dtype=float)
    loss = np.array([p[1] for p in pts], dtype=float)
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    ax.plot(
        steps, loss, color="#1f77b4", alpha=0.35 if len(loss) >= 20 else 1.0, lw=1, label="loss"
    )
    if len(loss) >= 20:
        w = max(5, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], smooth, color="#1f77b4", lw=2, label=f"mean of {w} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising loss (Eq. 3)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def training_curve_figure(records: list[dict[str, Any]], best_epoch: Any) -> Figure:
    """Validation mAP per epoch, overall and per frequency group, stage 1 shaded, the best epoch
    dotted; beside it the training loss when ``metrics.jsonl`` has it."""
    by_epoch = {r["epoch"]: r for r in records if "epoch" in r}  # a resumed run: last wins
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    epochs = [r["epoch"] for r in rows]
    has_loss = any(is_number(r.get("train_loss")) for r in rows)
    fig = Figure(figsize=(10.5 if has_loss else 6, 3.4))
    axes = fig.subplots(1, 2 if has_loss else 1, squeeze=False)[0]

    def series(key: str) -> list[float]:
        return [float(r[key]) if is_number(r.get(key)) else math.nan for r in rows]

    stage1 = [r["epoch"] for r in rows if r.get("stage") == 1]
    for ax in axes:
        if stage1:
            ax.axvspan(min(stage1) - 0.5, max(stage1) + 0.5, color="0.92", label="stage 1")
        if is_number(best_epoch):
            ax.axvline(best_epoch, color="0.4", ls=":", lw=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax = axes[0]
    ax.plot(epochs, series("val_mAP"), "o-", color="black", lw=2, ms=4, label="val mAP")
    for g in GROUPS:
        if any(f"val_{g}_mAP" in r for r in rows):
            ax.plot(epochs, series(f"val_{g}_mAP"), "--", color=GROUP_COLOURS[g], lw=1.2, label=g)
    ax.set_ylabel("validation mAP")
    ax.legend(fontsize=7, ncol=2)
    if has_loss:
        axes[1].plot(epochs, series("train_loss"), "o-", color="#9467bd", ms=4, label="train loss")
        axes[1].set_ylabel("training loss")
        axes[1].legend(fontsize=7)
    return fig


def pr_curves_figure(
    preds: pd.DataFrame, panels: Mapping[str, list[str]], order: list[str]
) -> Figure:
    """Precision–recall curves, one panel per frequency group (``panels``: group → classes,
    drawn in ``order``), from ``preds``' score columns and ``label:<class>`` columns."""
    from matplotlib import colormaps
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = Figure(figsize=(4.4 * len(order), 4.2))
    axes = fig.subplots(1, len(order), squeeze=False)[0]
    for ax, group in zip(axes, order, strict=True):
        members = panels[group]
        cmap = colormaps["tab10" if len(members) <= 10 else "tab20"]
        for i, c in enumerate(members):
            y = preds[f"label:{c}"].to_numpy(dtype=float)
            known = ~np.isnan(y)  # an unknown label (empty cell) is left out of the curve
            y, p = y[known].astype(int), preds[c].to_numpy(dtype=float)[known]
            if not y.any():
                ax.plot([], [], color=cmap(i % cmap.N), label=f"{c} (no positives)")
                continue
            precision, recall, _ = precision_recall_curve(y, p)
            ap = average_precision_score(y, p)
            ax.step(
                recall, precision, where="post", color=cmap(i % cmap.N), label=f"{c} (AP {ap:.4f})"
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        colour = GROUP_COLOURS.get(group, "black")
        noun = "class" if len(members) == 1 else "classes"
        ax.set_title(f"{group} ({len(members)} {noun})", color=colour)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, frameon=False)
    return fig


def reliability_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], temperature: float | None
) -> Figure:
    """Reliability diagram: share of positives against mean probability per bin, one curve
    per subset (``curves``: name → :func:`~trcgl.evaluation.calibration.reliability_curve`),
    the diagonal for perfect calibration; beside it, how many (image, class) pairs each bin
    holds (log scale)."""
    fig = Figure(figsize=(9.5, 3.8))
    ax, hist = fig.subplots(1, 2)
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfectly calibrated")
    for name, (mean_p, share, count) in curves.items():
        colour = GROUP_COLOURS.get(name, "black")
        style = "o-" if name == "overall" else "s--"
        ax.plot(
            mean_p, share, style, color=colour, ms=4, lw=1.5 if name == "overall" else 1, label=name
        )
        hist.plot(mean_p, count, style, color=colour, ms=4, lw=1, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("share of positives")
    title = "reliability"
    if temperature is not None:
        title += f" (before temperature scaling; T = {temperature:.3f})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    hist.set_yscale("log")
    hist.set_xlim(0, 1)
    hist.set_xlabel("mean predicted probability")
    hist.set_ylabel("(image, class) pairs in the bin")
    hist.grid(alpha=0.3)
    return fig
