"""Pulls: read an external system through its connector and land every record in the raw store.

``rosetta raw pull servicenow|cmdb|dynatrace|argocd [--since ...]``. Each stream (a ServiceNow table, a
Dynatrace object kind, the Argo CD application list) is one import in the raw store; every record is one
raw document (source ``servicenow``/``dynatrace``/``argocd``, kind as in docs/raw-zone.md), landed page by
page (bounded memory). Landing the same content twice stores it once, so a re-read is a duplicate, never a
second copy.

High-water marks (``store.get_watermark(source, stream)``) make pulls incremental and resumable:

- a stream's mark is advanced only after that stream's import completed, so an interrupted pull starts the
  next run from the last completed mark and re-reads (as duplicates) what it had landed before failing;
- a mark never moves backward, and never over a range the run did not read (a ``--since`` after the
  stored mark reads from there but leaves the mark alone);
- ServiceNow marks are ``{"sys_updated_on", "sys_id"}`` per table; they stop ``SETTLE`` short of the pull's
  start, because rows committed late in the current second (or minute) could otherwise sort before the
  mark and be missed; the overlap is re-read as duplicates;
- Dynatrace metric marks are the end of the last complete UTC day (the current day is landed, then
  pulled again next time, since its last slots are partial); problem marks are the end of the window read
  (minus an hour of overlap, since open problems change).

Which streams a source pulls:

- ``servicenow``: ``incident`` and ``change_request`` (ITSM, pulled often);
- ``cmdb``: ``cmdb_ci_business_app``, ``cmdb_ci_service``, ``cmdb_rel_ci`` (landed under source
  ``servicenow``, pulled on the CMDB's slower cadence);
- ``dynatrace``: ``entity`` and ``slo`` (snapshots), ``problem`` and ``metric_series`` (incremental);
- ``argocd``: ``application`` (a snapshot with ``status.history`` and ``status.operationState``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from rosetta.connectors.argocd import ArgoCdClient
from rosetta.connectors.dynatrace import DynatraceClient, metric_series
from rosetta.connectors.servicenow import CMDB_TABLES, ITSM_TABLES, ServiceNowClient, TableMark
from rosetta.connectors.transport import ExternalApiError, ordered_concurrently
from rosetta.core.errors import BadRequestError, ConfigurationError, RosettaError, ServiceUnavailableError
from rosetta.core.settings import Settings
from rosetta.raw.store import RawStore

PullTarget = Literal["servicenow", "cmdb", "dynatrace", "argocd"]
PULL_TARGETS: tuple[PullTarget, ...] = ("servicenow", "cmdb", "dynatrace", "argocd")

SN_TIME = "%Y-%m-%d %H:%M:%S"
SETTLE = timedelta(minutes=2)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

DEFAULT_ENTITY_TYPES: tuple[str, ...] = ("SERVICE", "APPLICATION", "HTTP_CHECK", "SYNTHETIC_TEST")
# The service metrics the monitoring context reads (availability = 100 x successCount / requestCount.server).
DEFAULT_METRICS: tuple[str, ...] = (
    "builtin:service.response.time",
    "builtin:service.requestCount.total",
    "builtin:service.requestCount.server",
    "builtin:service.errors.server.rate",
    "builtin:service.errors.server.successCount",
)
# How far back a first pull reads when neither a mark nor --since says where to start.
FIRST_PULL_LOOKBACK = {"problem": timedelta(days=30), "metric_series": timedelta(days=7), "entity": timedelta(days=365)}

_RELATIVE = re.compile(r"^now-(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class StreamSummary(msgspec.Struct, kw_only=True):
    """What one stream of a pull did: read = landed + duplicates."""

    kind: str
    status: Literal["completed", "failed"] = "completed"
    read: int = 0
    landed: int = 0
    duplicates: int = 0
    import_id: str | None = None
    watermark: dict[str, Any] | None = None
    warnings: list[str] = msgspec.field(default_factory=list)


class PullSummary(msgspec.Struct, kw_only=True):
    """What a whole pull did, stream by stream."""

    source: str
    target: str
    status: Literal["completed", "failed"] = "completed"
    streams: list[StreamSummary] = msgspec.field(default_factory=list)

    @property
    def read(self) -> int:
        """Records read over every stream."""
        return sum(stream.read for stream in self.streams)

    @property
    def landed(self) -> int:
        """Documents landed (new content) over every stream."""
        return sum(stream.landed for stream in self.streams)

    @property
    def duplicates(self) -> int:
        """Records whose content was already in the raw zone."""
        return sum(stream.duplicates for stream in self.streams)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document: totals, then one entry per stream."""
        return {
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "read": self.read,
            "landed": self.landed,
            "duplicates": self.duplicates,
            "streams": [
                {"kind": s.kind, "status": s.status, "read": s.read, "landed": s.landed, "duplicates": s.duplicates}
                for s in self.streams
            ],
        }

    def lines(self) -> list[str]:
        """The human summary, one line per stream."""
        lines = [
            f"{self.target} pull {self.status}: read {self.read}, landed {self.landed}, duplicates {self.duplicates}"
        ]
        for stream in self.streams:
            lines.append(
                f"  {stream.kind}: {stream.status}, read {stream.read}, landed {stream.landed}, "
                f"duplicates {stream.duplicates}"
            )
            lines.extend(f"    warning: {warning}" for warning in stream.warnings)
        return lines


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``2026-01-31``, ``2026-01-31T08:00:00(+01:00)`` (no offset: UTC), or ``now-7d`` (m, h, d, w)."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if match := _RELATIVE.match(value):
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"--since {text!r}: expected a date, an ISO 8601 time or now-<n>[mhdw]") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------------------------- streams


LandFunction = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]


class _Puller:
    """Runs the streams of one pull against one store, recording each as an import."""

    def __init__(self, store: RawStore, summary: PullSummary, origin: str) -> None:
        self.store = store
        self.summary = summary
        self.origin = origin

    async def stream(self, kind: str, body: Callable[[LandFunction, StreamSummary], Awaitable[None]]) -> StreamSummary:
        """One import: ``body`` lands through the function it is given; failures close the import as failed."""
        result = StreamSummary(kind=kind)
        self.summary.streams.append(result)
        import_id: uuid.UUID = await self.store.begin_import(source=self.summary.source, kind=kind, origin=self.origin)
        result.import_id = str(import_id)

        async def land(records: Sequence[Mapping[str, Any]]) -> None:
            if not records:
                return
            put = await self.store.put_many(import_id, source=self.summary.source, kind=kind, payloads=records)
            result.read += len(records)
            result.landed += put.landed
            result.duplicates += put.duplicates

        try:
            await body(land, result)
        except BaseException:
            result.status = "failed"
            self.summary.status = "failed"
            await self.store.finish_import(
                import_id,
                status="failed",
                read=result.read,
                landed=result.landed,
                duplicates=result.duplicates,
                rejected=0,
            )
            raise
        await self.store.finish_import(
            import_id,
            status="completed",
            read=result.read,
            landed=result.landed,
            duplicates=result.duplicates,
            rejected=0,
        )
        return result

    async def advance(self, stream: str, mark: Mapping[str, Any], result: StreamSummary) -> None:
        """Store a stream's new high-water mark (only called once its import completed)."""
        await self.store.set_watermark(self.summary.source, stream, mark)
        result.watermark = dict(mark)


def _pull_failure(error: BaseException, summary: PullSummary) -> RosettaError:
    """One error line naming what completed, keeping the cause's class so the exit code stays meaningful."""
    done = [s.kind for s in summary.streams if s.status == "completed"]
    failed = next((s for s in summary.streams if s.status == "failed"), None)
    where = f" at {failed.kind} (after landing {failed.landed} new record(s))" if failed else ""
    kept = f"; completed and marked: {', '.join(done)}" if done else ""
    cause = error.detail if isinstance(error, RosettaError) else f"{type(error).__name__}: {error}"
    message = f"{summary.target} pull failed{where}{kept}: {cause}"
    kind: type[RosettaError] = RosettaError
    if isinstance(error, ServiceUnavailableError):
        kind = ServiceUnavailableError
    elif isinstance(error, ConfigurationError):
        kind = ConfigurationError
    failure = kind(message, extra={"pull": summary.as_json()})
    return failure


# ---------------------------------------------------------------------------------------------- ServiceNow


async def pull_servicenow_tables(
    store: RawStore,
    client: ServiceNowClient,
    tables: Sequence[str],
    *,
    target: str,
    since: datetime | None = None,
    now: datetime | None = None,
) -> PullSummary:
    """Pull ``tables`` incrementally, table after table; raise with the partial summary on failure."""
    now = now or datetime.now(UTC)
    summary = PullSummary(source="servicenow", target=target)
    puller = _Puller(store, summary, origin=client.transport.base_url)
    settled = (now - SETTLE).strftime(SN_TIME)
    try:
        for table in tables:
            await _pull_table(puller, client, table, since=since, settled=settled)
    except (RosettaError, OSError) as error:
        raise _pull_failure(error, summary) from error
    return summary


async def _pull_table(
    puller: _Puller, client: ServiceNowClient, table: str, *, since: datetime | None, settled: str
) -> None:
    stored_value = await puller.store.get_watermark("servicenow", table)
    stored = msgspec.convert(stored_value, TableMark) if stored_value else None
    start = TableMark(sys_updated_on=since.strftime(SN_TIME)) if since is not None else stored
    last: list[tuple[str, str]] = []

    async def body(land: LandFunction, _: StreamSummary) -> None:
        async for records in client.changed_records(table, start):
            await land(records)
            last[:] = [(str(records[-1]["sys_updated_on"]), str(records[-1]["sys_id"]))]

    result = await puller.stream(table, body)
    reached = last[0] if last else (start.key if start is not None else None)
    if reached is None:
        return
    # Stop short of the last SETTLE: a row committed late in this second may sort before what was read.
    mark = TableMark(sys_updated_on=reached[0], sys_id=reached[1])
    if mark.sys_updated_on >= settled:
        mark = TableMark(sys_updated_on=settled, sys_id="")
    covers_stored = stored is None or (start is not None and start.key <= stored.key)
    if covers_stored and (stored is None or mark.key > stored.key):
        await puller.advance(table, msgspec.to_builtins(mark), result)


# ---------------------------------------------------------------------------------------------- Dynatrace


async def pull_dynatrace(
    store: RawStore,
    client: DynatraceClient,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    entity_types: Sequence[str] = DEFAULT_ENTITY_TYPES,
    concurrency: int = 4,
) -> PullSummary:
    """Entities and SLOs (snapshots), problems and metric series (incremental)."""
    now = now or datetime.now(UTC)
    summary = PullSummary(source="dynatrace", target="dynatrace")
    puller = _Puller(store, summary, origin=client.transport.base_url)
    now_ms = _ms(now)
    try:
        entity_from = _ms(since or now - FIRST_PULL_LOOKBACK["entity"])

        async def entities(land: LandFunction, _: StreamSummary) -> None:
            for entity_type in entity_types:
                async for page in client.entities(f'type("{entity_type}")', from_ms=entity_from, to_ms=now_ms):
                    await land(page)

        async def slos(land: LandFunction, _: StreamSummary) -> None:
            async for page in client.slos():
                await land(page)

        await puller.stream("entity", entities)
        await puller.stream("slo", slos)
        await _pull_problems(puller, client, since=since, now_ms=now_ms)
        await _pull_metrics(puller, client, metrics, since=since, now_ms=now_ms, concurrency=concurrency)
    except (RosettaError, OSError) as error:
        raise _pull_failure(error, summary) from error
    return summary


def _start_ms(stored: Mapping[str, Any] | None, since: datetime | None, default_ms: int) -> tuple[int, int | None]:
    """Where a time-windowed stream starts, and the stored mark (``to`` in epoch ms) if any."""
    stored_to = int(stored["to"]) if stored and "to" in stored else None
    if since is not None:
        return _ms(since), stored_to
    return (stored_to if stored_to is not None else default_ms), stored_to


async def _advance_window(
    puller: _Puller, stream: str, *, start: int, stored: int | None, new: int, result: StreamSummary
) -> None:
    if (stored is None or start <= stored) and (stored is None or new > stored):
        await puller.advance(stream, {"to": new}, result)


async def _pull_problems(puller: _Puller, client: DynatraceClient, *, since: datetime | None, now_ms: int) -> None:
    stored_value = await puller.store.get_watermark("dynatrace", "problem")
    default = now_ms - int(FIRST_PULL_LOOKBACK["problem"].total_seconds() * 1000)
    start, stored = _start_ms(stored_value, since, default)

    async def body(land: LandFunction, _: StreamSummary) -> None:
        async for page in client.problems(from_ms=start, to_ms=now_ms):
            await land(page)

    result = await puller.stream("problem", body)
    # Open problems change (comments, end time): the next window overlaps this one by an hour.
    await _advance_window(puller, "problem", start=start, stored=stored, new=now_ms - HOUR_MS, result=result)


async def _pull_metrics(
    puller: _Puller,
    client: DynatraceClient,
    metrics: Sequence[str],
    *,
    since: datetime | None,
    now_ms: int,
    concurrency: int,
) -> None:
    today = now_ms - now_ms % DAY_MS
    default = today - int(FIRST_PULL_LOOKBACK["metric_series"].total_seconds() * 1000)
    marks: list[tuple[str, int, int | None]] = []

    async def body(land: LandFunction, result: StreamSummary) -> None:
        for key in metrics:
            stored_value = await puller.store.get_watermark("dynatrace", f"metric:{key}")
            start, stored = _start_ms(stored_value, since, default)
            windows = list(_day_windows(start - start % DAY_MS, now_ms))
            try:
                async for documents in ordered_concurrently(
                    (_metric_window(client, key, lo, hi) for lo, hi in windows), concurrency
                ):
                    await land(documents)
            except ExternalApiError as error:
                if error.status != 404:
                    raise
                result.warnings.append(f"{key}: unknown metric, skipped")
                continue
            marks.append((key, start, stored))

    result = await puller.stream("metric_series", body)
    for key, start, stored in marks:
        await _advance_window(puller, f"metric:{key}", start=start, stored=stored, new=today, result=result)


def _day_windows(start_ms: int, end_ms: int) -> Iterable[tuple[int, int]]:
    day = start_ms
    while day < end_ms:
        yield day, day + DAY_MS
        day += DAY_MS


def _metric_window(
    client: DynatraceClient, key: str, from_ms: int, to_ms: int
) -> Callable[[], Awaitable[Sequence[dict[str, Any]]]]:
    async def fetch() -> Sequence[dict[str, Any]]:
        body = await client.query_metrics(f"{key}:names", from_ms=from_ms, to_ms=to_ms, resolution="1h")
        return metric_series(body, metric_key=key, from_ms=from_ms, to_ms=to_ms)

    return fetch


# ---------------------------------------------------------------------------------------------- Argo CD


async def pull_argocd(store: RawStore, client: ArgoCdClient) -> PullSummary:
    """Every application the token may see, with its history and last operation."""
    summary = PullSummary(source="argocd", target="argocd")
    puller = _Puller(store, summary, origin=client.transport.base_url)

    async def body(land: LandFunction, _: StreamSummary) -> None:
        await land(await client.applications())

    try:
        await puller.stream("application", body)
    except (RosettaError, OSError) as error:
        raise _pull_failure(error, summary) from error
    return summary


# ---------------------------------------------------------------------------------------------- entry point


async def run_pull(
    settings: Settings, store: RawStore, target: PullTarget, *, since: datetime | None = None
) -> PullSummary:
    """``rosetta raw pull <target>``: build the connector from settings, pull, close the connector."""
    if target in ("servicenow", "cmdb"):
        servicenow = ServiceNowClient.from_settings(settings.servicenow)
        tables = ITSM_TABLES if target == "servicenow" else CMDB_TABLES
        try:
            return await pull_servicenow_tables(store, servicenow, tables, target=target, since=since)
        finally:
            await servicenow.aclose()
    if target == "dynatrace":
        dynatrace = DynatraceClient.from_settings(settings.dynatrace)
        try:
            return await pull_dynatrace(store, dynatrace, since=since, concurrency=settings.dynatrace.max_concurrency)
        finally:
            await dynatrace.aclose()
    argocd = ArgoCdClient.from_settings(settings.argocd)
    try:
        return await pull_argocd(store, argocd)
    finally:
        await argocd.aclose()
