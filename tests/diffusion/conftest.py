"""Diffusion tests run on one torch thread: the tiny models are faster so on 2 cores."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
