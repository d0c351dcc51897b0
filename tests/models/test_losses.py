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


# --- unknown labels: every loss masks them -------------------------------------------------

MASK_COUNTS, MASK_N = [10, 40], 100
MASK_LOGITS = [[0.7, -0.4], [1.2, 0.3]]
MASK_TARGETS = [[1.0, 0.0], [0.0, 1.0]]
MASK = [[1.0, 0.0], [1.0, 1.0]]  # sample 0's second label is unknown
MASK_WEIGHTS = [1.0, 0.5]


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _bce(z: float, y: float) -> float:
    return _softplus(-z) if y == 1 else _softplus(z)


def _ref_bce(i: int, c: int) -> float:
    return _bce(MASK_LOGITS[i][c], MASK_TARGETS[i][c])


def _ref_asl(i: int, c: int) -> float:  # gamma_neg 4, gamma_pos 0, clip 0.05
    p = _sigmoid(MASK_LOGITS[i][c])
    if MASK_TARGETS[i][c] == 1:
        return -math.log(p)
    pm = max(p - 0.05, 0.0)
    return -(pm**4) * math.log(1 - pm)


def _ref_db(i: int, c: int) -> float:  # the DB config, official bias scaling
    lam, kappa = 2.0, 0.05
    z = MASK_LOGITS[i][c] - kappa * math.log(MASK_N / MASK_COUNTS[c] - 1) / lam
    y = MASK_TARGETS[i][c]
    p_i = sum(1 / n for n, t in zip(MASK_COUNTS, MASK_TARGETS[i], strict=True) if t == 1)
    r = 0.1 + _sigmoid(10 * ((1 / MASK_COUNTS[c]) / p_i - 0.2))
    if y == 1:
        ntr, pt = _softplus(-z), _sigmoid(z)
    else:
        ntr, pt = _softplus(lam * z) / lam, _sigmoid(-lam * z)
    return 2.0 * (1 - pt) ** 2 * r * ntr


def _ldam_margin(c: int) -> float:
    return 0.5 * (MASK_COUNTS[c] / MASK_COUNTS[0]) ** -0.25  # the rarest class gets 0.5


def _ref_ldam(i: int, c: int) -> float:
    y = MASK_TARGETS[i][c]
    return _bce(30.0 * (MASK_LOGITS[i][c] - _ldam_margin(c) * y), y)


def _ref_ldam_drw(i: int, c: int) -> float:  # DRW on (drw_start_epoch=0)
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in MASK_COUNTS]
    return _ref_ldam(i, c) * raw[c] / sum(raw) * 2


def _cb_weights_margins() -> tuple[list[float], list[float]]:
    e = [(1 - 0.9999) / (1 - 0.9999**n) for n in MASK_COUNTS]
    e = [v / (sum(e) / 2) for v in e]
    u = [1 / (v + 1e-6) for v in e]
    margins = [0.2 * (v - min(u)) / (max(u) - min(u) + 1e-6) for v in u]
    return [v**0.5 for v in e], margins


def _ref_cb_margin(i: int, c: int) -> float:
    w, m = _cb_weights_margins()
    y = MASK_TARGETS[i][c]
    return w[c] * _bce(MASK_LOGITS[i][c] - y * m[c], y)


#: Every registered loss with its element loss written out by hand; the shared reduction is
#: (Σ_i w_i (1/C) Σ_c m_ic ℓ_ic) / Σ_i w_i, cb_margin's (1/B) Σ_i w_i Σ_c m_ic ℓ_ic.
MASKED_REFERENCES = {
    "bce": _ref_bce,
    "asl": _ref_asl,
    "db": _ref_db,
    "ldam": _ref_ldam,
    "ldam_drw": _ref_ldam_drw,
    "cb_margin": _ref_cb_margin,
}


def _masked_loss(name: str) -> torch.nn.Module:
    return build_loss(
        name, MASK_COUNTS, MASK_N, **({"drw_start_epoch": 0} if name == "ldam_drw" else {})
    )


def test_every_registered_loss_has_a_masked_reference():
    from trcgl.registry import LOSSES

    assert set(LOSSES.names()) == set(MASKED_REFERENCES)


@pytest.mark.parametrize("name", sorted(MASKED_REFERENCES))
def test_masked_loss_equals_the_hand_worked_value(name):
    ref = MASKED_REFERENCES[name]
    known = [[ref(i, c) * MASK[i][c] for c in range(2)] for i in range(2)]
    w = MASK_WEIGHTS
    if name == "cb_margin":  # the authors' reductions: a sum over classes, a plain batch mean
        expected = sum(w[i] * sum(known[i]) for i in range(2)) / 2
    else:  # the paper's 1/C over classes, the weighted mean over samples
        expected = sum(w[i] * sum(known[i]) / 2 for i in range(2)) / sum(w)
    loss = _masked_loss(name)
    logits = torch.tensor(MASK_LOGITS, requires_grad=True)
    out = loss(logits, torch.tensor(MASK_TARGETS), torch.tensor(w), torch.tensor(MASK))
    assert out.item() == pytest.approx(expected, rel=1e-5)
    out.backward()
    assert logits.grad[0, 1].item() == 0.0  # the unknown cell's logit: exactly no gradient
    assert (logits.grad[torch.tensor(MASK) == 1] != 0).all()


@pytest.mark.parametrize("name", sorted(MASKED_REFERENCES))
def test_an_unknown_cell_neither_its_logit_nor_its_target_matter(name):
    loss = _masked_loss(name)
    mask = torch.tensor(MASK)
    values = []
    for z, y in ((-0.4, 0.0), (50.0, 1.0), (-80.0, 1.0)):
        logits = torch.tensor(MASK_LOGITS)
        targets = torch.tensor(MASK_TARGETS)
        logits[0, 1], targets[0, 1] = z, y
        values.append(loss(logits, targets, torch.tensor(MASK_WEIGHTS), mask).item())
    # (DB: an unknown target read as a positive would change the row's P^I, so it is read as 0)
    assert values == pytest.approx([values[0]] * 3, rel=1e-6)


@pytest.mark.parametrize("name", sorted(MASKED_REFERENCES))
def test_an_all_ones_mask_changes_nothing(name, batch):
    logits, targets = batch
    loss = build_loss(name, COUNTS, N_TRAIN)
    ones = torch.ones_like(logits)
    torch.testing.assert_close(loss(logits, targets, None, ones), loss(logits, targets))


def test_a_wrongly_shaped_mask_is_rejected(batch):
    logits, targets = batch
    with pytest.raises(ValueError, match="mask"):
        build_loss("bce", COUNTS, N_TRAIN)(logits, targets, None, torch.ones(2, 2))


def test_db_prior_counts_only_the_images_whose_label_is_known():
    """With unknown labels, DB's prior p_c = n_c / N_c over the N_c images whose label of c is
    known; one N for every class equals the scalar form."""
    counts = np.array([10.0, 50.0, 3.0])
    per_class = DistributionBalancedLoss(counts, num_samples=[100, 60, 100], init_bias=0.05)
    p = np.array([10 / 100, 50 / 60, 3 / 100])
    want = 0.05 * np.log(1 / p - 1)
    np.testing.assert_allclose(per_class.ntr_bias.numpy(), want, rtol=1e-6)
    same = DistributionBalancedLoss(counts, num_samples=[100, 100, 100])
    scalar = DistributionBalancedLoss(counts, num_samples=100)
    torch.testing.assert_close(same.ntr_bias, scalar.ntr_bias)
    with pytest.raises(ValueError, match="exceeds num_samples"):
        DistributionBalancedLoss(counts, num_samples=[100, 40, 100])
    with pytest.raises(ValueError, match="3 positive integers"):
        DistributionBalancedLoss(counts, num_samples=[100, 100])
