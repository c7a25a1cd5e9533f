"""ServiceNow Table API simulator (``/api/now/table/{table}``, also ``/api/now/v2/table/{table}``).

Faithful to what clients get wrong (docs/../external-apis.md, section 2):

- every value is a string; a reference field is ``{"link", "value"}`` unless
  ``sysparm_exclude_reference_link=true``, and an empty reference is ``""``;
- ``sysparm_limit`` defaults to 10000; ``sysparm_offset`` is 0-based; ``X-Total-Count`` counts every
  matching row; the ``Link`` header (first/prev/next/last) is only sent when there is more than one page;
- encoded queries: ``^`` (AND), ``^OR``, ``^NQ``, operators ``= != > >= < <= IN NOT IN LIKE NOT LIKE
  STARTSWITH ENDSWITH ISEMPTY ISNOTEMPTY BETWEEN``, ``ORDERBY`` / ``ORDERBYDESC``, one level of
  dot-walking (``parent.sys_class_name``); numbers compare as numbers, dates as UTC strings;
- an unknown field in the query is silently dropped (the result gets wider) unless the simulator is built
  with ``invalid_query_returns_no_rows=True``;
- ``javascript:gs.dateGenerate('2024-01-01','00:00:00')`` is read in the API user's time zone
  (``user_time_zone``, ServiceNow's default ``America/Los_Angeles``), a literal date as UTC;
- Basic or Bearer authentication, the exact 401 body, 404 on a single record, 400 on an unknown table,
  429 with ``Retry-After`` and ``X-RateLimit-*`` when a fault rule says so;
- OAuth (``POST /oauth_token.do``, form-encoded): ``grant_type=password`` with ``client_id``/``client_secret``
  and the user's ``username``/``password``, ``refresh_token``, and ``client_credentials`` only when the
  instance allows it (``client_credentials_grant``, as ``glide.oauth.inbound.client.credential.grant_type
  .enabled`` does); the token body ``{access_token, refresh_token, scope, token_type: "Bearer", expires_in}``;
  a refused request is 401 ``{"error_description": "access_denied", "error": "server_error"}``. An access
  token stops working after ``expires_in`` seconds (or :meth:`ServiceNowSimulator.expire_access_tokens`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import ge, gt, le, lt
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from litestar import Request, Response, get, post
from litestar.params import FromPath

from rosetta.core.security.permissions import Permission, requires
from rosetta.simulators.app import SimulatedError, SimulatorApp, build_simulator
from rosetta.simulators.faults import FaultInjector

# Reference fields per table and the table they point at (rendered as {"link", "value"}).
REFERENCE_FIELDS: dict[str, dict[str, str]] = {
    "incident": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "service_offering": "service_offering",
        "assignment_group": "sys_user_group",
        "assigned_to": "sys_user",
        "caller_id": "sys_user",
        "opened_by": "sys_user",
        "resolved_by": "sys_user",
        "closed_by": "sys_user",
        "caused_by": "change_request",
        "rfc": "change_request",
        "problem_id": "problem",
        "parent_incident": "incident",
    },
    "change_request": {
        "cmdb_ci": "cmdb_ci",
        "business_service": "cmdb_ci_service",
        "service_offering": "service_offering",
        "assignment_group": "sys_user_group",
        "assigned_to": "sys_user",
        "requested_by": "sys_user",
        "opened_by": "sys_user",
        "closed_by": "sys_user",
        "chg_model": "chg_model",
    },
    "cmdb_ci_business_app": {
        "owned_by": "sys_user",
        "it_application_owner": "sys_user",
        "managed_by": "sys_user",
        "managed_by_group": "sys_user_group",
        "support_group": "sys_user_group",
    },
    "cmdb_ci_service": {
        "owned_by": "sys_user",
        "managed_by": "sys_user",
        "support_group": "sys_user_group",
        "parent": "cmdb_ci",
    },
    "cmdb_rel_ci": {"parent": "cmdb_ci", "child": "cmdb_ci", "type": "cmdb_rel_type"},
    "task_ci": {"task": "task", "ci_item": "cmdb_ci"},
}

# Tables that exist on every instance even when the dataset has no rows for them.
KNOWN_TABLES = frozenset({*REFERENCE_FIELDS, "cmdb_ci", "cmdb_rel_type", "sys_user", "sys_user_group", "problem"})

# Tables a reference to ``cmdb_ci`` (or ``task``) may resolve into: CIs live in subclass tables.
_SUPERCLASSES = {
    "cmdb_ci": ("cmdb_ci", "cmdb_ci_business_app", "cmdb_ci_service"),
    "task": ("task", "incident", "change_request"),
}

DEFAULT_USERS: Mapping[str, str] = {"rosetta": "rosetta"}

_CONDITION = re.compile(
    r"^([a-z_][a-z0-9_.]*?)"
    r"(ISNOTEMPTY|ISEMPTY|NOT IN|NOT LIKE|NOTLIKE|STARTSWITH|ENDSWITH|BETWEEN|LIKE|IN|!=|>=|<=|=|>|<)(.*)$",
    re.DOTALL,
)
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('([^']+)','([^']+)'\)$")
_MINUTES_AGO = re.compile(r"^javascript:gs\.minutesAgoStart\((-?\d+)\)$")
_SN_TIME = "%Y-%m-%d %H:%M:%S"


def servicenow_error(status: int, message: str, detail: str | None = None) -> dict[str, Any]:
    """The Table API error body."""
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


def _render_fault(status: int, message: str) -> tuple[dict[str, Any], dict[str, str]]:
    if status == 429:
        reset = int(time.time()) + 3600
        headers = {"X-RateLimit-Limit": "1000", "X-RateLimit-Reset": str(reset), "X-RateLimit-Rule": "simulator"}
        return servicenow_error(429, "Rate limit exceeded", "Too many requests for this user"), headers
    return servicenow_error(status, message, f"HTTP {status}"), {}


@dataclass(frozen=True)
class Condition:
    """One ``field OP value`` term of an encoded query."""

    field: str
    operator: str
    value: str


@dataclass(frozen=True)
class EncodedQuery:
    """A parsed ``sysparm_query``: OR of groups (``^NQ``), each an AND of clauses, each an OR of conditions."""

    groups: tuple[tuple[tuple[Condition, ...], ...], ...]
    order: tuple[tuple[str, bool], ...]
    invalid: bool = False


def parse_encoded_query(text: str) -> EncodedQuery:
    """Parse an encoded query; a term that does not parse is kept aside as ``invalid``."""
    groups: list[tuple[tuple[Condition, ...], ...]] = []
    order: list[tuple[str, bool]] = []
    invalid = False
    for group_text in text.split("^NQ") if text else []:
        clauses: list[list[Condition]] = []
        for term in group_text.split("^"):
            if not term or term == "EQ":
                continue
            if term.startswith("ORDERBYDESC"):
                order.append((term.removeprefix("ORDERBYDESC"), True))
                continue
            if term.startswith("ORDERBY"):
                order.append((term.removeprefix("ORDERBY"), False))
                continue
            alternative = term.startswith("OR") and clauses
            match = _CONDITION.match(term[2:] if alternative else term)
            if match is None:
                invalid = True
                continue
            condition = Condition(match.group(1), match.group(2), match.group(3))
            if alternative:
                clauses[-1].append(condition)
            else:
                clauses.append([condition])
        groups.append(tuple(tuple(clause) for clause in clauses))
    return EncodedQuery(tuple(groups), tuple(order), invalid)


def _number(value: str) -> float | None:
    """Integer and decimal fields (state, priority...) compare numerically; GUIDs and dates never do."""
    digits = value[1:] if value.startswith("-") else value
    whole, _, fraction = digits.partition(".")
    if not (whole.isascii() and whole.isdigit() and len(whole) <= 15) or (fraction and not fraction.isdigit()):
        return None
    return float(value)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": gt,
    ">=": ge,
    "<": lt,
    "<=": le,
}


def _compare(left: str, right: str) -> int:
    """Numbers compare as numbers, everything else (dates included) as strings."""
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (left > right) - (left < right)


def sort_key(value: str) -> tuple[int, float, str]:
    """Order values the way ``ORDERBY`` does: numbers numerically, then strings."""
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


class ServiceNowSimulator:
    """The Table API over an in-memory copy of the dataset's tables."""

    def __init__(
        self,
        tables: Mapping[str, Iterable[Mapping[str, str]]],
        *,
        users: Mapping[str, str] = DEFAULT_USERS,
        tokens: Collection[str] = (),
        oauth_clients: Mapping[str, str] | None = None,
        client_credentials_grant: bool = False,
        token_seconds: int = 1800,
        faults: FaultInjector | None = None,
        invalid_query_returns_no_rows: bool = False,
        user_time_zone: str = "America/Los_Angeles",
    ) -> None:
        self.tables: dict[str, list[dict[str, str]]] = {name: [dict(r) for r in rows] for name, rows in tables.items()}
        self.users = dict(users)
        self.tokens = frozenset(tokens)
        self.oauth_clients = dict(oauth_clients or {})
        self.client_credentials_grant = client_credentials_grant
        self.token_seconds = token_seconds
        # Issued OAuth access tokens -> when they stop working (time.monotonic()); refresh tokens -> client id.
        self._access_tokens: dict[str, float] = {}
        self._refresh_tokens: dict[str, str] = {}
        self.invalid_query_returns_no_rows = invalid_query_returns_no_rows
        self.user_time_zone = ZoneInfo(user_time_zone)
        self.faults = faults or FaultInjector()
        self._field_cache: dict[str, set[str]] = {}
        self._index_cache: dict[str, dict[str, dict[str, str]]] = {}
        self._order_cache: dict[tuple[str, tuple[tuple[str, bool], ...]], list[dict[str, str]]] = {}
        self.app: SimulatorApp = build_simulator(
            "servicenow", self._handlers(), faults=self.faults, render_error=_render_fault
        )

    # ------------------------------------------------------------------------------------------ data

    def upsert(self, table: str, record: Mapping[str, str]) -> None:
        """Insert or replace a record by ``sys_id`` (tests use it to change data between pulls)."""
        self._field_cache.clear()
        self._index_cache.clear()
        self._order_cache.clear()
        rows = self.tables.setdefault(table, [])
        for index, row in enumerate(rows):
            if row["sys_id"] == record["sys_id"]:
                rows[index] = dict(record)
                return
        rows.append(dict(record))

    def _find(self, table: str, sys_id: str) -> dict[str, str] | None:
        for name in _SUPERCLASSES.get(table, (table,)):
            if name not in self._index_cache:
                self._index_cache[name] = {row["sys_id"]: row for row in self.tables.get(name, ())}
            if (row := self._index_cache[name].get(sys_id)) is not None:
                return row
        return None

    def _fields(self, table: str) -> set[str]:
        if table not in self._field_cache:
            fields = {"sys_id", "sys_updated_on", "sys_created_on", "sys_class_name"}
            for row in self.tables.get(table, ()):
                fields.update(row)
            self._field_cache[table] = fields
        return self._field_cache[table]

    def _value(self, table: str, record: Mapping[str, str], path: str) -> str:
        head, _, rest = path.partition(".")
        value = record.get(head, "")
        if not rest:
            return value
        target_table = REFERENCE_FIELDS.get(table, {}).get(head)
        target = self._find(target_table, value) if target_table and value else None
        return self._value(target_table or "", target, rest) if target is not None else ""

    def _known(self, table: str, path: str) -> bool:
        head, _, rest = path.partition(".")
        if head not in self._fields(table):
            return False
        if not rest:
            return True
        target = REFERENCE_FIELDS.get(table, {}).get(head)
        return target is not None and self._known_in_any(target, rest)

    def _known_in_any(self, table: str, path: str) -> bool:
        return any(self._known(name, path) for name in _SUPERCLASSES.get(table, (table,)))

    # ------------------------------------------------------------------------------------------ queries

    def _literal(self, value: str) -> str:
        if match := _DATE_GENERATE.match(value):
            local = datetime.strptime(f"{match.group(1)} {match.group(2)}", _SN_TIME).replace(
                tzinfo=self.user_time_zone
            )
            return local.astimezone(UTC).strftime(_SN_TIME)
        if match := _MINUTES_AGO.match(value):
            moment = datetime.now(UTC) - timedelta(minutes=int(match.group(1)))
            return moment.replace(second=0).strftime(_SN_TIME)
        return value

    def _getter(self, table: str, path: str) -> Callable[[Mapping[str, str]], str]:
        if "." not in path:
            return lambda record: record.get(path, "")
        return lambda record: self._value(table, record, path)

    def _predicate(self, table: str, condition: Condition) -> Callable[[Mapping[str, str]], bool]:
        """A test of one condition, with its value resolved once (not once per row)."""
        value_of = self._getter(table, condition.field)
        operator, wanted = condition.operator, self._literal(condition.value)
        if operator == "=":
            return lambda row: value_of(row) == wanted
        if operator == "!=":
            return lambda row: value_of(row) != wanted
        if operator in (">", ">=", "<", "<="):
            compare = _COMPARISONS[operator]
            if _number(wanted) is None:  # a date or a string: compared as text, no per-row number parsing
                return lambda row: (value := value_of(row)) != "" and compare(value, wanted)
            return lambda row: (value := value_of(row)) != "" and compare(_compare(value, wanted), 0)
        if operator in ("IN", "NOT IN"):
            choices, inside = frozenset(wanted.split(",")), operator == "IN"
            return lambda row: (value_of(row) in choices) == inside
        lowered = wanted.lower()
        if operator in ("LIKE", "NOT LIKE", "NOTLIKE"):
            like = operator == "LIKE"
            return lambda row: (lowered in value_of(row).lower()) == like
        if operator == "STARTSWITH":
            return lambda row: value_of(row).lower().startswith(lowered)
        if operator == "ENDSWITH":
            return lambda row: value_of(row).lower().endswith(lowered)
        if operator == "ISEMPTY":
            return lambda row: value_of(row) == ""
        if operator == "ISNOTEMPTY":
            return lambda row: value_of(row) != ""
        low, _, high = (self._literal(bound) for bound in wanted.partition("@"))
        return lambda row: (value := value_of(row)) != "" and _compare(value, low) >= 0 and _compare(value, high) <= 0

    def select(self, table: str, query_text: str) -> list[dict[str, str]]:
        """The rows of ``table`` matching an encoded query, in the order it asks for."""
        query = parse_encoded_query(query_text)
        known_query = all(
            self._known(table, condition.field) for group in query.groups for clause in group for condition in clause
        )
        if (query.invalid or not known_query) and self.invalid_query_returns_no_rows:
            return []
        # The real instance drops conditions on unknown fields: the result gets wider, not empty.
        groups = [
            [[self._predicate(table, c) for c in clause if self._known(table, c.field)] for clause in group]
            for group in query.groups
        ]
        groups = [[clause for clause in group if clause] for group in groups]
        order = tuple((field, descending) for field, descending in query.order if self._known(table, field))
        return [
            row
            for row in self._ordered(table, order)
            if not groups or any(all(any(test(row) for test in clause) for clause in group) for group in groups)
        ]

    def _ordered(self, table: str, order: tuple[tuple[str, bool], ...]) -> list[dict[str, str]]:
        """The table's rows in ``order``, sorted once and kept until the data changes (filtering keeps order)."""
        key = (table, order)
        if key not in self._order_cache:
            rows = list(self.tables.get(table, ()))
            for field, descending in reversed(order):
                rows.sort(key=self._sorter(table, field), reverse=descending)
            self._order_cache[key] = rows
        return self._order_cache[key]

    def _sorter(self, table: str, field: str) -> Callable[[Mapping[str, str]], tuple[int, float, str]]:
        value_of = self._getter(table, field)
        return lambda row: sort_key(value_of(row))

    # ------------------------------------------------------------------------------------------ rendering

    def _render(self, table: str, row: Mapping[str, str], params: Mapping[str, str], instance: str) -> dict[str, Any]:
        fields_param = params.get("sysparm_fields", "")
        fields = [f.strip() for f in fields_param.split(",") if f.strip()] if fields_param else list(row)
        display = params.get("sysparm_display_value", "false").lower()
        exclude_links = params.get("sysparm_exclude_reference_link", "false").lower() == "true"
        references = REFERENCE_FIELDS.get(table, {})
        rendered: dict[str, Any] = {}
        for field in fields:
            if "." not in field and field not in row:
                continue
            value = self._value(table, row, field)
            target = references.get(field)
            if target is not None and value != "":
                link = f"{instance}/api/now/table/{target}/{value}"
                shown = self._display(target, value)
                if display == "true":
                    rendered[field] = shown if exclude_links else {"display_value": shown, "link": link}
                elif display == "all":
                    entry = {"display_value": shown, "value": value}
                    rendered[field] = entry if exclude_links else {**entry, "link": link}
                else:
                    rendered[field] = value if exclude_links else {"link": link, "value": value}
            elif display == "all":
                rendered[field] = {"display_value": value, "value": value}
            else:
                rendered[field] = value
        return rendered

    def _display(self, table: str, sys_id: str) -> str:
        target = self._find(table, sys_id)
        if target is None:
            return ""
        return target.get("name") or target.get("number") or target.get("sys_id", "")

    # ------------------------------------------------------------------------------------------ HTTP

    def _authenticate(self, request: Request[Any, Any, Any]) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            expected = self.users.get(user)
            if expected is not None and secrets.compare_digest(expected, password):
                return
        elif scheme.lower() == "bearer" and (
            credentials in self.tokens or self._access_tokens.get(credentials, 0.0) > time.monotonic()
        ):
            return
        body = servicenow_error(401, "User Not Authenticated", "Required to provide Auth information")
        raise SimulatedError(401, body)

    def expire_access_tokens(self) -> None:
        """End every issued OAuth access token now (refresh tokens stay valid), as time would."""
        self._access_tokens.clear()

    def _grant(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token body for a ``POST /oauth_token.do`` form; raise the OAuth refusal otherwise."""
        denied = SimulatedError(401, {"error_description": "access_denied", "error": "server_error"})
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        expected_secret = self.oauth_clients.get(client_id)
        if expected_secret is None or not secrets.compare_digest(expected_secret, secret):
            raise denied
        grant = form.get("grant_type", "")
        if grant == "password":
            expected = self.users.get(form.get("username", ""))
            if expected is None or not secrets.compare_digest(expected, form.get("password", "")):
                raise denied
        elif grant == "refresh_token":
            if self._refresh_tokens.get(form.get("refresh_token", "")) != client_id:
                raise denied
        elif grant != "client_credentials" or not self.client_credentials_grant:
            raise SimulatedError(
                400, {"error_description": f"unsupported grant_type {grant!r}", "error": "unsupported_grant_type"}
            )
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self._access_tokens[access] = time.monotonic() + self.token_seconds
        self._refresh_tokens[refresh] = client_id
        return {
            "access_token": access,
            "refresh_token": refresh,
            "scope": "useraccount",
            "token_type": "Bearer",
            "expires_in": self.token_seconds,
        }

    def _check_table(self, table: str) -> None:
        if table not in self.tables and table not in KNOWN_TABLES:
            raise SimulatedError(400, servicenow_error(400, f"Invalid table {table}", None))

    def _handlers(self) -> list[Any]:
        simulator = self

        @get(
            ["/api/now/table/{table:str}", "/api/now/v2/table/{table:str}"],
            guards=[requires(Permission.PUBLIC)],
            sync_to_thread=False,
        )
        def list_records(request: Request[Any, Any, Any], table: FromPath[str]) -> Response[dict[str, Any]]:
            simulator._authenticate(request)
            simulator._check_table(table)
            params = {key: request.query_params[key] for key in request.query_params}
            try:
                limit = int(params.get("sysparm_limit", "10000"))
                offset = int(params.get("sysparm_offset", "0"))
            except ValueError:
                raise SimulatedError(400, servicenow_error(400, "Invalid sysparm_limit or sysparm_offset")) from None
            rows = simulator.select(table, params.get("sysparm_query", ""))
            instance = _instance_url(request)
            page = rows[max(offset, 0) : max(offset, 0) + max(limit, 0)]
            headers: dict[str, str] = {}
            if params.get("sysparm_no_count", "false").lower() != "true":
                headers["X-Total-Count"] = str(len(rows))
            suppress = params.get("sysparm_suppress_pagination_header", "false").lower() == "true"
            if not suppress and limit > 0 and len(rows) > limit:
                headers["Link"] = _link_header(f"{instance}{request.url.path}", params, offset, limit, len(rows))
            result = [simulator._render(table, row, params, instance) for row in page]
            return Response({"result": result}, headers=headers)

        @get(
            ["/api/now/table/{table:str}/{sys_id:str}", "/api/now/v2/table/{table:str}/{sys_id:str}"],
            guards=[requires(Permission.PUBLIC)],
            sync_to_thread=False,
        )
        def get_record(request: Request[Any, Any, Any], table: FromPath[str], sys_id: FromPath[str]) -> dict[str, Any]:
            simulator._authenticate(request)
            simulator._check_table(table)
            row = simulator._find(table, sys_id)
            if row is None:
                detail = "Record doesn't exist or ACL restricts the record retrieval"
                raise SimulatedError(404, servicenow_error(404, "No Record found", detail))
            params = {key: request.query_params[key] for key in request.query_params}
            return {"result": simulator._render(table, row, params, _instance_url(request))}

        @post("/oauth_token.do", guards=[requires(Permission.PUBLIC)], status_code=200)
        async def oauth_token(request: Request[Any, Any, Any]) -> dict[str, Any]:
            form = await request.form()
            return simulator._grant({key: str(form.get(key, "")) for key in form})

        return [list_records, get_record, oauth_token]


def _instance_url(request: Request[Any, Any, Any]) -> str:
    """Scheme, host and mount prefix of the request, so links point back at this simulator."""
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
    prefix = raw_path[: raw_path.find("/api/now/")] if "/api/now/" in raw_path else ""
    host = request.headers.get("host", "localhost")
    return f"{request.url.scheme}://{host}{prefix}"


def _link_header(url: str, params: Mapping[str, str], offset: int, limit: int, total: int) -> str:
    def at(position: int) -> str:
        return f"<{url}?{urlencode({**params, 'sysparm_offset': str(position), 'sysparm_limit': str(limit)})}>"

    links = [f'{at(0)};rel="first"']
    if offset > 0:
        links.append(f'{at(max(offset - limit, 0))};rel="prev"')
    if offset + limit < total:
        links.append(f'{at(offset + limit)};rel="next"')
    links.append(f'{at(((total - 1) // limit) * limit)};rel="last"')
    return ",".join(links)
