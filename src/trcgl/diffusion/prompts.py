"""Prompts p_n for the prompt-latent diffusion generator (docs/method.md §1, input of Eq. 1).

A prompt is built from a *whole label set* of a real image (so that a synthetic image keeps a
realistic co-occurrence), the projection, and — for PadChest — the English localisations of
the radiology report (``LabelsLocalizationsBySentence``)::

    chest x-ray, PA view: pneumothorax, left apical
    chest x-ray, AP view: effusion, mass
    chest x-ray, supine AP view: pleural effusion, pleural right, support devices
    chest x-ray, PA view: no finding

Format: ``"chest x-ray, <view phrase>: <item>, <item>, ..."``; an item is the lower-cased class
name (underscores become spaces), followed by ``", <locations>"`` when the report localises it
(locations joined by spaces, e.g. ``"left apical"``). Labels keep the order they are given in
(class order for :func:`prompts_for_manifest`). Without a known view the header is
``"chest x-ray: ..."``; without any label the body is ``"no finding"`` (NIH's ``No Finding``
class is the empty label set too).

Localisations (PadChest). ``LabelsLocalizationsBySentence`` is a Python-list string, usually a
list of sentences, each a list of findings and ``"loc ..."`` entries, e.g.
``"[['pleural effusion', 'loc pleural', 'loc right'], ['normal']]"``. The locations of a label
are found like this (simple on purpose):

1. Each sentence is one group (findings + locations). Some rows are a flat list of strings (a
   flattened report); there each run of findings followed by its run of ``loc`` entries is one
   group. Empty lists and ``nan`` entries are skipped.
2. A finding relates to a label when the finding mapping (raw finding → CXR-LT classes,
   :func:`trcgl.data.vocab.load_mapping`; PadChest's shipped table by default) maps it to that
   class, or — for findings the mapping does not know — when its text equals the label. Side
   suffixes are normalised first: ``"pleural effusion both sides"`` is ``"pleural effusion"``
   plus the location ``"bilateral"`` (``left side`` → ``left``, ``right side`` → ``right``).
3. The label's locations are the ``loc`` entries (without the ``loc`` prefix) of every group
   that has a related finding, plus the side of that finding, deduplicated, in report order.
   ``normal``, ``unchanged`` and ``exclude`` never carry locations.

An unparseable localisation string falls back to the labels alone (never an error). Prompts
must fit the CLIP tokenizer's 77 positions (start and end tokens included): see
:func:`shorten_prompt`, which drops locations first (last item first) and then trailing labels.

Report prompts (``diffusion.prompt_source: report``). Where an image has report text, the
prompt is the label prompt without its locations, a full stop, then the report's sentences in
report order::

    chest x-ray, PA view: atelectasis, cardiomegaly. Enlarged cardiomediastinal silhouette. Low
    lung volumes. ...

The report is the manifest's ``report`` column (OpenI's findings and impression,
:mod:`trcgl.data.readers.openi`) or, for PadChest, its English ``LabelsLocalizationsBySentence``
with each sentence group rendered as a sentence, findings then locations as in a label item
(``"Pleural effusion, pleural right."``, ``"Normal."``; :func:`localisation_sentences`). To fit
the 77 tokens (:func:`report_prompt`), whole sentences are dropped from the end; when not even
the first fits, its trailing words are; the header and label words come first and are never
dropped for the report (only labels too many for 77 tokens on their own are shortened as
:func:`shorten_prompt` does). A row without report text gets its label prompt, byte for byte.

Decision: negated and normal sentences (``"No pneumothorax."``, ``"Heart size is normal."``)
are kept as written. The generator is conditioned on the report the image was read with, as
chest X-ray text-to-image models are trained (RoentGen on MIMIC-CXR impressions, negations
included); pruning them would need a negation detector whose mistakes would drop findings, and a
report is mostly statements of absence, so the prompts of normal images would lose most of what
they say. The positive findings are stated once more, unambiguously, by the label words in
front, which are what the synthetic image is labelled with.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trcgl.data.manifest import Manifest
from trcgl.data.report_text import split_sentences
from trcgl.data.vocab import FindingMapping, load_mapping
from trcgl.errors import ConfigError

log = logging.getLogger(__name__)

#: Prompt styles (each data format names one as its ``prompt_style``): ``padchest`` relates
#: report localisations to labels through the finding mapping; the others use labels and view.
DATASETS: tuple[str, ...] = ("padchest", "nih", "cxrlt", "plain")
#: Where a prompt's words come from (``diffusion.prompt_source``): the labels (with PadChest's
#: locations), or the report's sentences behind the label words.
PROMPT_SOURCES: tuple[str, ...] = ("labels", "report")
#: The CLIP text encoder's sequence length L (Eq. 1), start and end tokens included.
CLIP_MAX_LENGTH = 77
HEADER = "chest x-ray"
NO_FINDING = "no finding"

#: Projection (PadChest ``Projection``, NIH ``View Position``; upper-cased) → phrase.
VIEW_PHRASES: dict[str, str] = {
    "PA": "PA view",
    "AP": "AP view",
    "AP_HORIZONTAL": "supine AP view",
    "L": "lateral view",
    "LL": "lateral view",
    "LATERAL": "lateral view",
}

#: Findings that never carry locations (report bookkeeping, not a localisable finding).
UNLOCALISED_FINDINGS: frozenset[str] = frozenset({"normal", "unchanged", "exclude"})

#: Side suffixes of PadChest finding texts → the location they stand for (longest first).
_SIDE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (" both sides", "bilateral"),
    (" both side", "bilateral"),
    (" right side", "right"),
    (" left side", "left"),
    (" bilateral", "bilateral"),
)
_LOC_PREFIX = "loc "
_BARE_NAN = re.compile(r"(?<![\w'\"])nan(?![\w'\"])")

#: One group of a report: (findings, locations), both stripped, ``loc`` prefix removed.
Group = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class PromptParts:
    """A prompt before formatting: the view phrase and the (label, locations) items."""

    view: str | None
    items: tuple[tuple[str, tuple[str, ...]], ...]

    def text(self) -> str:
        """The prompt string (format in the module docstring)."""
        head = HEADER if self.view is None else f"{HEADER}, {self.view}"
        body = ", ".join(
            f"{label}, {' '.join(locs)}" if locs else label for label, locs in self.items
        )
        return f"{head}: {body or NO_FINDING}"

    def without_locations(self) -> PromptParts:
        return replace(self, items=tuple((label, ()) for label, _ in self.items))


def _check_dataset(dataset: str) -> str:
    name = dataset.lower()
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} for prompts; known: {', '.join(DATASETS)}")
    return name


def view_phrase(view: str | None) -> str | None:
    """``"PA"`` → ``"PA view"``, ``"AP_horizontal"`` → ``"supine AP view"``, ``"L"`` →
    ``"lateral view"``; unknown or missing views (``COSTAL``, ``UNK``, ``""``) → ``None``."""
    if not isinstance(view, str):
        return None
    return VIEW_PHRASES.get(view.strip().upper())


def label_text(name: str) -> str:
    """A class name as it appears in a prompt: lower case, ``_`` → space, trimmed."""
    return " ".join(name.replace("_", " ").lower().split())


@functools.cache
def _default_mapping() -> FindingMapping:
    return load_mapping()


def _tagged(entries: Iterable[Any]) -> Iterator[tuple[bool, str]]:
    """Non-empty string entries as (is_location, text without the ``loc`` prefix)."""
    for entry in entries:
        if isinstance(entry, str) and entry.strip():
            text = entry.strip()
            if text.startswith(_LOC_PREFIX):
                yield True, text[len(_LOC_PREFIX) :].strip()
            else:
                yield False, text


def _split_runs(entries: Iterable[Any]) -> list[Group]:
    """Flat entries → groups: each run of findings followed by its run of locations."""
    groups: list[Group] = []
    findings: list[str] = []
    locs: list[str] = []
    for is_loc, text in _tagged(entries):
        if is_loc:
            locs.append(text)
        else:
            if locs:
                groups.append((tuple(findings), tuple(locs)))
                findings, locs = [], []
            findings.append(text)
    if findings or locs:
        groups.append((tuple(findings), tuple(locs)))
    return groups


def _sentence(entries: Iterable[Any]) -> Group:
    """One sentence (a nested list) → one group of all its findings and locations."""
    tagged = list(_tagged(entries))
    return (
        tuple(t for is_loc, t in tagged if not is_loc),
        tuple(t for is_loc, t in tagged if is_loc),
    )


@functools.lru_cache(maxsize=65536)
def parse_localizations(text: str | None) -> tuple[Group, ...] | None:
    """Parse a ``LabelsLocalizationsBySentence`` string into (findings, locations) groups.

    ``()`` for an empty value (``""``, ``"nan"``, ``"[]"``), ``None`` when the string cannot be
    parsed (the caller then uses the labels alone). Bare ``nan`` entries (8 rows of the real
    CSV, e.g. ``"[nan, ['vascular hilar enlargement', 'loc hilar']]"``) are skipped.
    """
    if not isinstance(text, str):
        return ()
    text = text.strip()
    if text.lower() in ("", "nan", "none", "[]"):
        return ()
    value: Any
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            value = ast.literal_eval(_BARE_NAN.sub("None", text))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        return None
    groups: list[Group] = []
    run: list[str] = []
    for element in value:
        if isinstance(element, str):
            run.append(element)
            continue
        groups.extend(_split_runs(run))
        run = []
        if isinstance(element, list | tuple):
            group = _sentence(element)
            if group[0] or group[1]:
                groups.append(group)
    groups.extend(_split_runs(run))
    return tuple(groups)


def _normalise_finding(finding: str) -> tuple[str, str | None]:
    """``"pleural effusion left side"`` → (``"pleural effusion"``, ``"left"``)."""
    text = " ".join(finding.split())
    lowered = text.lower()
    for suffix, side in _SIDE_SUFFIXES:
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return text[: -len(suffix)], side
    return text, None


def _finding_labels(finding: str, mapping: FindingMapping | None) -> tuple[set[str], str | None]:
    """The (prompt-text) labels a finding relates to, and the side its text names."""
    base, side = _normalise_finding(finding)
    targets = None
    if mapping is not None:
        targets = mapping.classes_of(finding)
        if targets is None:
            targets = mapping.classes_of(base)
    if targets is None:  # unknown to the mapping (or no mapping): the finding text itself
        return {label_text(base)}, side
    return {label_text(c) for c in targets}, side


def label_locations(
    label: str, groups: Sequence[Group], mapping: FindingMapping | None = None
) -> tuple[str, ...]:
    """Locations of ``label`` (prompt text, lower case) in parsed report ``groups``.

    The rule is in the module docstring: every group with a finding related to the label
    contributes its locations (and the finding's side), deduplicated, in report order.
    """
    out: list[str] = []
    for findings, locs in groups:
        related = False
        sides: list[str] = []
        for finding in findings:
            if finding.lower() in UNLOCALISED_FINDINGS:
                continue
            labels, side = _finding_labels(finding, mapping)
            if label in labels:
                related = True
                if side is not None:
                    sides.append(side)
        if related:
            for loc in (*locs, *sides):
                if loc and loc not in out:
                    out.append(loc)
    return tuple(out)


def prompt_parts(
    labels: Sequence[str],
    view: str | None = None,
    localizations: str | None = None,
    dataset: str = "padchest",
    mapping: FindingMapping | None = None,
) -> PromptParts:
    """The structured prompt of one image (see :func:`build_prompt`)."""
    name = _check_dataset(dataset)
    if mapping is None and name == "padchest" and localizations:
        mapping = _default_mapping()
    texts: list[str] = []
    for label in labels:
        text = label_text(label)
        if text and text != NO_FINDING and text not in texts:
            texts.append(text)
    groups = parse_localizations(localizations) if localizations else ()
    if groups is None:
        log.debug("unparseable localisations %r: labels only", localizations)
        groups = ()
    items = tuple((t, label_locations(t, groups, mapping) if groups else ()) for t in texts)
    return PromptParts(view_phrase(view), items)


def build_prompt(
    labels: Sequence[str],
    view: str | None = None,
    localizations: str | None = None,
    dataset: str = "padchest",
    *,
    mapping: FindingMapping | None = None,
    tokenizer: Any = None,
    max_length: int = CLIP_MAX_LENGTH,
    keep: Collection[str] = (),
) -> str:
    """English prompt p_n (Eq. 1's input) for one image, e.g.
    ``"chest x-ray, PA view: pneumothorax, left apical"``.

    Args:
        labels: the image's positive class names (any case; ``No Finding`` counts as none).
        view: the projection (``PA``, ``AP``, ``AP_horizontal``, ``L``; NIH ``PA``/``AP``).
        localizations: PadChest's raw ``LabelsLocalizationsBySentence`` string, or ``None``.
        dataset: one of :data:`DATASETS`; for ``padchest`` the shipped finding mapping is the
            default ``mapping``.
        mapping: raw finding → classes (:class:`~trcgl.data.vocab.FindingMapping`) used to
            relate report findings to labels.
        tokenizer: when given, the prompt is shortened to fit ``max_length`` tokens
            (:func:`shorten_prompt`); labels in ``keep`` are never dropped.
    """
    parts = prompt_parts(labels, view, localizations, dataset, mapping)
    if tokenizer is None:
        return parts.text()
    return shorten_prompt(parts, tokenizer, max_length, keep)


def token_lengths(prompts: Sequence[str], tokenizer: Any, batch_size: int = 1024) -> list[int]:
    """Number of tokens of each prompt, start and end tokens included (batched)."""
    out: list[int] = []
    prompts = list(prompts)
    for start in range(0, len(prompts), batch_size):
        encoded = tokenizer(prompts[start : start + batch_size], truncation=False, verbose=False)
        out.extend(len(ids) for ids in encoded["input_ids"])
    return out


def fits_tokenizer(prompt: str, tokenizer: Any, max_length: int = CLIP_MAX_LENGTH) -> bool:
    """Whether ``prompt`` tokenizes to at most ``max_length`` tokens (start/end included)."""
    return token_lengths([prompt], tokenizer)[0] <= max_length


def _candidates(parts: PromptParts, keep: Collection[str]) -> list[PromptParts]:
    """Ever shorter versions: locations dropped from the last item back, then trailing labels."""
    kept = {label_text(k) for k in keep}
    items = list(parts.items)
    out = [parts]
    for i in reversed(range(len(items))):
        if items[i][1]:
            items[i] = (items[i][0], ())
            out.append(replace(parts, items=tuple(items)))
    for i in reversed(range(len(items))):
        if len(items) > 1 and items[i][0] not in kept:
            del items[i]
            out.append(replace(parts, items=tuple(items)))
    return out


def shorten_prompt(
    parts: PromptParts,
    tokenizer: Any,
    max_length: int = CLIP_MAX_LENGTH,
    keep: Collection[str] = (),
) -> str:
    """The longest version of ``parts`` that fits in ``max_length`` tokens.

    Locations go first (last item first), then trailing labels; labels in ``keep`` (e.g. the
    tail class a synthetic image is made for) and the first remaining label are never dropped.
    If even that does not fit (not seen on real data), the shortest version is returned and the
    text encoder's tokenizer truncates it.
    """
    full = parts.text()
    if token_lengths([full], tokenizer)[0] <= max_length:
        return full
    texts = [c.text() for c in _candidates(parts, keep)[1:]]
    lengths = token_lengths(texts, tokenizer)
    for text, n in zip(texts, lengths, strict=True):
        if n <= max_length:
            return text
    log.warning("prompt does not fit %d tokens even shortened: %r", max_length, texts[-1])
    return texts[-1] if texts else full


def localisation_sentences(localizations: str | None) -> list[str]:
    """PadChest's ``LabelsLocalizationsBySentence`` as English sentences, one per group with a
    finding: its findings, then its locations, as a label item (``"[['pleural effusion', 'loc
    pleural', 'loc right'], ['normal']]"`` → ``["Pleural effusion, pleural right.",
    "Normal."]``); ``[]`` when empty or unparseable."""
    out = []
    for findings, locs in parse_localizations(localizations) or ():
        if findings:
            text = ", ".join(" ".join(f.split()) for f in findings)
            if locs:
                text += ", " + " ".join(locs)
            out.append(f"{text[:1].upper()}{text[1:]}.")
    return out


def report_sentences(report: str | None, localizations: str | None = None) -> list[str]:
    """The sentences a report prompt is made of: ``report``'s
    (:func:`~trcgl.data.report_text.split_sentences`), else those of PadChest's
    ``localizations`` (:func:`localisation_sentences`), else none."""
    return split_sentences(report) or localisation_sentences(localizations)


def _joined(head: str, words: Sequence[str]) -> str:
    return f"{head}. {' '.join(words)}" if words else head


def report_prompt(
    parts: PromptParts,
    sentences: Sequence[str],
    tokenizer: Any = None,
    max_length: int = CLIP_MAX_LENGTH,
    keep: Collection[str] = (),
) -> str:
    """The report prompt of one image: ``parts``' labels and view (without locations), then
    ``sentences`` (module docstring), e.g. ``"chest x-ray, PA view: cardiomegaly. The heart is
    enlarged."``. With a ``tokenizer`` it fits ``max_length`` tokens: the longest run of
    leading sentences that fits, or, if not even the first one does, the longest run of its
    leading words; the label words are never dropped for them. No ``sentences``: the label
    prompt (:func:`shorten_prompt` with a ``tokenizer``)."""
    if not sentences:
        return (
            parts.text()
            if tokenizer is None
            else shorten_prompt(parts, tokenizer, max_length, keep)
        )
    labels = parts.without_locations()
    head = labels.text()
    if tokenizer is None:
        return _joined(head, sentences)
    for pieces in (sentences, sentences[0].split()):
        candidates = [_joined(head, pieces[:k]) for k in range(len(pieces), 0, -1)]
        for text, n in zip(candidates, token_lengths(candidates, tokenizer), strict=True):
            if n <= max_length:
                return text
    return shorten_prompt(labels, tokenizer, max_length, keep)


def prompts_for_manifest(
    manifest: Manifest,
    dataset: str,
    *,
    source: str = "labels",
    mapping: FindingMapping | None = None,
    tokenizer: Any = None,
    max_length: int = CLIP_MAX_LENGTH,
    keep: Collection[str] = (),
) -> list[str]:
    """One prompt per manifest row, from its positive classes (class order), ``view`` and, when
    the manifest has it, ``localizations``. With a ``tokenizer`` every prompt is shortened to
    fit ``max_length`` tokens (tokenized in batches; only the prompts that are too long are
    shortened, never dropping the labels in ``keep``).

    ``source="report"``: a row with report text (``report``, or PadChest's ``localizations``)
    gets its report prompt (:func:`report_prompt`), any other row its label prompt."""
    name = _check_dataset(dataset)
    if source not in PROMPT_SOURCES:
        raise ConfigError(f"unknown prompt source {source!r}; known: {', '.join(PROMPT_SOURCES)}")
    if mapping is None and name == "padchest" and "localizations" in manifest.frame:
        mapping = _default_mapping()
    frame = manifest.frame
    y = manifest.labels().astype(bool)
    classes = np.asarray(manifest.classes, dtype=object)
    views = frame["view"].tolist()
    locs = frame["localizations"].tolist() if "localizations" in frame else [None] * len(frame)
    parts = [
        prompt_parts(list(classes[row]), view, loc, name, mapping)
        for row, view, loc in zip(y, views, locs, strict=True)
    ]
    texts = [p.text() for p in parts]
    sentences: list[list[str]] = [[] for _ in texts]
    if source == "report":
        reports = frame["report"].tolist() if "report" in frame else [None] * len(frame)
        sentences = [report_sentences(r, loc) for r, loc in zip(reports, locs, strict=True)]
        texts = [report_prompt(p, s) for p, s in zip(parts, sentences, strict=True)]
    if tokenizer is None:
        return texts
    for i, n in enumerate(token_lengths(texts, tokenizer)):
        if n > max_length:
            texts[i] = report_prompt(parts[i], sentences[i], tokenizer, max_length, keep)
    return texts
