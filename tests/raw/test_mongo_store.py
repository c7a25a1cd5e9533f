"""MongoDB store behaviour that needs no server: an unreachable server is a clear, one-line error.

The full contract runs against a real server in ``test_store_contract.py`` when ROSETTA_TEST_MONGO_URL is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_raw_import_on_an_unreachable_mongodb_is_one_line_and_exit_code_4(tmp_path: Path) -> None:
    path = tmp_path / "apps.ndjson"
    path.write_text('{"app_code": "A"}\n', encoding="utf-8")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    environment |= {
        "ROSETTA_RAW_STORE": "mongodb",
        "ROSETTA_MONGODB_URL": f"mongodb://127.0.0.1:{_closed_port()}/?serverSelectionTimeoutMS=300",
        "ROSETTA_DATA_DIR": str(tmp_path / "data"),
    }

    done = subprocess.run(
        [sys.executable, "-m", "rosetta", "raw", "import", str(path), "--source", "cmdb"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )

    assert done.returncode == 4
    assert done.stdout == ""
    assert done.stderr.startswith("rosetta: error: MongoDB is unavailable")
    assert done.stderr.count("\n") == 1
