"""Learnable-context prompt conditioning (docs/method.md §1, Eq. 1–2 and Eq. 4's ε_uncond input).

Eq. 1: E_n = CLIPTextEncoder(tokenize(p_n)) ∈ R^{L×d}, L = 77 — the frozen encoder's
``last_hidden_state`` for the prompt padded to L tokens.
Eq. 2: E_cond = concat_seq(C, E_n) ∈ R^{(m+L)×d}, C ∈ R^{m×d} the learnable context vectors.

The context is concatenated in front of the encoder's *output* (as Eq. 2 says; transformers'
``CLIPTextModel.forward`` takes no ``inputs_embeds`` anyway), so the frozen encoder runs under
``torch.no_grad()`` and the gradients of the diffusion loss (Eq. 3) reach only C. Its outputs
are constant per prompt string, so an optional LRU cache can keep them.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from trcgl import __version__
from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_path

log = logging.getLogger(__name__)

#: Key of the context tensor in a saved context file (the textual-inversion way).
CONTEXT_KEY = "context"
CONTEXT_FORMAT = "trcgl.context.v1"


class PromptConditioner(nn.Module):
    """Frozen CLIP text encoder + tokenizer + m learnable context vectors (Eq. 1–2).

    Args:
        text_encoder: a transformers ``CLIPTextModel`` (frozen here: ``requires_grad_(False)``,
            kept in eval mode even when this module is put in train mode).
        tokenizer: the matching CLIP tokenizer (e.g. :func:`trcgl.diffusion.text.load_tokenizer`).
        num_context: m, the number of learnable context vectors (default 8).
        init_std: the context vectors start as N(0, init_std²) (default 0.02).
        cache_size: how many per-prompt encoder outputs (L×d each) an LRU cache keeps; 0 turns
            it off. The encoder is frozen, so a cached output equals a fresh one. Default 1024:
            the 1,291 PadChest tail rows have 822 distinct prompts; measured on 1 CPU thread, a
            batch of 8 costs 6.7 ms (tiny 64×4 tower) / 0.9 s (a 768×12 SD-1.x-sized tower)
            uncached and < 0.6 ms cached. Memory: cache_size × 77 × d × 4 bytes at most
            (20 MB for d = 64, 240 MB for d = 768), on the encoder's device. Cleared by
            ``.to()`` / ``load_state_dict``; call :meth:`clear_cache` after changing the
            encoder's weights any other way.
        source: the encoder's name or source, recorded in saved context files (default: the
            encoder's ``name_or_path``).

    ``encode`` returns float tensors of the context's dtype on the encoder's device. Prompts
    longer than L tokens are truncated (end token kept) with a warning; build them with
    :func:`trcgl.diffusion.prompts.build_prompt` and a tokenizer so that they fit.
    """

    def __init__(
        self,
        text_encoder: nn.Module,
        tokenizer: Any,
        num_context: int = 8,
        init_std: float = 0.02,
        cache_size: int = 1024,
        source: str | None = None,
    ) -> None:
        super().__init__()
        if num_context < 0:
            raise ConfigError(f"num_context must be ≥ 0, got {num_context}")
        if cache_size < 0:
            raise ConfigError(f"cache_size must be ≥ 0, got {cache_size}")
        config = text_encoder.config
        self.text_encoder = text_encoder
        self.text_encoder.requires_grad_(False)
        self.text_encoder.eval()
        self.tokenizer = tokenizer
        self.max_length = int(config.max_position_embeddings)
        hidden = int(config.hidden_size)
        self.context = nn.Parameter(torch.empty(num_context, hidden))
        nn.init.normal_(self.context, std=init_std)
        name = getattr(text_encoder, "name_or_path", "") or ""
        self.source = (
            source
            or name
            or f"random-init CLIPTextModel(hidden={hidden}, layers={config.num_hidden_layers})"
        )
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0
        self._warned_truncation = False
        pad = getattr(tokenizer, "pad_token_id", None)
        eos = getattr(tokenizer, "eos_token_id", None)
        if pad is None or eos is None:
            raise ConfigError("the tokenizer needs pad and end-of-text tokens (a CLIP tokenizer)")
        self._pad_id, self._eos_id = int(pad), int(eos)

    # -- shape ------------------------------------------------------------------------------
    @property
    def num_context(self) -> int:
        """m, the number of learnable context vectors."""
        return int(self.context.shape[0])

    @property
    def hidden_size(self) -> int:
        """d, the text encoder's hidden size."""
        return int(self.context.shape[1])

    @property
    def sequence_length(self) -> int:
        """m + L, the length of E_cond (Eq. 2)."""
        return self.num_context + self.max_length

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What Eq. 3's gradients update here: the context vectors C only."""
        return [self.context]

    # -- module housekeeping ----------------------------------------------------------------
    def train(self, mode: bool = True) -> PromptConditioner:
        """Train mode for this module; the frozen text encoder stays in eval mode."""
        super().train(mode)
        self.text_encoder.eval()
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> PromptConditioner:
        self.clear_cache()  # .to() / .half() / .cuda(): cached outputs are stale
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.clear_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def clear_cache(self) -> None:
        """Forget the cached encoder outputs."""
        self._cache.clear()

    # -- Eq. 1 ------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> Tensor:
        """Token ids [B, L]: start token, prompt, end token, padded to L = 77 with the
        tokenizer's pad token; longer prompts are truncated (end token kept)."""
        length = self.max_length
        encoded = self.tokenizer(list(prompts), truncation=False, verbose=False)["input_ids"]
        rows = []
        for prompt, ids in zip(prompts, encoded, strict=True):
            ids = list(ids)
            if len(ids) > length:
                if not self._warned_truncation:
                    log.warning(
                        "prompt of %d tokens truncated to %d (warned once): %r",
                        len(ids),
                        length,
                        prompt,
                    )
                    self._warned_truncation = True
                ids = [*ids[: length - 1], self._eos_id]
            rows.append(ids + [self._pad_id] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def _device(self) -> torch.device:
        return self.context.device

    def encode_text(self, prompts: Sequence[str]) -> Tensor:
        """Eq. 1: E_n = CLIPTextEncoder(tokenize(p_n)).last_hidden_state, [B, L, d].

        Runs under ``torch.no_grad()`` (the encoder is frozen); each distinct prompt is encoded
        once per call (and served from the LRU cache when ``cache_size`` > 0).
        """
        prompts = list(prompts)
        if not prompts:
            return self.context.new_zeros(0, self.max_length, self.hidden_size)
        found: dict[str, Tensor] = {}
        unique = list(dict.fromkeys(prompts))
        if self.cache_size:
            for prompt in unique:
                hit = self._cache.get(prompt)
                if hit is not None:
                    self._cache.move_to_end(prompt)
                    found[prompt] = hit
            self.cache_hits += len(found)
        missing = [p for p in unique if p not in found]
        if missing:
            self.cache_misses += len(missing)
            ids = self.tokenize(missing).to(self._device())
            with torch.no_grad():
                hidden = self.text_encoder(input_ids=ids).last_hidden_state
            hidden = hidden.to(self.context.dtype)
            for prompt, h in zip(missing, hidden, strict=True):
                found[prompt] = h
                if self.cache_size:
                    self._cache[prompt] = h.clone()
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if len(unique) == len(prompts) and not self.cache_size and len(missing) == len(prompts):
            return hidden
        return torch.stack([found[p] for p in prompts])

    # -- Eq. 2 and Eq. 4 ----------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Eq. 2: E_cond = concat_seq(C, E_n), [B, m + L, d].

        Rows ``[:, :m]`` are the context vectors C (the same for every prompt; gradients flow
        to them), rows ``[:, m:]`` the frozen encoder's output E_n (Eq. 1, no gradient).
        """
        text = self.encode_text(prompts)
        context = self.context.unsqueeze(0).expand(text.shape[0], -1, -1)
        return torch.cat([context, text], dim=1)

    def encode_unconditional(self, batch_size: int) -> Tensor:
        """The condition of Eq. 4's ε_uncond: the empty prompt ``""``, [B, m + L, d].

        Decision: the context C is kept in front here too, so the UNet always sees one
        sequence length m + L, and C acts as a learned domain prefix shared by both branches of
        classifier-free guidance (the guidance direction ε_cond − ε_uncond then comes from the
        prompt). Use it as well for the dropped condition during training (docs/method.md §1).
        Equal to ``encode([""] * batch_size)``.
        """
        return self.encode([""] * batch_size)

    # -- saving -----------------------------------------------------------------------------
    def save_context(self, path: str | Path) -> None:
        """Write C as a small safetensors file (key ``"context"``; metadata m, d, L, encoder,
        trcgl version), atomically — as textual-inversion embeddings are shared."""
        metadata = {
            "format": CONTEXT_FORMAT,
            "m": str(self.num_context),
            "d": str(self.hidden_size),
            "L": str(self.max_length),
            "encoder": str(self.source),
            "trcgl_version": __version__,
        }
        tensor = self.context.detach().to("cpu").contiguous()
        with atomic_path(path) as tmp:
            save_file({CONTEXT_KEY: tensor}, str(tmp), metadata=metadata)

    def load_context(self, path: str | Path) -> dict[str, str]:
        """Load C from :meth:`save_context`'s file; returns the file's metadata.

        Raises :class:`~trcgl.errors.DataError` for a missing or malformed file and
        :class:`~trcgl.errors.ConfigError` when the saved shape (m, d) differs from this
        conditioner's, saying which of m and d differ.
        """
        tensor, metadata = read_context(path)
        expected = (self.num_context, self.hidden_size)
        got = tuple(tensor.shape)
        if got != expected:
            hints = []
            if len(got) == 2 and got[0] != expected[0]:
                hints.append(f"m: file {got[0]} vs {expected[0]} (set num_context={got[0]})")
            if len(got) == 2 and got[1] != expected[1]:
                hints.append(
                    f"d: file {got[1]} vs {expected[1]} (d is the text encoder's hidden size: "
                    f"use the encoder the file was trained with, "
                    f"{metadata.get('encoder', 'not recorded')!r})"
                )
            raise ConfigError(
                f"{path}: context vectors of shape {got} do not fit this conditioner's "
                f"(m, d) = {expected}" + (": " + "; ".join(hints) if hints else "")
            )
        with torch.no_grad():
            self.context.copy_(tensor.to(dtype=self.context.dtype, device=self.context.device))
        return metadata


def read_context(path: str | Path) -> tuple[Tensor, dict[str, str]]:
    """The context tensor and metadata of a file written by
    :meth:`PromptConditioner.save_context`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("context file not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            keys = list(fh.keys())
            if CONTEXT_KEY not in keys:
                raise DataError(
                    f"no {CONTEXT_KEY!r} tensor in this safetensors file (keys: {keys})",
                    path=path,
                )
            tensor = fh.get_tensor(CONTEXT_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"not a readable safetensors file: {exc}", path=path) from exc
    return tensor, metadata
