"""Multi-label classification losses with per-sample weights (BCE, ASL, DB, LDAM / LDAM-DRW,
and the authors' class-balanced margin loss).

Every loss maps ``logits`` (B×C), ``targets`` (B×C, 0/1 floats), optional per-sample
``weights`` (B,) and an optional ``mask`` (B×C, 1 where the label is known, 0 where it is
unknown; the ``mask`` item of :class:`~trcgl.data.dataset.ManifestDataset`) to a scalar with
one reduction, shared by all of them:

* an element loss ``ℓ_ic`` per sample ``i`` and class ``c`` (the loss's own formula);
* the per-sample loss is ``l_i = (1/C) Σ_c m_ic ℓ_ic`` with ``m_ic`` the mask (per-class weights,
  where a loss has them, multiply ``ℓ_ic`` inside that sum). An unknown cell has weight 0: it
  adds nothing to the loss and its logit gets a gradient of exactly 0 (the element loss is
  replaced by 0 with ``torch.where``, so even a non-finite element loss there cannot leak).
  The normaliser stays the paper's ``1/C``, not ``1/Σ_c m_ic``: every known cell weighs what it
  weighs in a fully labelled batch, so a data set that labels fewer classes (or an image with
  uncertain labels) is not up-weighted per cell, and without a mask this is the **mean over
  classes** of before;
* the batch loss is the **weighted mean over samples**, ``L = Σ_i w_i l_i / Σ_i w_i``, with
  ``w_i = 1`` by default. Synthetic images carry ``w_syn = 0.5`` in this project (the
  ``weight`` item of :class:`~trcgl.data.dataset.ManifestDataset`). A sample with ``w_i = 0``
  drops out exactly; if ``Σ_i w_i = 0`` (or the batch is empty) the loss is ``0`` and still
  has a ``grad_fn``. Weights must be non-negative (not checked, to avoid a device sync).

Element losses are computed in (at least) float32 whatever the logits' dtype. Classes with
zero training images are safe: counts are clamped to ``≥ 1`` wherever they divide or are
raised to a negative power, so no buffer holds ``inf`` or ``NaN``.

:func:`build_loss` builds any of them by name from the training-set class counts; each is
registered in :data:`trcgl.registry.LOSSES` (a new loss: its class here and one
``LOSSES.add`` line), and its keyword options can be set from ``train.loss_options``. All losses
have ``set_epoch(epoch)`` (only LDAM-DRW uses it). ``cb_margin``, the authors' loss, keeps
their own reductions instead (a sum over classes, a plain batch mean):
:class:`ClassBalancedMarginLoss`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trcgl.errors import ConfigError
from trcgl.registry import LOSSES, check_option_names, keyword_options

__all__ = [
    "LOSSES",
    "AsymmetricLoss",
    "BCELoss",
    "ClassBalancedMarginLoss",
    "DistributionBalancedLoss",
    "LDAMLoss",
    "LossSpec",
    "MultiLabelLoss",
    "build_loss",
    "drw_class_weights",
    "ldam_margins",
    "weighted_mean",
]


def weighted_mean(per_sample: Tensor, weights: Tensor | None = None) -> Tensor:
    """``Σ w_i l_i / Σ w_i`` over a batch of per-sample losses ``l`` (B,).

    ``weights=None`` means all ones. Samples with ``w_i = 0`` contribute exactly nothing (even
    if their loss is not finite); when ``Σ w_i = 0`` the result is ``0`` with a ``grad_fn``.
    """
    if per_sample.dim() != 1:
        raise ValueError(f"per-sample losses must be 1-D, got shape {tuple(per_sample.shape)}")
    if weights is None:
        weights = torch.ones_like(per_sample)
    else:
        if weights.shape != per_sample.shape:
            raise ValueError(
                f"weights must have shape {tuple(per_sample.shape)} (one per sample), "
                f"got {tuple(weights.shape)}"
            )
        weights = weights.to(device=per_sample.device, dtype=per_sample.dtype)
    weighted = torch.where(weights != 0, weights * per_sample, torch.zeros_like(per_sample))
    total = weights.sum()
    denominator = torch.where(total != 0, total, torch.ones_like(total))
    return weighted.sum() / denominator


def _counts_array(class_counts: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(class_counts, Tensor):
        class_counts = class_counts.detach().cpu().numpy()
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("class_counts must be finite and non-negative")
    return counts


def _check_num_samples(
    counts: np.ndarray, num_samples: int | Sequence[int] | np.ndarray
) -> int | np.ndarray:
    """``num_samples`` checked against ``counts``: one positive integer (training images), or
    one per class (C,): the training images whose label of that class is known, where some
    are unknown."""
    values = np.asarray(num_samples)
    if values.ndim == 0:
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        values = np.full(counts.shape, int(num_samples))
        out: int | np.ndarray = int(num_samples)
    else:
        if values.shape != counts.shape or np.any(values < 1) or np.any(values % 1):
            raise ValueError(
                f"num_samples per class must be {counts.shape[0]} positive integers, got "
                f"shape {values.shape}"
            )
        out = values.astype(np.int64)
    if np.any(counts > values):
        c = int(np.flatnonzero(counts > values)[0])
        raise ValueError(
            f"a class count ({counts[c]:g}) exceeds num_samples ({values[c]}); class_counts "
            "must count training images containing each class"
        )
    return out


class MultiLabelLoss(nn.Module):
    """Base class: element loss → mean over classes → weighted mean over samples.

    Subclasses implement :meth:`element_loss` (B×C, float32). ``num_classes`` (optional) is
    checked against the logits' second dimension.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss which (0-based) epoch is starting. A no-op unless a loss uses it."""
        self.epoch = int(epoch)

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def sample_losses(self, logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
        """Per-sample losses ``l_i = (1/C) Σ_c m_ic ℓ_ic`` (B,); ``mask=None``: every label
        known, i.e. the mean over classes of the element losses."""
        if logits.dim() != 2:
            raise ValueError(f"logits must be B×C, got shape {tuple(logits.shape)}")
        if targets.shape != logits.shape:
            raise ValueError(
                f"targets must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        if self.num_classes is not None and logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_classes} classes, "
                f"got logits with {logits.shape[1]}"
            )
        if logits.shape[1] == 0:
            raise ValueError("logits have no classes")
        dtype = torch.promote_types(logits.dtype, torch.float32)
        targets = targets.to(device=logits.device, dtype=dtype)
        if mask is None:
            return self.element_loss(logits.to(dtype), targets).mean(dim=1)
        if mask.shape != logits.shape:
            raise ValueError(
                f"mask must have the logits' shape {tuple(logits.shape)}, got {tuple(mask.shape)}"
            )
        known = mask.to(device=logits.device) != 0
        # An unknown cell's target reads 0 (no positive, e.g. for DB's P^I) and its element
        # loss is replaced by 0.
        targets = torch.where(known, targets, torch.zeros_like(targets))
        element = self.element_loss(logits.to(dtype), targets)
        return torch.where(known, element, torch.zeros_like(element)).mean(dim=1)

    def forward(
        self,
        logits: Tensor,
        targets: Tensor,
        weights: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss ``Σ_i w_i l_i / Σ_i w_i`` (see the module docstring)."""
        return self.reduce(self.sample_losses(logits, targets, mask), weights)

    def reduce(self, per_sample: Tensor, weights: Tensor | None) -> Tensor:
        """The batch loss from the per-sample losses: the weighted mean over samples."""
        return weighted_mean(per_sample, weights)


class BCELoss(MultiLabelLoss):
    """Binary cross-entropy with logits, one binary problem per class.

    ``ℓ_ic = −[p_c y log σ(z) + (1 − y) log(1 − σ(z))]`` via
    :func:`torch.nn.functional.binary_cross_entropy_with_logits` (``reduction="none"``), with
    the optional ``pos_weight`` ``p_c`` (C,) as in torch. With all ``w_i = 1`` the result equals
    torch's ``binary_cross_entropy_with_logits(..., reduction="mean")``.
    """

    pos_weight: Tensor | None

    def __init__(
        self,
        pos_weight: Sequence[float] | np.ndarray | Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes)
        if pos_weight is None:
            self.register_buffer("pos_weight", None, persistent=False)
        else:
            pw = torch.as_tensor(np.asarray(pos_weight, dtype=np.float32))
            if pw.dim() != 1:
                raise ValueError(f"pos_weight must be 1-D (C,), got shape {tuple(pw.shape)}")
            if num_classes is not None and pw.numel() != num_classes:
                raise ValueError(f"pos_weight has {pw.numel()} entries for {num_classes} classes")
            self.register_buffer("pos_weight", pw, persistent=False)

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.dtype)
        return F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=pos_weight, reduction="none"
        )


class AsymmetricLoss(MultiLabelLoss):
    """Asymmetric loss (ASL; Ridnik et al., "Asymmetric Loss for Multi-Label Classification",
    ICCV 2021), as in the official ``AsymmetricLoss`` of Alibaba-MIIL/ASL.

    With ``p = σ(z)`` and the shifted probability ``p_m = max(p − clip, 0)`` for negatives:

    ``ℓ = −[ y (1 − p)^γ+ log(max(p, eps)) + (1 − y) p_m^γ− log(max(1 − p_m, eps)) ]``

    (``1 − p_m`` is computed as ``min(1 − p + clip, 1)``, as in the official code). Defaults
    ``gamma_neg=4, gamma_pos=0, clip=0.05, eps=1e-8``. ``disable_torch_grad_focal_loss=True``
    computes the focusing factors ``(1 − p)^γ+`` / ``p_m^γ−`` without gradient (detached).
    With ``gamma_neg = gamma_pos = 0`` and ``clip = 0`` this is BCE (up to the ``eps`` clamp).
    The official code sums over all elements; here the project's reduction applies.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        disable_torch_grad_focal_loss: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes)
        if gamma_neg < 0 or gamma_pos < 0:
            raise ValueError("gamma_neg and gamma_pos must be >= 0")
        if clip is not None and not 0 <= clip < 1:
            raise ValueError(f"clip must be in [0, 1), got {clip}")
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = 0.0 if clip is None else float(clip)
        self.eps = float(eps)
        self.disable_torch_grad_focal_loss = disable_torch_grad_focal_loss

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        p = torch.sigmoid(logits)
        one_minus_pm = 1.0 - p  # 1 − p_m, the "negative" probability after shifting
        if self.clip > 0:
            one_minus_pm = (one_minus_pm + self.clip).clamp(max=1.0)
        log_pos = torch.log(p.clamp(min=self.eps))
        log_neg = torch.log(one_minus_pm.clamp(min=self.eps))
        if self.gamma_pos > 0 or self.gamma_neg > 0:
            base_pos, base_neg = 1.0 - p, 1.0 - one_minus_pm  # (1 − p) and p_m
            if self.disable_torch_grad_focal_loss:
                base_pos, base_neg = base_pos.detach(), base_neg.detach()
            if self.gamma_pos > 0:
                log_pos = log_pos * base_pos.pow(self.gamma_pos)
            if self.gamma_neg > 0:
                log_neg = log_neg * base_neg.pow(self.gamma_neg)
        return -(targets * log_pos + (1.0 - targets) * log_neg)


class DistributionBalancedLoss(MultiLabelLoss):
    r"""Distribution-Balanced loss (DB; Wu et al., "Distribution-Balanced Loss for Multi-Label
    Classification in Long-Tailed Datasets", ECCV 2020), following the official
    ``ResampleLoss`` (``mllt/models/losses/resample_loss.py`` in wutong16/DistributionBalancedLoss)
    with its DB config (``configs/coco/LT_resnet50_pfc_DB.py``: ``reweight_func='rebalance'``,
    ``focal=dict(focal=True, balance_param=2.0, gamma=2)``,
    ``logit_reg=dict(neg_scale=2.0, init_bias=0.05)``,
    ``map_param=dict(alpha=0.1, beta=10.0, gamma=0.2)``).

    Inputs: ``n_c`` = training images containing class ``c`` (clamped to ``≥ 1``, and to
    ``[1, N − 1]`` for the prior), ``N`` = training images (``N_c``, per class, where some
    labels are unknown: the images whose label of ``c`` is known, so the prior is the positive
    share among them), ``z`` the logit, ``y`` the target.

    (a) Re-balanced weighting (paper §3.2; official ``rebalance_weight``), per sample and class:
        ``P^C_c = 1/n_c``; ``P^I_i = Σ_c y_ic / n_c`` (sum over the sample's positive classes,
        the paper's 1/C factor dropped as in the code); ``r_ic = P^C_c / P^I_i``;
        ``r̂_ic = map_alpha + σ(map_beta · (r_ic − map_gamma))``, for positives *and* negatives.
        It depends only on the labels (no gradient; an unknown label is read as target 0, so
        it is no positive of ``P^I``). A sample with no positive class has
        ``P^I = 0``, i.e. ``r = ∞``; it gets the limit ``r̂ = map_alpha + 1`` (what the
        official code yields through ``inf``).
    (b) Negative-tolerant regularisation (paper §3.3; official ``logit_reg_functions``): class
        prior ``p_c = n_c / N``, class bias ``ν_c = κ · log(1/p_c − 1)`` (κ = ``init_bias``; i.e.
        ``ν = −κ b̂`` with the paper's prior-matching bias ``b̂ = −log(1/p − 1)``), shifted logit
        ``z' = z − ν_c`` and negative scale λ = ``neg_scale``:
        ``ℓ^NTR = y · log(1 + e^{−z'}) + (1 − y) · (1/λ) · log(1 + e^{λ z'})``.
        The official code divides the bias by λ (it adds ``−κ log(1/p − 1)/λ`` to the logits
        and then scales negatives' logits by λ); ``official_bias_scaling=True`` reproduces that
        (shift ``ν_c/λ`` instead of ``ν_c``) and is the default, since ``init_bias = 0.05`` was
        tuned with it and TRCGL-Net's authors trained with the official code;
        ``official_bias_scaling=False`` gives the paper's ν.
    (c) Focal term (official ``focal=True``): ``p_t = σ(z')`` for positives and ``σ(−λ z')``
        for negatives (the probability of the right answer under the regularised logits);
        element loss ``ℓ = balance_param · (1 − p_t)^γ · r̂ · ℓ^NTR`` (focal factor not
        detached, as in the code). Without focal: ``ℓ = r̂ · ℓ^NTR``.

    With ``reweight_func=None`` (r̂ = 1), ``focal=False``, ``neg_scale=1`` and ``init_bias=0``
    this is plain BCE. The bias ν (C,) is the :attr:`ntr_bias` buffer; the per-sample, per-class
    weights of a batch are :meth:`rebalance_weight`.
    """

    freq_inv: Tensor
    ntr_bias: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | np.ndarray | Tensor,
        num_samples: int | Sequence[int] | np.ndarray,
        reweight_func: str | None = "rebalance",
        focal: bool = True,
        gamma: float = 2.0,
        balance_param: float = 2.0,
        neg_scale: float = 2.0,
        init_bias: float = 0.05,
        map_alpha: float = 0.1,
        map_beta: float = 10.0,
        map_gamma: float = 0.2,
        official_bias_scaling: bool = True,
    ) -> None:
        counts = _counts_array(class_counts)
        num_samples = _check_num_samples(counts, num_samples)
        super().__init__(len(counts))
        if reweight_func not in (None, "rebalance"):
            raise ValueError(f"reweight_func must be 'rebalance' or None, got {reweight_func!r}")
        if neg_scale <= 0:
            raise ValueError(f"neg_scale must be > 0, got {neg_scale}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.reweight_func = reweight_func
        self.focal = bool(focal)
        self.gamma = float(gamma)
        self.balance_param = float(balance_param)
        self.neg_scale = float(neg_scale)
        self.init_bias = float(init_bias)
        self.map_alpha = float(map_alpha)
        self.map_beta = float(map_beta)
        self.map_gamma = float(map_gamma)
        self.official_bias_scaling = bool(official_bias_scaling)
        self.num_samples = num_samples

        # p_c needs 0 < n_c < N for a finite log-odds: clamp to [1, N − 1] (N = 1: p = 1/2).
        n = np.broadcast_to(np.asarray(num_samples, dtype=np.float64), counts.shape)
        prior = np.clip(counts, 1.0, np.maximum(n - 1.0, 1.0)) / np.maximum(n, 2.0)
        bias = self.init_bias * np.log(1.0 / prior - 1.0)
        freq_inv = 1.0 / np.clip(counts, 1.0, None)
        self.register_buffer(
            "freq_inv", torch.as_tensor(freq_inv, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "ntr_bias", torch.as_tensor(bias, dtype=torch.float32), persistent=False
        )

    def rebalance_weight(self, targets: Tensor) -> Tensor:
        """``r̂`` (B×C) for a batch's targets (all ones when ``reweight_func`` is ``None``)."""
        targets = targets.float()
        if self.reweight_func is None:
            return torch.ones_like(targets)
        freq_inv = self.freq_inv.to(targets.device)
        instance = (targets * freq_inv).sum(dim=1, keepdim=True)  # P^I_i
        has_positive = instance > 0
        ratio = freq_inv / torch.where(has_positive, instance, torch.ones_like(instance))
        weight = self.map_alpha + torch.sigmoid(self.map_beta * (ratio - self.map_gamma))
        return torch.where(has_positive, weight, torch.full_like(weight, self.map_alpha + 1.0))

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        lam = self.neg_scale
        shift = self.ntr_bias.to(device=logits.device, dtype=logits.dtype)
        if self.official_bias_scaling:
            shift = shift / lam
        z = logits - shift
        pos = F.softplus(-z)  # −log σ(z')
        neg = F.softplus(lam * z) / lam  # (1/λ) log(1 + e^{λ z'})
        loss = targets * pos + (1.0 - targets) * neg
        loss = loss * self.rebalance_weight(targets).to(loss.dtype)
        if self.focal:
            # p_t = σ(z') for positives, σ(−λ z') for negatives; −log p_t = the unscaled terms.
            log_pt = -(targets * pos + (1.0 - targets) * lam * neg)
            loss = self.balance_param * (1.0 - torch.exp(log_pt)).pow(self.gamma) * loss
        return loss


def ldam_margins(class_counts: Sequence[int] | np.ndarray | Tensor, max_m: float = 0.5) -> Tensor:
    """LDAM margins ``Δ_c ∝ n_c^{-1/4}``, scaled so the largest is ``max_m`` (counts clamped
    to ``≥ 1``; Cao et al., NeurIPS 2019, Eq. 12)."""
    counts = np.clip(_counts_array(class_counts), 1.0, None)
    m = counts**-0.25
    return torch.as_tensor(m * (max_m / m.max()), dtype=torch.float32)


def drw_class_weights(
    class_counts: Sequence[int] | np.ndarray | Tensor, beta: float = 0.9999
) -> Tensor:
    """Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019):
    ``w_c = (1 − β) / (1 − β^{n_c})``, normalised to sum to C (counts clamped to ``≥ 1``)."""
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = np.clip(_counts_array(class_counts), 1.0, None)
    w = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return torch.as_tensor(w / w.sum() * len(counts), dtype=torch.float32)


class LDAMLoss(MultiLabelLoss):
    """Label-distribution-aware margin loss (LDAM; Cao et al., "Learning Imbalanced Datasets with
    Label-Distribution-Aware Margin Loss", NeurIPS 2019) with optional deferred re-weighting
    (DRW), adapted to multi-label classification.

    Multi-label adaptation: each class is a binary problem; the margin is enforced on the
    positive side only, ``ℓ_ic = w_c · BCEWithLogits(s · (z_ic − Δ_c y_ic), y_ic)``, where
    ``Δ_c = max_m · n_c^{-1/4} / max_k n_k^{-1/4}`` (:func:`ldam_margins`; the official
    single-label code subtracts Δ from the true class's logit before an ``s``-scaled softmax
    cross-entropy). Negatives get no margin (their "competitor" in the softmax view is the
    decision threshold, not a specific class).

    DRW (paper §3.2 / official ``train.py``): ``w_c = 1`` for epochs ``< drw_start_epoch``;
    from ``drw_start_epoch`` on (0-based epochs, set with :meth:`set_epoch`) ``w_c`` are the
    effective-number weights of :func:`drw_class_weights` (β = ``drw_beta``). They multiply
    ``ℓ_ic`` inside the per-sample mean over classes. ``drw_start_epoch=None``: never.
    """

    margins: Tensor
    drw_weights: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | np.ndarray | Tensor,
        max_m: float = 0.5,
        s: float = 30.0,
        drw_start_epoch: int | None = None,
        drw_beta: float = 0.9999,
    ) -> None:
        counts = _counts_array(class_counts)
        super().__init__(len(counts))
        if max_m < 0 or s <= 0:
            raise ValueError("max_m must be >= 0 and s > 0")
        if drw_start_epoch is not None and drw_start_epoch < 0:
            raise ValueError(f"drw_start_epoch must be >= 0, got {drw_start_epoch}")
        self.max_m = float(max_m)
        self.s = float(s)
        self.drw_start_epoch = drw_start_epoch
        self.drw_beta = float(drw_beta)
        self.register_buffer("margins", ldam_margins(counts, max_m), persistent=False)
        self.register_buffer("drw_weights", drw_class_weights(counts, drw_beta), persistent=False)

    @property
    def drw_active(self) -> bool:
        return self.drw_start_epoch is not None and self.epoch >= self.drw_start_epoch

    @property
    def class_weights(self) -> Tensor:
        """The per-class weights used at the current epoch (C,)."""
        return self.drw_weights if self.drw_active else torch.ones_like(self.drw_weights)

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        margins = self.margins.to(device=logits.device, dtype=logits.dtype)
        shifted = self.s * (logits - margins * targets)
        loss = F.binary_cross_entropy_with_logits(shifted, targets, reduction="none")
        if self.drw_active:
            loss = loss * self.drw_weights.to(device=logits.device, dtype=logits.dtype)
        return loss


class ClassBalancedMarginLoss(MultiLabelLoss):
    """The loss of the authors' released code (its class is called "DistributionBalancedLoss",
    but it is not Wu et al.'s DB loss, which is ``db``; docs/method.md §6).

    From the training counts n_c (clipped at 1): effective-number weights (Cui et al., CVPR
    2019) e_c = (1 − β) / (1 − β^{n_c}), normalised to mean 1; w_c = e_c^power; a margin
    m_c = max_margin · (u_c − min u) / (max u − min u + 1e-6) with u_c = 1 / (e_c + 1e-6), so
    the most frequent classes get the largest margin; ℓ_ic = w_c · BCE(z_ic − y_ic m_c, y_ic).

    Its reductions are the authors' too, not the shared ones of the module docstring: the
    per-sample loss is the **sum** over the known classes (an unknown cell, mask 0, adds 0), and
    the batch loss the **plain mean** of the
    weighted per-sample losses, L = (1/B) Σ_i w_i l_i (so w_syn = 0.5 halves a synthetic
    image's share instead of renormalising the batch).
    """

    def __init__(
        self,
        class_counts: Sequence[int] | np.ndarray,
        beta: float = 0.9999,
        power: float = 0.5,
        max_margin: float = 0.2,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes)
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must lie in (0, 1), got {beta}")
        if max_margin < 0:
            raise ValueError(f"max_margin must be >= 0, got {max_margin}")
        n = np.maximum(_counts_array(class_counts), 1.0)
        e = (1.0 - beta) / (1.0 - np.power(beta, n))
        e = e / e.mean()
        u = 1.0 / (e + 1e-6)
        margin = max_margin * (u - u.min()) / (u.max() - u.min() + 1e-6)
        self.register_buffer("class_weights", torch.as_tensor(e**power, dtype=torch.float32))
        self.register_buffer("margins", torch.as_tensor(margin, dtype=torch.float32))

    def element_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        shifted = logits - targets * self.margins.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(shifted, targets, reduction="none")
        return bce * self.class_weights.to(logits.dtype)

    def reduce(self, per_sample: Tensor, weights: Tensor | None) -> Tensor:
        """``(1/B) Σ_i w_i Σ_c m_ic ℓ_ic`` (the authors' reductions, unknown cells left out;
        see the class docstring)."""
        per_sample = per_sample * self.class_weights.numel()  # the mean over classes → sum
        if weights is not None:
            per_sample = per_sample * weights.to(device=per_sample.device, dtype=per_sample.dtype)
        return per_sample.mean() if per_sample.numel() else per_sample.sum()


@dataclass(frozen=True)
class LossSpec:
    """A registered loss (a ``train.loss`` name): its class and the option defaults its name
    implies (``ldam_drw`` is LDAM with deferred re-weighting on)."""

    cls: type[MultiLabelLoss]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def options(self) -> list[str]:
        """What a user may set (``train.loss_options``): the constructor's keyword arguments
        other than those filled from the training data."""
        return sorted(keyword_options(self.cls, DATA_ARGUMENTS))

    def build(self, class_counts: np.ndarray, num_samples: int, **options: Any) -> MultiLabelLoss:
        accepted = inspect.signature(self.cls.__init__).parameters
        data = {
            "class_counts": class_counts,
            "num_samples": num_samples,
            "num_classes": len(class_counts),
        }
        kwargs = {k: v for k, v in data.items() if k in accepted}
        return self.cls(**kwargs, **{**self.defaults, **options})

    def check_options(self, options: Mapping[str, Any], key: str) -> None:
        """Unknown option names, and values the loss refuses, as a :class:`ConfigError` that
        names ``key`` (checked before any work by building the loss for two dummy classes, or
        for as many as a list-valued option has)."""
        accepted = keyword_options(self.cls, DATA_ARGUMENTS)
        check_option_names(key, options, accepted)
        sizes = [len(v) for v in options.values() if isinstance(v, list)]
        num_classes = sizes[0] if sizes else 2
        try:
            self.build(np.ones(num_classes), 4, **options)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{key}: {exc}") from None


#: Constructor arguments that the trainer fills from the training data.
DATA_ARGUMENTS = ("class_counts", "num_samples", "num_classes")

#: Cao et al. switch DRW on at epoch 160 of 200 (CIFAR); pass ``drw_start_epoch`` for others.
LDAM_DRW_DEFAULT_START_EPOCH = 160

LOSSES.add("bce", LossSpec(BCELoss))
LOSSES.add("asl", LossSpec(AsymmetricLoss))
LOSSES.add("db", LossSpec(DistributionBalancedLoss))
LOSSES.add("ldam", LossSpec(LDAMLoss))
LOSSES.add("ldam_drw", LossSpec(LDAMLoss, {"drw_start_epoch": LDAM_DRW_DEFAULT_START_EPOCH}))
LOSSES.add("cb_margin", LossSpec(ClassBalancedMarginLoss))


def build_loss(
    name: str,
    class_counts: Sequence[int] | np.ndarray,
    num_samples: int | Sequence[int] | np.ndarray,
    **options: Any,
) -> nn.Module:
    """Build a registered loss by name (``"bce"``, ``"asl"``, ``"db"``, ``"ldam"``,
    ``"ldam_drw"``, …; :data:`trcgl.registry.LOSSES`).

    ``class_counts`` (C,): training images containing each class; ``num_samples``: training
    images, or per class (C,) the training images whose label of the class is known.
    ``options`` go to the loss's constructor (e.g. ``gamma_neg=4`` for ``"asl"``,
    ``drw_start_epoch=…`` for ``"ldam_drw"``, whose default is
    :data:`LDAM_DRW_DEFAULT_START_EPOCH`). Unknown names or options raise ``ValueError``.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES.names())}")
    spec: LossSpec = LOSSES.get(key)
    accepted = spec.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {key!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted)}"
        )
    counts = _counts_array(class_counts)
    num_samples = _check_num_samples(counts, num_samples)
    return spec.build(counts, num_samples, **options)
