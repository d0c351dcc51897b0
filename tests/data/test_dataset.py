"""ManifestDataset and the transforms: shapes, weights, validation, augmentation and seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from trcgl.data.dataset import ManifestDataset
from trcgl.data.transforms import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    build_transform,
    reseed_transforms,
    to_gray_uint8,
    worker_init_fn,
)
from trcgl.errors import ConfigError, DataError, ImageReadError

CLASSES = ["Normal", "cardiomegaly", "pleural effusion"]
S = 32


def synthetic(h: int, w: int, seed: int) -> np.ndarray:
    """A radiograph-like 8-bit image: bright frame, darker 'lungs', noise. Asymmetric on purpose."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = 200.0 - 120.0 * np.exp(
        -(((xx - 0.3 * w) / (0.15 * w)) ** 2 + ((yy - h / 2) / (0.3 * h)) ** 2)
    )
    img -= 60.0 * (xx / w)
    img += np.random.default_rng(seed).normal(0.0, 6.0, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def manifest(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Five images of different sizes and kinds (8-bit, RGB, RGBA, 16-bit) and a manifest."""
    root = tmp_path / "img"
    root.mkdir()
    Image.fromarray(synthetic(S, S, 0)).save(root / "a.png")
    Image.fromarray(synthetic(70, 50, 1)).save(root / "b.png")  # wrong size
    Image.fromarray(np.stack([synthetic(40, 40, 2)] * 3, -1)).save(root / "c.png")  # RGB
    rgba = np.concatenate(
        [np.stack([synthetic(20, 30, 3)] * 3, -1), np.full((20, 30, 1), 255, np.uint8)], -1
    )
    Image.fromarray(rgba, mode="RGBA").save(root / "d.png")
    Image.fromarray(synthetic(64, 64, 4).astype(np.uint16) * 16).save(root / "e.png")  # 16-bit
    frame = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png", str(root / "e.png")],  # one absolute
            "patient_id": ["p1", "p1", "p2", "p3", "p4"],
            "split": ["train", "train", "val", "train", "val"],
            "source": ["real", "real", "real", "synthetic", "real"],
            "weight": [1.0, 1.0, 1.0, 0.5, 1.0],
            "Normal": [1, 0, 0, 0, 1],
            "cardiomegaly": [0, 1, 1, 0, 0],
            "pleural effusion": [0, 1, 0, 1, 0],
        }
    )
    return frame, root


def test_items_shapes_dtypes_and_weights(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    ds = ManifestDataset(frame, CLASSES, root, build_transform(S, train=False))
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
        assert torch.isfinite(item["image"]).all()
        assert item["labels"].shape == (3,) and item["labels"].dtype == torch.float32
        assert item["weight"].shape == () and item["weight"].dtype == torch.float32
        assert item["index"] == i
    assert ds[3]["weight"].item() == 0.5
    assert ds[1]["labels"].tolist() == [0.0, 1.0, 1.0]
    labels = ds.labels_matrix()
    assert labels.shape == (5, 3) and labels.dtype == np.int64
    assert labels.tolist() == frame[CLASSES].to_numpy().tolist()
    assert ds[-1]["index"] == 4
    with pytest.raises(IndexError):
        ds[5]


def test_default_loader_collates(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    ds = ManifestDataset(frame, CLASSES, root, build_transform(S, train=True, seed=0))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["image"].shape == (5, 3, S, S)
    assert batch["labels"].shape == (5, 3) and batch["weight"].shape == (5,)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_weight_defaults_to_one_and_split_filter(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    ds = ManifestDataset(frame.drop(columns="weight"), CLASSES, root, build_transform(S, False))
    assert ds.weights().tolist() == [1.0] * 5
    val = ManifestDataset(frame, CLASSES, root, build_transform(S, False), split="val")
    assert len(val) == 2
    assert list(val.manifest.index) == [2, 4]  # source rows of items 0 and 1
    assert val[1]["labels"].tolist() == [1.0, 0.0, 0.0]


def test_missing_class_column_is_named(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    with pytest.raises(DataError, match="pleural effusion") as info:
        ManifestDataset(
            frame.drop(columns="pleural effusion"), CLASSES, root, build_transform(S, False)
        )
    assert info.value.column == "pleural effusion"
    with pytest.raises(DataError, match="split"):
        ManifestDataset(
            frame.drop(columns="split"), CLASSES, root, build_transform(S, False), "val"
        )


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("cardiomegaly", 2, "0, 1 or NaN"),
        ("Normal", "yes", "0, 1 or NaN"),
        ("weight", -1.0, ">= 0"),
        ("weight", np.nan, "finite"),
        ("image", None, "not a path"),
    ],
)
def test_bad_values_are_rejected(
    manifest: tuple[pd.DataFrame, Path], column: str, value: object, match: str
) -> None:
    frame, root = manifest
    frame = frame.astype({column: object})
    frame.loc[2, column] = value
    with pytest.raises(DataError, match=match):
        ManifestDataset(frame, CLASSES, root, build_transform(S, False))


def test_unreadable_image_names_file_and_row(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    (root / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = ManifestDataset(frame, CLASSES, root, build_transform(S, False))
    with pytest.raises(ImageReadError, match=r"c\.png.*manifest row 2"):
        ds[2]


# --------------------------------------------------------------------------------------------
# transforms


def test_eval_transform_is_deterministic_and_normalised() -> None:
    tr = build_transform(S, train=False)
    img = synthetic(50, 60, 7)
    assert torch.equal(tr(img), tr(img))
    flat = tr(np.full((10, 10), 128, np.uint8))
    for c in range(3):
        expected = (128 / 255 - IMAGENET_DEFAULT_MEAN[c]) / IMAGENET_DEFAULT_STD[c]
        assert torch.allclose(flat[c], torch.full((S, S), expected), atol=1e-5)


def test_imagenet_constants_match_timm() -> None:
    from timm.data import IMAGENET_DEFAULT_MEAN as TIMM_MEAN
    from timm.data import IMAGENET_DEFAULT_STD as TIMM_STD

    assert IMAGENET_DEFAULT_MEAN == TIMM_MEAN and IMAGENET_DEFAULT_STD == TIMM_STD


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((5, 300), np.uint8),
        np.zeros((40, 40, 1), np.uint8),
        np.zeros((40, 40, 2), np.uint8),
        np.zeros((17, 23, 3), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.arange(400, dtype=np.uint16).reshape(20, 20),
        np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10),
    ],
)
def test_any_shape_and_dtype_gives_the_right_tensor(image: np.ndarray) -> None:
    for train in (False, True):
        out = build_transform(S, train=train, seed=1)(image)
        assert out.shape == (3, S, S) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        # three copies of one grayscale image, each normalised with its channel's mean / std
        gray = [out[c] * IMAGENET_DEFAULT_STD[c] + IMAGENET_DEFAULT_MEAN[c] for c in range(3)]
        assert torch.allclose(gray[0], gray[1], atol=1e-5)
        assert torch.allclose(gray[0], gray[2], atol=1e-5)


def test_to_gray_uint8() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    assert to_gray_uint8(rgb)[0, 0] == 76  # ITU-R 601-2 luma of pure red
    assert to_gray_uint8(np.ones((3, 3), bool)).max() == 255
    assert to_gray_uint8(np.full((3, 3), 0.5, np.float32))[0, 0] == 128
    with pytest.raises(DataError):
        to_gray_uint8(np.zeros((2, 2, 2, 2), np.uint8))
    with pytest.raises(ConfigError):
        build_transform(0, train=False)


def test_train_transform_changes_images_and_is_seedable() -> None:
    img = synthetic(S, S, 11)
    reference = build_transform(S, train=False)(img)
    tr = build_transform(S, train=True, seed=123)
    outs = [tr(img) for _ in range(12)]
    changed = sum(not torch.allclose(o, reference) for o in outs)
    assert changed >= 8  # each augmentation fires with p <= 0.5, together almost always
    assert len({o.sum().item() for o in outs}) >= 8  # and differently each time
    again = build_transform(S, train=True, seed=123)
    assert all(torch.equal(o, again(img)) for o in outs)  # same seed, same stream
    other = build_transform(S, train=True, seed=124)
    assert not all(torch.equal(o, other(img)) for o in outs)
    # every augmentation has its own seed (albumentations would give them all the same one)
    seeds = [t.seed for t in tr.augment.transforms]
    assert len(set(seeds)) == len(seeds)


def test_reseed_transforms_walks_wrappers(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    tr = build_transform(S, train=True, seed=0)
    ds = ManifestDataset(frame, CLASSES, root, tr)
    wrapped = torch.utils.data.ConcatDataset([torch.utils.data.Subset(ds, [0, 1])])
    assert reseed_transforms(wrapped, 5) == 1
    first = ds[0]["image"]
    reseed_transforms(wrapped, 5)
    assert torch.equal(first, ds[0]["image"])
    assert (
        reseed_transforms(ManifestDataset(frame, CLASSES, root, build_transform(S, False)), 1) == 1
    )


def test_workers_augment_differently(tmp_path: Path) -> None:
    """Same image in every row: with worker_init_fn the two workers must not replay one stream."""
    Image.fromarray(synthetic(S, S, 5)).save(tmp_path / "same.png")
    frame = pd.DataFrame({"image": ["same.png"] * 8, **{c: [0] * 8 for c in CLASSES}})
    ds = ManifestDataset(frame, CLASSES, tmp_path, build_transform(S, train=True, seed=7))

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=1, num_workers=2, worker_init_fn=worker_init_fn
        )
        return torch.cat([b["image"] for b in loader])

    images = run(0)
    # items 0, 2, 4, … come from worker 0 and 1, 3, 5, … from worker 1: compare them pairwise
    assert not all(torch.equal(images[i], images[i + 1]) for i in range(0, 8, 2))
    assert torch.equal(images, run(0))  # reproducible under torch.manual_seed
    assert not torch.equal(images, run(1))


def test_unknown_labels_read_zero_and_are_masked(manifest: tuple[pd.DataFrame, Path]) -> None:
    frame, root = manifest
    frame = frame.astype({"cardiomegaly": float, "Normal": float})
    frame.loc[1, "cardiomegaly"] = np.nan  # b.png: cardiomegaly unknown
    frame.loc[4, "Normal"] = np.nan
    ds = ManifestDataset(frame, CLASSES, root, build_transform(S, False))
    item = ds[1]
    assert item["labels"].tolist() == [0.0, 0.0, 1.0]
    assert item["mask"].tolist() == [1.0, 0.0, 1.0]
    assert item["mask"].dtype == torch.float32
    assert ds[0]["mask"].tolist() == [1.0, 1.0, 1.0]
    assert ds.labels_matrix()[:, 0].tolist() == [1, 0, 0, 0, 0]  # the unknown Normal reads 0
    assert ds.known_matrix().sum() == 13
    values = ds.label_values()
    assert np.isnan(values[1, 1]) and np.isnan(values[4, 0]) and values[2, 1] == 1
