"""Channel-class attention of TRCGL-Net (Eq. 8–14).

* :class:`ChannelReweighting`, Eq. 8–10: u = GAP(X); g = σ(W2 δ(W1 u)); X_r = X + s·X ⊙ g
  (the paper's s = 1; the authors' code uses s = 0.05, and 1×1 convolutions W1, W2 without
  biases: ``bias=False``).
* :class:`ClassSpatialAttention`, Eq. 12–13 and s_spatial: M = Conv1×1(X_r) ∈ R^{C×H×W};
  a_c = softmax over the H·W positions of M_c; v_c = Σ_p a_c(p) X_r(p);
  s_spatial,c = w_c·v_c + b_c. The maps a_c are the class decision regions of Fig. 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelReweighting(nn.Module):
    """Eq. 8–10, a squeeze-and-excitation gate added back residually."""

    def __init__(
        self, channels: int, reduction: int = 16, scale: float = 1.0, bias: bool = True
    ) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)  # W1 (a 1×1 convolution on u)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)  # W2
        self.scale = scale

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 8–9: g = σ(W2 δ(W1 GAP(X))), B×D."""
        u = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc2(F.relu(self.fc1(u))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 10: X_r = X + scale · X ⊙ g."""
        g = self.gate(x)
        return x + self.scale * x * g[:, :, None, None]


class ClassSpatialAttention(nn.Module):
    """Eq. 12–13: one softmax attention map per class, and a class-specific score."""

    def __init__(
        self, channels: int, num_classes: int, class_weights: bool = True, bias: bool = True
    ) -> None:
        super().__init__()
        # Eq. 12: M = Conv1×1(X_r), as a linear map over the channels of each position (a bias
        # is constant over positions, so the softmax a_c does not depend on it; the authors'
        # code has none)
        self.score_maps = nn.Linear(channels, num_classes, bias=bias)
        self.class_weights = class_weights
        if class_weights:  # s_spatial,c = w_c · v_c + b_c with its own w_c, b_c
            self.weight = nn.Parameter(torch.empty(num_classes, channels))
            self.bias = nn.Parameter(torch.zeros(num_classes))
            nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(
        self,
        x_r: torch.Tensor,
        shared_weight: torch.Tensor | None = None,
        shared_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (s_spatial B×C, a B×C×H×W).

        Without class-specific weights, ``shared_weight`` / ``shared_bias`` (the GAP
        classifier's, as in the authors' code) score v_c.
        """
        b, _, h, w = x_r.shape
        positions = x_r.flatten(2).transpose(1, 2)  # B×HW×D
        m = self.score_maps(positions).transpose(1, 2)  # B×C×HW
        a = m.softmax(dim=-1)  # Eq. 12: softmax over positions
        v = torch.bmm(a, positions)  # Eq. 13: B×C×D
        if self.class_weights:
            weight, bias = self.weight, self.bias
        else:
            if shared_weight is None or shared_bias is None:
                raise ValueError("shared classifier weights are needed without class_weights")
            weight, bias = shared_weight, shared_bias
        s = (v * weight.unsqueeze(0)).sum(-1) + bias
        return s, a.view(b, -1, h, w)
