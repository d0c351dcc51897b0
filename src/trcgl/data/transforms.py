"""Image transforms: any grayscale radiograph → a normalised ``3 × size × size`` float tensor.

The training augmentations are those of the paper authors' released code (docs/method.md §4):
horizontal flip, shift-scale-rotate, CLAHE, brightness/contrast, Gaussian noise and coarse
dropout, written for albumentations 2.0.8 (``A.Affine`` replaces the deprecated
``ShiftScaleRotate``; ``GaussNoise`` takes ``std_range`` as a fraction of 255;
``CoarseDropout`` takes hole counts and hole sizes as ranges). The strengths are chosen for
chest radiographs, where anatomy sits in a fixed place and the findings are subtle: small
shifts (±6.25 %), scales (±10 %) and rotations (±10°), mild contrast changes, faint noise and
a few small holes, each applied with probability < 1 so that many training images stay close
to the original.

Pipeline of :class:`CxrTransform` (the callable that :func:`build_transform` returns):

1. :func:`to_gray_uint8`: any ``H×W`` / ``H×W×C`` array of any dtype → 2-D ``uint8`` (RGB(A)
   → luma; 16-bit → the robust window of :func:`~trcgl.data.images.scale_to_uint8`).
2. Resize to ``size × size`` (area filter when shrinking, bilinear when enlarging), so a wrong
   input size never reaches the model. Non-square inputs are squashed, like the cache does.
3. Training only: the augmentations, on the grayscale image.
4. Replicate to 3 channels and normalise with ``mean`` / ``std`` (ImageNet by default, as the
   timm backbones were pretrained on it); returns ``float32`` ``3 × size × size``.

**Seeding.** Each albumentations transform holds its own random generator, created when the
pipeline is built, so DataLoader workers (forked or spawned copies of the dataset) would all
replay the *same* augmentations. Pass :func:`worker_init_fn` to the ``DataLoader``: it reseeds
every :class:`CxrTransform` inside the worker's dataset from the worker's torch seed (which is
``base_seed + worker_id``, with ``base_seed`` drawn from torch's global generator each epoch),
so workers differ, epochs differ, and a run seeded by ``torch.manual_seed`` is reproducible.
:meth:`CxrTransform.reseed` also gives every augmentation its *own* derived seed: in
albumentations 2.0.8 ``Compose(seed=s)`` hands the same seed to every child, which makes the
"apply or not" draws of transforms with equal ``p`` identical (they always fire together).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

# Importing albumentations otherwise makes an HTTP request to look for a newer version.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch

from trcgl.data.images import scale_to_uint8
from trcgl.errors import ConfigError, DataError

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "CxrTransform",
    "build_transform",
    "reseed_transforms",
    "to_gray_uint8",
    "train_augmentations",
    "worker_init_fn",
]

#: Same values as ``timm.data.IMAGENET_DEFAULT_MEAN`` / ``_STD`` (not imported, to keep this
#: module light); a test checks that they agree.
IMAGENET_DEFAULT_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def train_augmentations() -> list[A.BasicTransform]:
    """The training augmentations (authors' list, CXR-sized strengths), on 2-D ``uint8``.

    ============================  ====================================================  =====
    transform                     parameters                                            p
    ============================  ====================================================  =====
    HorizontalFlip                                                                      0.5
    Affine (shift-scale-rotate)   translate ±6.25 %, scale 0.9–1.1, rotate ±10°,        0.5
                                  black border
    CLAHE                         clip limit 1–2, 8×8 tiles                             0.3
    RandomBrightnessContrast      brightness ±0.1, contrast ±0.1                        0.5
    GaussNoise                    std 1–4 % of 255                                      0.2
    CoarseDropout                 1–4 holes of 5–12.5 % of the side, filled with 0      0.3
    ============================  ====================================================  =====

    The flip follows the authors even though it swaps the heart's side: the classes here are
    not lateralised, and dextrocardia is not among them.
    """
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.0625, 0.0625),
            scale=(0.9, 1.1),
            rotate=(-10.0, 10.0),
            interpolation=cv2.INTER_LINEAR,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            p=0.5,
        ),
        A.CLAHE(clip_limit=(1.0, 2.0), tile_grid_size=(8, 8), p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
        A.CoarseDropout(
            num_holes_range=(1, 4),
            hole_height_range=(0.05, 0.125),
            hole_width_range=(0.05, 0.125),
            fill=0,
            p=0.3,
        ),
    ]


def to_gray_uint8(image: np.ndarray) -> np.ndarray:
    """Any ``H×W`` or ``H×W×C`` image array → 2-D ``uint8`` grayscale.

    Channels: 1 → squeezed; 2 (gray + alpha) → the gray channel; 3 → RGB luma; 4 → RGBA luma
    (alpha dropped); more → their mean. Dtypes: ``uint8`` as is; ``bool`` → 0/255; floats in
    ``[0, 1]`` → ×255; anything else (16-bit, other floats) → the robust window of
    :func:`~trcgl.data.images.scale_to_uint8`.
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        channels = arr.shape[2]
        if channels in (1, 2):
            arr = arr[:, :, 0]
        elif arr.dtype == np.uint8 and channels in (3, 4):
            code = cv2.COLOR_RGB2GRAY if channels == 3 else cv2.COLOR_RGBA2GRAY
            arr = cv2.cvtColor(np.ascontiguousarray(arr), code)
        elif channels in (3, 4):
            weights = np.array([0.299, 0.587, 0.114])
            arr = arr[:, :, :3].astype(np.float64) @ weights
        else:
            arr = arr.astype(np.float64).mean(axis=2)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"expected an H×W or H×W×C image, got shape {np.shape(image)}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            return np.rint(np.nan_to_num(arr, nan=0.0) * 255.0).astype(np.uint8)
    return scale_to_uint8(arr)


def _resize(gray: np.ndarray, size: int) -> np.ndarray:
    h, w = gray.shape
    if (h, w) == (size, size):
        return gray
    shrinking = h * w > size * size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interp)


class CxrTransform:
    """Callable ``np.ndarray → torch.Tensor`` (``float32``, ``3 × size × size``); see module.

    Built by :func:`build_transform`. ``train`` switches the augmentations on; ``seed`` seeds
    them (``None``: fresh OS entropy). It pickles, so it can live in a DataLoader's dataset.
    """

    def __init__(
        self,
        size: int,
        train: bool,
        mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        std: Sequence[float] = IMAGENET_DEFAULT_STD,
        seed: int | None = None,
    ) -> None:
        if int(size) != size or size < 1:
            raise ConfigError(f"transform size must be a positive integer, got {size!r}")
        mean_arr = np.asarray(mean, dtype=np.float32).reshape(-1)
        std_arr = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean_arr.size not in (1, 3) or std_arr.size not in (1, 3):
            raise ConfigError(f"mean and std need 1 or 3 values, got {mean!r} and {std!r}")
        if np.any(std_arr <= 0):
            raise ConfigError(f"std must be positive, got {std!r}")
        self.size = int(size)
        self.train = bool(train)
        # out = (x / 255 - mean) / std  ==  x * scale + shift, per channel
        self._scale = np.broadcast_to(1.0 / (255.0 * std_arr), (3,)).reshape(3, 1, 1).copy()
        self._shift = np.broadcast_to(-mean_arr / std_arr, (3,)).reshape(3, 1, 1).copy()
        self.augment: A.Compose | None = None
        if self.train:
            self.augment = A.Compose(train_augmentations(), seed=seed)
            self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Reseed the augmentations: each one gets its own seed derived from ``seed``.

        ``None`` draws fresh OS entropy. Called by :func:`worker_init_fn` in each worker.
        """
        if self.augment is None:
            return
        children = list(self.augment.transforms)
        if seed is None:
            seeds: list[int | None] = [None] * (len(children) + 1)
        else:
            seq = np.random.SeedSequence(int(seed) % 2**128)
            seeds = [int(s.generate_state(1)[0]) for s in seq.spawn(len(children) + 1)]
        self.augment.set_random_seed(seeds[0])  # also (re)seeds the children with seeds[0] ...
        for child, child_seed in zip(children, seeds[1:], strict=True):
            child.set_random_seed(child_seed)  # ... so give each its own seed afterwards

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        gray = _resize(to_gray_uint8(image), self.size)
        if self.augment is not None:
            gray = self.augment(image=gray)["image"]
            if gray.ndim == 3:
                gray = gray[:, :, 0]
        out = gray[None, :, :].astype(np.float32) * self._scale + self._shift
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def __repr__(self) -> str:
        return f"CxrTransform(size={self.size}, train={self.train})"


def build_transform(
    size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    seed: int | None = None,
) -> CxrTransform:
    """The transform for training (``train=True``: with augmentations) or evaluation.

    Accepts any ``H×W`` / ``H×W×C`` image (see :func:`to_gray_uint8`), resizes it to
    ``size × size``, augments it when training, replicates it to 3 channels and normalises it:
    the result is a ``float32`` tensor ``3 × size × size``. The evaluation transform is
    deterministic. For DataLoader workers use :func:`worker_init_fn` (see the module docstring).
    """
    return CxrTransform(size, train, mean=mean, std=std, seed=seed)


def reseed_transforms(obj: Any, seed: int, _depth: int = 0) -> int:
    """Reseed every :class:`CxrTransform` reachable from a dataset; return how many were found.

    Looks at ``obj.transform`` and walks wrappers: ``torch.utils.data.Subset`` (``.dataset``)
    and ``ConcatDataset`` (``.datasets``). Each transform found gets a different seed.
    """
    if _depth > 8 or obj is None:
        return 0
    if isinstance(obj, CxrTransform):
        obj.reseed(seed)
        return 1
    found = 0
    transform = getattr(obj, "transform", None)
    if transform is not None:
        found += reseed_transforms(transform, seed, _depth + 1)
    inner = getattr(obj, "dataset", None)
    if inner is not None:
        found += reseed_transforms(inner, seed + 1_000_003 * (found + 1), _depth + 1)
    for i, ds in enumerate(getattr(obj, "datasets", None) or ()):
        found += reseed_transforms(ds, seed + 1_000_003 * (found + i + 1), _depth + 1)
    return found


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: give each worker its own augmentation stream.

    Uses the worker's torch seed (``base_seed + worker_id``; ``base_seed`` comes from torch's
    global generator, so ``torch.manual_seed`` makes a run reproducible and each epoch differs)
    to seed Python's ``random``, NumPy's legacy global generator and every
    :class:`CxrTransform` in the worker's dataset.

    It deliberately does *not* call ``cv2.setNumThreads`` : in a forked worker whose parent
    already ran OpenCV in parallel, that call deadlocks (it joins the parent's thread pool,
    whose threads do not exist in the child). To limit OpenCV threads, call
    ``cv2.setNumThreads`` in the main process *before* the DataLoader starts its workers.
    """
    info = torch.utils.data.get_worker_info()
    seed = int(torch.initial_seed()) if info is None else int(info.seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if info is not None:
        reseed_transforms(info.dataset, seed)
