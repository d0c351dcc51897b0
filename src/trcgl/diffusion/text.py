"""The CLIP tokenizer and the frozen CLIP text encoder of Eq. 1 (docs/method.md §1).

E_n = CLIPTextEncoder(tokenize(p_n)) ∈ R^{L×d}, L = 77. Both work offline:

* :func:`load_tokenizer` builds a transformers ``CLIPTokenizer`` from the CLIP BPE vocabulary
  that ``open_clip_torch`` ships (``open_clip/bpe_simple_vocab_16e6.txt.gz``, 49,408 tokens;
  same ids as ``open_clip.get_tokenizer("ViT-B-32")`` and OpenAI's CLIP), or loads one from a
  local folder / hub id. Offline, ``CLIPTokenizer.from_pretrained(hub id)`` without a cache
  returns a 2-token tokenizer *without an error*: it is caught by its vocabulary size.
* :func:`load_text_encoder` loads a ``CLIPTextModel`` from a local folder / hub id, or builds a
  small randomly initialised one from a ``CLIPTextConfig`` (tests, CPU demo) — random on
  purpose: with no pretrained text tower the learnable context vectors of Eq. 2 and the UNet
  carry the conditioning.

A diffusers pipeline folder (``model_index.json`` with ``tokenizer/`` and ``text_encoder/``)
works as a source for both.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from trcgl.errors import ConfigError

#: ``source`` value (as well as ``None``) for the tokenizer built from open_clip's vocabulary.
OPEN_CLIP = "open_clip"
#: Size of the CLIP BPE vocabulary (256 bytes × 2 + 48,894 merges + 2 special tokens).
CLIP_VOCAB_SIZE = 49408
#: A tokenizer with fewer tokens than this is the broken offline stand-in (see module doc).
MIN_VOCAB_SIZE = 1000
#: The CLIP text encoder's sequence length L of Eq. 1.
CLIP_MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

#: A small text tower for tests and the CPU demo (≈ 3.3 M parameters, 3.2 M in the embedding).
TINY_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": CLIP_VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": CLIP_MAX_LENGTH,
    "projection_dim": 64,
    "bos_token_id": CLIP_VOCAB_SIZE - 2,
    "eos_token_id": CLIP_VOCAB_SIZE - 1,
    "pad_token_id": CLIP_VOCAB_SIZE - 1,
}

_HOW_TO_GET = (
    "Where there is network access, fill the Hugging Face cache with `hf download {source}` "
    "(or save the model with `save_pretrained`) and pass the local folder — a folder with "
    "{files}, or a diffusers pipeline folder with {sub}/ — or set HF_HOME to a cache that has "
    "it."
)


def _one_line(exc: BaseException | None) -> str:
    """An exception's message on one line, without a trailing full stop."""
    return " ".join(str(exc).split()).rstrip(".")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte → printable unicode character table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def open_clip_bpe_path() -> Path:
    """Path of the CLIP BPE merges file shipped with ``open_clip_torch`` (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise ConfigError(
        "open_clip's CLIP BPE vocabulary (open_clip/bpe_simple_vocab_16e6.txt.gz) was not "
        "found: install open_clip_torch (a trcgl dependency), or pass a local tokenizer folder"
    )


@functools.cache
def _open_clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocabulary and merges exactly as ``open_clip.tokenizer.SimpleTokenizer`` builds them."""
    with gzip.open(open_clip_bpe_path()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges)]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def _check_vocab(tokenizer: Any, source: str) -> Any:
    size = len(tokenizer)
    if size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"the tokenizer loaded from {source!r} has only {size} tokens: it is not available "
            "here (offline, transformers returns such a stand-in instead of an error). "
            + _HOW_TO_GET.format(source=source, files="vocab.json and merges.txt", sub="tokenizer")
            + f" Or use load_tokenizer(None) / {OPEN_CLIP!r}: the CLIP vocabulary shipped with "
            "open_clip_torch (same ids as OpenAI CLIP)."
        )
    return tokenizer


def load_tokenizer(source: str | Path | None = None) -> CLIPTokenizer:
    """A CLIP tokenizer (Eq. 1's ``tokenize``).

    ``source``: ``None`` or ``"open_clip"`` → built from open_clip's BPE vocabulary (offline,
    49,408 tokens, pads with ``<|endoftext|>`` like Stable Diffusion 1.x; open_clip itself pads
    with id 0); a local folder (tokenizer files, or a diffusers pipeline folder with
    ``tokenizer/``); or a hub id (needs the Hugging Face cache offline). Raises
    :class:`~trcgl.errors.ConfigError` when it cannot be had, including the silent 2-token
    stand-in transformers returns offline.
    """
    if source is None or str(source) == OPEN_CLIP:
        vocab, merges = _open_clip_vocab()
        tokenizer = CLIPTokenizer(
            vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH
        )
        return _check_vocab(tokenizer, OPEN_CLIP)
    source = str(source)
    folder = Path(source)
    attempts: list[dict[str, Any]] = [{}]
    if folder.is_dir():
        if (folder / "tokenizer").is_dir():
            attempts = [{"subfolder": "tokenizer"}]
    else:
        attempts.append({"subfolder": "tokenizer"})  # a hub id may be a diffusers pipeline
    error: Exception | None = None
    for kwargs in attempts:
        try:
            tokenizer = CLIPTokenizer.from_pretrained(source, **kwargs)
        except Exception as exc:  # transformers raises OSError, ValueError, ... here
            error = exc
            continue
        if len(tokenizer) >= MIN_VOCAB_SIZE:
            return tokenizer
        error = None
    if error is not None:
        raise ConfigError(
            f"cannot load a CLIP tokenizer from {source!r}: {_one_line(error)}. "
            + _HOW_TO_GET.format(source=source, files="vocab.json and merges.txt", sub="tokenizer")
            + f" Or use load_tokenizer(None) / {OPEN_CLIP!r}."
        ) from error
    return _check_vocab(tokenizer, source)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """``requires_grad_(False)`` and eval mode (the text encoder is frozen, docs/method.md §1)."""
    module.requires_grad_(False)
    module.eval()
    return module


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards") inside."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def load_text_encoder(
    source: str | Path | None,
    config: dict[str, Any] | CLIPTextConfig | None = None,
) -> CLIPTextModel:
    """The frozen CLIP text encoder of Eq. 1 (``requires_grad_(False)``, eval mode).

    ``source``: a local folder (a ``CLIPTextModel`` / ``CLIPModel`` checkpoint, or a diffusers
    pipeline folder with ``text_encoder/``) or a hub id (offline it must be in the Hugging Face
    cache). With ``source=None``, ``config`` (a dict of ``CLIPTextConfig`` fields, e.g.
    :data:`TINY_TEXT_CONFIG`, or a ``CLIPTextConfig``) builds a *randomly initialised* encoder
    on purpose (tests, CPU demo; seed with ``torch.manual_seed`` first for reproducibility).
    """
    if source is None:
        if config is None:
            raise ConfigError(
                "load_text_encoder needs a source (local folder or hub id) or, for a randomly "
                "initialised encoder, a CLIPTextConfig (e.g. trcgl.diffusion.text."
                "TINY_TEXT_CONFIG)"
            )
        if not isinstance(config, CLIPTextConfig):
            try:
                config = CLIPTextConfig(**config)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"invalid CLIPTextConfig {config!r}: {exc}") from exc
        return freeze(CLIPTextModel(config))
    if config is not None:
        raise ConfigError(
            "load_text_encoder: give either a source (pretrained) or a config (random init), "
            "not both"
        )
    source = str(source)
    folder = Path(source)
    kwargs: dict[str, Any] = {}
    if folder.is_dir() and (folder / "text_encoder").is_dir():
        kwargs["subfolder"] = "text_encoder"
    attempts = [kwargs] if folder.is_dir() else [{}, {"subfolder": "text_encoder"}]
    error: Exception | None = None
    for attempt in attempts:
        try:
            with quiet_transformers():
                return freeze(CLIPTextModel.from_pretrained(source, **attempt))
        except Exception as exc:  # OSError offline, ValueError for a wrong checkpoint, ...
            error = exc
    raise ConfigError(
        f"cannot load a CLIP text encoder from {source!r}: {_one_line(error)}. "
        + _HOW_TO_GET.format(
            source=source, files="config.json and model.safetensors", sub="text_encoder"
        )
        + " For a CPU test or demo, use source=None with a small config "
        "(trcgl.diffusion.text.TINY_TEXT_CONFIG; random init)."
    ) from error
