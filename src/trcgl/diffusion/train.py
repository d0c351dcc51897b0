"""Training the prompt-latent diffusion generator, Eq. 3 (docs/method.md §1).

L_diff = E_{x_0, ε, t} ‖ε − ε_θ(x_t, t, E_cond)‖², x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε
(``scheduler.add_noise``), where x_0 are the VAE latents of real images (times
``vae.config.scaling_factor``), t is uniform over the DDPM schedule's timesteps, ε ~ N(0, I),
and E_cond = concat_seq(C, E_n) (Eq. 2).

* The context vectors C always train; the UNet by ``unet_mode``: ``"frozen"`` (only C — then the
  gradients reach C through the UNet's cross-attention), ``"lora"`` (a PEFT LoRA adapter on the
  attention projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0``) or ``"full"``. The text
  encoder and the VAE are frozen.
* Decision (docs/method.md §1): with probability ``cond_dropout`` = 0.1 a sample's condition is
  replaced by the unconditional one (the empty prompt, :meth:`PromptConditioner.
  encode_unconditional`), so that classifier-free guidance (Eq. 4) works at sampling.
* AdamW (no weight decay on C; or bitsandbytes' 8-bit AdamW, ``optimizer``), gradient
  clipping, accelerate for the device and mixed precision (bf16 on a GPU that has it, fp16
  otherwise, none on CPU).
* Memory: ``gradient_checkpointing`` (:func:`checkpoint_unet`: diffusers'
  ``enable_gradient_checkpointing``, with each transformer of the UNet recomputed as a whole;
  the same gradients, activations recomputed) and ``grad_accumulation`` (a step's batch of
  ``batch_size × grad_accumulation`` images run as micro-batches of ``batch_size``; all of the
  step's randomness is drawn for the whole batch first, so the step equals the one-batch step
  up to float summation order). Under mixed precision the frozen weights are held in its
  dtype (:func:`hold_frozen`, LoRA and frozen mode), the trainable ones in fp32. The VAE
  encodes one image at a time (:func:`~trcgl.diffusion.components.encode_latents`), and the
  UNet's attention is PyTorch's SDPA (flash / memory-efficient kernels: attention memory
  linear in the 4,096 latent positions of a 512 px image, so attention slicing would only
  cost time).
* Checkpoints (``out_dir/checkpoints/step-NNNNNNN/``, written under a temporary name and
  renamed, then ``latest.json`` replaced atomically; safetensors only): the context vectors,
  the trainable UNet weights (LoRA or all), the optimiser, the RNG states (global ones and the
  private training generator), and ``state.json`` (step, configuration). A killed run resumes
  *exactly*: the data order is a function of (seed, step), all training randomness (VAE
  posterior draws, timesteps, noise, condition dropout) comes from one private generator whose
  state is saved, and the text embeddings E_n are computed once, in fixed chunks, so they do
  not depend on which batch a prompt came in.
* ``out_dir/loss.jsonl``: one line per step (step, loss, dropped conditions, seconds);
  ``out_dir/train.json``: the summary :func:`train_generator` returns; ``out_dir/
  context.safetensors``: the trained C.

Under ``accelerate launch`` / ``torchrun`` it runs data-parallel: every process draws the
same randomness for the whole step, takes its slice of the batch, and DDP all-reduces the
gradients of C and the UNet's trainable weights (``batch_size`` is per process); the main
process writes the log, the checkpoints and the summary.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel, UNet2DConditionModel
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from trcgl.config import DiffusionConfig
from trcgl.data.cache import cached_relpath, resize_square
from trcgl.data.images import read_image
from trcgl.data.manifest import Manifest
from trcgl.diffusion.components import Components, add_lora, cast_to, has_lora, vae_dtype
from trcgl.diffusion.conditioning import PromptConditioner
from trcgl.errors import ConfigError, DataError, TrcglError
from trcgl.files import atomic_write_text
from trcgl.progress import progress as progress_reporter
from trcgl.progress import runtime_line, say
from trcgl.training.checkpoint import (
    latest_checkpoint,
    load_optimizer,
    restore_rng,
    write_checkpoint,
)
from trcgl.training.optimizers import build_optimizer
from trcgl.training.precision import DTYPES, make_accelerator

__all__ = [
    "PromptImageDataset",
    "apply_trained",
    "checkpoint_unet",
    "diffusion_loss",
    "evaluate_loss",
    "frozen_dtype",
    "hold_frozen",
    "latest_generator_checkpoint",
    "save_generator_checkpoint",
    "train_generator",
    "training_settings",
]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
LOSS_LOG = "loss.jsonl"
SUMMARY = "train.json"
CONTEXT_FILE = "context.safetensors"
#: The settings (of :class:`~trcgl.config.DiffusionConfig`) that decide what a training step
#: computes: saved in every checkpoint, and a run resumes only where they are unchanged (``steps``
#: may grow, ``checkpoint_every`` change).
TRAINING_SETTINGS = (
    "batch_size",
    "lr_context",
    "lr_unet",
    "unet_mode",
    "lora_rank",
    "lora_alpha",
    "cond_dropout",
    "image_size",
    "seed",
    "num_context",
    "weight_decay",
    "grad_clip",
    "mixed_precision",
    "grad_accumulation",
    "optimizer",
)


def training_settings(config: DiffusionConfig) -> dict[str, Any]:
    """``config``'s :data:`TRAINING_SETTINGS`, with ``steps``, ``checkpoint_every`` and
    ``keep_checkpoints``."""
    names = (*TRAINING_SETTINGS, "steps", "checkpoint_every", "keep_checkpoints")
    return {name: getattr(config, name) for name in names}


# -- data -----------------------------------------------------------------------------------------
class PromptImageDataset(Dataset[tuple[Tensor, str]]):
    """Real images and their prompts p_n, for Eq. 3.

    Args:
        manifest: the rows to train on (a :class:`~trcgl.data.manifest.Manifest`).
        image_root: folder that the manifest's relative ``image`` entries are relative to — or,
            with ``cached=True``, an image cache (:func:`~trcgl.data.cache.build_image_cache`),
            whose files are found with :func:`~trcgl.data.cache.cached_relpath`.
        size: image side S (Lanczos resize of the 8-bit grayscale image).
        prompts: one prompt per row (e.g. :func:`~trcgl.diffusion.prompts.prompts_for_manifest`);
            ``None``: the manifest's ``prompt`` column.
        channels: 1 (grayscale; the VAE input is replicated later) or 3 (replicated here).
        in_memory: keep the resized images in memory after the first read.

    Items are ``(image, prompt)``: a float32 tensor ``[channels, S, S]`` in [-1, 1] and a string.
    """

    def __init__(
        self,
        manifest: Manifest,
        image_root: str | Path | None,
        size: int,
        prompts: Sequence[str] | None = None,
        *,
        channels: int = 1,
        cached: bool = False,
        in_memory: bool = False,
    ) -> None:
        frame = manifest.frame
        if prompts is None:
            if "prompt" not in frame:
                raise ConfigError(
                    "no prompts given and the manifest has no 'prompt' column: build them with "
                    "trcgl.diffusion.prompts.prompts_for_manifest(manifest, dataset)"
                )
            prompts = frame["prompt"].astype(str).tolist()
        prompts = [str(p) for p in prompts]
        if len(prompts) != len(frame):
            raise ConfigError(f"{len(prompts)} prompts for {len(frame)} manifest rows")
        if int(size) != size or size < 8:
            raise ConfigError(f"image size must be an integer ≥ 8, got {size!r}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        if len(frame) == 0:
            raise DataError("the manifest has no rows to train the generator on")
        root = None if image_root is None else Path(image_root)
        self.paths: list[Path] = []
        for image in frame["image"].astype(str):
            rel = cached_relpath(image) if cached else image
            path = Path(rel)
            self.paths.append(path if path.is_absolute() or root is None else root / path)
        self.prompts: list[str] = prompts
        self.size = int(size)
        self.channels = int(channels)
        self.in_memory = in_memory
        self._memory: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def gray(self, index: int) -> np.ndarray:
        """The resized ``uint8`` image of item ``index``."""
        hit = self._memory.get(index)
        if hit is not None:
            return hit
        array = np.asarray(resize_square(read_image(self.paths[index]), self.size))
        if self.in_memory:
            self._memory[index] = array
        return array

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        x = torch.from_numpy(self.gray(index).astype(np.float32)).div_(127.5).sub_(1.0)
        x = x.unsqueeze(0)
        if self.channels == 3:
            x = x.expand(3, -1, -1).contiguous()
        return x, self.prompts[index]


class _StepBatches(Sampler[list[int]]):
    """Index batches for steps ``start … stop−1``: epoch e is a permutation seeded by
    (seed, e), so the batch of a step does not depend on where a run was resumed. With
    ``shard = (rank, processes)`` a process gets its ``1/processes`` slice of each batch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self.per_epoch = max(1, n // batch_size)
        self.rank, self.processes = shard

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        epoch_seen, perm = -1, None
        for step in range(self.start, self.stop):
            epoch, j = divmod(step, self.per_epoch)
            if epoch != epoch_seen:
                g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 7919) % 2**63)
                perm = torch.randperm(self.n, generator=g)
                epoch_seen = epoch
            assert perm is not None
            batch = perm[j * self.batch_size : (j + 1) * self.batch_size]
            local = len(batch) // self.processes
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


# -- Eq. 3 ----------------------------------------------------------------------------------------
def diffusion_loss(
    components: Components,
    latents: Tensor,
    condition: Tensor,
    timesteps: Tensor,
    noise: Tensor,
) -> Tensor:
    """Eq. 3 for one batch: ‖ε − ε_θ(x_t, t, E_cond)‖² (mean), x_t = ``scheduler.add_noise``.

    For a scheduler with ``prediction_type="v_prediction"`` (SD 2.x-style models) the target is
    the velocity instead of ε, and for ``"sample"`` it is x_0.
    """
    scheduler = components.scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    elif kind == "sample":
        target = latents
    else:
        raise ConfigError(f"unsupported prediction_type {kind!r}")
    prediction = components.predict_noise(noisy, timesteps, condition)
    return F.mse_loss(prediction.float(), target.float())


class _TextTable:
    """E_n (Eq. 1) of the prompts, computed once in fixed chunks (or per batch when there are
    too many distinct prompts), straight from the frozen encoder (no LRU cache), so equal
    prompts always give bit-identical embeddings."""

    CHUNK = 64

    def __init__(self, conditioner: PromptConditioner, prompts: Sequence[str] | None, limit: int):
        self.conditioner = conditioner
        self.table: dict[str, Tensor] | None = None
        unique = sorted(set(prompts or ()) | {""})
        if prompts is not None and len(unique) <= limit:
            self.table = {}
            for start in range(0, len(unique), self.CHUNK):
                chunk = unique[start : start + self.CHUNK]
                for prompt, row in zip(chunk, self._encode(chunk), strict=True):
                    self.table[prompt] = row

    @torch.no_grad()
    def _encode(self, prompts: Sequence[str]) -> Tensor:
        cond = self.conditioner
        ids = cond.tokenize(list(prompts)).to(cond.context.device)
        hidden = cond.text_encoder(input_ids=ids).last_hidden_state
        return hidden.to(cond.context.dtype)

    def __call__(self, prompts: Sequence[str]) -> Tensor:
        if self.table is None:
            return self._encode(prompts)
        missing = [p for p in prompts if p not in self.table]
        if missing:
            for prompt, row in zip(missing, self._encode(missing), strict=True):
                self.table[prompt] = row
        return torch.stack([self.table[p] for p in prompts])


def _condition(conditioner: PromptConditioner, text: Tensor) -> Tensor:
    """Eq. 2: concat_seq(C, E_n) for a batch of E_n (= ``conditioner.encode``)."""
    context = conditioner.context.unsqueeze(0).expand(text.shape[0], -1, -1)
    return torch.cat([context, text.to(conditioner.context.dtype)], dim=1)


class _Denoiser(torch.nn.Module):
    """What trains (C and the UNet) as one module whose forward is Eq. 3's loss on a
    micro-batch, so that DDP all-reduces the gradients of exactly the trainable weights."""

    def __init__(self, components: Components, conditioner: PromptConditioner) -> None:
        super().__init__()
        self.unet = components.unet
        self.conditioner = conditioner
        self.components = components

    def forward(self, latents: Tensor, text: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        condition = _condition(self.conditioner, text)
        return diffusion_loss(self.components, latents, condition, timesteps, noise)


@torch.no_grad()
def evaluate_loss(
    components: Components,
    conditioner: PromptConditioner,
    dataset: Dataset[tuple[Tensor, str]],
    size: int = 16,
    timesteps_per_image: int = 4,
    seed: int = 12345,
    autocast: Any = None,
) -> float:
    """Eq. 3's loss on a fixed batch: the first ``size`` images of ``dataset``, each at
    ``timesteps_per_image`` stratified timesteps, fixed noise (seeded), VAE posterior means,
    full conditions (no dropout). Comparable before and after training."""
    n = min(int(size), len(dataset))  # type: ignore[arg-type]
    if n == 0:
        return float("nan")
    items = [dataset[i] for i in range(n)]
    images = torch.stack([x for x, _ in items])
    prompts = [p for _, p in items]
    device = components.device
    generator = torch.Generator().manual_seed(int(seed))
    k = max(1, int(timesteps_per_image))
    total_t = int(components.scheduler.config.num_train_timesteps)
    slots = (torch.arange(n * k, dtype=torch.float64) + 0.5) / (n * k) * total_t
    timesteps = slots.long().clamp_(0, total_t - 1).view(k, n).to(device)  # row j: repeat j
    was_training = components.unet.training
    components.unet.eval()
    losses = []
    ctx = autocast if autocast is not None else contextlib.nullcontext
    try:
        with ctx():
            latents = components.encode(images, sample=False).float()
            condition = conditioner.encode(prompts)
        for j in range(k):
            t = timesteps[j]
            noise = torch.randn(latents.shape, generator=generator).to(device)
            with ctx():
                loss = diffusion_loss(components, latents, condition, t, noise)
            losses.append(float(loss))
    finally:
        components.unet.train(was_training)
    return float(np.mean(losses))


# -- checkpoints ----------------------------------------------------------------------------------
def _trainable_unet_state(unet: UNet2DConditionModel) -> dict[str, Tensor]:
    return {
        name: p.detach().contiguous().cpu()
        for name, p in unet.named_parameters()
        if p.requires_grad
    }


def save_generator_checkpoint(
    directory: Path,
    step: int,
    conditioner: PromptConditioner,
    unet: UNet2DConditionModel,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``directory/step-NNNNNNN`` (:func:`~trcgl.training.checkpoint.write_checkpoint`),
    point ``latest.json`` at it and remove older ones beyond the newest ``keep`` (default:
    the run's ``keep_checkpoints``, 2). Safetensors only: ``context``, ``unet`` (trainable
    UNet weights; absent when the UNet is frozen), ``optimizer``, ``rng`` (global RNG states
    plus the training generator's); ``state.json``."""
    name = f"step-{step:07d}"
    keep = int(state.get("config", {}).get("keep_checkpoints", 2) if keep is None else keep)
    existing = sorted(p.name for p in directory.glob("step-*") if p.is_dir() and p.name != name)
    return write_checkpoint(
        directory,
        name,
        {"context": conditioner.save_context, "unet": _trainable_unet_state(unet)},
        optimizer,
        {**state, "step": step},
        state_file=STATE_FILE,
        rng_extra={"train_generator": generator.get_state()},
        keep=existing[len(existing) - (keep - 1) :] if keep > 1 else (),
    )


def latest_generator_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``out_dir/checkpoints/latest.json`` points at, or ``None``."""
    return latest_checkpoint(Path(out_dir) / CHECKPOINTS, state_file=STATE_FILE)


def _load_unet_weights(unet: UNet2DConditionModel, path: Path) -> None:
    if not path.is_file():
        return
    state = load_file(str(path))
    result = unet.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ConfigError(
            f"{path}: UNet weights do not fit this UNet (e.g. {result.unexpected_keys[:3]}): "
            "was it trained from another base model or unet_mode?"
        )


def frozen_dtype(mixed_precision: str, unet_mode: str) -> torch.dtype | None:
    """The dtype the frozen weights are held in while the generator trains: under mixed
    precision (``bf16`` / ``fp16``) that of the autocast, in ``lora`` and ``frozen`` mode;
    ``None`` (as loaded) otherwise. A ``full`` run saves its whole generator, VAE and text
    encoder included, so it keeps them as they are. ``trcgl diffusion train`` loads the base
    in it (diffusers' ``torch_dtype``)."""
    if unet_mode == "full" or mixed_precision == "no":
        return None
    return DTYPES[mixed_precision]


def hold_frozen(components: Components, dtype: torch.dtype) -> None:
    """Hold the weights that do not train in ``dtype`` and those that train in fp32, as
    diffusers' LoRA training script does under mixed precision: the UNet's frozen weights (all
    of them, or all but the LoRA adapter), the text encoder and the VAE (fp32 where it asks,
    :func:`~trcgl.diffusion.components.vae_dtype`) in ``dtype``; the LoRA weights in fp32 (the
    optimiser's master copy; a base loaded in ``dtype`` gives them that dtype). Autocast
    computes in ``dtype`` either way, so what changes is the frozen weights' rounding (of the
    norms' scales, which autocast keeps in fp32) and half of their memory."""
    for p in components.unet.parameters():
        p.data = p.data.to(torch.float32 if p.requires_grad else dtype)
    cast_to(components.text_encoder, dtype)
    cast_to(components.vae, vae_dtype(components.vae, dtype))


def _checkpointed(forward: Any, *args: Any, **kwargs: Any) -> Any:
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)


def checkpoint_unet(unet: UNet2DConditionModel, enable: bool) -> None:
    """Gradient checkpointing on (or off again): diffusers' ``enable_gradient_checkpointing``
    (each ResNet block and each transformer block recomputed in the backward pass), with each
    ``Transformer2DModel`` recomputed as a whole instead of block by block, so that its
    GroupNorm and 1×1 input / output projections keep no activations either (diffusers leaves
    them outside the checkpoints). Written here because diffusers has no such granularity;
    measured on SD 1.5's UNet at 512 px, batch 2: the activations kept through the forward
    pass fall from 0.56 GB to 0.3 GB (the rest are the checkpoints' inputs and the
    down/upsampling convolutions), the same gradients (tested)."""
    if enable:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    for module in unet.modules():
        if isinstance(module, Transformer2DModel):
            if enable:  # one checkpoint around the whole model: none inside it
                module.gradient_checkpointing = False
                bound = type(module).forward.__get__(module)
                module.forward = functools.partial(_checkpointed, bound)
            else:
                module.__dict__.pop("forward", None)


def _prepare_unet(unet: UNet2DConditionModel, settings: Mapping[str, Any]) -> None:
    """Switch on what ``unet_mode`` trains (adding the LoRA adapter, seeded, if missing);
    ``settings``: :func:`training_settings`, or those a checkpoint saved."""
    mode = settings["unet_mode"]
    if mode == "lora":
        if not has_lora(unet):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings["seed"])
                add_lora(unet, settings["lora_rank"], settings.get("lora_alpha"))
        unet.requires_grad_(False)
        for name, p in unet.named_parameters():
            if ".lora_" in name:
                p.requires_grad_(True)
    else:
        if has_lora(unet):
            raise ConfigError(
                f"unet_mode={mode!r} but the UNet carries a LoRA adapter: load fresh components"
            )
        unet.requires_grad_(mode == "full")


def apply_trained(
    components: Components, conditioner: PromptConditioner, out_dir: str | Path
) -> dict[str, Any]:
    """Put the trained weights of a :func:`train_generator` run (its latest checkpoint) into
    freshly loaded ``components`` (adding the LoRA adapter if it was a LoRA run) and
    ``conditioner``; returns the checkpoint's ``state.json``. For a self-contained folder, then
    call :func:`~trcgl.diffusion.components.save_components` and ``save_context``."""
    path = latest_generator_checkpoint(out_dir)
    if path is None:
        raise DataError("no generator checkpoint here", path=Path(out_dir) / CHECKPOINTS)
    state = json.loads((path / STATE_FILE).read_text())
    _prepare_unet(components.unet, state["config"])
    _load_unet_weights(components.unet, path / "unet.safetensors")
    components.unet.requires_grad_(False)
    components.unet.eval()
    conditioner.load_context(path / "context.safetensors")
    return state


# -- the loop -------------------------------------------------------------------------------------


def _check_size(images: Tensor, components: Components, config: DiffusionConfig) -> None:
    size = int(images.shape[-1])
    if size != config.image_size:
        raise ConfigError(
            f"the dataset gives {size} px images, the config says {config.image_size}"
        )
    levels = len(components.unet.config.block_out_channels) - 1
    multiple = components.vae_scale_factor * 2**levels
    if images.shape[-1] != images.shape[-2] or size % multiple:
        raise ConfigError(
            f"images must be square with a side that is a multiple of {multiple} (VAE ×"
            f"{components.vae_scale_factor}, {levels} UNet downsamplings); got "
            f"{tuple(images.shape[-2:])}"
        )


def _read_log(path: Path, upto: int | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if upto is None or r["step"] <= upto]


def train_generator(
    components: Components,
    conditioner: PromptConditioner,
    dataset: Dataset[tuple[Tensor, str]],
    config: DiffusionConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = False,
    cpu: bool = False,
    num_workers: int = 0,
    max_text_table: int = 4096,
) -> dict[str, Any]:
    """Train C (and the UNet by ``config.unet_mode``) with Eq. 3 on ``dataset``.

    Args:
        components: from :func:`~trcgl.diffusion.components.load_components` (trained in
            place; moved to the accelerator's device).
        conditioner: a :class:`~trcgl.diffusion.conditioning.PromptConditioner` over
            ``components.text_encoder`` / ``tokenizer`` (its C trains in place).
        dataset: ``(image [1 or 3, S, S] in [-1, 1], prompt)`` items, e.g.
            :class:`PromptImageDataset`.
        config: the ``diffusion`` section (:class:`~trcgl.config.DiffusionConfig`): steps,
            batch size, learning rates, ``unet_mode`` / LoRA, condition dropout, precision,
            checkpoints, the check batch ``eval_size``; validated here.
        out_dir: checkpoints, ``loss.jsonl``, ``train.json`` and ``context.safetensors`` go
            here; with ``resume`` (default) a run with a checkpoint here continues from it.
        progress: report the device and precision, then progress (a bar on a terminal,
            plain lines elsewhere).
        cpu: train on the CPU even where a GPU is available (tests; bit-exact resume).
        num_workers: DataLoader worker processes.
        max_text_table: up to this many distinct prompts, their text embeddings E_n are
            computed once up front; beyond, per batch (then exact resume is not guaranteed bit
            for bit on every hardware).

    Returns:
        The summary also written to ``train.json``: ``loss_before`` / ``loss_after`` (Eq. 3 on a
        fixed evaluation batch, :func:`evaluate_loss`), ``train_loss_first`` /
        ``train_loss_last`` (mean training loss of the first / last 10 steps), ``steps``,
        ``resumed_from``, ``seconds_per_step`` (median), ``trainable_unet_parameters``, ...
    """

    config.validate()
    out = Path(out_dir)
    if config.num_context != conditioner.num_context:
        raise ConfigError(
            f"diffusion.num_context = {config.num_context} but the conditioner has "
            f"m = {conditioner.num_context} context vectors"
        )
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the generator's training set is empty")
    accelerator = make_accelerator(
        config.mixed_precision,
        cpu=cpu or not torch.cuda.is_available(),
    )
    device = accelerator.device
    main, processes = accelerator.is_main_process, accelerator.num_processes
    local_batch = config.batch_size * config.grad_accumulation
    if processes > 1 and n < local_batch * processes:
        raise DataError(
            f"{n} training images are fewer than one step's batch of {local_batch * processes} "
            f"(diffusion.batch_size × grad_accumulation × {processes} processes)"
        )
    unet, vae = components.unet, components.vae
    vae.requires_grad_(False).eval()
    conditioner.text_encoder.requires_grad_(False).eval()
    conditioner.context.requires_grad_(True)
    settings = training_settings(config)
    _prepare_unet(unet, settings)
    frozen = frozen_dtype(accelerator.mixed_precision, config.unet_mode)
    if frozen is not None:
        hold_frozen(components, frozen)  # before the move: the device never holds fp32 copies
    components.to(device)
    conditioner.to(device)
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [
        {"params": [conditioner.context], "lr": config.lr_context, "weight_decay": 0.0}
    ]
    if unet_params:
        groups.append(
            {"params": unet_params, "lr": config.lr_unet, "weight_decay": config.weight_decay}
        )
    optimizer = build_optimizer(groups, config.optimizer, key="diffusion.optimizer")
    if config.gradient_checkpointing:
        checkpoint_unet(unet, True)
    generator = torch.Generator().manual_seed(config.seed)

    start, state_extra, resumed_from = 0, {}, None
    checkpoint = latest_generator_checkpoint(out) if resume else None
    if checkpoint is not None:
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        _check_resumable(saved["config"], settings, checkpoint)
        conditioner.load_context(checkpoint / "context.safetensors")
        _load_unet_weights(unet, checkpoint / "unet.safetensors")
        load_optimizer(optimizer, checkpoint / "optimizer.safetensors")
        generator.set_state(restore_rng(checkpoint / "rng.safetensors")["train_generator"])
        start = resumed_from = int(saved["step"])
        state_extra = {"loss_before": saved.get("loss_before")}
        log.info("resuming the generator training at step %d from %s", start, checkpoint)
    elif not resume and main:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    log_path = out / LOSS_LOG
    if main:
        out.mkdir(parents=True, exist_ok=True)
        kept = _read_log(log_path, start) if checkpoint is not None else []
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in kept))
    accelerator.wait_for_everyone()

    prompts = getattr(dataset, "prompts", None)
    text = _TextTable(conditioner, prompts, max_text_table)

    def check_loss() -> float:
        return evaluate_loss(
            components,
            conditioner,
            dataset,
            config.eval_size,
            config.eval_timesteps,
            autocast=accelerator.autocast,
        )

    if checkpoint is None:
        state_extra = {"loss_before": check_loss()}
    denoiser: torch.nn.Module = _Denoiser(components, conditioner)
    if processes > 1:  # DDP over C and the UNet's trainable weights
        denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    else:
        optimizer = accelerator.prepare(optimizer)
    raw_optimizer = getattr(optimizer, "optimizer", optimizer)
    trainable = [conditioner.context, *unet_params]

    rank = accelerator.process_index
    loader = DataLoader(
        dataset,
        batch_sampler=_StepBatches(
            n,
            local_batch * processes,
            config.seed,
            start,
            config.steps,
            shard=(rank, processes),
        ),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(config.seed),
    )
    total_t = int(components.scheduler.config.num_train_timesteps)
    base = {"config": settings, **state_extra}
    times: list[float] = []
    step = start
    unet.train()
    conditioner.train()
    progress = progress and main
    if progress:
        say(runtime_line("generator training", device, accelerator.mixed_precision, processes))
    bar = _progress(progress, config.steps, start)
    try:
        for images, batch_prompts in loader:
            t0 = time.perf_counter()
            if step == start:
                _check_size(images, components, config)
            b = images.shape[0]
            images = images.to(device=device, dtype=torch.float32)
            # All of the step's randomness is drawn for the whole batch of all processes first
            # (the VAE posterior's noise, t, ε, the dropped conditions; every process draws
            # the same), and each process takes its slice: k accumulated micro-batches on N
            # processes take exactly the step that one batch of k × N × batch_size would.
            side = images.shape[-1] // components.vae_scale_factor
            whole = b * processes
            shape = (whole, components.latent_channels, side, side)
            mine = slice(rank * b, (rank + 1) * b)
            posterior = torch.randn(shape, generator=generator)[mine]
            timesteps = torch.randint(0, total_t, (whole,), generator=generator)[mine].to(device)
            noise = torch.randn(shape, generator=generator)[mine].to(device)
            dropped = torch.rand(whole, generator=generator) < config.cond_dropout
            drop = dropped[mine].to(device)
            embeddings = text(list(batch_prompts))
            if bool(drop.any()):
                empty = text([""]).expand(b, -1, -1)
                embeddings = torch.where(drop[:, None, None], empty, embeddings)
            value = torch.zeros((), device=device)
            parts = torch.arange(b).split(config.batch_size)
            for j, part in enumerate(parts):
                lo, hi = int(part[0]), int(part[-1]) + 1
                with torch.no_grad(), accelerator.autocast():
                    latents = components.encode(images[lo:hi], noise=posterior[lo:hi]).float()
                # Micro-batches before the last skip DDP's all-reduce.
                sync = j == len(parts) - 1 or processes == 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(denoiser):
                    with accelerator.autocast():
                        loss = denoiser(latents, embeddings[lo:hi], timesteps[lo:hi], noise[lo:hi])
                    share = (hi - lo) / b
                    accelerator.backward(loss * share)
                value += loss.detach().float() * share
            if processes > 1:
                value = accelerator.reduce(value, reduction="mean")
            value = float(value)
            if not math.isfinite(value):
                raise TrcglError(
                    f"the diffusion loss is {value} at step {step + 1}: lower the learning "
                    "rates or use mixed_precision='no'"
                )
            if config.grad_clip:
                accelerator.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.perf_counter() - t0
            times.append(seconds)
            row = {"step": step, "loss": value, "dropped": int(dropped.sum()), "seconds": seconds}
            if main:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if main and (step % config.checkpoint_every == 0 or step == config.steps):
                save_generator_checkpoint(
                    out / CHECKPOINTS, step, conditioner, unet, raw_optimizer, generator, base
                )
            bar(step, value)
    finally:
        bar(None, None)
        if config.gradient_checkpointing:
            checkpoint_unet(unet, False)
        unet.eval()
        unet.requires_grad_(False)
        conditioner.eval()

    accelerator.wait_for_everyone()
    rows = _read_log(log_path)
    losses = [r["loss"] for r in rows]
    summary = {
        "steps": step,
        "resumed_from": resumed_from,
        "unet_mode": config.unet_mode,
        "loss_before": state_extra.get("loss_before"),
        "loss_after": check_loss(),
        "train_loss_first": float(np.mean(losses[:10])) if losses else None,
        "train_loss_last": float(np.mean(losses[-10:])) if losses else None,
        "seconds_per_step": statistics.median(times) if times else None,
        "trainable_unet_parameters": sum(p.numel() for p in unet_params),
        "context_shape": list(conditioner.context.shape),
        "images": n,
        "device": str(device),
        "mixed_precision": accelerator.mixed_precision,
        "processes": processes,
        "config": settings,
    }
    if main:
        conditioner.save_context(out / CONTEXT_FILE)
        atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def _check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    differ = sorted(k for k in TRAINING_SETTINGS if k in saved and saved[k] != current[k])
    if differ:
        details = ", ".join(f"{k}: {saved[k]!r} → {current[k]!r}" for k in differ)
        raise ConfigError(
            f"{path}: cannot resume with a different configuration ({details}); use another "
            "output folder or resume=False to start over"
        )


def _progress(enabled: bool, total: int, start: int) -> Any:
    """``update(step, loss)`` for the generator's steps: a bar on a terminal, a plain line
    every ~5 % of the steps elsewhere (``update(None, None)`` closes it)."""
    reporter = progress_reporter(
        "generator (Eq. 3)", total, start=start, unit="steps", enabled=enabled
    )

    def update(step: int | None, loss: float | None) -> None:
        if step is None:
            reporter.close()
            return
        reporter.update(step, loss=float(loss))

    return update
