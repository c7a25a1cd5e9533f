"""Landing the demo world in a real raw store (PostgreSQL), the CLI command, and the first start of `rosetta dev`."""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from realdb import settings_for
from rosetta import cli
from rosetta.core.settings import DatabaseRole, get_settings
from rosetta.demo import finops
from rosetta.demo.landing import FINOPS_DOCUMENTS, demo_world_landed, generate_demo, land_world, load_on_first_start
from rosetta.demo.world import WorldSize, build_world
from rosetta.raw.store import RawStore, open_raw_store

MakeUrls = Callable[[], dict[DatabaseRole, URL]]


async def _fresh_store(make: MakeUrls) -> RawStore:
    urls = await asyncio.to_thread(make)
    return open_raw_store(settings_for(urls), process="test.demo")


async def _landed_hashes(store: RawStore) -> dict[str, list[str]]:
    """Sorted content hashes per source/kind: the raw content, independent of landing times and import ids."""
    hashes: dict[str, list[str]] = defaultdict(list)
    async for document in store.stream(batch_size=5000):
        hashes[f"{document.source}/{document.kind}"].append(document.content_hash)
    return {key: sorted(values) for key, values in sorted(hashes.items())}


async def test_same_seed_lands_identical_raw_content_in_two_databases(fresh_database_urls: MakeUrls) -> None:
    digests = []
    for _ in range(2):
        store = await _fresh_store(fresh_database_urls)
        try:
            results = await land_world(store, build_world(WorldSize.SMALL, seed=1))
            hashes = await _landed_hashes(store)
        finally:
            await store.close()
        assert [(r.source, r.kind) for r in results] == [(source, kind) for source, kind, _ in FINOPS_DOCUMENTS]
        assert {f"{r.source}/{r.kind}": r.landed for r in results} == {key: len(v) for key, v in hashes.items()}
        assert all(r.duplicates == 0 and r.read == r.landed for r in results)
        digests.append(hashlib.sha256(repr(hashes).encode()).hexdigest())
    assert digests[0] == digests[1]


async def test_landed_totals_match_the_model_and_a_rerun_lands_nothing(fresh_database_urls: MakeUrls) -> None:
    world = build_world(WorldSize.SMALL, seed=3)
    store = await _fresh_store(fresh_database_urls)
    try:
        assert await demo_world_landed(store) is None
        await land_world(store, world)
        assert await demo_world_landed(store) == world.origin
        # Totals recomputed from the model's own daily quantities and unit prices, not from the documents.
        expected: dict[str, Decimal] = defaultdict(Decimal)
        for app in world.applications:
            for environment in app.environments:
                for category in app.services[environment]:
                    price = Decimal(finops.OFFERS[app.provider][category].price_micro) / 1_000_000
                    for _, quantity in finops.daily_quantities(world, app, environment, category):
                        cost = (Decimal(quantity) / 100 * price).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
                        expected[app.provider] += cost
        landed: dict[str, Decimal] = defaultdict(Decimal)
        codes = {app.code for app in world.applications}
        async for document in store.stream(source="cmdb", kind="cost", batch_size=5000):
            assert document.payload["app_code"] in codes
            landed["onprem"] += Decimal(document.payload["billed_cost"])
        for provider in ("aws", "azure"):
            async for document in store.stream(source=provider, kind="focus", batch_size=5000):
                landed[provider] += Decimal(document.payload["BilledCost"])
        assert landed == expected
        assert all(total > 0 for total in landed.values())

        again = await land_world(store, world)
        assert sum(r.landed for r in again) == 0
        assert all(r.duplicates == r.read for r in again)
    finally:
        await store.close()


async def test_dev_first_start_loads_once(fresh_database_urls: MakeUrls, tmp_path: Path) -> None:
    store = await _fresh_store(fresh_database_urls)
    lines: list[str] = []
    try:
        await load_on_first_start(store, tmp_path / "simulators", lines.append)
        assert lines[0].startswith("first start: loading the demo world (demo-world size=small seed=1 end=2026-10)")
        assert any(line.startswith("cmdb/cost: read ") for line in lines)
        assert lines[-1].startswith("simulator dataset: 15 files")
        assert (tmp_path / "simulators" / "servicenow" / "incident.json").is_file()
        imports = await store.list_imports(limit=1000)

        lines.clear()
        await load_on_first_start(store, tmp_path / "simulators", lines.append)
        assert lines == ["demo world already loaded (demo-world size=small seed=1 end=2026-10)"]
        assert len(await store.list_imports(limit=1000)) == len(imports)
    finally:
        await store.close()


async def test_generate_without_store_only_writes_the_dataset(tmp_path: Path) -> None:
    lines: list[str] = []
    landed = await generate_demo(None, build_world(WorldSize.SMALL, seed=1), tmp_path, echo=lines.append)
    assert landed == []
    assert len(lines) == 1
    assert (tmp_path / "manifest.json").is_file()


def test_cli_generate_without_landing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["demo", "generate", "--size", "small", "--seed", "5", "--no-land", "--out", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("demo-world size=small seed=5 end=2026-10: 40 applications, 16 products\n")
    assert "simulator dataset: 15 files" in out
    assert (tmp_path / "dynatrace" / "metrics" / "builtin:service.response.time.json").is_file()


def test_cli_refuses_a_bad_end_month_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["demo", "generate", "--end", "2026-13", "--no-land", "--out", str(tmp_path)])
    assert done.value.code != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--end must be a month YYYY-MM" in error
    assert not any(tmp_path.iterdir())


def test_cli_lands_into_the_configured_raw_store(
    fresh_database_urls: MakeUrls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = fresh_database_urls()
    for role, url in urls.items():
        monkeypatch.setenv(f"ROSETTA_{role.upper()}_DATABASE_URL", url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as done:
            cli.main(["demo", "generate", "--seed", "11", "--granularity", "month", "--out", str(tmp_path)])
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "cmdb/application: read 4" in out
    assert "finance/budget: read " in out
    assert out.rstrip().splitlines()[-1].startswith("done in ")

    async def count() -> int:
        store = open_raw_store(settings_for(urls))
        try:
            return sum(1 for summary in await store.list_imports(limit=100) if summary.status == "completed")
        finally:
            await store.close()

    assert asyncio.run(count()) == len(FINOPS_DOCUMENTS)
