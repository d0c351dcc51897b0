"""The latent diffusion model behind Eq. 3–6 (docs/method.md §1): UNet ε_θ, VAE, noise schedule,
frozen CLIP text encoder and tokenizer.

:func:`load_components` gets them either

* from a Stable-Diffusion-style model in diffusers format — a local folder with ``unet/``,
  ``vae/``, ``scheduler/``, ``text_encoder/`` and ``tokenizer/`` (e.g. a chest X-ray fine-tune
  such as RoentGen) or a hub id (offline it must be in the Hugging Face cache); or
* with ``source=None`` and a ``tiny`` configuration, as small *randomly initialised* models
  built in code **on purpose**, for CPU tests and the demo (PITFALLS.md, "Tiny latent
  diffusion"): 64–128 px images, an ``AutoencoderKL`` with ``block_out_channels``
  (16, 32, 32, 32) (×8 downsampling, 4 latent channels), a ``UNet2DConditionModel`` with
  ``block_out_channels`` (32, 64) and ``cross_attention_dim`` = the text encoder's hidden size,
  :data:`~trcgl.diffusion.text.TINY_TEXT_CONFIG`'s text tower and the open_clip BPE tokenizer.
  No pretrained VAE exists for it: train one with :mod:`trcgl.diffusion.vae_train`.

Cross-attention is length-agnostic, so the UNet takes the m + L tokens of Eq. 2's E_cond as
well as the plain L = 77 of Stable Diffusion.

Chest radiographs are grayscale: :func:`encode_latents` replicates a one-channel image to the
VAE's input channels (3 for SD VAEs, and for the tiny VAE too, so that SD weights fit) and
:func:`decode_latents` averages the decoded channels back to one. Both run the VAE on one
image at a time (diffusers' "VAE slicing"): its activations at full resolution are the largest
tensors of a checkpointed generator step (measured at 512 px in fp32: 0.6 GB per image, a
checkpointed UNet step 0.4 GB per image), so a batch costs the memory of one image, and an
image's latents do not depend on the batch it came in.

:func:`save_components` writes the diffusers layout (safetensors, ``model_index.json`` of a
``StableDiffusionPipeline``), so that a trained tiny generator reloads with
:func:`load_components` — and with diffusers' own ``StableDiffusionPipeline.from_pretrained``.
A UNet with a LoRA adapter is saved as base weights in ``unet/`` plus the adapter in PEFT's
format in ``unet_lora/`` (reloaded and re-attached exactly; ``merge_lora=True`` folds it into
the weights instead).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import CLIPTextModel, CLIPTokenizer

from trcgl.diffusion.text import (
    TINY_TEXT_CONFIG,
    freeze,
    load_text_encoder,
    load_tokenizer,
    quiet_transformers,
)
from trcgl.errors import ConfigError

__all__ = [
    "LORA_FOLDER",
    "LORA_TARGET_MODULES",
    "TINY_GENERATOR_CONFIG",
    "Components",
    "add_lora",
    "cast_components",
    "cast_to",
    "decode_latents",
    "encode_latents",
    "has_lora",
    "load_components",
    "load_lora",
    "save_components",
    "save_lora",
    "to_vae_input",
    "vae_dtype",
]

#: The attention projections LoRA adapts (the usual choice for Stable Diffusion UNets).
LORA_TARGET_MODULES: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
#: Subfolder of a saved generator holding a UNet LoRA adapter in PEFT's format.
LORA_FOLDER = "unet_lora"
_UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
_LORA_WEIGHTS = "adapter_model.safetensors"
_LORA_CONFIG = "adapter_config.json"

#: Defaults of the tiny, randomly initialised generator (``load_components(None, tiny)``);
#: a ``tiny`` dict overrides any of these keys, and the nested ``unet`` / ``vae`` /
#: ``scheduler`` / ``text`` dicts are merged key by key.
TINY_GENERATOR_CONFIG: dict[str, Any] = {
    "image_size": 64,
    "seed": 0,
    "latent_channels": 4,
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        # 0.3 M parameters: a training step (64 px, batch 16) costs a third of (32, 64, 64, 64)'s.
        "block_out_channels": [16, 32, 32, 32],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        # Replaced by 1/std of the latents once the VAE is trained (vae_train.fit_scaling_factor).
        "scaling_factor": 1.0,
    },
    "unet": {
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "attention_head_dim": 8,
        "norm_num_groups": 32,
    },
    # Stable Diffusion's training schedule; no clipping of x̂_0 (latents are not in [-1, 1]).
    "scheduler": {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "steps_offset": 1,
        "prediction_type": "epsilon",
    },
    "text": dict(TINY_TEXT_CONFIG),
}

_SUBFOLDERS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_HOW_TO_GET = (
    "Where there is network access, download it with `hf download {source}` (or "
    "`StableDiffusionPipeline.from_pretrained(...).save_pretrained(folder)`) and pass the local "
    "folder — a diffusers pipeline folder with unet/, vae/, scheduler/, text_encoder/ and "
    "tokenizer/ — or set HF_HOME to a cache that has it. For a CPU test or demo, use "
    "load_components(None, tiny={{}}) (small randomly initialised models, trained here)."
)


@dataclass
class Components:
    """What the generator is made of (docs/method.md §1).

    Attributes:
        unet: ε_θ(x_t, t, E_cond) of Eq. 3–4.
        vae: the ``AutoencoderKL`` whose latents the diffusion runs on; its decoder is Eq. 6.
        scheduler: the DDPM noise schedule of training (Eq. 3's x_t); samplers are built
            ``from_config`` of it (:mod:`trcgl.diffusion.sample`).
        text_encoder: the frozen CLIP text encoder of Eq. 1.
        tokenizer: its CLIP tokenizer.
        vae_scale_factor: image side / latent side (8 for SD VAEs and the tiny one).
        latent_channels: channels of the latents (4).
        source: where the models came from (a folder, hub id or ``"tiny"``).
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDPMScheduler
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae_scale_factor: int
    latent_channels: int
    source: str = "tiny"

    @property
    def image_size(self) -> int:
        """The native image side: the UNet's latent ``sample_size`` × ``vae_scale_factor``."""
        size = self.unet.config.sample_size
        if isinstance(size, (list, tuple)):
            size = size[0]
        return int(size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        """The UNet's device."""
        return next(self.unet.parameters()).device

    def to(self, device: torch.device | str) -> Components:
        """Move the UNet, VAE and text encoder to ``device`` (in place); returns ``self``."""
        for model in (self.unet, self.vae, self.text_encoder):
            model.to(device)
        return self

    # -- the generator seam: training (Eq. 3), sampling (Eq. 4–6) and the filter reach the
    # denoiser and the VAE only through these, so another model family (a diffusion
    # transformer, flow matching) is a subclass that overrides them.
    def predict_noise(self, latents: Tensor, timesteps: Tensor | int, condition: Tensor) -> Tensor:
        """The denoiser's prediction ε_θ(x_t, t, E_cond) of Eq. 3–5 (ε, or v / x_0 as
        ``scheduler.config.prediction_type`` says): one call of the network on the batch."""
        return self.unet(latents, timesteps, encoder_hidden_states=condition).sample

    def encode(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        sample: bool = True,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Latents x_0 of images in [-1, 1] (:func:`encode_latents`)."""
        return encode_latents(self.vae, images, generator=generator, sample=sample, noise=noise)

    def decode(self, latents: Tensor) -> Tensor:
        """Eq. 6: grayscale images in [-1, 1] from latents (:func:`decode_latents`)."""
        return decode_latents(self.vae, latents)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | None,
        tiny: dict[str, Any] | None = None,
        *,
        torch_dtype: torch.dtype | None = None,
    ) -> Components:
        """:func:`load_components`: a diffusers folder or hub id, or (``None``) tiny models;
        a subclass gets the same networks (one that loads others overrides this)."""
        loaded = load_components(source, tiny, torch_dtype=torch_dtype)
        if cls is Components:
            return loaded
        return cls(**{f.name: getattr(loaded, f.name) for f in dataclasses.fields(Components)})

    def save_pretrained(self, folder: str | Path, *, merge_lora: bool = False) -> Path:
        """:func:`save_components`: the diffusers layout, atomically."""
        return save_components(self, folder, merge_lora=merge_lora)


# -- grayscale <-> VAE ----------------------------------------------------------------------------
def to_vae_input(images: Tensor, in_channels: int) -> Tensor:
    """Replicate grayscale ``[B, 1, S, S]`` images to the VAE's ``in_channels`` (3 for SD)."""
    channels = images.shape[1]
    if channels == in_channels:
        return images
    if channels == 1:
        return images.expand(-1, in_channels, -1, -1)
    if in_channels == 1:
        return images.mean(dim=1, keepdim=True)
    raise ConfigError(f"images with {channels} channels do not fit a VAE with {in_channels}")


def _latent_shift(vae: AutoencoderKL) -> float:
    shift = getattr(vae.config, "shift_factor", None)
    return 0.0 if shift is None else float(shift)


def encode_latents(
    vae: AutoencoderKL,
    images: Tensor,
    generator: torch.Generator | None = None,
    sample: bool = True,
    noise: Tensor | None = None,
) -> Tensor:
    """Latents x_0 of Eq. 3 for images in [-1, 1] (``[B, 1 or 3, S, S]``).

    ``(z − shift) × vae.config.scaling_factor`` with z a draw from the VAE posterior (its
    standard normal ``noise`` given, or drawn on ``generator``'s device, then moved) or its
    mode (``sample=False``).
    """
    x = to_vae_input(images, int(vae.config.in_channels))
    x = x.to(device=next(vae.parameters()).device, dtype=next(vae.parameters()).dtype)
    parts = [vae.encode(image).latent_dist for image in x.split(1)]  # one image at a time
    mean = torch.cat([d.mean for d in parts])
    if sample:
        if noise is None:
            noise_device = generator.device if generator is not None else mean.device
            noise = torch.randn(
                mean.shape, generator=generator, device=noise_device, dtype=mean.dtype
            )
        noise = noise.to(device=mean.device, dtype=mean.dtype)
        z = mean + torch.cat([d.std for d in parts]) * noise
    else:
        z = mean  # the posterior's mode
    return (z - _latent_shift(vae)) * float(vae.config.scaling_factor)


def decode_latents(vae: AutoencoderKL, latents: Tensor) -> Tensor:
    """Eq. 6: I_syn = VAE_decoder(x_0), as grayscale ``[B, 1, S, S]`` in [-1, 1] (the decoded
    channels averaged, then clamped)."""
    param = next(vae.parameters())
    z = latents.to(device=param.device, dtype=param.dtype) / float(vae.config.scaling_factor)
    z = z + _latent_shift(vae)
    images = torch.cat([vae.decode(latent).sample for latent in z.split(1)])  # one at a time
    return images.float().mean(dim=1, keepdim=True).clamp(-1.0, 1.0)


def vae_dtype(vae: AutoencoderKL, dtype: torch.dtype) -> torch.dtype:
    """The dtype to hold the VAE in when the rest of the generator is in ``dtype``: fp32 where
    its config asks for it (``force_upcast``, as diffusers' pipelines honour) and ``dtype`` is
    fp16, else ``dtype``."""
    upcast = bool(getattr(vae.config, "force_upcast", False))
    return torch.float32 if upcast and dtype == torch.float16 else dtype


def cast_to(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast ``model``'s floating-point weights and buffers to ``dtype``; nothing to do where
    they are in it already.

    diffusers' ``ModelMixin.to`` warns on every dtype cast that modules should be kept in fp32,
    listing them even when there are none (an empty list): a model that does keep some in fp32
    (or is quantized) still goes through it, the others through ``torch.nn.Module.to``, the
    same cast without the empty warning."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.dtype == dtype for t in tensors if t.is_floating_point()):
        return
    if getattr(model, "_keep_in_fp32_modules", None) or getattr(model, "is_quantized", False):
        model.to(dtype)
    else:
        torch.nn.Module.to(model, dtype)


def cast_components(components: Components, dtype: torch.dtype) -> None:
    """UNet and text encoder in ``dtype``; the VAE too, unless it asks for fp32
    (:func:`vae_dtype`)."""
    cast_to(components.unet, dtype)
    cast_to(components.text_encoder, dtype)
    cast_to(components.vae, vae_dtype(components.vae, dtype))


# -- LoRA -----------------------------------------------------------------------------------------
def has_lora(unet: torch.nn.Module) -> bool:
    """Whether PEFT adapters are attached to ``unet``."""
    return bool(getattr(unet, "_hf_peft_config_loaded", False)) and bool(
        getattr(unet, "peft_config", None)
    )


def add_lora(
    unet: UNet2DConditionModel,
    rank: int,
    alpha: float | None = None,
    target_modules: tuple[str, ...] | list[str] = LORA_TARGET_MODULES,
) -> None:
    """Attach a LoRA adapter (``"default"``) to the UNet's attention projections through PEFT
    (``unet.add_adapter(LoraConfig(...))``); ``alpha`` defaults to ``rank`` (scale 1). The LoRA
    B matrices start at zero, so the UNet's output is unchanged until it trains."""
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - peft is a dependency
        raise ConfigError("LoRA needs peft: pip install 'peft>=0.13'") from exc
    if rank < 1:
        raise ConfigError(f"lora_rank must be ≥ 1, got {rank}")
    config = LoraConfig(
        r=int(rank),
        lora_alpha=float(rank if alpha is None else alpha),
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    unet.add_adapter(config)


def _merged_unet_state(unet: UNet2DConditionModel) -> dict[str, Tensor]:
    """The UNet's weights with the active LoRA adapters folded in (W + ΔW), keys as without
    adapters; the model itself is left untouched."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    state: dict[str, Tensor] = {}
    tuner_prefixes = []
    for name, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer):
            base = module.get_base_layer()
            weight = base.weight.detach().clone()
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
            state[f"{name}.weight"] = weight
            if getattr(base, "bias", None) is not None:
                state[f"{name}.bias"] = base.bias.detach().clone()
            tuner_prefixes.append(name + ".")
    for key, value in unet.state_dict().items():
        if any(key.startswith(p) for p in tuner_prefixes):
            continue
        state[key] = value.detach()
    return state


def _base_unet_state(unet: UNet2DConditionModel) -> dict[str, Tensor]:
    """The UNet's weights without adapters (``.base_layer`` removed, LoRA tensors dropped)."""
    state = {}
    for key, value in unet.state_dict().items():
        if ".lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value.detach()
    return state


# -- loading --------------------------------------------------------------------------------------
def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(f"unknown tiny generator option {key!r}; known: {sorted(defaults)}")
        if isinstance(defaults[key], dict) and isinstance(value, dict):
            out[key] = {**defaults[key], **value}
        else:
            out[key] = value
    return out


def _tiny_components(tiny: dict[str, Any]) -> Components:
    cfg = _merge(TINY_GENERATOR_CONFIG, tiny)
    size = int(cfg["image_size"])
    vae_cfg = dict(cfg["vae"])
    factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    if size % factor:
        raise ConfigError(f"tiny image_size {size} is not a multiple of the VAE factor {factor}")
    channels = int(cfg["latent_channels"])
    hidden = int(cfg["text"]["hidden_size"])
    unet_cfg = {
        "sample_size": size // factor,
        "in_channels": channels,
        "out_channels": channels,
        "cross_attention_dim": hidden,
        **cfg["unet"],
    }
    vae_cfg = {"latent_channels": channels, "sample_size": size, **vae_cfg}
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        for part in (unet_cfg, vae_cfg):
            if key in part:
                part[key] = tuple(part[key])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        try:
            text_encoder = load_text_encoder(None, cfg["text"])
            vae = AutoencoderKL(**vae_cfg)
            unet = UNet2DConditionModel(**unet_cfg)
            scheduler = DDPMScheduler(**cfg["scheduler"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid tiny generator configuration: {exc}") from exc
    return Components(
        unet=_eval(unet),
        vae=freeze(vae),
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=load_tokenizer(None),
        vae_scale_factor=factor,
        latent_channels=channels,
        source="tiny",
    )


def _eval(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    unet.requires_grad_(False)
    unet.eval()
    return unet


def _load_part(cls: Any, source: str, subfolder: str, **kwargs: Any) -> Any:
    try:
        with warnings.catch_warnings():  # diffusers 0.42 passes a deprecated hub argument
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return cls.from_pretrained(source, subfolder=subfolder, **kwargs)
    except Exception as exc:  # OSError / EnvironmentError offline, ValueError, ...
        message = " ".join(str(exc).split()).rstrip(".")
        raise ConfigError(
            f"cannot load the generator's {subfolder}/ ({cls.__name__}) from {source!r}: "
            f"{message}. " + _HOW_TO_GET.format(source=source)
        ) from exc


def load_components(
    source: str | Path | None,
    tiny: dict[str, Any] | None = None,
    *,
    torch_dtype: torch.dtype | None = None,
) -> Components:
    """The generator's models (Eq. 1, 3–6) from a diffusers folder / hub id, or tiny ones.

    Args:
        source: a local diffusers pipeline folder (``unet/``, ``vae/``, ``scheduler/``,
            ``text_encoder/``, ``tokenizer/``; a ``unet_lora/`` adapter written by
            :func:`save_components` is re-attached) or a hub id (offline: from the Hugging Face
            cache). ``None`` builds the tiny models.
        tiny: with ``source=None``, overrides of :data:`TINY_GENERATOR_CONFIG` (``{}`` for the
            defaults: 64 px, VAE ×8 with 4 latent channels, UNet (32, 64), tiny CLIP text tower;
            randomly initialised from ``seed``, without touching the global RNG).
        torch_dtype: dtype of the loaded UNet and text encoder, and of the VAE unless it
            asks for fp32 (:func:`vae_dtype`); default: as stored.

    The VAE and text encoder come back frozen (``requires_grad_(False)``, eval mode), the UNet
    in eval mode without gradients (training switches on what it trains); the scheduler is a
    ``DDPMScheduler`` (built ``from_config`` of the stored one, whatever its class).

    Raises :class:`~trcgl.errors.ConfigError` when a part cannot be had, saying how to get it.
    """
    if source is None:
        if tiny is None:
            raise ConfigError(
                "load_components needs a source (a diffusers folder or hub id, e.g. a CXR "
                "fine-tune such as RoentGen) or, for small randomly initialised models for CPU "
                "tests and the demo, a tiny configuration (tiny={} for the defaults)"
            )
        components = _tiny_components(tiny)
        if torch_dtype is not None:
            cast_components(components, torch_dtype)
        return components
    if tiny is not None:
        raise ConfigError("load_components: give either a source or a tiny configuration")
    source = str(source)
    folder = Path(source)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{source!r} is a file; a diffusers pipeline folder is needed")
    if folder.is_dir():
        missing = [s for s in _SUBFOLDERS if not (folder / s).is_dir()]
        if missing:
            raise ConfigError(
                f"{source!r} is not a Stable-Diffusion-style diffusers folder: it lacks "
                f"{', '.join(s + '/' for s in missing)}. " + _HOW_TO_GET.format(source=source)
            )
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    unet = _load_part(UNet2DConditionModel, source, "unet", **kwargs)
    vae = _load_part(AutoencoderKL, source, "vae")
    if torch_dtype is not None:
        cast_to(vae, vae_dtype(vae, torch_dtype))
    stored = _load_part(DDPMScheduler, source, "scheduler")
    scheduler = DDPMScheduler.from_config(stored.config)
    try:
        text_encoder = load_text_encoder(source)
        tokenizer = load_tokenizer(source)
    except ConfigError as exc:
        raise ConfigError(f"{exc} " + _HOW_TO_GET.format(source=source)) from exc
    if torch_dtype is not None:
        cast_to(text_encoder, torch_dtype)
    if folder.is_dir() and (folder / LORA_FOLDER).is_dir():
        load_lora(unet, folder / LORA_FOLDER)
    hidden = int(text_encoder.config.hidden_size)
    cross = unet.config.cross_attention_dim
    if isinstance(cross, int) and cross != hidden:
        raise ConfigError(
            f"{source!r}: the UNet's cross_attention_dim {cross} differs from the text "
            f"encoder's hidden size {hidden}"
        )
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return Components(
        unet=_eval(unet),
        vae=freeze(vae),
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        vae_scale_factor=factor,
        latent_channels=int(vae.config.latent_channels),
        source=source,
    )


def load_lora(unet: UNet2DConditionModel, folder: str | Path) -> None:
    """Attach the LoRA adapter that :func:`save_lora` wrote to ``folder`` (exactly)."""
    folder = Path(folder)
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    config = LoraConfig.from_pretrained(str(folder))
    unet.add_adapter(config)
    result = set_peft_model_state_dict(unet, load_file(str(folder / _LORA_WEIGHTS)))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if ".lora_" in k]
    if unexpected or missing:
        raise ConfigError(
            f"{folder}: LoRA weights do not fit the UNet (unexpected {unexpected[:3]}, "
            f"missing {missing[:3]})"
        )


# -- saving ---------------------------------------------------------------------------------------
def save_lora(unet: UNet2DConditionModel, folder: str | Path) -> Path:
    """Write the UNet's LoRA adapter (``"default"``) in PEFT's format: ``adapter_config.json``
    and ``adapter_model.safetensors`` in ``folder``; returns it."""
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    unet.peft_config["default"].save_pretrained(str(folder))
    lora = {
        k: v.detach().contiguous().cpu()
        for k, v in get_peft_model_state_dict(unet, adapter_name="default").items()
    }
    save_file(lora, str(folder / _LORA_WEIGHTS), metadata={"format": "pt"})
    return folder


@contextlib.contextmanager
def _atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``folder``; on success it replaces ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield tmp
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_components(
    components: Components, folder: str | Path, *, merge_lora: bool = False
) -> Path:
    """Write the generator in the diffusers layout, atomically (a temporary folder renamed).

    ``unet/``, ``vae/``, ``text_encoder/`` (safetensors via ``save_pretrained``),
    ``scheduler/``, ``tokenizer/`` and a ``model_index.json`` of a ``StableDiffusionPipeline``
    (no safety checker). A UNet LoRA adapter goes to ``unet_lora/`` in PEFT's format (base
    weights in ``unet/``), or, with ``merge_lora=True``, is folded into ``unet/``'s weights.
    The learnable context vectors C are not part of it: save them with
    :meth:`~trcgl.diffusion.conditioning.PromptConditioner.save_context`.
    """
    folder = Path(folder)
    unet = components.unet
    with _atomic_folder(folder) as tmp:
        (tmp / "unet").mkdir()
        unet.save_config(str(tmp / "unet"))
        if has_lora(unet):
            state = _merged_unet_state(unet) if merge_lora else _base_unet_state(unet)
        else:
            state = {k: v.detach() for k, v in unet.state_dict().items()}
        state = {k: v.contiguous().cpu() for k, v in state.items()}
        save_file(state, str(tmp / "unet" / _UNET_WEIGHTS), metadata={"format": "pt"})
        if has_lora(unet) and not merge_lora:
            save_lora(unet, tmp / LORA_FOLDER)
        components.vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)
        with quiet_transformers():
            components.text_encoder.save_pretrained(str(tmp / "text_encoder"))
        components.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        components.scheduler.save_pretrained(str(tmp / "scheduler"))
        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": _diffusers_version(),
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", type(components.scheduler).__name__],
            "text_encoder": ["transformers", type(components.text_encoder).__name__],
            "tokenizer": ["transformers", type(components.tokenizer).__name__],
            "unet": ["diffusers", type(unet).__name__],
            "vae": ["diffusers", type(components.vae).__name__],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def _diffusers_version() -> str:
    import diffusers

    return str(diffusers.__version__)
