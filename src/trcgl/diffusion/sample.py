"""Sampling synthetic chest radiographs, Eq. 4–6 (docs/method.md §1).

* Eq. 4 (classifier-free guidance): ε_cfg = ε_uncond + ω (ε_cond − ε_uncond), ω =
  ``guidance_scale`` (default 3, as RoentGen-v2), ε_uncond from the empty prompt (with the same
  context vectors C in front, :meth:`PromptConditioner.encode_unconditional`). Both branches
  come from **one** UNet call on the doubled batch [uncond; cond]. With ω = 1, Eq. 4 is
  ε_cond, and only the conditional branch is run (half the cost, same result).
* Eq. 5 (DDIM, η = 0, the default): x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1−ᾱ_{t−1}) ε_cfg with
  x̂_0 = (x_t − √(1−ᾱ_t) ε_cfg) / √ᾱ_t — diffusers' ``DDIMScheduler`` built ``from_config`` of
  the training schedule (:func:`ddim_step` is the formula, for checking). Any diffusers
  scheduler can be chosen by class name (``"DPMSolverMultistepScheduler"``,
  ``"EulerDiscreteScheduler"``, ...). Default 50 steps.
* Eq. 6: I_syn = VAE_decoder(x_0), averaged to one channel, as 8-bit grayscale arrays.

Seeding: one ``torch.Generator`` per call, seeded by ``seed``, draws the initial noise x_T of
every image in prompt order (one image at a time, on the CPU), so the same seed and prompts give
the same images whatever ``batch_size`` — up to floating-point differences between batch
shapes — and on any device. Stochastic schedulers (η > 0, DDPM, SDE solvers) draw their extra
noise from the same generator, batch by batch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from trcgl.diffusion.components import Components
from trcgl.diffusion.conditioning import PromptConditioner
from trcgl.errors import ConfigError
from trcgl.files import atomic_path
from trcgl.progress import progress_bar

__all__ = [
    "build_scheduler",
    "classifier_free_guidance",
    "ddim_step",
    "predict_noise",
    "sample_images",
    "save_pngs",
    "to_uint8",
]


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """Eq. 4: ε_cfg = ε_uncond + ω (ε_cond − ε_uncond)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def predict_noise(
    components: Components,
    latents: Tensor,
    timestep: Tensor | int,
    condition: Tensor,
    unconditional: Tensor | None,
    guidance_scale: float,
) -> Tensor:
    """ε_cfg of Eq. 4 for a batch of x_t, in one denoiser call on the doubled batch
    ``[x_t; x_t]`` with conditions ``[E_uncond; E_cond]``; with ``unconditional=None`` only the
    conditional branch (ε_cond) is computed."""
    if unconditional is None:
        return components.predict_noise(latents, timestep, condition)
    both = torch.cat([unconditional, condition])
    return _guided_noise(components, latents, timestep, both, guidance_scale)


def _guided_noise(
    components: Components,
    latents: Tensor,
    timestep: Tensor | int,
    both: Tensor,
    guidance_scale: float,
) -> Tensor:
    """Eq. 4 from one denoiser call; ``both`` = ``[E_uncond; E_cond]`` (concatenated once per
    batch by :func:`sample_images`)."""
    out = components.predict_noise(torch.cat([latents, latents]), timestep, both)
    eps_uncond, eps_cond = out.chunk(2)
    return classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)


def ddim_step(
    x_t: Tensor, eps: Tensor, alpha_prod_t: float | Tensor, alpha_prod_prev: float | Tensor
) -> Tensor:
    """Eq. 5 (DDIM, η = 0) written out: x̂_0 = (x_t − √(1−ᾱ_t) ε)/√ᾱ_t, then
    x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1−ᾱ_{t−1}) ε."""
    a_t = torch.as_tensor(alpha_prod_t, dtype=x_t.dtype)
    a_prev = torch.as_tensor(alpha_prod_prev, dtype=x_t.dtype)
    x0 = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class called ``name`` (``diffusion.scheduler``: diffusers' own
    classes are the registry); an unknown name is a :class:`ConfigError` with the closest."""
    import difflib

    import diffusers

    cls = getattr(diffusers, str(name), None)
    if inspect.isclass(cls) and issubclass(cls, diffusers.SchedulerMixin):
        return cls
    known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"diffusion.scheduler: unknown diffusers scheduler {name!r}; {hint}e.g. "
        f"{', '.join(known[:12])}"
    )


def build_scheduler(training_scheduler: Any, name: str = "DDIMScheduler", **overrides: Any) -> Any:
    """A diffusers scheduler of class ``name`` built ``from_config`` of the training schedule
    (same β schedule, number of train timesteps and prediction type), with ``overrides``."""
    return scheduler_class(name).from_config(training_scheduler.config, **overrides)


def to_uint8(images: Tensor) -> np.ndarray:
    """``[B, 1, S, S]`` in [-1, 1] → ``uint8`` ``[B, S, S]`` (round((x + 1) · 127.5))."""
    x = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).cpu().numpy()[:, 0]


def _progress(enabled: bool, total: int) -> tuple[Callable[[], None], Callable[[], None]]:
    bar = progress_bar("sampling (Eq. 4–6)") if enabled and total else None
    if bar is None:
        return (lambda: None), (lambda: None)
    task = bar.add_task("sample", total=total)
    bar.start()
    return (lambda: bar.advance(task)), bar.stop


@torch.no_grad()
def sample_images(
    components: Components,
    conditioner: PromptConditioner,
    prompts: Sequence[str],
    *,
    guidance_scale: float = 3.0,
    steps: int = 50,
    scheduler: str = "DDIMScheduler",
    seed: int = 0,
    batch_size: int = 8,
    image_size: int | None = None,
    progress: bool = True,
    eta: float = 0.0,
    scheduler_kwargs: dict[str, Any] | None = None,
) -> list[np.ndarray]:
    """Synthetic images for ``prompts`` (Eq. 4–6): one 8-bit grayscale ``S × S`` array each.

    Args:
        components: the generator (:func:`~trcgl.diffusion.components.load_components`).
        conditioner: E_cond = concat_seq(C, E_n) (Eq. 2), with the trained context C.
        prompts: one prompt p_n per image.
        guidance_scale: ω of Eq. 4 (default 3; 1 = conditional only).
        steps: denoising steps (default 50).
        scheduler: a diffusers scheduler class name (default ``"DDIMScheduler"``: Eq. 5).
        seed: seed of this call's ``torch.Generator`` (same seed → same images).
        batch_size: prompts per UNet batch (the UNet sees twice as many with guidance).
        image_size: output side (default: the components' native size); a multiple of the
            VAE factor times the UNet's downsampling.
        progress: show a ``rich`` progress bar over the denoising steps.
        eta: DDIM's η (0: deterministic Eq. 5); passed to schedulers whose ``step`` takes it.
        scheduler_kwargs: overrides of the scheduler's configuration.
    """
    prompts = [str(p) for p in prompts]
    if steps < 1 or batch_size < 1:
        raise ConfigError("steps and batch_size must be ≥ 1")
    if not math.isfinite(guidance_scale):
        raise ConfigError(f"guidance_scale must be finite, got {guidance_scale}")
    if not prompts:
        return []
    unet, vae = components.unet, components.vae
    factor = components.vae_scale_factor
    size = int(image_size or components.image_size)
    levels = len(unet.config.block_out_channels) - 1
    multiple = factor * 2**levels
    if size % multiple:
        raise ConfigError(f"image_size {size} is not a multiple of {multiple}")
    side = size // factor
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    if conditioner.context.device != device:
        conditioner.to(device)
    sampler = build_scheduler(components.scheduler, scheduler, **(scheduler_kwargs or {}))
    step_params = set(inspect.signature(sampler.step).parameters)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    shape = (1, components.latent_channels, side, side)
    noise = [torch.randn(shape, generator=generator, dtype=torch.float32) for _ in prompts]
    extra: dict[str, Any] = {}
    if "eta" in step_params:
        extra["eta"] = eta
    if "generator" in step_params:
        extra["generator"] = generator
    guided = guidance_scale != 1.0
    was_training = unet.training, vae.training
    unet.eval()
    vae.eval()
    n_batches = math.ceil(len(prompts) / batch_size)
    advance, stop = _progress(progress, n_batches * steps)
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            b = len(chunk)
            condition = conditioner.encode(chunk).to(device=device, dtype=dtype)
            if guided:
                unconditional = conditioner.encode_unconditional(b).to(device=device, dtype=dtype)
                condition = torch.cat([unconditional, condition])
            # The conditioner's LRU cache is filled above, outside inference mode, so that
            # cached embeddings stay usable in training.
            with torch.inference_mode():
                sampler.set_timesteps(steps, device=device)
                latents = torch.cat(noise[start : start + b]).to(device=device, dtype=dtype)
                latents = latents * sampler.init_noise_sigma
                for t in sampler.timesteps:
                    model_input = sampler.scale_model_input(latents, t)
                    if guided:
                        eps = _guided_noise(components, model_input, t, condition, guidance_scale)
                    else:
                        eps = components.predict_noise(model_input, t, condition)
                    latents = sampler.step(eps, t, latents, **extra).prev_sample
                    advance()
                out.extend(to_uint8(components.decode(latents)))
    finally:
        stop()
        unet.train(was_training[0])
        vae.train(was_training[1])
    return out


def save_pngs(images: Sequence[np.ndarray], folder: str | Path, names: Sequence[str]) -> list[Path]:
    """Write 8-bit grayscale PNGs ``folder/<name>.png`` (each atomically); returns the paths.

    ``names`` are file names with or without the ``.png`` suffix (no folders), one per image.
    """
    if len(images) != len(names):
        raise ConfigError(f"{len(images)} images but {len(names)} names")
    files = [n if str(n).lower().endswith(".png") else f"{n}.png" for n in map(str, names)]
    if len(set(files)) != len(files):
        raise ConfigError("image names repeat")
    for name in files:
        if Path(name).name != name or name in (".png", "..png"):
            raise ConfigError(f"not a plain file name: {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(images, files, strict=True):
        array = np.asarray(image)
        if array.ndim != 2:
            raise ConfigError(f"{name}: a grayscale image is 2-D, got shape {array.shape}")
        if array.dtype != np.uint8:
            raise ConfigError(f"{name}: images must be uint8, got {array.dtype}")
        path = folder / name
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
        paths.append(path)
    return paths
