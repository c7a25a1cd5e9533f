"""MongoDB store behaviour that needs no server: an unreachable server is a clear, one-line error.

The full contract runs against a real server in ``test_store_contract.py`` when ROSETTA_TEST_MONGO_URL is set.
"""

from __future__ import annotations

import socket

import pytest

from rosetta.core.errors import ServiceUnavailableError
from rosetta.raw.mongo import MongoRawStore


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_mongodb_is_a_service_unavailable_error() -> None:
    store = MongoRawStore(
        f"mongodb://127.0.0.1:{_closed_port()}/?connectTimeoutMS=200", "rosetta_raw", server_selection_timeout_ms=300
    )
    try:
        with pytest.raises(ServiceUnavailableError, match="MongoDB is unavailable"):
            await store.begin_import(source="cmdb", kind="cost")
        with pytest.raises(ServiceUnavailableError, match="MongoDB is unavailable"):
            _ = [document async for document in store.stream(source="cmdb")]
    finally:
        await store.close()
