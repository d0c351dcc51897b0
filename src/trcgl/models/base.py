"""What every trcgl classifier shares: outputs, parameter groups, and the model folder.

A classifier maps a batch of images (B×3×H×W, normalised) to a dict with at least
``"logits"`` (B×C). It splits its parameters into a backbone group and a head group (the
two-stage trainer freezes the first during warm-up and gives the groups separate learning
rates), and it saves to / loads from a *model folder* in the Hugging Face convention:

* ``config.json``: ``architecture`` (a registered name), its keyword arguments, the class
  names and the trcgl version;
* ``model.safetensors``: the state dict (buffers such as the label graph included).

``load_model(folder)`` rebuilds the exact model for inference with no training data. Weights
are read with safetensors only, never by unpickling.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from trcgl.errors import ConfigError, DataError
from trcgl.files import atomic_path, atomic_write_text
from trcgl.registry import ARCHITECTURES

if TYPE_CHECKING:
    from trcgl.config import ModelConfig
    from trcgl.labels.graph import LabelGraph

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: What the model folder decided after training: per-class thresholds tuned on validation
#: (and on what), the frequency groups (:func:`save_decisions`).
DECISIONS_FILE = "decisions.json"
#: The model's measured metrics per evaluated split (:func:`save_evaluation`), for its card.
EVALUATION_FILE = "evaluation.json"


def register(name: str) -> Callable[[type[Classifier]], type[Classifier]]:
    """Class decorator: register an architecture under ``name`` (the ``model.architecture``
    value that builds it, and the name its model folders are loaded by)."""

    def wrap(cls: type[Classifier]) -> type[Classifier]:
        cls.architecture = name
        return ARCHITECTURES.register(name)(cls)

    return wrap


def architectures() -> list[str]:
    """The registered architectures (``trcgl.models`` imports every shipped one)."""
    return ARCHITECTURES.names()


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _recording_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a subclass's ``__init__`` so that the instance keeps its constructor arguments in
    ``init_kwargs`` (as diffusers' ``register_to_config`` does): the bound arguments with
    their defaults, less ``unsaved_arguments``, updated by what the constructor resolved
    itself (:meth:`Classifier.resolved`). The outermost constructor of a subclass chain wins."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Classifier, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(self, *args, **kwargs)
        params = signature.parameters
        recorded = {
            name: value
            for name, value in bound.arguments.items()
            if name != "self"
            and params[name].kind not in (params[name].VAR_POSITIONAL, params[name].VAR_KEYWORD)
            and name not in self.unsaved_arguments
        }
        recorded.update(
            {k: v for k, v in self.__dict__.get("_resolved_kwargs", {}).items() if k in recorded}
        )
        recorded = _json_value(recorded)
        try:
            json.dumps(recorded)
        except TypeError as exc:
            raise TypeError(
                f"{type(self).__name__}: constructor arguments must be JSON values to be saved "
                f"in {CONFIG_FILE} ({exc}); list the others in `unsaved_arguments` and give "
                "them back from `folder_kwargs`"
            ) from exc
        self.init_kwargs = recorded

    return wrapper


@dataclass(frozen=True)
class CamLayer:
    """Where Grad-CAM reads a backbone whose :meth:`Classifier.forward_features` is not a
    feature map: ``module``'s output is tokens (``prefix`` class / register tokens, then the
    ``grid`` h×w patch tokens; B×N×D, or N×B×D when not ``batch_first``) or, with ``prefix``
    ``None``, already a feature map B×D×h×w."""

    module: nn.Module
    prefix: int | None = None
    grid: tuple[int, int] | None = None
    batch_first: bool = True


class Classifier(nn.Module):
    """Base class. Subclasses take keyword constructor arguments (class names as ``classes``;
    they are recorded in ``init_kwargs`` and saved in ``config.json`` with no code of the
    subclass) and implement ``from_config``, ``forward_features``, ``forward_head``,
    ``backbone_parameters`` and ``display_name``."""

    architecture: ClassVar[str] = ""
    #: Constructor arguments not saved in config.json (given back by :meth:`folder_kwargs`).
    unsaved_arguments: ClassVar[tuple[str, ...]] = ()
    init_kwargs: dict[str, Any]
    #: How inputs were prepared in training (``image_size``, ``mean``, ``std``); saved in
    #: config.json so that ``predict`` / ``explain`` prepare new images the same way.
    preprocessing: dict[str, Any] | None = None
    #: ``decisions.json`` of the model folder it was loaded from (tuned thresholds), if any.
    decisions: dict[str, Any] | None = None
    #: ``evaluation.json`` of its model folder: the metrics measured on each split, if any.
    evaluation: dict[str, Any] | None = None
    #: What the model was trained from, saved in config.json: the training configuration, its
    #: digest, the training data's digest (:meth:`~trcgl.data.manifest.Manifest.digest`) and
    #: image counts; ``None`` for a model built in code.
    provenance: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__init__)  # type: ignore[method-assign]

    def resolved(self, **values: Any) -> None:
        """Record constructor arguments as the constructor resolved them (e.g. a ``None``
        normalisation read from the pretrained weights' configuration), so that the saved
        model is rebuilt with those values."""
        self.__dict__.setdefault("_resolved_kwargs", {}).update(values)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.init_kwargs["classes"])

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Input (mean, std) the model expects; ImageNet's unless a subclass says otherwise."""
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        classes: list[str],
        graph: LabelGraph | None,
        image_size: int | None,
    ) -> Classifier:
        """Build from the ``model`` config section, the class names, the training label graph
        and the training image size (for architectures with a fixed input size)."""
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Raise :class:`~trcgl.errors.ConfigError` for a value of the ``model`` section that
        this architecture reads and cannot take (called when a configuration is loaded, before
        any work); a subclass checks its own options."""

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's output for normalised images B×3×H×W: a feature map B×D×h×w (the
        image embedding B×D for towers that pool inside, such as CLIP's)."""
        raise NotImplementedError

    def forward_head(
        self, features: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        """The head on :meth:`forward_features`' output: ``{"logits": B×C}`` and, with
        ``return_attention``, the class attention maps where the head has them."""
        raise NotImplementedError

    @property
    def has_attention_maps(self) -> bool:
        """Whether ``forward(..., return_attention=True)`` gives class attention maps B×C×h×w
        (TRCGL-Net's a_c of Eq. 12, CSRA's)."""
        return False

    def cam_layer(self) -> CamLayer | None:
        """Where Grad-CAM reads this model (:mod:`trcgl.evaluation.localisation`): ``None``
        (the default) for :meth:`forward_features`' feature map; transformer backbones, whose
        class token pools the patches in the last block, name the last block's input."""
        return None

    def forward(
        self, images: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        """``forward_head(forward_features(images))`` (timm's split of a classifier)."""
        return self.forward_head(self.forward_features(images), return_attention)

    def display_name(self) -> str:
        """The method's name in result tables, e.g. ``TRCGL-Net (convnextv2_tiny)``."""
        raise NotImplementedError

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def head_parameters(self) -> Iterator[nn.Parameter]:
        backbone = {id(p) for p in self.backbone_parameters()}
        return (p for p in self.parameters() if id(p) not in backbone)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's activations in the backward pass instead of keeping them
        (less memory, about a third more compute; the gradients are the same). Every timm and
        open_clip backbone here supports it (``set_grad_checkpointing``)."""
        for module in self.modules():
            if module is not self and hasattr(module, "set_grad_checkpointing"):
                module.set_grad_checkpointing(enable)
                return
        raise ConfigError(f"{self.architecture}: its backbone has no gradient checkpointing")

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients to the backbone (warm-up stage)."""
        for p in self.backbone_parameters():
            p.requires_grad_(not frozen)

    # -- model folder -------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (atomically each)."""
        from trcgl import __version__

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"architecture": self.architecture})
        config = {
            "architecture": self.architecture,
            "trcgl_version": __version__,
            "kwargs": self.init_kwargs,
            "preprocessing": self.preprocessing,
            "provenance": self.provenance,
        }
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    @classmethod
    def folder_kwargs(cls, folder: Path) -> dict[str, Any]:
        """Constructor arguments kept in other files of the model folder (e.g. a label graph)."""
        return {}

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> Classifier:
        model = load_model(folder)
        if cls is not Classifier and not isinstance(model, cls):
            raise DataError(
                f"model folder holds a {model.architecture!r} model, not {cls.architecture!r}",
                path=folder,
            )
        return model


def read_model_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"not a model folder: no {CONFIG_FILE}", path=folder)
    config = json.loads(path.read_text())
    if config.get("architecture") not in ARCHITECTURES:
        raise DataError(
            f"unknown architecture {config.get('architecture')!r}; known: {architectures()}",
            path=path,
        )
    return config


def load_state(model: nn.Module, path: str | Path, what: str = "model") -> None:
    """Load a safetensors state dict strictly, with an error that says what does not fit."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise DataError(f"cannot read {what} weights: {exc}", path=path) from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {missing[:3]})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            detail.append(
                f"shape mismatch for {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
            )
        raise DataError(
            f"{what} weights do not fit this architecture: "
            + "; ".join(detail)
            + " — was the checkpoint made for another architecture or class list?",
            path=path,
        )
    model.load_state_dict(state, strict=True)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> Classifier:
    """Rebuild a classifier from a model folder written by ``save_pretrained``."""
    folder = Path(folder)
    config = read_model_config(folder)
    cls = ARCHITECTURES.get(config["architecture"])
    kwargs = dict(config["kwargs"])
    kwargs["pretrained"] = None  # weights come from the folder
    kwargs.update(cls.folder_kwargs(folder))
    model = cls(**kwargs)
    load_state(model, folder / WEIGHTS_FILE)
    model.preprocessing = config.get("preprocessing")
    model.provenance = config.get("provenance")
    decisions = folder / DECISIONS_FILE
    model.decisions = json.loads(decisions.read_text()) if decisions.is_file() else None
    evaluation = folder / EVALUATION_FILE
    model.evaluation = json.loads(evaluation.read_text()) if evaluation.is_file() else None
    return model.to(device).eval()


def save_decisions(
    folder: str | Path,
    classes: Sequence[str],
    thresholds: Sequence[float],
    tuned_on: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]] | None = None,
    temperature: float | None = None,
) -> Path:
    """Write ``decisions.json`` into a model folder (atomically): the per-class decision
    thresholds by class name, what they were tuned on (split, images, patients, the rule), the
    frequency groups and the calibration temperature T (p' = σ(logit p / T), fitted on the
    same split); :func:`load_model` gives them back as ``model.decisions``."""
    if len(classes) != len(thresholds):
        raise DataError(f"{len(thresholds)} thresholds for {len(classes)} classes", path=folder)
    path = Path(folder) / DECISIONS_FILE
    payload = {
        "thresholds": {str(c): float(t) for c, t in zip(classes, thresholds, strict=True)},
        "tuned_on": dict(tuned_on),
        "groups": {g: list(v) for g, v in (groups or {}).items()},
        "temperature": None if temperature is None else float(temperature),
    }
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def save_evaluation(folder: str | Path, split: str, measured: Mapping[str, Any]) -> Path:
    """Record the metrics measured on ``split`` in the model folder's ``evaluation.json``
    (atomically; the other splits' entries are kept), so that the folder, and its hub card,
    carry what the model scored and on what."""
    path = Path(folder) / EVALUATION_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    known[split] = dict(measured)
    atomic_write_text(path, json.dumps(known, indent=2) + "\n")
    return path
