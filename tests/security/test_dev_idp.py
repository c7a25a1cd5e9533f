"""``rosetta token`` + the app ``rosetta dev`` serves: a developer calls ``/me`` on each API with a dev token.

The app is served by uvicorn on a real loopback port, and fetches the development issuer's JWKS from itself
over HTTP, exactly as production fetches Entra's: no switch turns authentication off.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from realdb import REPO_ROOT
from rosetta.cli import build_app
from rosetta.core.security.dev_idp import DEV_ISSUER, key_file, load_or_create_key, mint_token
from rosetta.core.settings import Settings, get_settings


def rosetta(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ROSETTA_")}
    env["ROSETTA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "rosetta", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )


class LiveServer:
    """An ASGI app served by uvicorn in a thread on a free loopback port."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    def start(self, app: object) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dev app did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)


@pytest.fixture
def data_dir(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data directory for the dev key; the databases stay the session's."""
    monkeypatch.setenv("ROSETTA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    monkeypatch.delenv("ROSETTA_DATA_DIR")
    get_settings.cache_clear()


@pytest.fixture
def free_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_rosetta_token_then_me_on_each_api_of_the_dev_app(data_dir: Path, free_socket: socket.socket) -> None:
    minted = rosetta("token", "--group", "Rosetta_FinOps_Admin", "--user", "alice", "--ttl", "30m", data_dir=data_dir)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2
    assert key_file(data_dir).stat().st_mode & 0o077 == 0

    live = LiveServer(free_socket)
    live.start(build_app("all", dev=True, dev_url=live.url))
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            discovery = client.get("/_dev/idp/.well-known/openid-configuration").json()
            assert discovery["issuer"] == DEV_ISSUER
            assert client.get("/_dev/idp/jwks.json").json()["keys"][0]["kid"] == load_or_create_key(data_dir).kid
            for context in ("ref", "finops", "monitoring"):
                me = client.get(f"/api/{context}/v1/me", headers={"Authorization": f"Bearer {token}"})
                assert me.status_code == 200, me.text
                assert me.json()["subject"] == "alice"
                assert me.json()["roles"] == ["finops_admin"]
                anonymous = client.get(f"/api/{context}/v1/me")
                assert anonymous.status_code == 401
                assert anonymous.headers["www-authenticate"].startswith("Bearer ")
            # Same validation as production: an expired dev token is refused like any other.
            stale = mint_token(
                load_or_create_key(data_dir),
                user="alice",
                groups=["Rosetta_Admin"],
                ttl_seconds=60,
                now=time.time() - 3600,
            )
            expired = client.get("/api/ref/v1/me", headers={"Authorization": f"Bearer {stale}"})
            assert expired.status_code == 401
            assert "expired" in expired.json()["detail"]
            admin = rosetta("token", "-g", "Rosetta_Admin", "-g", "Rosetta_User", data_dir=data_dir).stdout.strip()
            assert client.get("/api/ref/v1/audit", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
            assert client.get("/api/ref/v1/audit", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    finally:
        live.stop()


def test_rosetta_serve_does_not_trust_the_dev_issuer(data_dir: Path, free_socket: socket.socket) -> None:
    token = mint_token(load_or_create_key(data_dir), user="alice", groups=["Rosetta_Admin"], ttl_seconds=600)
    live = LiveServer(free_socket)
    live.start(build_app("all"))
    try:
        response = httpx.get(f"{live.url}/api/ref/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 401
        assert "untrusted issuer" in response.json()["detail"]
        assert httpx.get(f"{live.url}/_dev/idp/jwks.json", timeout=10).status_code == 404
    finally:
        live.stop()


def test_rosetta_token_refuses_a_bad_ttl_in_one_line(tmp_path: Path) -> None:
    result = rosetta("token", "--group", "Rosetta_User", "--ttl", "forever", data_dir=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip().startswith("rosetta: error: --ttl")
    assert result.stderr.count("\n") == 1


def test_token_and_server_share_one_key_whoever_creates_it_first(tmp_path: Path) -> None:
    first = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path).kid == first.kid
    assert len(list(key_file(tmp_path).parent.iterdir())) == 1
