"""Fixtures of the gateway's tests (helpers in gw_harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from gw_harness import Harness, harness


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with harness() as running:
        yield running
