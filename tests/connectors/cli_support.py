"""Running the real ``rosetta`` command in a subprocess, against a simulator and the pull tests' raw database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping

from rosetta.core.settings import Settings
from rosetta.raw.store import RawStore


def cli_env(raw_settings: Settings, **systems: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: the raw database, and ``ROSETTA_<SYSTEM>__<FIELD>`` for each system given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    env["ROSETTA_ENV"] = "test"
    assert raw_settings.raw_database_url is not None
    env["ROSETTA_RAW_DATABASE_URL"] = raw_settings.raw_database_url.render_as_string(hide_password=False)
    for system, fields in systems.items():
        for name, value in fields.items():
            env[f"ROSETTA_{system.upper()}__{name.upper()}"] = value
    return env


async def rosetta(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m rosetta <args>`` off the event loop (the simulator answers from its own thread)."""
    command = [sys.executable, "-m", "rosetta", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=dict(env), capture_output=True, text=True, timeout=180, check=False
    )


async def landed_versions(store: RawStore, kind: str) -> Counter[tuple[str, str]]:
    """How many raw documents hold each (sys_id, sys_updated_on) of a ServiceNow table."""
    counts: Counter[tuple[str, str]] = Counter()
    async for document in store.stream(source="servicenow", kind=kind):
        counts[(document.payload["sys_id"], document.payload["sys_updated_on"])] += 1
    return counts
