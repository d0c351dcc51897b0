"""Registries: what a configuration chooses by name (data formats, architectures, losses,
generator families).

A :class:`Registry` maps a name to an entry and knows which configuration key chooses it
(``data.format``, ``model.architecture``, ``train.loss``, ``diffusion.generator``) and which
module registers the shipped entries. The registries are declared here, below the libraries,
so that the configuration can check a name (and a loss's options) before any work starts
without importing a library at import time: looking a name up imports the module that fills
the registry, the way a plugin system loads its entry points. A library module fills its
registry with the :meth:`Registry.register` decorator; adding a reader, an architecture or a
loss is its module and that decorator (a generator family: its class and one line in
:mod:`trcgl.diffusion.families`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from trcgl.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry, for the configuration key ``key``; ``module`` registers the shipped ones."""

    def __init__(self, key: str, module: str) -> None:
        self.key = key
        self.module = module
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under ``name``."""

        def wrap(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return wrap

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` (a value, not a decorated definition) under ``name``."""
        return self.register(name)(entry)

    def _loaded(self) -> dict[str, T]:
        importlib.import_module(self.module)
        return self._entries

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def get(self, name: str) -> T:
        """The entry named ``name``; an unknown name is a :class:`ConfigError` that names the
        configuration key, lists the registered names and suggests the closest."""
        entries = self._loaded()
        if name in entries:
            return entries[name]
        known = sorted(entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{self.key}: must be one of {known}, got {name!r}{hint}")


def keyword_options(
    func: Callable[..., Any], exclude: Iterable[str] = ()
) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``func`` (a class: its ``__init__``) that a user may set, minus
    ``exclude`` (the ones the library fills in itself, such as class counts)."""
    target = func.__init__ if inspect.isclass(func) else func  # type: ignore[misc]
    skip = {"self", *exclude}
    return {
        name: p
        for name, p in inspect.signature(target).parameters.items()
        if name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_option_names(key: str, options: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """An option name not in ``accepted`` is a :class:`ConfigError` naming ``key.<name>``,
    with "did you mean" and the accepted names."""
    accepted = sorted(accepted)
    for name in options:
        if name not in accepted:
            close = difflib.get_close_matches(str(name), accepted, n=1)
            hint = f"; did you mean {f'{key}.{close[0]}'!r}?" if close else ""
            raise ConfigError(
                f"unknown configuration key {f'{key}.{name}'!r}{hint} (known in {key}: "
                f"{', '.join(accepted) or 'none'})"
            )


#: ``data.format`` → :class:`~trcgl.data.readers.format.DataFormat` (a reader module each).
DATA_FORMATS: Registry[Any] = Registry("data.format", "trcgl.data.readers")
#: ``model.architecture`` → a :class:`~trcgl.models.base.Classifier` subclass.
ARCHITECTURES: Registry[Any] = Registry("model.architecture", "trcgl.models")
#: ``train.loss`` → a :class:`~trcgl.models.losses.MultiLabelLoss` subclass (or its builder).
LOSSES: Registry[Any] = Registry("train.loss", "trcgl.models.losses")
#: ``diffusion.generator`` → ``"module:Class"`` of a generator family (imported when used).
GENERATORS: Registry[Any] = Registry("diffusion.generator", "trcgl.diffusion.families")
