"""Generator families: ``diffusion.generator`` → the class that loads, trains and samples it.

A family is a :class:`~trcgl.diffusion.components.Components` subclass: its
``from_pretrained`` loads ``diffusion.source`` (``None``: the tiny CPU generator, where it has
one), and its ``predict_noise`` / ``encode`` / ``decode`` are all that training (Eq. 3) and
sampling (Eq. 4–6) call. Entries are ``"module:Class"`` paths, imported when a run uses them,
so that checking a configuration does not import diffusers. Adding a family is its class and
one ``GENERATORS.add`` line here.
"""

from __future__ import annotations

import importlib
from typing import Any

from trcgl.errors import ConfigError
from trcgl.registry import GENERATORS

__all__ = ["generator_family"]

GENERATORS.add("stable_diffusion", "trcgl.diffusion.components:Components")


def generator_family(name: str) -> Any:
    """The class registered as ``name`` (a :class:`~trcgl.diffusion.components.Components`
    subclass), imported now."""
    path = GENERATORS.get(name)
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"diffusion.generator {name!r}: cannot import {path} ({err})") from err
