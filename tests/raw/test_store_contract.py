"""The raw-store contract: every implementation (PostgreSQL always, MongoDB with ROSETTA_TEST_MONGO_URL) passes it.

Times use whole milliseconds, the precision both stores keep (BSON dates have no microseconds).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from rosetta.core.errors import BadRequestError, ConflictError, NotFoundError
from rosetta.raw.canonical import UnstorablePayloadError, canonical_json
from rosetta.raw.store import DocumentPage, RawDocument, RawStore, RejectedRecord, S

T0 = datetime(2026, 3, 14, 8, 0, 0, 123000, tzinfo=UTC)


async def _collect(store: RawStore, **filters: Any) -> list[RawDocument]:
    return [document async for document in store.stream(**filters)]


async def _land(
    store: RawStore, source: str, kind: str, payloads: list[dict[str, Any]], received_at: datetime | None = None
) -> tuple[uuid.UUID, int, int]:
    import_id = await store.begin_import(source=source, kind=kind, origin="test")
    result = await store.put_many(import_id, source=source, kind=kind, payloads=payloads, received_at=received_at)
    return import_id, result.landed, result.duplicates


# ---------------------------------------------------------------------------------------------- put / dedup


async def test_put_many_lands_payloads_and_streams_them_back_as_received(store: RawStore) -> None:
    payloads = [{"app_code": f"APP-{n}", "billed_cost": f"{n}.10", "tags": {"env": "prod"}} for n in range(3)]
    import_id, landed, duplicates = await _land(store, "cmdb", "cost", payloads, received_at=T0)

    documents = await _collect(store)
    assert (landed, duplicates) == (3, 0)
    assert [d.payload for d in documents] == payloads
    assert {(d.source, d.kind, d.import_id, d.received_at) for d in documents} == {("cmdb", "cost", import_id, T0)}
    assert [d.content_hash for d in documents] == [hashlib.sha256(canonical_json(p)).hexdigest() for p in payloads]


async def test_same_payload_twice_is_stored_once_and_counted_as_a_duplicate(store: RawStore) -> None:
    payload = {"a": "1", "b": {"c": [1, 2, 3]}}
    _, landed, duplicates = await _land(store, "cmdb", "application", [payload, dict(payload), {"a": "2"}])
    assert (landed, duplicates) == (2, 1)

    # A second import of the same content lands nothing: any import can be re-run safely.
    _, landed, duplicates = await _land(store, "cmdb", "application", [{"a": "2"}, payload])
    assert (landed, duplicates) == (0, 2)
    assert len(await _collect(store)) == 2


async def test_content_hash_ignores_key_order_and_treats_decimal_as_its_exact_string(store: RawStore) -> None:
    _, landed, _ = await _land(store, "finance", "budget", [{"amount": Decimal("42000.00"), "year": 2026}])
    _, landed_again, duplicates = await _land(store, "finance", "budget", [{"year": 2026, "amount": "42000.00"}])
    _, landed_other, _ = await _land(store, "finance", "budget", [{"year": 2026, "amount": "42000.0"}])

    assert (landed, landed_again, duplicates, landed_other) == (1, 0, 1, 1)
    amounts = [d.payload["amount"] for d in await _collect(store)]
    assert amounts == ["42000.00", "42000.0"]


async def test_same_payload_under_another_source_or_kind_is_another_document(store: RawStore) -> None:
    payload = {"id": "X1"}
    results = [
        await _land(store, "aws", "focus", [payload]),
        await _land(store, "azure", "focus", [payload]),
        await _land(store, "aws", "other", [payload]),
    ]
    assert [(landed, duplicates) for _, landed, duplicates in results] == [(1, 0), (1, 0), (1, 0)]


async def test_put_many_takes_a_generator_longer_than_one_chunk(store: RawStore, chunk_size: int) -> None:
    count = chunk_size * 3 + 7

    def generated() -> Iterator[dict[str, Any]]:
        for n in range(count):
            yield {"n": n % (count - 10)}  # the last 10 repeat earlier payloads, across chunks

    _, landed, duplicates = await _land(store, "demo", "generated", [])
    import_id = await store.begin_import(source="demo", kind="generated")
    result = await store.put_many(import_id, source="demo", kind="generated", payloads=generated())

    assert (landed, duplicates) == (0, 0)
    assert (result.landed, result.duplicates) == (count - 10, 10)
    assert [d.payload["n"] for d in await _collect(store)] == list(range(count - 10))


async def test_an_unstorable_payload_refuses_the_call_and_lands_nothing(store: RawStore) -> None:
    import_id = await store.begin_import(source="files", kind="csv")
    payloads = [{"n": "1"}, {"n": "2"}, {"n": "bad\x00value"}, {"n": "4"}]
    with pytest.raises(UnstorablePayloadError, match="NUL"):
        await store.put_many(import_id, source="files", kind="csv", payloads=payloads)
    assert await _collect(store) == []


async def test_put_many_needs_a_running_import_and_an_aware_time(store: RawStore) -> None:
    with pytest.raises(NotFoundError):
        await store.put_many(uuid.uuid4(), source="s", kind="k", payloads=[{"a": 1}])

    import_id = await store.begin_import(source="s", kind="k")
    with pytest.raises(BadRequestError, match="timezone-aware"):
        await store.put_many(import_id, source="s", kind="k", payloads=[{"a": 1}], received_at=datetime(2026, 1, 1))

    await store.finish_import(import_id, status="completed", read=0, landed=0, duplicates=0, rejected=0)
    with pytest.raises(ConflictError, match="completed"):
        await store.put_many(import_id, source="s", kind="k", payloads=[{"a": 1}])
    assert await _collect(store) == []


# ---------------------------------------------------------------------------------------------- streaming


async def test_stream_filters_by_source_kind_and_import(store: RawStore) -> None:
    first, _, _ = await _land(store, "servicenow", "incident", [{"n": 1}, {"n": 2}])
    second, _, _ = await _land(store, "servicenow", "incident", [{"n": 3}])
    await _land(store, "servicenow", "change_request", [{"n": 4}])
    await _land(store, "dynatrace", "problem", [{"n": 5}])

    def numbers(documents: list[RawDocument]) -> list[int]:
        return [d.payload["n"] for d in documents]

    assert numbers(await _collect(store)) == [1, 2, 3, 4, 5]
    assert numbers(await _collect(store, source="servicenow")) == [1, 2, 3, 4]
    assert numbers(await _collect(store, source="servicenow", kind="incident")) == [1, 2, 3]
    assert numbers(await _collect(store, kind="problem")) == [5]
    assert numbers(await _collect(store, import_id=first)) == [1, 2]
    assert numbers(await _collect(store, import_id=second, source="servicenow")) == [3]
    assert await _collect(store, import_id=first, kind="change_request") == []
    assert await _collect(store, source="argocd") == []


async def test_stream_time_window_includes_its_start_and_excludes_its_end(store: RawStore) -> None:
    for hours in range(4):
        await _land(store, "dynatrace", "metric_series", [{"h": hours}], received_at=T0 + timedelta(hours=hours))

    def hours_of(documents: list[RawDocument]) -> list[int]:
        return [d.payload["h"] for d in documents]

    window = {"received_from": T0 + timedelta(hours=1), "received_to": T0 + timedelta(hours=3)}
    assert hours_of(await _collect(store, **window)) == [1, 2]
    assert hours_of(await _collect(store, received_from=T0 + timedelta(hours=2))) == [2, 3]
    assert hours_of(await _collect(store, received_to=T0 + timedelta(hours=1))) == [0]
    assert hours_of(await _collect(store, source="dynatrace", kind="metric_series", **window)) == [1, 2]
    # Another time zone names the same instants.
    paris = T0.astimezone(timezone(timedelta(hours=1)))
    assert hours_of(await _collect(store, received_from=paris, received_to=paris + timedelta(minutes=1))) == [0]
    with pytest.raises(BadRequestError, match="timezone-aware"):
        await _collect(store, received_from=datetime(2026, 1, 1))


async def test_stream_pages_by_batch_size_in_landing_order(store: RawStore) -> None:
    import_id = await store.begin_import(source="demo", kind="paged")
    await store.put_many(import_id, source="demo", kind="paged", payloads=({"n": n} for n in range(300)))

    for batch_size in (1, 7, 100, 300, 1000):
        assert [d.payload["n"] for d in await _collect(store, batch_size=batch_size)] == list(range(300))
    with pytest.raises(BadRequestError, match="batch_size"):
        await _collect(store, batch_size=0)


async def test_stream_reads_page_by_page_rather_than_all_at_once(store: RawStore) -> None:
    """Documents landed while a stream is on its first page are still streamed: nothing was loaded ahead."""
    import_id = await store.begin_import(source="demo", kind="lazy")
    await store.put_many(import_id, source="demo", kind="lazy", payloads=[{"n": n} for n in range(25)])

    stream = store.stream(source="demo", batch_size=10)
    seen = [(await anext(stream)).payload["n"] for _ in range(5)]
    await store.put_many(import_id, source="demo", kind="lazy", payloads=[{"n": n} for n in range(25, 35)])
    seen += [document.payload["n"] async for document in stream]

    assert seen == list(range(35))


# ---------------------------------------------------------------------------------------------- rejected


async def test_rejected_records_are_kept_with_their_reason_and_streamed_by_import_or_source(store: RawStore) -> None:
    first = await store.begin_import(source="files", kind="csv")
    second = await store.begin_import(source="other", kind="csv")
    kept = await store.reject(
        [
            RejectedRecord(
                source="files", kind="csv", import_id=first, line=7, reason="expected 3 fields, found 2", raw="a;b"
            ),
            RejectedRecord(source="files", kind="csv", import_id=first, reason="bad Tags JSON"),
            RejectedRecord(source="other", kind="csv", import_id=second, line=2, reason="empty row", raw=""),
        ]
    )

    by_import = [r async for r in store.stream_rejected(import_id=first)]
    assert kept == 3
    assert [(r.line, r.reason, r.raw) for r in by_import] == [
        (7, "expected 3 fields, found 2", "a;b"),
        (None, "bad Tags JSON", None),
    ]
    by_source = [r async for r in store.stream_rejected(source="other")]
    assert [(r.source, r.import_id, r.line) for r in by_source] == [("other", second, 2)]
    assert len([r async for r in store.stream_rejected()]) == 3
    assert await store.reject([]) == 0


# ---------------------------------------------------------------------------------------------- imports


async def test_imports_are_listed_newest_first_with_their_counts(store: RawStore) -> None:
    first = await store.begin_import(source="aws", kind="focus", origin="bill-09.csv")
    await store.finish_import(first, status="completed", read=10, landed=7, duplicates=2, rejected=1)
    second = await store.begin_import(source="aws", kind="focus", origin="bill-10.csv")
    third = await store.begin_import(source="cmdb", kind="cost")
    await store.finish_import(third, status="failed", read=3, landed=1, duplicates=0, rejected=0)

    imports = await store.list_imports()
    assert [i.import_id for i in imports] == [third, second, first]
    summary = imports[2]
    assert (summary.source, summary.kind, summary.origin) == ("aws", "focus", "bill-09.csv")
    assert summary.status == "completed"
    assert (summary.read, summary.landed, summary.duplicates, summary.rejected) == (10, 7, 2, 1)
    assert summary.finished_at is not None
    assert summary.finished_at >= summary.started_at
    assert (imports[1].status, imports[1].finished_at, imports[1].read) == ("running", None, 0)
    assert imports[0].status == "failed"

    assert [i.import_id for i in await store.list_imports(source="aws")] == [second, first]
    assert [i.import_id for i in await store.list_imports(kind="cost")] == [third]
    assert [i.import_id for i in await store.list_imports(source="aws", kind="cost")] == []
    assert [i.import_id for i in await store.list_imports(limit=1)] == [third]


async def test_finish_import_checks_the_import_and_its_counts(store: RawStore) -> None:
    with pytest.raises(NotFoundError):
        await store.finish_import(uuid.uuid4(), status="completed", read=0, landed=0, duplicates=0, rejected=0)

    import_id = await store.begin_import(source="s", kind="k")
    with pytest.raises(BadRequestError, match="read = landed"):
        await store.finish_import(import_id, status="completed", read=5, landed=1, duplicates=1, rejected=1)
    with pytest.raises(BadRequestError, match="running"):
        await store.finish_import(import_id, status="running", read=0, landed=0, duplicates=0, rejected=0)
    await store.finish_import(import_id, status="completed", read=3, landed=1, duplicates=1, rejected=1)
    with pytest.raises(ConflictError, match="already completed"):
        await store.finish_import(import_id, status="failed", read=3, landed=1, duplicates=1, rejected=1)
    assert (await store.list_imports())[0].status == "completed"


# ---------------------------------------------------------------------------------------------- watermarks


async def test_watermarks_start_empty_and_advance_per_source_and_stream(store: RawStore) -> None:
    assert await store.get_watermark("servicenow", "incident") is None

    await store.set_watermark("servicenow", "incident", {"sys_updated_on": "2026-03-14 08:00:00", "sys_id": "a1"})
    await store.set_watermark("servicenow", "change_request", {"sys_updated_on": "2026-03-01 00:00:00", "sys_id": "z"})
    await store.set_watermark("servicenow", "incident", {"sys_updated_on": "2026-03-15 09:30:00", "sys_id": "b2"})
    await store.set_watermark("dynatrace", "incident", {"from": Decimal("1773475200000.5")})

    assert await store.get_watermark("servicenow", "incident") == {
        "sys_updated_on": "2026-03-15 09:30:00",
        "sys_id": "b2",
    }
    assert await store.get_watermark("servicenow", "change_request") == {
        "sys_updated_on": "2026-03-01 00:00:00",
        "sys_id": "z",
    }
    assert await store.get_watermark("dynatrace", "incident") == {"from": "1773475200000.5"}
    assert await store.get_watermark("argocd", "incident") is None


async def test_close_is_idempotent(store: RawStore) -> None:
    await store.begin_import(source="s", kind="k")
    await store.close()
    await store.close()


async def test_concurrent_imports_of_overlapping_content_count_every_document_exactly_once(store: RawStore) -> None:
    first = await store.begin_import(source="servicenow", kind="incident")
    second = await store.begin_import(source="servicenow", kind="incident")
    overlapping = [{"sys_id": f"{n:04d}"} for n in range(0, 400)]
    shifted = [{"sys_id": f"{n:04d}"} for n in range(200, 600)]

    results = await asyncio.gather(
        store.put_many(first, source="servicenow", kind="incident", payloads=overlapping),
        store.put_many(second, source="servicenow", kind="incident", payloads=shifted),
    )

    assert sum(r.landed for r in results) == 600
    assert sum(r.duplicates for r in results) == 200
    assert sorted(d.payload["sys_id"] for d in await _collect(store)) == [f"{n:04d}" for n in range(600)]


# ---------------------------------------------------------------------------------------------- projected pages


class _Cost(msgspec.Struct):
    amount: Any = None
    tags: Any = None
    missing: Any = None
    quoted: Any = msgspec.field(default=None, name="it's")


class _Focus(msgspec.Struct, rename="pascal"):
    billed_cost: Any = None
    charge_period_start: Any = None


class _WithDefault(msgspec.Struct):
    amount: Any = "zero"


async def _pages(store: RawStore, shape: type[S], **filters: Any) -> list[DocumentPage[S]]:
    return [page async for page in store.stream_pages(shape=shape, **filters)]


def _values(items: list[Any]) -> list[tuple[Any, ...]]:
    return [msgspec.structs.astuple(item) for item in items]


async def test_stream_pages_decode_only_the_projected_fields_exactly_as_stream_returns_them(store: RawStore) -> None:
    payloads: list[dict[str, Any]] = [
        {"amount": "12.40", "tags": {"env": "prod", "n": [1, 2.5, None]}, "other": "x" * 1000},
        {"amount": 1e300, "it's": ["q", {"u": "\u00e9\t\\"}], "other": "y" * 1000},
        {"amount": 7, "tags": None},
        {"amount": 1.5, "extra": {"deep": [{"a": 1}]}, "it's": "quoted"},
        {"amount": "-0.00", "tags": "tab\there", "missing": False},
        {},
    ]
    await _land(store, "cmdb", "cost", payloads)

    pages = await _pages(store, _Cost, source="cmdb", kind="cost")
    whole = await _collect(store, source="cmdb", kind="cost")
    fields = [item for page in pages for item in page.fields]

    assert all(isinstance(item, _Cost) for item in fields)
    assert _values(fields) == [
        (d.payload.get("amount"), d.payload.get("tags"), d.payload.get("missing"), d.payload.get("it's")) for d in whole
    ]
    assert [(page.source, page.kind, len(page)) for page in pages] == [("cmdb", "cost", 6)]
    # Whole documents on demand, in the order asked: the ones stream() returns.
    [page] = pages
    documents = await page.documents([4, 0, 5, 1])
    assert [(d.source, d.kind, d.content_hash, d.payload) for d in documents] == [
        (whole[i].source, whole[i].kind, whole[i].content_hash, whole[i].payload) for i in (4, 0, 5, 1)
    ]
    assert await page.documents([]) == []


async def test_stream_pages_use_the_payload_spelling_of_renamed_fields(store: RawStore) -> None:
    await _land(
        store, "aws", "focus", [{"BilledCost": "7.71", "ChargePeriodStart": "2026-03-01T00:00:00Z", "Tags": {}}]
    )

    [page] = await _pages(store, _Focus, source="aws", kind="focus")

    assert _values(page.fields) == [("7.71", "2026-03-01T00:00:00Z")]


async def test_stream_pages_hold_one_source_and_kind_in_landing_order_by_page_size(store: RawStore) -> None:
    import_id = await store.begin_import(source="demo", kind="paged")
    await store.put_many(import_id, source="demo", kind="paged", payloads=({"amount": n} for n in range(30)))
    await _land(store, "demo", "other", [{"amount": -1}])
    await _land(store, "elsewhere", "paged", [{"amount": -2}])

    for page_size in (1, 7, 30, 100):
        pages = await _pages(store, _Cost, source="demo", kind="paged", page_size=page_size)
        assert [len(page) for page in pages] == [min(page_size, 30 - start) for start in range(0, 30, page_size)]
        assert [item.amount for page in pages for item in page.fields] == list(range(30))
    assert await _pages(store, _Cost, source="demo", kind="missing") == []
    with pytest.raises(BadRequestError, match="page_size"):
        await _pages(store, _Cost, source="demo", kind="paged", page_size=0)
    # An absent key reads as None in every store, so a projection cannot promise another default.
    with pytest.raises(TypeError, match="default to None"):
        await _pages(store, _WithDefault, source="demo", kind="paged")
