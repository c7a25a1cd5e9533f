"""Cost of security per request: token validation, and audit rows appended to the hash chain.

    .venv/bin/python bench/security.py [--tokens 2000] [--rows 2000] [--writers 1 8]

1. Token validation: ``TokenValidator.authenticate`` on distinct valid tokens (RS256 from a development
   issuer, ES256 from a second one), keys fetched once over HTTP from a JWKS server on 127.0.0.1 and then
   cached, as in a running API. Prints validations per second and the mean time per token.
2. Audit appends: ``record_audit`` in its own committed transaction per row (the worst case: one audited
   change per request) on a freshly migrated embedded PostgreSQL, with 1 then N concurrent writers (they
   queue on the chain's advisory lock). Prints rows per second, then checks the chain with
   ``verify_chain`` and prints how fast verification reads it back.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import text
from sqlalchemy.engine import URL

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rosetta.core import migrations  # noqa: E402
from rosetta.core.audit import record_audit, verify_chain  # noqa: E402
from rosetta.core.db import Databases, create_missing_databases  # noqa: E402
from rosetta.core.security.tokens import TokenValidator  # noqa: E402
from rosetta.core.settings import IssuerSettings, Settings  # noqa: E402


def keys() -> tuple[RSAKey, ECKey]:
    rsa = RSAKey.generate_key(2048, private=True, auto_kid=True)
    ec = ECKey.generate_key("P-256", private=True, auto_kid=True)
    return rsa, ec


def serve_jwks(documents: dict[str, Any]) -> tuple[str, uvicorn.Server]:
    """A JWKS server on a free loopback port (path -> JSON document)."""
    import json  # noqa: PLC0415

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = json.dumps(documents.get(scope["path"], {})).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


async def bench_tokens(count: int) -> None:
    rsa, ec = keys()
    base, server = serve_jwks(
        {
            "/rsa": {"keys": [{**rsa.as_dict(private=False), "kid": rsa.kid}]},
            "/ec": {"keys": [{**ec.as_dict(private=False), "kid": ec.kid}]},
        }
    )
    issuers = [
        IssuerSettings(name="rs", issuer="https://rs.example", audiences=["api"], jwks_url=f"{base}/rsa"),
        IssuerSettings(
            name="es", issuer="https://es.example", audiences=["api"], jwks_url=f"{base}/ec", algorithms=["ES256"]
        ),
    ]
    try:
        async with httpx.AsyncClient() as client:
            validator = TokenValidator.from_settings(Settings(oidc_issuers=issuers), client)
            for name, key, alg, issuer in (
                ("RS256", rsa, "RS256", "https://rs.example"),
                ("ES256", ec, "ES256", "https://es.example"),
            ):
                now = int(time.time())
                tokens = [
                    jwt.encode(
                        {"alg": alg, "kid": key.kid},
                        {
                            "iss": issuer,
                            "aud": "api",
                            "sub": f"user-{index}",
                            "iat": now,
                            "exp": now + 600,
                            "groups": ["Rosetta_User"],
                        },
                        key,
                        algorithms=[alg],
                    )
                    for index in range(count)
                ]
                await validator.authenticate(tokens[0])  # fetch and cache the keys first
                started = time.perf_counter()
                for token in tokens:
                    await validator.authenticate(token)
                elapsed = time.perf_counter() - started
                rate = count / elapsed
                print(f"token validation {name}: {rate:,.0f} tokens/s, {elapsed / count * 1e6:,.0f} µs per token")
    finally:
        server.should_exit = True


async def bench_audit(rows: int, writer_counts: list[int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415

        tmp = Path(tempfile.mkdtemp(prefix="rosetta-bench-"))
        pg = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
    try:
        url = URL.create(
            "postgresql+asyncpg", username="postgres", database="bench_finops", query={"host": str(tmp / "pg")}
        )
        await create_missing_databases({"finops": url})
        await asyncio.to_thread(migrations.upgrade, "finops", url)
        databases = Databases.open(Settings(finops_database_url=url), ["finops"], process="bench", urls={"finops": url})
        try:
            # Baseline: the same committed insert into a copy of the table without triggers (no lock, no hash).
            async with databases.unit_of_work("finops") as session:
                await session.execute(text("CREATE TABLE audit_plain (LIKE audit_log INCLUDING DEFAULTS)"))
            started = time.perf_counter()
            for row in range(rows):
                async with databases.unit_of_work("finops") as session:
                    await session.execute(
                        text(
                            "INSERT INTO audit_plain (seq, actor_subject, actor_roles, action, entity_type, entity_id,"
                            " before, after, request_id, prev_hash, row_hash) VALUES (:seq, 'writer-0',"
                            """ '["finops_admin"]', 'budget.update', 'budget', :entity, '{"amount": "100.00"}',"""
                            """ '{"amount": "125.50"}', :request, '', '')"""
                        ),
                        {"seq": row + 1, "entity": f"b-{row}", "request": f"req-{row}"},
                    )
            elapsed = time.perf_counter() - started
            per_row = elapsed / rows * 1e3
            print(f"baseline plain insert, 1 writer: {rows / elapsed:,.0f} rows/s ({per_row:.2f} ms per committed row)")
            total = 0
            for writers in writer_counts:

                async def writer(index: int, per_writer: int) -> None:
                    for row in range(per_writer):
                        async with databases.unit_of_work("finops") as session:
                            await record_audit(
                                session,
                                actor_subject=f"writer-{index}",
                                actor_roles=["finops_admin"],
                                action="budget.update",
                                entity_type="budget",
                                entity_id=f"b-{row}",
                                before={"amount": Decimal("100.00"), "lines": 12},
                                after={"amount": Decimal("125.50"), "lines": 12},
                                request_id=f"req-{index}-{row}",
                            )

                per_writer = rows // writers
                started = time.perf_counter()
                await asyncio.gather(*(writer(index, per_writer) for index in range(writers)))
                elapsed = time.perf_counter() - started
                total += per_writer * writers
                print(
                    f"audit append, {writers} concurrent writer(s): {per_writer * writers / elapsed:,.0f} rows/s "
                    f"({elapsed / (per_writer * writers) * 1e3:.2f} ms per committed row)"
                )
            async with databases.engines["finops"].connect() as connection:
                started = time.perf_counter()
                report = await verify_chain(connection)
                elapsed = time.perf_counter() - started
            assert report.intact, report
            assert report.rows == total, report
            print(
                f"audit verify: {report.rows:,} rows in {elapsed:.2f} s = {report.rows / elapsed:,.0f} rows/s, intact"
            )
        finally:
            await databases.dispose()
    finally:
        pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    asyncio.run(bench_tokens(args.tokens))
    asyncio.run(bench_audit(args.rows, args.writers))


if __name__ == "__main__":
    main()
