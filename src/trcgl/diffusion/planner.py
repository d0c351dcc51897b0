"""The tail planner (docs/method.md §1): how many synthetic images per tail class, from what.

For each tail class ``c`` with ``n_c`` real *training* images (``split == "train"`` and
``source == "real"``), the plan holds ``max(0, target − n_c)`` rows. Each row names a real
training image that has ``c`` (the *source*): the synthetic image is conditioned on the prompt of
the source's **whole label set** and labelled with it (an unknown label of the source stays
unknown), so label co-occurrence stays realistic
(docs/method.md §1, decision on prompts); with report prompts (``source="report"``) its prompt
is built from that same source image's report. Sources are drawn round-robin over a seeded
permutation of the class's training images, so every source is used once before any is used
again.

The plan is a pure, deterministic function of the manifest, the tail classes, ``target`` and
``seed`` (one ``numpy`` generator per class, seeded from ``seed`` and the class's position in
the manifest's class order, so adding a tail class does not change another class's plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from trcgl.data.manifest import Manifest
from trcgl.diffusion.prompts import CLIP_MAX_LENGTH, prompts_for_manifest
from trcgl.errors import ConfigError

__all__ = ["PLAN_COLUMNS", "class_counts", "plan_synthesis", "training_pool"]

#: The plan's leading columns; the class columns (1 / 0 / NaN, manifest class order) follow.
PLAN_COLUMNS: tuple[str, ...] = ("target_class", "source_image_id", "view", "prompt")


def training_pool(manifest: Manifest) -> Manifest:
    """The rows that count for the plan and may be sources: real training images."""
    return manifest.subset(split="train", source="real")


def class_counts(manifest: Manifest) -> pd.Series:
    """``n_c``: real training images per class (manifest class order)."""
    pool = training_pool(manifest)
    return pd.Series(pool.labels().sum(axis=0).astype(np.int64), index=list(manifest.classes))


def plan_synthesis(
    manifest: Manifest,
    tail_classes: Sequence[str],
    target: int,
    seed: int = 0,
    dataset: str = "padchest",
    *,
    source: str = "labels",
    tokenizer: Any = None,
    max_length: int = CLIP_MAX_LENGTH,
) -> pd.DataFrame:
    """One row per synthetic image to generate for the tail classes (docs/method.md §1).

    Args:
        manifest: the run's manifest; only ``split == "train"``, ``source == "real"`` rows count
            towards ``n_c`` and can be sources.
        tail_classes: the classes to top up (names from ``manifest.classes``).
        target: the training count each tail class should reach; a class gets
            ``max(0, target − n_c)`` rows.
        seed: seeds the permutation of each class's sources.
        dataset: prompt flavour for :func:`~trcgl.diffusion.prompts.prompts_for_manifest`.
        source: the prompts' words, ``labels`` or ``report`` (the source image's report,
            :func:`~trcgl.diffusion.prompts.report_prompt`).
        tokenizer: when given, prompts are shortened to ``max_length`` tokens, never dropping
            the target class (``keep``).

    Returns:
        A DataFrame with columns :data:`PLAN_COLUMNS` (``target_class``, ``source_image_id``,
        ``view``, ``prompt``) then the source's 0/1 class columns, in class order; rows grouped
        by tail class in the order given. Every row has its ``target_class`` column equal to 1.

    Raises:
        ConfigError: an unknown or repeated tail class, a negative ``target``, or a tail class
            that needs images but has no real training image to copy a label set from.
    """
    classes = list(manifest.classes)
    unknown = [c for c in tail_classes if c not in classes]
    if unknown:
        raise ConfigError(f"tail class(es) {unknown} are not manifest classes")
    if len(set(tail_classes)) != len(tail_classes):
        raise ConfigError(f"tail classes repeated: {list(tail_classes)}")
    if int(target) != target or target < 0:
        raise ConfigError(f"target must be a whole number >= 0, got {target!r}")
    target = int(target)

    pool = training_pool(manifest)
    frame = pool.frame
    y = pool.labels().astype(bool)
    parts: list[pd.DataFrame] = []
    for name in tail_classes:
        j = classes.index(name)
        rows = np.flatnonzero(y[:, j])
        need = max(0, target - len(rows))
        if need == 0:
            continue
        if len(rows) == 0:
            raise ConfigError(
                f"tail class {name!r} has no real training image to copy a label set from"
            )
        rng = np.random.default_rng([int(seed), j])
        order = rows[rng.permutation(len(rows))]
        chosen = order[np.arange(need) % len(order)]
        source_rows = Manifest(frame.iloc[chosen], pool.classes)
        prompts = prompts_for_manifest(
            source_rows,
            dataset,
            source=source,
            tokenizer=tokenizer,
            max_length=max_length,
            keep=(name,),
        )
        src = source_rows.frame
        part = pd.DataFrame(
            {
                "target_class": name,
                "source_image_id": src["image_id"].astype(str).to_numpy(),
                "view": src["view"].to_numpy(),
                "prompt": prompts,
            }
        )
        labels = pd.DataFrame(source_rows.label_values(), columns=classes)
        parts.append(pd.concat([part, labels], axis=1))
    if not parts:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in PLAN_COLUMNS})
        return pd.concat(
            [empty, pd.DataFrame({c: pd.Series(dtype=np.float32) for c in classes})], axis=1
        )
    return pd.concat(parts, ignore_index=True)
