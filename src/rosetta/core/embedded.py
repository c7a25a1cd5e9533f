"""The embedded PostgreSQL used when no database URL is configured (development, tests, demos).

pgserver runs a real PostgreSQL 16 from a wheel, listening on a Unix socket inside the data directory.
Several Rosetta processes (``rosetta dev`` and a ``rosetta batch finops`` beside it) share one server:
pgserver keeps a list of the processes using a data directory and stops the server when the last one leaves.
"""

from __future__ import annotations

import atexit
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from rosetta.core.errors import ServiceUnavailableError

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_servers: dict[Path, Any] = {}


def embedded_server_url(data_dir: Path) -> URL:
    """Start (or join) the embedded server for ``data_dir`` and return its URL on the ``postgres`` database."""
    pgdata = (data_dir / "pg").resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); it is harmless here.
                warnings.simplefilter("ignore")
                import pgserver  # noqa: PLC0415 - heavy import, only when the embedded server is wanted

                try:
                    server = pgserver.get_server(pgdata, cleanup_mode="stop")
                except Exception as error:
                    raise ServiceUnavailableError(
                        f"could not start the embedded PostgreSQL in {pgdata}: {error}"
                    ) from error
            _servers[pgdata] = server
            _forget_dead_processes(server)
            # atexit runs last-registered first: this prunes before pgserver's own exit hook decides
            # whether this process is the last holder (and so must stop the server).
            atexit.register(_forget_dead_processes, server)
            logger.info("embedded PostgreSQL ready", extra={"pgdata": str(pgdata)})
    return URL.create("postgresql+asyncpg", username="postgres", database="postgres", query={"host": str(pgdata)})


def _forget_dead_processes(server: Any) -> None:
    """Drop the processes that died without leaving (SIGKILL, OOM) from pgserver's list of holders.

    pgserver stops the server only when the last registered process leaves; a killed ``rosetta batch``
    never leaves, and would keep the server running after ``rosetta dev`` exits.
    """
    import psutil  # noqa: PLC0415 - a pgserver dependency, only needed here

    with server._lock:  # pgserver's inter-process lock on the holder list
        holders = server.global_process_id_list.get()
        alive = [pid for pid in holders if psutil.pid_exists(pid)]
        if alive != holders:
            server.global_process_id_list.put(alive)


def stop_embedded_servers() -> None:
    """Release this process's hold on every embedded server; the last holder stops it."""
    with _lock:
        for server in _servers.values():
            _forget_dead_processes(server)
            server.cleanup()
        _servers.clear()
