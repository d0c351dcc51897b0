"""Repeat-factor sampling for long-tailed multi-label data (Gupta et al., "LVIS: A Dataset for
Large Vocabulary Instance Segmentation", CVPR 2019, §4 / appendix).

* class repeat factor ``r_c = max(1, sqrt(t / f_c))``, with ``f_c`` the fraction of training
  images that contain class ``c`` and ``t`` the threshold (LVIS uses ``t = 0.001``); where
  labels can be unknown (NaN in the label matrix), ``f_c`` is the fraction among the images
  whose label of ``c`` is known;
* image repeat factor ``r_i = max_{c ∈ positives(i)} r_c`` (``1`` for an image without positive
  labels, e.g. "No Finding").

:class:`RepeatFactorSampler` then draws, every epoch, ``⌊r_i⌋`` copies of image ``i`` plus one
more with probability ``r_i − ⌊r_i⌋`` (stochastic rounding, as detectron2's
``RepeatFactorTrainingSampler``), shuffles them, and optionally shards the list across
distributed ranks. Each epoch's draw is a pure function of ``(seed, epoch)``.

:func:`authors_repeat_factors` gives the authors' code's variant (``train.sampler=authors``):
frequencies over all positive labels, threshold 0.01, a cap of 10 and integer repeats.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "RepeatFactorSampler",
    "authors_repeat_factors",
    "class_repeat_factors",
    "repeat_factors",
]


def _positive_matrix(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be an N×C matrix, got shape {y.shape}")
    if y.dtype == bool:
        return y
    y = y.astype(np.float64, copy=False)
    return y >= 0.5  # 0/1 labels; soft labels by rounding; −1 and NaN (unknown): no positive


def _known_matrix(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype.kind != "f":
        return np.ones(y.shape, dtype=bool)
    return ~np.isnan(y)


def class_repeat_factors(labels: np.ndarray, threshold: float = 0.001) -> np.ndarray:
    """``r_c = max(1, sqrt(t / f_c))`` per class (C,); a class in no image gets ``1``.

    ``labels`` is N×C; a value ``≥ 0.5`` (or ``True``) is a positive, NaN is unknown: ``f_c``
    is the share of positives among the images whose label of ``c`` is known.
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    positive = _positive_matrix(labels)
    known = _known_matrix(labels).sum(axis=0)
    freq = positive.sum(axis=0) / np.maximum(known, 1)
    safe = np.where(freq > 0, freq, 1.0)
    return np.where(freq > 0, np.maximum(1.0, np.sqrt(threshold / safe)), 1.0)


def repeat_factors(labels: np.ndarray, threshold: float = 0.001) -> np.ndarray:
    """Image repeat factors ``r_i = max over i's positive classes of r_c`` (N,), float64.

    An image with no positive class gets ``1``; an unknown label (NaN) is no positive. See
    :func:`class_repeat_factors`.
    """
    positive = _positive_matrix(labels)
    r_class = class_repeat_factors(labels, threshold)
    per_label = np.where(positive, r_class[None, :], 1.0)
    if per_label.shape[1] == 0:
        return np.ones(positive.shape[0], dtype=np.float64)
    return per_label.max(axis=1)


def authors_repeat_factors(
    labels: np.ndarray, threshold: float = 0.01, cap: float = 10.0
) -> np.ndarray:
    """The repeat factors of the authors' released code (docs/method.md §6), integers (N,):

    f_c = n_c / Σ_c' n_c' (a class's share of all positive labels, not of the images; an
    unknown label, NaN, is no positive and so is left out of both counts);
    r_c = max(1, √(threshold / f_c)); r_i = max over i's positive classes (1 if none),
    clipped to [1, cap] and rounded (half to even, as Python's ``round``). With integer
    factors :class:`RepeatFactorSampler` repeats each image exactly r_i times an epoch.
    """
    positive = _positive_matrix(labels)
    counts = positive.sum(axis=0).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return np.ones(positive.shape[0], dtype=np.float64)
    freq = counts / total
    safe = np.where(freq > 0, freq, 1.0)
    r_class = np.where(freq > 0, np.maximum(1.0, np.sqrt(threshold / safe)), 1.0)
    per_label = np.where(positive, r_class[None, :], 1.0)
    r = per_label.max(axis=1) if per_label.shape[1] else np.ones(positive.shape[0])
    return np.rint(np.clip(r, 1.0, cap))


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)`` without collisions like ``seed + epoch``."""
    mask = 0xFFFFFFFFFFFFFFFF  # SeedSequence takes non-negative integers
    entropy = [int(seed) & mask, int(epoch) & mask]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class RepeatFactorSampler(Sampler[int]):
    """Epoch-wise repeat-factor sampler with stochastic rounding and optional sharding.

    Args:
        repeat_factors: ``r_i ≥ 0`` per dataset index (N,), e.g. from :func:`repeat_factors`.
        seed: base seed; the draw of epoch ``e`` depends only on ``(seed, e)``, the same on
            every rank.
        shuffle: shuffle the epoch's list (otherwise indices come in ascending order, each
            repeated consecutively).
        num_replicas, rank: distributed sharding. ``None`` takes them from an initialised
            ``torch.distributed`` process group, else a single process. The epoch's list is
            padded (by wrapping around to its start) to a multiple of ``num_replicas`` and rank
            ``k`` takes positions ``k, k + num_replicas, …``: shards have equal lengths and
            together are the padded list.

    Call :meth:`set_epoch` before each epoch. ``len(sampler)`` is the length of this rank's
    share of the current epoch's draw (computed once per epoch and cached, so ``len`` and
    ``iter`` agree); :attr:`expected_length` is ``Σ r_i``, the mean epoch length before sharding.
    """

    def __init__(
        self,
        repeat_factors: Sequence[float] | np.ndarray | torch.Tensor,
        seed: int = 0,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(repeat_factors, torch.Tensor):
            repeat_factors = repeat_factors.detach().cpu().numpy()
        factors = np.asarray(repeat_factors, dtype=np.float64)
        if factors.ndim != 1:
            raise ValueError(f"repeat_factors must be 1-D (N,), got shape {factors.shape}")
        if not np.all(np.isfinite(factors)) or np.any(factors < 0):
            raise ValueError("repeat_factors must be finite and >= 0")
        if num_replicas is None or rank is None:
            dist = torch.distributed
            initialised = dist.is_available() and dist.is_initialized()
            if num_replicas is None:
                num_replicas = dist.get_world_size() if initialised else 1
            if rank is None:
                rank = dist.get_rank() if initialised else 0
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
        self.repeat_factors = factors
        self._integer = np.floor(factors).astype(np.int64)
        self._fraction = torch.as_tensor(factors - self._integer, dtype=torch.float64)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def expected_length(self) -> float:
        """``Σ_i r_i``: the expected number of indices in an epoch's (unsharded) draw."""
        return float(self.repeat_factors.sum())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw ``len`` and ``iter`` use."""
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: int | None = None) -> np.ndarray:
        """The whole (unsharded, unpadded) list of dataset indices for ``epoch`` (default: the
        current epoch), as int64."""
        epoch = self.epoch if epoch is None else int(epoch)
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        n = len(self.repeat_factors)
        extra = torch.rand(n, generator=generator, dtype=torch.float64) < self._fraction
        counts = self._integer + extra.numpy().astype(np.int64)
        indices = np.repeat(np.arange(n, dtype=np.int64), counts)
        if self.shuffle and len(indices) > 1:
            perm = torch.randperm(len(indices), generator=generator).numpy()
            indices = indices[perm]
        return indices

    def _shard(self) -> np.ndarray:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        indices = self.epoch_indices()
        total = len(indices)
        if total and self.num_replicas > 1:
            per_rank = -(-total // self.num_replicas)
            padded = np.resize(indices, per_rank * self.num_replicas)  # wraps around
            shard = padded[self.rank :: self.num_replicas]
        else:
            shard = indices
        self._cache = (self.epoch, shard)
        return shard

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard().tolist())

    def __len__(self) -> int:
        return len(self._shard())
