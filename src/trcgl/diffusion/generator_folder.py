"""A trained generator's folder, and the base model it references (docs/method.md §1).

LoRA and frozen training change only the context vectors C (and, for LoRA, a small adapter):
the base model's UNet, VAE and text encoder stay as they were (4 GB for Stable Diffusion 1.5,
against 6.4 MB for a rank-8 adapter). So their folder does not copy the base; it holds

* ``generator.json``: the format, ``unet_mode``, the ``base`` (a path — relative to this
  folder when the base lies inside the same run directory — or a hub id) and the base's
  :func:`fingerprint`;
* ``context.safetensors``: C (:meth:`~trcgl.diffusion.conditioning.PromptConditioner.
  save_context`);
* ``unet_lora/``: the LoRA adapter in PEFT's format (LoRA runs only).

:func:`load_generator_folder` loads the base, checks its fingerprint and attaches the adapter;
a missing base, or one whose files changed, is a clear error saying which and what to do.
A ``full`` run changes every UNet weight, so its folder is the whole diffusers layout
(:func:`~trcgl.diffusion.components.save_components`), self-contained, as is any folder
without a ``generator.json`` (e.g. one downloaded from the hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from trcgl.diffusion.components import (
    LORA_FOLDER,
    Components,
    has_lora,
    load_lora,
    save_lora,
)
from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_write_text

__all__ = [
    "GENERATOR_FILE",
    "GENERATOR_FORMAT",
    "base_folder",
    "fingerprint",
    "load_generator_folder",
    "save_generator_folder",
]

GENERATOR_FILE = "generator.json"
GENERATOR_FORMAT = "trcgl.generator.v1"
CONTEXT_FILE = "context.safetensors"
#: What of a diffusers folder :func:`fingerprint` reads: its index and the parts trcgl loads.
_PARTS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_SAMPLES = 16
_SAMPLE_BYTES = 4096
_TEXT_SUFFIXES = (".json", ".txt", ".model")


def base_folder(source: str | Path) -> Path | None:
    """The local folder of a base model: ``source`` itself when it is a folder, else the
    hub id's snapshot in the Hugging Face cache (``None`` when it is not there)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), local_files_only=True))
    except Exception:  # not a hub id, or not in the cache
        return None


def _file_digest(path: Path, relative: str) -> bytes:
    """Digest input of one file: its name and size, then the whole file for configuration
    and tokenizer files, or for weights the safetensors header (tensor names, dtypes, shapes)
    and :data:`_SAMPLES` evenly spaced blocks of bytes (a 4 GB model is fingerprinted in
    milliseconds, and a retrained model of the same shapes still differs)."""
    size = path.stat().st_size
    parts = [relative.encode(), str(size).encode()]
    with path.open("rb") as fh:
        if path.suffix in _TEXT_SUFFIXES or size <= _SAMPLES * _SAMPLE_BYTES:
            parts.append(fh.read())
        else:
            if path.suffix == ".safetensors":
                head = fh.read(8)
                parts.append(fh.read(min(int.from_bytes(head, "little"), size)))
            for k in range(_SAMPLES):
                fh.seek(k * (size - _SAMPLE_BYTES) // (_SAMPLES - 1))
                parts.append(fh.read(_SAMPLE_BYTES))
    return hashlib.sha256(b"\0".join(parts)).digest()


def fingerprint(folder: str | Path) -> str:
    """SHA-256 fingerprint of a diffusers base model folder: ``model_index.json`` and every
    file of its ``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/`` and ``tokenizer/``
    (see :func:`_file_digest`), in sorted order."""
    root = Path(folder)
    files = [root / "model_index.json"] if (root / "model_index.json").is_file() else []
    for part in _PARTS:
        if (root / part).is_dir():
            files.extend(p for p in sorted((root / part).rglob("*")) if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        relative = path.relative_to(root).as_posix()
        if any(piece.startswith(".") for piece in Path(relative).parts):
            continue
        digest.update(_file_digest(path, relative))
    return digest.hexdigest()


def _recorded_base(folder: Path, base: str) -> str:
    """How ``base`` is written in ``generator.json``: relative to ``folder`` when the base lies
    beside it (the tiny generator's ``diffusion/base/``, so a moved run keeps it), else the
    absolute path or the hub id."""
    path = Path(base).expanduser()
    if not path.is_dir():
        return str(base)
    absolute, here = path.absolute(), folder.absolute()
    common = Path(os.path.commonpath([absolute, here]))
    if common == here.parent:
        return Path(os.path.relpath(absolute, here)).as_posix()
    return str(absolute)


def save_generator_folder(
    components: Components,
    conditioner: Any,
    folder: str | Path,
    *,
    base: str | Path,
    unet_mode: str,
) -> Path:
    """Write the trained generator to ``folder`` (replacing it); returns it.

    Args:
        components: the trained generator (a LoRA adapter attached for ``unet_mode="lora"``).
        conditioner: its :class:`~trcgl.diffusion.conditioning.PromptConditioner` (C).
        base: the base model it was trained from — the folder or hub id that
            ``type(components).from_pretrained`` loads it from again.
        unet_mode: ``frozen`` or ``lora`` (a reference to the base) or ``full`` (the whole
            diffusers layout).
    """
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if unet_mode == "full":
        components.save_pretrained(tmp)
        record: dict[str, Any] = {"format": GENERATOR_FORMAT, "unet_mode": unet_mode, "base": None}
    else:
        local = base_folder(base)
        if local is None:
            raise DataError(f"the base model {str(base)!r} is not a local folder or cached hub id")
        tmp.mkdir(parents=True)
        if unet_mode == "lora":
            if not has_lora(components.unet):
                raise ConfigError("unet_mode='lora' but the UNet carries no LoRA adapter")
            save_lora(components.unet, tmp / LORA_FOLDER)
        record = {
            "format": GENERATOR_FORMAT,
            "unet_mode": unet_mode,
            "base": _recorded_base(folder, str(base)),
            "base_fingerprint": fingerprint(local),
            "family": type(components).__name__,
        }
    conditioner.save_context(tmp / CONTEXT_FILE)
    atomic_write_text(tmp / GENERATOR_FILE, json.dumps(record, indent=2) + "\n")
    old = folder.parent / f".{folder.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_generator_record(folder: str | Path) -> dict[str, Any] | None:
    """``generator.json`` of a generator folder, or ``None`` for a self-contained one."""
    path = Path(folder) / GENERATOR_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("format") != GENERATOR_FORMAT:
        raise DataError(f"not a {GENERATOR_FORMAT} record: {record.get('format')!r}", path=path)
    return record


def load_generator_folder(
    folder: str | Path, family: Any = Components, *, base: str | Path | None = None
) -> Components:
    """The generator of :func:`save_generator_folder`'s ``folder``, without its context
    vectors (load those with ``conditioner.load_context(folder / "context.safetensors")``).

    ``family``: the :class:`~trcgl.diffusion.components.Components` class that loads it;
    ``base``: where the base model is now, when not where ``generator.json`` says (e.g. the
    configuration's ``diffusion.source`` on another machine). Its fingerprint must match.
    """
    folder = Path(folder)
    record = read_generator_record(folder)
    if record is None or record.get("base") is None:
        return family.from_pretrained(str(folder))
    recorded = str(record["base"])
    candidates = [str(base)] if base is not None else []
    relative = folder / recorded
    candidates.append(
        str(relative) if not Path(recorded).is_absolute() and relative.is_dir() else recorded
    )
    where = next((c for c in candidates if base_folder(c) is not None), None)
    if where is None:
        raise DataError(
            f"the generator's base model {recorded!r} is not here (LoRA and frozen generators "
            "keep only C and the adapter, and load the base from where it was): put it back, "
            "or give its current folder or hub id as diffusion.source",
            path=folder / GENERATOR_FILE,
        )
    local = base_folder(where)
    assert local is not None
    found = fingerprint(local)
    if found != record["base_fingerprint"]:
        raise DataError(
            f"the base model at {str(local)!r} is not the one this generator was trained on "
            f"(fingerprint {found[:12]}… vs {record['base_fingerprint'][:12]}… recorded): its "
            "files changed; train the generator again, or give the original base as "
            "diffusion.source",
            path=folder / GENERATOR_FILE,
        )
    components = family.from_pretrained(where)
    if record["unet_mode"] == "lora":
        load_lora(components.unet, folder / LORA_FOLDER)
    return components
