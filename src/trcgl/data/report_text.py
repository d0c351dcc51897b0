"""Radiology report text as sentences (the ``report`` manifest column, report prompts).

A report is split after every ``.``, ``!`` or ``?`` that a space follows (``3.5 cm`` and
``hilar/perihilar`` stay whole); whitespace inside a sentence is collapsed, and a piece without
a letter (the ``1.`` of a numbered impression, a lone ``.``) is no sentence.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
_LETTER = re.compile(r"[^\W\d_]")


def split_sentences(text: str | None) -> list[str]:
    """The sentences of ``text`` in order (module docstring); ``[]`` for ``None`` or blank."""
    if not isinstance(text, str):
        return []
    pieces = (" ".join(piece.split()) for piece in _BOUNDARY.split(text.strip()))
    return [piece for piece in pieces if _LETTER.search(piece)]
