"""Multi-label losses: checked against torch's BCE and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trcgl.models.losses import (
    LDAM_DRW_DEFAULT_START_EPOCH,
    AsymmetricLoss,
    BCELoss,
    DistributionBalancedLoss,
    LDAMLoss,
    build_loss,
    drw_class_weights,
    ldam_margins,
    weighted_mean,
)

NAMES = ["bce", "asl", "db", "ldam", "ldam_drw"]
COUNTS = np.array([60, 25, 8, 2, 0])  # the last class has no training image
N_TRAIN = 100


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g) * 2
    targets = (torch.rand(6, 5, generator=g) < 0.4).float()
    targets[0] = 0.0  # a sample with no positive label ("No Finding")
    return logits, targets


def _build(name: str) -> torch.nn.Module:
    options = {"drw_start_epoch": 0} if name == "ldam_drw" else {}
    return build_loss(name, COUNTS, N_TRAIN, **options)


# --- reduction and per-sample weights ------------------------------------------------------


def test_bce_equals_torch_mean_with_unit_weights(batch):
    logits, targets = batch
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    loss = BCELoss()
    torch.testing.assert_close(loss(logits, targets), expected)
    torch.testing.assert_close(loss(logits, targets, torch.ones(6)), expected)


def test_bce_pos_weight_matches_torch(batch):
    logits, targets = batch
    pw = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0])
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pw)
    torch.testing.assert_close(BCELoss(pos_weight=pw, num_classes=5)(logits, targets), expected)


@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_removes_a_sample_exactly(name, batch):
    logits, targets = batch
    loss = _build(name)
    weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    keep = weights > 0
    assert loss(logits, targets, weights).item() == pytest.approx(
        loss(logits[keep], targets[keep]).item(), rel=1e-6
    )


def test_half_weight_is_a_hand_computed_weighted_mean(batch):
    logits, targets = batch
    per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    weights = torch.tensor([1.0, 0.5, 1.0, 1.0, 1.0, 0.5])
    ls = per_sample.tolist()
    expected = (ls[0] + 0.5 * ls[1] + ls[2] + ls[3] + ls[4] + 0.5 * ls[5]) / 5.0
    assert BCELoss()(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_all_zero_weights_give_zero_with_grad(name, batch):
    logits, targets = batch
    logits = logits.clone().requires_grad_(True)
    out = _build(name)(logits, targets, torch.zeros(6))
    assert out.item() == 0.0
    assert out.grad_fn is not None
    out.backward()
    assert torch.all(logits.grad == 0)


def test_weighted_mean_checks_shapes():
    with pytest.raises(ValueError, match="one per sample"):
        weighted_mean(torch.ones(3), torch.ones(4))


def test_shape_and_class_count_mismatches_are_rejected(batch):
    logits, targets = batch
    with pytest.raises(ValueError, match="shape"):
        BCELoss()(logits, targets[:, :3])
    with pytest.raises(ValueError, match=r"built for 4 classes"):
        build_loss("asl", [1, 2, 3, 4], 10)(logits, targets)


def test_low_precision_logits_give_a_float32_loss(batch):
    logits, targets = batch
    out = _build("db")(logits.to(torch.bfloat16), targets)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)


# --- ASL -----------------------------------------------------------------------------------


def test_asl_defaults_follow_the_official_code():
    asl = AsymmetricLoss()
    assert (asl.gamma_neg, asl.gamma_pos, asl.clip, asl.eps) == (4.0, 0.0, 0.05, 1e-8)
    assert asl.disable_torch_grad_focal_loss is False


def test_asl_without_focusing_and_clip_is_bce(batch):
    logits, targets = batch
    asl = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(asl(logits, targets), expected, rtol=1e-5, atol=1e-6)


def test_asl_focusing_hand_computed_on_one_by_two():
    logits = torch.tensor([[1.0, 0.5]])
    targets = torch.tensor([[1.0, 0.0]])
    p_pos, p_neg = _sigmoid(1.0), _sigmoid(0.5)
    p_m = p_neg - 0.05
    pos = -((1 - p_pos) ** 1) * math.log(p_pos)
    neg = -(p_m**4) * math.log(1 - p_m)
    asl = AsymmetricLoss(gamma_neg=4, gamma_pos=1, clip=0.05)
    assert asl(logits, targets).item() == pytest.approx((pos + neg) / 2, rel=1e-6)
    # the defaults (gamma_pos = 0): the positive term is plain −log p
    default = AsymmetricLoss()(logits, targets).item()
    assert default == pytest.approx((-math.log(p_pos) + neg) / 2, rel=1e-6)


def test_asl_clip_zeroes_easy_negatives():
    logits = torch.tensor([[-4.0]], requires_grad=True)  # p = 0.018 < clip
    out = AsymmetricLoss(clip=0.05)(logits, torch.zeros(1, 1))
    out.backward()
    assert out.item() == 0.0
    assert logits.grad.item() == 0.0


def test_asl_detached_focusing_changes_the_gradient_not_the_value():
    logits = torch.tensor([[0.3, 1.2]])
    targets = torch.tensor([[1.0, 0.0]])
    grads, values = [], []
    for detach in (False, True):
        x = logits.clone().requires_grad_(True)
        out = AsymmetricLoss(gamma_pos=1, disable_torch_grad_focal_loss=detach)(x, targets)
        out.backward()
        values.append(out.item())
        grads.append(x.grad.clone())
    assert values[0] == pytest.approx(values[1])
    assert not torch.allclose(grads[0], grads[1])


# --- Distribution-Balanced loss ------------------------------------------------------------


def test_db_reduces_to_bce(batch):
    logits, targets = batch
    db = DistributionBalancedLoss(
        COUNTS, N_TRAIN, reweight_func=None, focal=False, neg_scale=1.0, init_bias=0.0
    )
    expected = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(db(logits, targets), expected)


def test_db_ntr_bias_is_kappa_log_odds_by_hand():
    db = DistributionBalancedLoss([10, 50, 0, 100], 100, init_bias=0.05)
    expected = [
        0.05 * math.log(100 / 10 - 1),
        0.0,
        0.05 * math.log(100 / 1 - 1),
        0.05 * math.log(100 / 99 - 1),
    ]  # 0 and N are clamped to 1 and N − 1
    assert db.ntr_bias.tolist() == pytest.approx(expected, rel=1e-6)


def test_db_rebalance_weight_by_hand():
    db = DistributionBalancedLoss([10, 40, 5], 100)
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    r = db.rebalance_weight(targets)
    p_i = 1 / 10 + 1 / 40
    row0 = [0.1 + _sigmoid(10 * ((1 / n) / p_i - 0.2)) for n in (10, 40, 5)]
    row2 = [0.1 + _sigmoid(10 * ((1 / n) / (1 / 5) - 0.2)) for n in (10, 40, 5)]
    assert r[0].tolist() == pytest.approx(row0, rel=1e-6)
    assert r[1].tolist() == pytest.approx([1.1, 1.1, 1.1])  # no positive: the r = ∞ limit
    assert r[2].tolist() == pytest.approx(row2, rel=1e-6)


@pytest.mark.parametrize("official", [False, True])
def test_db_default_config_hand_computed(official):
    counts, n = [10, 40], 100
    logits = torch.tensor([[0.7, -0.4]])
    targets = torch.tensor([[1.0, 0.0]])
    db = DistributionBalancedLoss(counts, n, official_bias_scaling=official)
    lam, kappa = 2.0, 0.05
    nu = [kappa * math.log(n / c - 1) / (lam if official else 1.0) for c in counts]
    p_i = 1 / 10
    r = [0.1 + _sigmoid(10 * ((1 / c) / p_i - 0.2)) for c in counts]
    z_pos, z_neg = 0.7 - nu[0], -0.4 - nu[1]
    ntr_pos = math.log1p(math.exp(-z_pos))
    ntr_neg = math.log1p(math.exp(lam * z_neg)) / lam
    focal_pos = (1 - _sigmoid(z_pos)) ** 2
    focal_neg = (1 - _sigmoid(-lam * z_neg)) ** 2
    expected = 2.0 * (focal_pos * r[0] * ntr_pos + focal_neg * r[1] * ntr_neg) / 2
    assert db(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_db_defaults_are_the_papers_db_config():
    db = build_loss("db", COUNTS, N_TRAIN)
    assert isinstance(db, DistributionBalancedLoss)
    assert db.reweight_func == "rebalance" and db.focal and db.gamma == 2.0
    assert (db.balance_param, db.neg_scale, db.init_bias) == (2.0, 2.0, 0.05)
    assert (db.map_alpha, db.map_beta, db.map_gamma) == (0.1, 10.0, 0.2)


# --- LDAM / DRW ----------------------------------------------------------------------------


def test_ldam_margins_follow_inverse_fourth_root():
    m = ldam_margins([1, 16, 81, 0], max_m=0.5)
    assert m.tolist() == pytest.approx([0.5, 0.25, 0.5 / 3, 0.5], rel=1e-6)


def test_ldam_value_is_scaled_bce_with_positive_margins(batch):
    logits, targets = batch
    loss = LDAMLoss(COUNTS, max_m=0.5, s=30.0)
    m = ldam_margins(COUNTS, 0.5)
    expected = F.binary_cross_entropy_with_logits(30.0 * (logits - m * targets), targets)
    torch.testing.assert_close(loss(logits, targets), expected)


def test_drw_weights_are_the_effective_number_formula():
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta**n) for n in (60, 25, 8, 2, 1)]  # 0 counts as 1
    expected = [w / sum(raw) * 5 for w in raw]
    assert drw_class_weights(COUNTS, beta).tolist() == pytest.approx(expected, rel=1e-5)


def test_drw_switches_on_at_the_configured_epoch(batch):
    logits, targets = batch
    loss = build_loss("ldam_drw", COUNTS, N_TRAIN, drw_start_epoch=3)
    plain = LDAMLoss(COUNTS)
    w = drw_class_weights(COUNTS)
    for epoch in range(5):
        loss.set_epoch(epoch)
        plain.set_epoch(epoch)
        if epoch < 3:
            assert torch.equal(loss.class_weights, torch.ones(5))
            torch.testing.assert_close(loss(logits, targets), plain(logits, targets))
        else:
            torch.testing.assert_close(loss.class_weights, w)
            m = ldam_margins(COUNTS)
            shifted = 30.0 * (logits - m * targets)
            per = F.binary_cross_entropy_with_logits(shifted, targets, reduction="none")
            torch.testing.assert_close(loss(logits, targets), (per * w).mean())
    assert torch.equal(plain.class_weights, torch.ones(5))  # "ldam": never re-weights


def test_ldam_drw_default_start_epoch():
    assert build_loss("ldam_drw", COUNTS, N_TRAIN).drw_start_epoch == LDAM_DRW_DEFAULT_START_EPOCH
    assert build_loss("ldam", COUNTS, N_TRAIN).drw_start_epoch is None


# --- safety and the factory ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_zero_count_classes_give_finite_loss_and_gradients(name):
    counts = np.array([0, 0, 5, 20])  # two empty classes; one class in every image
    loss = build_loss(name, counts, 20, **({"drw_start_epoch": 0} if name == "ldam_drw" else {}))
    logits = (torch.randn(4, 4, generator=torch.Generator().manual_seed(1)) * 5).requires_grad_()
    targets = torch.tensor([[1.0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    out = loss(logits, targets, torch.tensor([1.0, 0.5, 1.0, 0.5]))
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    for buffer in loss.buffers():
        assert torch.isfinite(buffer).all()


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_has_set_epoch(name, batch):
    loss = _build(name)
    loss.set_epoch(7)
    assert torch.isfinite(loss(*batch))


def test_factory_types_and_errors():
    kinds = {
        "bce": BCELoss,
        "asl": AsymmetricLoss,
        "db": DistributionBalancedLoss,
        "ldam": LDAMLoss,
        "ldam_drw": LDAMLoss,
    }
    for name, cls in kinds.items():
        assert type(build_loss(name, COUNTS, N_TRAIN)) is cls
    with pytest.raises(
        ValueError, match=r"unknown loss 'focal'.*asl, bce, cb_margin, db, ldam, ldam_drw"
    ):
        build_loss("focal", COUNTS, N_TRAIN)
    with pytest.raises(ValueError, match=r"does not take option\(s\) gamma_neg"):
        build_loss("bce", COUNTS, N_TRAIN, gamma_neg=2)
    with pytest.raises(ValueError, match="exceeds num_samples"):
        build_loss("db", [5, 200], N_TRAIN)
    with pytest.raises(ValueError, match="non-negative"):
        build_loss("ldam", [5, -1], N_TRAIN)
    asl = build_loss("asl", COUNTS, N_TRAIN, gamma_neg=2, clip=0.0)
    assert (asl.gamma_neg, asl.clip) == (2.0, 0.0)
