"""The synthetic-image filter (docs/method.md §1), with a tiny classifier trained on real NIH
images."""

from __future__ import annotations

import numpy as np
import pytest

from trcgl.data.images import read_image
from trcgl.data.manifest import Manifest
from trcgl.diffusion.filter import (
    LOW_PROBABILITY,
    NEAR_COPY,
    ReferenceFeatures,
    features,
    filter_synthetic,
    reference_features,
)
from trcgl.errors import ConfigError, DataError
from trcgl.models.base import load_model


@pytest.fixture(scope="module")
def setup(trained_run, nih_sample):
    run, _ = trained_run
    model = load_model(run / "model")
    manifest = Manifest.load(run / "manifest.parquet")
    train = manifest.subset(split="train", source="real").frame.head(12)
    images = [read_image(nih_sample / "images" / p) for p in train["image"]]
    ids = train["image_id"].astype(str).tolist()
    return model, images, ids


def _noise(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 40), dtype=np.uint8) for _ in range(n)]


def test_features_are_normalised(setup):
    model, images, _ = setup
    f = features(model, images[:5], batch_size=2)
    assert f.shape == (5, model.features.num_features)
    assert f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(features(model, images[:5], batch_size=5), f, atol=1e-5)


def test_training_image_is_a_near_copy(setup):
    model, images, ids = setup
    target = model.classes[0]
    report = filter_synthetic(
        model, [images[3]], [target], images, prob_threshold=0.0, train_ids=ids
    )
    row = report.rows.iloc[0]
    assert row["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert row["nearest_image_id"] == ids[3]
    assert bool(row["near_copy"]) and not bool(row["kept"])
    assert row["reason"] == f"{NEAR_COPY} of {ids[3]}"
    assert report.rejected == {NEAR_COPY: 1, LOW_PROBABILITY: 0}
    assert report.kept == 0 and report.made == 1


def test_probability_thresholds(setup):
    model, images, ids = setup
    reference = reference_features(model, images, ids)
    synthetic = _noise(6)
    targets = [model.classes[i % len(model.classes)] for i in range(6)]
    everything = filter_synthetic(
        model, synthetic, targets, reference, prob_threshold=0.0, max_similarity=1.01
    )
    assert everything.kept == 6 and everything.kept_indices == list(range(6))
    assert (everything.rows["reason"] == "kept").all()
    probs = everything.rows["probability"].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()
    nothing = filter_synthetic(
        model, synthetic, targets, reference, prob_threshold=1.0, max_similarity=1.01
    )
    assert nothing.kept == 0
    assert nothing.rejected == {NEAR_COPY: 0, LOW_PROBABILITY: 6}
    np.testing.assert_allclose(nothing.rows["probability"], probs)
    # a threshold between the probabilities splits them exactly by probability
    middle = float(np.median(probs))
    split = filter_synthetic(
        model, synthetic, targets, reference, prob_threshold=middle, max_similarity=1.01
    )
    assert split.rows["kept"].tolist() == (probs >= middle).tolist()


def test_counts_add_up_and_precomputed_features(setup, tmp_path):
    model, images, ids = setup
    reference = reference_features(model, images, ids)
    synthetic = [*_noise(4, seed=1), images[0], images[5]]
    targets = [model.classes[i % len(model.classes)] for i in range(6)]
    report = filter_synthetic(
        model, synthetic, targets, reference, prob_threshold=0.3, max_similarity=0.999,
        batch_size=4,
    )  # fmt: skip
    assert report.made == 6
    assert report.kept + sum(report.rejected.values()) == report.made
    assert report.rows["near_copy"].iloc[4:].all()
    assert report.rows["reason"].iloc[5] == f"{NEAR_COPY} of {ids[5]}"
    summary = report.summary()
    assert sum(c["made"] for c in summary["per_class"].values()) == 6
    assert sum(c["kept"] for c in summary["per_class"].values()) == report.kept
    # a raw feature array gives the same decisions as ReferenceFeatures / images
    raw = filter_synthetic(
        model, synthetic, targets, reference.vectors * 3.0, 0.3, 0.999, train_ids=ids
    )
    from_images = filter_synthetic(model, synthetic, targets, images, 0.3, 0.999, train_ids=ids)
    for other in (raw, from_images):
        assert other.rows["reason"].tolist() == report.rows["reason"].tolist()
        np.testing.assert_allclose(other.rows["similarity"], report.rows["similarity"], atol=1e-5)
    report.save(tmp_path)
    assert (tmp_path / "filter_report.csv").is_file()
    assert (tmp_path / "filter_summary.json").is_file()


def test_bad_inputs(setup):
    model, images, _ = setup
    with pytest.raises(DataError):
        filter_synthetic(model, images[:2], [model.classes[0]], images)
    with pytest.raises(ConfigError, match="not classes"):
        filter_synthetic(model, images[:1], ["Nope"], images)
    with pytest.raises(DataError):
        ReferenceFeatures(np.zeros((2, 4), np.float32), ("a",))
    with pytest.raises(DataError, match="feature size"):
        filter_synthetic(model, images[:1], [model.classes[0]], np.ones((3, 5), np.float32))


def test_similarity_bound_ignores_same_patient_pairs():
    from trcgl.diffusion.filter import ReferenceFeatures, similarity_bound

    # Nearest other-patient similarities by hand: 0.6, 0.6, 0.8, 0.8 (v0 = v1 is one patient).
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    reference = ReferenceFeatures(vectors, ("a0", "a1", "b", "c"))
    patients = ["A", "A", "B", "C"]
    assert similarity_bound(reference, patients, quantile=1.0) == pytest.approx(0.8)
    assert similarity_bound(reference, patients, quantile=0.5) == pytest.approx(0.7)
    with pytest.raises(DataError, match="two patients"):
        similarity_bound(reference, ["A"] * 4)
