"""A short ``AutoencoderKL`` training for the tiny CPU generator (docs/method.md §1, PITFALLS.md).

Eq. 3 runs on VAE latents and Eq. 6 decodes them. For a real model (e.g. RoentGen) the VAE is
pretrained and frozen; for the tiny CPU configuration no pretrained VAE can be had, so the
randomly initialised one is trained here first on the real images, so that its latents mean
something: reconstruction L1 plus a small KL term (Stable Diffusion's weighting, 10⁻⁶ on the
summed KL against the summed reconstruction error, here divided through by the number of
pixels). Then :func:`fit_scaling_factor` sets ``vae.config.scaling_factor`` to 1 / std of the
latents (how Stable Diffusion's 0.18215 was chosen), so that the diffusion sees unit-variance
latents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from torch import Tensor

from trcgl.diffusion.components import to_vae_input
from trcgl.errors import ConfigError, TrcglError
from trcgl.progress import progress as progress_reporter

__all__ = ["fit_scaling_factor", "train_vae"]

log = logging.getLogger(__name__)


def _images_of(batch: Any) -> Tensor:
    """The image tensor of a batch: a tensor, or the first item of a tuple / list / dict
    ``"image"`` (e.g. a DataLoader over :class:`~trcgl.diffusion.train.PromptImageDataset`)."""
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"]
    if isinstance(batch, (tuple, list)) and batch and torch.is_tensor(batch[0]):
        return batch[0]
    raise ConfigError(f"cannot find an image tensor in a batch of type {type(batch).__name__}")


def _cycle(images: Iterable[Any]) -> Iterator[Tensor]:
    """Batches of ``images`` over and over (re-iterating it for every pass)."""
    while True:
        empty = True
        for batch in images:
            empty = False
            yield _images_of(batch)
        if empty:
            raise ConfigError("the image iterable gave no batches (or is an exhausted iterator)")


def train_vae(
    vae: AutoencoderKL,
    images_iterable: Iterable[Any],
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    *,
    kl_weight: float = 1e-6,
    grad_clip: float = 1.0,
    log_every: int = 50,
    progress: bool = False,
) -> list[float]:
    """Train ``vae`` for ``steps`` AdamW steps on batches of grayscale images in [-1, 1].

    Args:
        vae: the ``AutoencoderKL`` (trained in place on its own device; frozen again after:
            ``requires_grad_(False)``, eval mode).
        images_iterable: batches ``[B, 1 or 3, S, S]`` in [-1, 1] (or tuples whose first item
            is one, e.g. a ``DataLoader``), iterated again when exhausted.
        steps: optimiser steps.
        lr: AdamW learning rate (weight decay 0).
        seed: seed of the posterior draws (a private generator; the global RNG is not used).
        kl_weight: weight of the summed KL(q(z|x) ‖ N(0, I)) relative to the summed L1 error.
        grad_clip: gradient-norm clip (0 turns it off).
        log_every: log the running loss every so many steps (0: never).
        progress: a bar on a terminal, plain lines elsewhere.

    Returns:
        The loss of every step: mean |x̂ − x| + kl_weight · KL_sum / (C·S·S).
    """
    if steps < 0:
        raise ConfigError(f"steps must be ≥ 0, got {steps}")
    device = next(vae.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    vae.requires_grad_(True)
    vae.train()
    params = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    in_channels = int(vae.config.in_channels)
    losses: list[float] = []
    batches = _cycle(images_iterable)
    reporter = progress_reporter("VAE", int(steps), unit="steps", enabled=progress)
    try:
        for step in range(int(steps)):
            x = to_vae_input(next(batches).to(device=device, dtype=torch.float32), in_channels)
            posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
            z = posterior.mean + posterior.std * noise
            reconstruction = vae.decode(z).sample
            pixels = x[0].numel()
            kl = posterior.kl().mean() / pixels
            loss = F.l1_loss(reconstruction, x) + kl_weight * kl
            if not math.isfinite(loss.item()):
                raise TrcglError(f"VAE loss is {loss.item()} at step {step}: lower the lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            losses.append(float(loss.item()))
            reporter.update(step + 1, loss=sum(losses[-20:]) / len(losses[-20:]))
            if log_every and (step + 1) % log_every == 0:
                recent = losses[-log_every:]
                log.info("VAE step %d: loss %.4f", step + 1, sum(recent) / len(recent))
    finally:
        reporter.close()
        vae.requires_grad_(False)
        vae.eval()
    return losses


@torch.no_grad()
def fit_scaling_factor(
    vae: AutoencoderKL,
    images_iterable: Iterable[Any],
    max_batches: int = 8,
    seed: int = 0,
) -> float:
    """Set ``vae.config.scaling_factor`` to 1 / std of the VAE's latents (posterior draws) over
    up to ``max_batches`` batches, and return it; the latents of Eq. 3 then have unit variance."""
    device = next(vae.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    in_channels = int(vae.config.in_channels)
    total, total_sq, count = 0.0, 0.0, 0
    was_training = vae.training
    vae.eval()
    for i, batch in enumerate(images_iterable):
        if i >= max_batches:
            break
        x = to_vae_input(_images_of(batch).to(device=device, dtype=torch.float32), in_channels)
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(device)
        z = (posterior.mean + posterior.std * noise).double()
        total += float(z.sum())
        total_sq += float((z * z).sum())
        count += z.numel()
    vae.train(was_training)
    if count < 2:
        raise ConfigError("fit_scaling_factor needs at least one batch of images")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 1e-12))
    factor = 1.0 / std
    vae.register_to_config(scaling_factor=factor)
    return factor
