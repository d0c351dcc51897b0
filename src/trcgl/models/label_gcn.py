"""Label relation modelling of TRCGL-Net (Eq. 21–25).

A 2-layer GCN over learnable label embeddings E_0 ∈ R^{C×d} and the normalised co-occurrence
adjacency A of Eq. 20:

* Eq. 21: E_1 = ReLU(A E_0 W_0);   Eq. 22: E_2 = A E_1 W_1 ∈ R^{C×D};
* Eq. 23–24: g_r = GAP(X_r); s_label = g_r E_2ᵀ + b_g (``score="dot"``, the paper's);
  ``score="cosine"``: the authors' code (docs/method.md §6), s_label,c = cos(P g_r, E_2,c) + b_c
  with P a learned D×D projection without bias, both sides L2-normalised, no temperature.

``dropout`` (the authors' 0.1) acts on E_1 between the two graph convolutions.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class LabelGCN(nn.Module):
    """Label scores from a graph-convolved label embedding (Eq. 21–24)."""

    def __init__(
        self,
        adjacency: torch.Tensor,
        feature_dim: int,
        embed_dim: int = 300,
        hidden_dim: int = 1024,
        score: Literal["dot", "cosine"] = "dot",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        c = adjacency.shape[0]
        if adjacency.shape != (c, c):
            raise ValueError(f"adjacency must be square, got {tuple(adjacency.shape)}")
        self.register_buffer("adjacency", adjacency.detach().clone().float())
        self.embeddings = nn.Parameter(torch.empty(c, embed_dim))  # E_0
        nn.init.normal_(self.embeddings, std=embed_dim**-0.5)
        self.w0 = nn.Linear(embed_dim, hidden_dim, bias=False)  # W_0
        self.w1 = nn.Linear(hidden_dim, feature_dim, bias=False)  # W_1
        self.bias = nn.Parameter(torch.zeros(c))  # b_g
        self.score = score
        self.dropout = nn.Dropout(dropout)
        if score == "cosine":
            self.projection = nn.Linear(feature_dim, feature_dim, bias=False)  # P
        elif score != "dot":
            raise ValueError(f"score must be 'dot' or 'cosine', not {score!r}")

    def label_embeddings(self) -> torch.Tensor:
        """Eq. 21–22: E_2 = A ReLU(A E_0 W_0) W_1, C×D."""
        a = self.adjacency
        e1 = self.dropout(F.relu(a @ self.w0(self.embeddings)))
        return a @ self.w1(e1)

    def forward(self, g_r: torch.Tensor) -> torch.Tensor:
        """Eq. 24: s_label (B×C) from the pooled reweighted features g_r (B×D)."""
        e2 = self.label_embeddings()
        if self.score == "dot":
            return g_r @ e2.t() + self.bias
        projected = F.normalize(self.projection(g_r), dim=-1)
        return projected @ F.normalize(e2, dim=-1).t() + self.bias
