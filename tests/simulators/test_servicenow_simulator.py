"""The ServiceNow simulator answers like the Table API (external-apis.md, section 2), over real HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from rosetta.simulators.servicenow import ServiceNowSimulator
from simulators.world import servicenow_tables, serving, sys_id

TABLES = servicenow_tables()


def _rows(simulator: ServiceNowSimulator, table: str, query: str) -> list[str]:
    return [row["number"] for row in simulator.select(table, query)]


@pytest.fixture(scope="module")
def simulator() -> ServiceNowSimulator:
    return ServiceNowSimulator(TABLES)


@pytest.fixture
async def client(simulator: ServiceNowSimulator) -> AsyncIterator[httpx.AsyncClient]:
    with serving(simulator.app.asgi) as server:
        async with httpx.AsyncClient(base_url=server.url, auth=("rosetta", "rosetta")) as http:
            yield http


def test_encoded_query_operators(simulator: ServiceNowSimulator) -> None:
    changes = TABLES["change_request"]
    assert _rows(simulator, "change_request", "number=CHG0030007") == ["CHG0030007"]
    assert len(_rows(simulator, "change_request", "type!=normal")) == 200
    assert len(_rows(simulator, "change_request", "stateIN3,4")) == 120
    assert len(_rows(simulator, "change_request", "stateNOT IN3,4")) == 180
    assert len(_rows(simulator, "change_request", "state<0")) == 120  # -5 and -1 compare as numbers
    assert len(_rows(simulator, "change_request", "state>=3")) == 120
    either = _rows(simulator, "change_request", "numberLIKE0029^ORnumberSTARTSWITHCHG003029")
    assert either == ["CHG0030029", *(f"CHG003029{digit}" for digit in range(10))]
    assert len(_rows(simulator, "change_request", "close_codeISEMPTY")) == 120
    assert len(_rows(simulator, "change_request", "close_codeISNOTEMPTY^type=emergency")) == 60
    window = "sys_updated_onBETWEEN2026-03-01 08:00:00@2026-03-01 08:00:10"
    assert _rows(simulator, "change_request", window) == [f"CHG00300{i:02d}" for i in range(6)]
    assert _rows(simulator, "change_request", "number=CHG0030001^NQnumber=CHG0030002") == ["CHG0030001", "CHG0030002"]
    newest = _rows(simulator, "change_request", "ORDERBYDESCsys_updated_on")
    assert newest[0] == changes[-1]["number"]
    by_type = simulator.select("change_request", "ORDERBYtype^ORDERBYDESCnumber")
    assert [row["type"] for row in by_type[:2]] == ["emergency", "emergency"]
    assert by_type[0]["number"] > by_type[1]["number"]


def test_dot_walking_one_level(simulator: ServiceNowSimulator) -> None:
    relations = simulator.select("cmdb_rel_ci", "parent.name=app-1")
    assert {row["parent"] for row in relations} == {sys_id("app", 1)}
    incidents = simulator.select("incident", "business_service.name=service-2")
    assert len(incidents) == len([i for i in range(1234) if i % 4 == 2])


def test_an_unknown_field_is_dropped_and_the_result_gets_wider() -> None:
    lenient = ServiceNowSimulator(TABLES)
    strict = ServiceNowSimulator(TABLES, invalid_query_returns_no_rows=True)
    assert len(lenient.select("change_request", "no_such_field=1^type=normal")) == 100
    assert len(lenient.select("change_request", "no_such_field=1")) == 300
    assert strict.select("change_request", "no_such_field=1^type=normal") == []


def test_date_generate_is_read_in_the_user_time_zone_but_a_literal_as_utc() -> None:
    simulator = ServiceNowSimulator(TABLES, user_time_zone="Europe/Paris")
    literal = simulator.select("change_request", "sys_updated_on>=2026-03-01 08:09:50")
    scripted = simulator.select("change_request", "sys_updated_on>=javascript:gs.dateGenerate('2026-03-01','09:09:50')")
    same_text = simulator.select(
        "change_request", "sys_updated_on>=javascript:gs.dateGenerate('2026-03-01','08:09:50')"
    )
    assert literal == scripted  # 09:09:50 in Paris is 08:09:50 UTC
    assert [row["number"] for row in literal] == [f"CHG003029{digit}" for digit in range(5, 10)]
    assert len(same_text) == 300  # the same wall-clock text, read in Paris, is an hour earlier


async def test_values_are_strings_and_references_are_links(client: httpx.AsyncClient) -> None:
    query = {
        "sysparm_query": "number=INC0010007",
        "sysparm_fields": "number,cmdb_ci,caused_by,assignment_group,business_service.name",
    }
    linked = (await client.get("/api/now/table/incident", params=query)).json()["result"][0]
    bare = (
        await client.get("/api/now/table/incident", params={**query, "sysparm_exclude_reference_link": "true"})
    ).json()
    shown = (await client.get("/api/now/table/incident", params={**query, "sysparm_display_value": "all"})).json()

    service = sys_id("svc", 3)
    assert linked["cmdb_ci"] == {"link": f"{client.base_url}/api/now/table/cmdb_ci/{service}", "value": service}
    assert linked["caused_by"]["value"] == sys_id("chg", 7)
    assert linked["assignment_group"] == ""  # an empty reference is an empty string
    assert linked["business_service.name"] == "service-3"
    assert bare["result"][0]["cmdb_ci"] == service
    assert shown["result"][0]["cmdb_ci"]["display_value"] == "service-3"
    assert shown["result"][0]["number"] == {"display_value": "INC0010007", "value": "INC0010007"}


async def test_paging_headers(client: httpx.AsyncClient) -> None:
    middle = await client.get(
        "/api/now/table/change_request",
        params={"sysparm_limit": "100", "sysparm_offset": "100", "sysparm_query": "ORDERBYnumber"},
    )
    single = await client.get("/api/now/table/change_request", params={"sysparm_query": "number=CHG0030001"})
    uncounted = await client.get(
        "/api/now/table/change_request", params={"sysparm_limit": "1", "sysparm_no_count": "true"}
    )
    everything = await client.get("/api/now/v2/table/change_request")

    assert middle.headers["X-Total-Count"] == "300"
    links = {
        rel: parse_qs(urlsplit(url).query) for url, rel in re.findall(r'<([^>]*)>;rel="(\w+)"', middle.headers["Link"])
    }
    assert {rel: query["sysparm_offset"] for rel, query in links.items()} == {
        "first": ["0"],
        "prev": ["0"],
        "next": ["200"],
        "last": ["200"],
    }
    assert all(query["sysparm_query"] == ["ORDERBYnumber"] for query in links.values())
    assert [row["number"] for row in middle.json()["result"]][:2] == ["CHG0030100", "CHG0030101"]
    assert "Link" not in single.headers  # everything fits on one page
    assert single.headers["X-Total-Count"] == "1"
    assert "X-Total-Count" not in uncounted.headers
    assert len(everything.json()["result"]) == 300  # the default limit is 10000


async def test_errors_have_the_table_api_body(client: httpx.AsyncClient, simulator: ServiceNowSimulator) -> None:
    record = await client.get(f"/api/now/table/incident/{sys_id('inc', 3)}")
    missing = await client.get(f"/api/now/table/incident/{'0' * 32}")
    table = await client.get("/api/now/table/no_such_table")
    empty = await client.get("/api/now/table/incident", params={"sysparm_query": "number=nothing"})
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        unauthenticated = await anonymous.get("/api/now/table/incident")
        bearer = await anonymous.get("/api/now/table/incident", headers={"Authorization": "Bearer not-a-token"})

    assert record.json()["result"]["number"] == "INC0010003"  # a single record is an object
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"},
        "status": "failure",
    }
    assert table.status_code == 400
    assert table.json() == {"error": {"message": "Invalid table no_such_table", "detail": None}, "status": "failure"}
    assert (empty.status_code, empty.json()) == (200, {"result": []})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json() == {
        "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"},
        "status": "failure",
    }
    assert bearer.status_code == 401
