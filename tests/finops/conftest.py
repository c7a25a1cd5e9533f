"""Fixtures of the finops-batch tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from batch_support import Mart, close_mart, open_mart
from sqlalchemy.engine import URL

from rosetta.core.settings import DatabaseRole


@pytest.fixture
async def mart(fresh_database_urls: Callable[[], dict[DatabaseRole, URL]]) -> AsyncIterator[Mart]:
    """A brand-new migrated database set with its raw store (see ``batch_support``)."""
    opened = await open_mart(fresh_database_urls)
    try:
        yield opened
    finally:
        await close_mart(opened)
