"""The label co-occurrence graph of TRCGL-Net (Eq. 15–20), and the authors' code's variant.

Built from the *training* label matrix only, saved as safetensors with the class order, and
loaded with the model so that inference needs no training data.

Unknown labels (NaN in the label matrix, :mod:`trcgl.data.manifest`) are skipped: Q counts the
images *known* to carry both classes, so an unknown cell adds to no count. Eq. 16 normalises
by the row sums of Q, so no count of images enters the paper's graph; the authors' formula
divides by n_i + 1 with n_i = Q_ii, the images known to carry class i. (Where one data set does
not label class j at all, its images with class i still count in n_i but never in Q_ij, so
the authors' P_ij under-estimates P(j | i) in proportion; Eq. 16–20 have the same
proportional effect through the row sums.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trcgl.errors import DataError
from trcgl.files import atomic_path


def cooccurrence(y: np.ndarray) -> np.ndarray:
    """Eq. 15: Q = YᵀY for the N×C 0/1 label matrix Y (Q_ii = n_i, Q_ij = joint count); an
    unknown cell (NaN) counts as 0."""
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0)
    return y.T @ y


def normalized_adjacency(q: np.ndarray, tau: float = 0.02) -> np.ndarray:
    """Eq. 16–20: from co-occurrence counts Q to the normalised adjacency A.

    Eq. 16: Q̃_ij = Q_ij / Σ_j Q_ij (a row without positives stays zero, no NaN).
    Eq. 17: Q̃ ← (Q̃ + Q̃ᵀ) / 2.   Eq. 18: Q̃_ij ← 0 where Q̃_ij < τ.
    Eq. 19: Q̃ ← Q̃ + I.          Eq. 20: A = D^{-½} Q̃ D^{-½}, D_ii = Σ_j Q̃_ij (≥ 1 after Eq. 19).
    """
    q = np.asarray(q, dtype=np.float64)
    row = q.sum(axis=1, keepdims=True)
    qt = np.divide(q, row, out=np.zeros_like(q), where=row > 0)
    qt = (qt + qt.T) / 2
    qt = np.where(qt < tau, 0.0, qt)
    qt = qt + np.eye(len(qt))
    d = qt.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(d)
    return inv_sqrt[:, None] * qt * inv_sqrt[None, :]


def authors_adjacency(q: np.ndarray, tau: float = 0.02) -> np.ndarray:
    """The graph of the authors' released code (docs/method.md §6), from Q = YᵀY:

    P_ij = Q_ij / (n_i + 1) with n_i = Q_ii; P ← (P + Pᵀ) / 2; P_ii ← 1; P_ij ← 0 where
    P_ij < τ; P_ii ← 1; P ← P + I (diagonal 2); A = D^{-½} P D^{-½}, D_ii = max(Σ_j P_ij, 1e-6).
    """
    q = np.asarray(q, dtype=np.float64)
    p = q / (np.diag(q)[:, None] + 1.0)
    p = (p + p.T) / 2
    np.fill_diagonal(p, 1.0)
    p = np.where(p < tau, 0.0, p)
    np.fill_diagonal(p, 1.0)
    p = p + np.eye(len(p))
    inv_sqrt = 1.0 / np.sqrt(np.maximum(p.sum(axis=1), 1e-6))
    return inv_sqrt[:, None] * p * inv_sqrt[None, :]


#: ``graph.formula``: the paper's Eq. 16–20 (the default) or the authors' code's.
FORMULAS = {"paper": normalized_adjacency, "authors": authors_adjacency}


@dataclass
class LabelGraph:
    """Adjacency A (C×C), co-occurrence Q, the class order and τ."""

    adjacency: np.ndarray
    cooccurrence: np.ndarray
    classes: tuple[str, ...]
    tau: float

    @classmethod
    def from_labels(
        cls, y: np.ndarray, classes: Sequence[str], tau: float = 0.02, formula: str = "paper"
    ) -> LabelGraph:
        """The graph of the label matrix ``y`` by ``formula`` (:data:`FORMULAS`)."""
        if y.shape[1] != len(classes):
            raise ValueError(f"label matrix has {y.shape[1]} columns for {len(classes)} classes")
        if formula not in FORMULAS:
            raise ValueError(f"unknown graph formula {formula!r}; known: {', '.join(FORMULAS)}")
        q = cooccurrence(y)
        return cls(FORMULAS[formula](q, tau), q, tuple(classes), float(tau))

    def save(self, path: str | Path) -> None:
        """Write ``adjacency`` and ``cooccurrence`` tensors; classes and τ in the metadata."""
        tensors = {
            "adjacency": torch.from_numpy(np.ascontiguousarray(self.adjacency, dtype=np.float32)),
            "cooccurrence": torch.from_numpy(np.ascontiguousarray(self.cooccurrence)),
        }
        meta = {"classes": json.dumps(list(self.classes)), "tau": repr(self.tau)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> LabelGraph:
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                adjacency = fh.get_tensor("adjacency").double().numpy()
                q = fh.get_tensor("cooccurrence").double().numpy()
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"cannot read label graph: {exc}", path=path) from exc
        if "classes" not in meta:
            raise DataError("label graph has no class list in its metadata", path=path)
        return cls(adjacency, q, tuple(json.loads(meta["classes"])), float(meta.get("tau", "nan")))
