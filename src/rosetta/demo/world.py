"""The pure, seeded model of the demo enterprise: hierarchy, applications, environments, hosting, history.

Everything here is a function of ``(size, seed, end month)`` only: one ``random.Random(seed)`` drives the
structure, and every derived series gets its own ``random.Random`` seeded with a string key (Python hashes
string seeds with SHA-512, so they do not depend on ``PYTHONHASHSEED``). Nothing reads the clock, iterates a
set or calls ``hash()``, so the same inputs give the same world byte for byte.
"""

from __future__ import annotations

import calendar
import hashlib
import itertools
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from rosetta.core.errors import BadRequestError

# The default last month of the world: a constant, never today's date, so a default run is reproducible.
DEFAULT_END_MONTH = "2026-10"
MONTHS = 13
CURRENCY = "EUR"


class WorldSize(StrEnum):
    """How big the enterprise is."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class Granularity(StrEnum):
    """The period one cost line (CMDB export line or FOCUS row) covers."""

    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class SizeProfile:
    """The shape of one world size."""

    domains: int
    families_per_domain: int
    products_per_family: int
    applications: int
    ops_days: int  # incidents, changes, deployments and problems cover the last ``ops_days`` days
    metric_days: int  # hourly Dynatrace series cover the last ``metric_days`` days
    history_limit: int  # Argo CD ``spec.revisionHistoryLimit``: the history entries each application keeps


SIZES: dict[WorldSize, SizeProfile] = {
    WorldSize.SMALL: SizeProfile(4, 2, 2, 40, ops_days=395, metric_days=28, history_limit=1000),
    WorldSize.MEDIUM: SizeProfile(6, 3, 3, 500, ops_days=182, metric_days=28, history_limit=200),
    WorldSize.LARGE: SizeProfile(8, 5, 5, 5000, ops_days=42, metric_days=14, history_limit=50),
}

# domain code, domain name, [(family code, family name)]
CATALOGUE: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "PLATFORM",
        "Platform",
        (
            ("IAM", "Identity and access"),
            ("APIM", "API management"),
            ("MSG", "Messaging"),
            ("OBS", "Observability"),
            ("CICD", "Delivery tooling"),
        ),
    ),
    (
        "COMMERCE",
        "Commerce",
        (
            ("PAY", "Payments"),
            ("CART", "Shopping cart"),
            ("CAT", "Catalogue"),
            ("PRICE", "Pricing"),
            ("PROMO", "Promotions"),
        ),
    ),
    (
        "CUSTOMER",
        "Customer",
        (
            ("CRM", "Customer relationship"),
            ("LOY", "Loyalty"),
            ("CARE", "Customer care"),
            ("CID", "Customer identity"),
            ("MKT", "Marketing"),
        ),
    ),
    (
        "FINANCE",
        "Finance",
        (("ACC", "Accounting"), ("TRS", "Treasury"), ("BILL", "Billing"), ("TAX", "Tax"), ("CTRL", "Controlling")),
    ),
    (
        "SUPPLY",
        "Supply chain",
        (
            ("WMS", "Warehousing"),
            ("TMS", "Transport"),
            ("PROC", "Procurement"),
            ("INV", "Inventory"),
            ("FCST", "Demand forecasting"),
        ),
    ),
    (
        "PEOPLE",
        "People",
        (
            ("HRC", "HR core"),
            ("PAYR", "Payroll"),
            ("RECR", "Recruiting"),
            ("LRN", "Learning"),
            ("TIME", "Time tracking"),
        ),
    ),
    (
        "DATA",
        "Data and analytics",
        (
            ("DWH", "Data warehouse"),
            ("BI", "Business intelligence"),
            ("ML", "Machine learning"),
            ("MDM", "Master data"),
            ("STRM", "Streaming"),
        ),
    ),
    (
        "CORPORATE",
        "Corporate",
        (
            ("DOC", "Document management"),
            ("COLL", "Collaboration"),
            ("LEGAL", "Legal"),
            ("RISK", "Risk and compliance"),
            ("PPM", "Project portfolio"),
        ),
    ),
)

PRODUCT_QUALIFIERS: tuple[tuple[str, str], ...] = (
    ("ONLINE", "Online"),
    ("STORE", "In-store"),
    ("MOBILE", "Mobile"),
    ("PARTNER", "Partner"),
    ("CORE", "Core"),
    ("BO", "Back-office"),
    ("SELF", "Self-service"),
    ("B2B", "B2B"),
    ("INTL", "International"),
    ("REG", "Regulatory"),
)

APPLICATION_WORDS: tuple[tuple[str, str], ...] = (
    ("CHECKOUT", "Checkout"),
    ("GATEWAY", "Gateway"),
    ("LEDGER", "Ledger"),
    ("PORTAL", "Portal"),
    ("API", "Public API"),
    ("BATCH", "Nightly batch"),
    ("ENGINE", "Rules engine"),
    ("SEARCH", "Search"),
    ("REPORTING", "Reporting"),
    ("NOTIFY", "Notifications"),
    ("SYNC", "Synchronisation"),
    ("ADMIN", "Administration console"),
    ("APP", "Mobile app"),
    ("ETL", "Data pipelines"),
    ("ARCHIVE", "Archive"),
    ("AUTH", "Authentication"),
    ("SCHED", "Scheduler"),
    ("IMPORT", "Importer"),
    ("EXPORT", "Exporter"),
    ("BROKER", "Broker"),
    ("CACHE", "Cache"),
    ("WORKFLOW", "Workflow"),
    ("ANALYTICS", "Analytics"),
    ("FRAUD", "Fraud detection"),
    ("SETTLE", "Settlement"),
    ("RECON", "Reconciliation"),
    ("CONNECT", "Connector"),
    ("HUB", "Integration hub"),
    ("VAULT", "Vault"),
    ("FORMS", "Forms"),
    ("AUDIT", "Audit trail"),
    ("CONFIG", "Configuration"),
    ("QUOTE", "Quotation"),
    ("ORDERS", "Order management"),
    ("DOCS", "Documents"),
    ("PROFILE", "Profiles"),
    ("INSIGHT", "Insights"),
    ("PLANNER", "Planner"),
    ("INBOX", "Inbox"),
    ("MATCH", "Matching"),
)

# Production traffic on a weekend day relative to a weekday (Dynatrace series and the "requests" driver).
WEEKEND_TRAFFIC = 0.55
WEEKLY_TRAFFIC_MEAN = (5 + 2 * WEEKEND_TRAFFIC) / 7

ENVIRONMENTS: tuple[str, ...] = ("prod", "preprod", "test", "dev")
# Share of applications having each environment (prod always).
ENVIRONMENT_PRESENCE: dict[str, float] = {"prod": 1.0, "preprod": 0.85, "test": 0.3, "dev": 0.8}

PROVIDERS: tuple[str, ...] = ("onprem", "aws", "azure")
PROVIDER_WEIGHTS: tuple[float, ...] = (0.55, 0.3, 0.15)

# FOCUS tagging quality of a cloud application's resources: right keys, the "env" alias, no tags at all.
TAGGING: tuple[str, ...] = ("tagged", "alias", "untagged")
COMPONENT_KINDS: tuple[str, ...] = ("api", "web", "worker", "batch", "db")
DORA_PROFILES: tuple[str, ...] = ("elite", "high", "medium", "low")
DORA_WEIGHTS: tuple[float, ...] = (0.12, 0.38, 0.35, 0.15)


@dataclass(frozen=True, slots=True)
class Product:
    """A product, under a family, under a domain."""

    code: str
    name: str
    family_code: str
    family_name: str
    domain_code: str
    domain_name: str
    owner_group: str


@dataclass(frozen=True, slots=True)
class Placement:
    """One version of an application's place in the hierarchy (a slowly changing dimension row)."""

    product: Product
    owner_group: str
    status: str
    valid_from: date
    valid_to: date | None  # last day of validity, inclusive; None while current


@dataclass(frozen=True, slots=True)
class Application:
    """One application and everything that drives its data."""

    index: int
    code: str
    name: str
    history: tuple[Placement, ...]
    environments: tuple[str, ...]
    services: dict[str, tuple[str, ...]]  # environment -> service categories used there
    provider: str  # where it runs: onprem (CMDB cost export) or a cloud (FOCUS bills)
    components: tuple[str, ...]
    dependencies: tuple[str, ...]  # codes of applications it calls
    criticality: int  # 1 most critical .. 4 not critical
    scale: float  # relative size; drives cost, traffic and incident volume
    growth: float  # monthly growth of consumption
    first_day: date  # first day it consumes anything
    last_day: date  # last day it consumes anything (retired applications stop early)
    dora: str  # delivery performance profile: elite, high, medium, low
    requests_per_hour: float  # average production traffic
    tagging: str  # FOCUS tagging quality of its cloud resources: tagged, alias, untagged

    @property
    def current(self) -> Placement:
        """The latest placement."""
        return self.history[-1]

    def placement_on(self, day: date) -> Placement:
        """The placement valid on ``day`` (the first one before the application existed)."""
        for placement in reversed(self.history):
            if placement.valid_from <= day:
                return placement
        return self.history[0]

    @property
    def slug(self) -> str:
        """Lower-case name used for services, Argo CD applications and Kubernetes namespaces."""
        return self.code.lower()


@dataclass(frozen=True, slots=True)
class Window:
    """The 13 months the world covers, ending with ``end_month``."""

    start: date
    end: date  # last day, inclusive

    @property
    def days(self) -> int:
        """Number of days."""
        return (self.end - self.start).days + 1

    def each_day(self) -> Iterator[date]:
        """Every day of the window, in order."""
        for offset in range(self.days):
            yield self.start + timedelta(days=offset)

    def months(self) -> list[tuple[int, int]]:
        """Every (year, month) of the window, in order."""
        result = []
        year, month = self.start.year, self.start.month
        while (year, month) <= (self.end.year, self.end.month):
            result.append((year, month))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return result

    @property
    def end_instant(self) -> datetime:
        """Midnight UTC after the last day: the "now" of the world."""
        return datetime.combine(self.end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class World:
    """The whole enterprise."""

    size: WorldSize
    seed: int
    window: Window
    products: tuple[Product, ...]
    applications: tuple[Application, ...]
    profile: SizeProfile = field(repr=False)

    @property
    def origin(self) -> str:
        """How landed imports and dataset manifests name this world."""
        return f"demo-world size={self.size.value} seed={self.seed} end={self.window.end:%Y-%m}"

    def by_code(self) -> dict[str, Application]:
        """Applications by code."""
        return {app.code: app for app in self.applications}


def stable_id(seed: int, *parts: object, length: int = 32) -> str:
    """A deterministic lower-case hex id for a thing of the world (sys_ids, entity ids, commits)."""
    text = ":".join(str(part) for part in (seed, *parts))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def series_random(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible random stream for one series of the world."""
    return random.Random(":".join(str(part) for part in (seed, *parts)))  # noqa: S311 - simulation, not security


def parse_end_month(value: str | None) -> date:
    """The last day of a ``YYYY-MM`` month (default :data:`DEFAULT_END_MONTH`)."""
    text = value or DEFAULT_END_MONTH
    match = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 2000:
        raise BadRequestError(f"--end must be a month YYYY-MM (2000 or later), not {text!r}")
    year, month = int(match.group(1)), int(match.group(2))
    return date(year, month, calendar.monthrange(year, month)[1])


def month_window(end_day: date) -> Window:
    """The :data:`MONTHS` months ending on ``end_day``'s month."""
    year, month = end_day.year, end_day.month - (MONTHS - 1)
    while month < 1:
        year, month = year - 1, month + 12
    return Window(start=date(year, month, 1), end=end_day)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _build_products(rng: random.Random, profile: SizeProfile) -> list[Product]:
    products: list[Product] = []
    for domain_code, domain_name, families in CATALOGUE[: profile.domains]:
        for family_code, family_name in rng.sample(families, profile.families_per_domain):
            qualifiers = rng.sample(PRODUCT_QUALIFIERS, profile.products_per_family)
            for qualifier_code, qualifier_name in qualifiers:
                team = f"team-{_slug(family_name)}"
                if profile.products_per_family > 1:
                    team = f"{team}-{_slug(qualifier_code)}"
                products.append(
                    Product(
                        code=f"{family_code}-{qualifier_code}",
                        name=f"{qualifier_name} {family_name.lower()}",
                        family_code=family_code,
                        family_name=family_name,
                        domain_code=domain_code,
                        domain_name=domain_name,
                        owner_group=team,
                    )
                )
    return products


def _application_name(rng: random.Random, product: Product, taken: set[str]) -> tuple[str, str]:
    """A code unique in the world: ``FAMILY-WORD``, then ``FAMILY-WORD-QUALIFIER``, then numbered."""
    word_code, word_name = APPLICATION_WORDS[rng.randrange(len(APPLICATION_WORDS))]
    qualifier = product.code.split("-", 1)[1]
    candidates = itertools.chain(
        [
            (f"{product.family_code}-{word_code}", word_name),
            (f"{product.family_code}-{word_code}-{qualifier}", f"{word_name} ({product.name})"),
        ],
        ((f"{product.family_code}-{word_code}-{n}", f"{word_name} {n}") for n in itertools.count(2)),
    )
    for code, name in candidates:
        if code not in taken:
            taken.add(code)
            return code, name
    raise AssertionError("unreachable: numbered codes never run out")


def _assign_products(rng: random.Random, products: list[Product], count: int) -> list[Product]:
    """Every product gets at least one application; the rest go to products with uneven weights."""
    assigned = list(products[:count])
    weights = [rng.lognormvariate(0, 0.6) for _ in products]
    assigned += rng.choices(products, weights=weights, k=max(0, count - len(products)))
    return assigned


def _environment_services(
    rng: random.Random, domain_code: str, environments: tuple[str, ...]
) -> dict[str, tuple[str, ...]]:
    uses_database = rng.random() < 0.7
    uses_network = rng.random() < 0.6
    uses_analytics = domain_code == "DATA" or rng.random() < 0.05
    result: dict[str, tuple[str, ...]] = {}
    for environment in environments:
        services = ["Compute", "Storage"]
        if uses_database:
            services.append("Databases")
        if uses_network and environment in ("prod", "preprod"):
            services.append("Networking")
        if uses_analytics and environment != "dev":
            services.append("Analytics")
        result[environment] = tuple(services)
    return result


def _lifecycle(rng: random.Random, window: Window) -> tuple[date, date, str | None]:
    """First day, last day and an optional retirement: most apps live the whole window."""
    roll = rng.random()
    if roll < 0.06:  # a new application going live during the window
        offset = rng.randrange(30, window.days - 60)
        return window.start + timedelta(days=offset), window.end, None
    if roll < 0.09:  # an application retired during the window
        offset = rng.randrange(90, window.days - 30)
        return window.start, window.start + timedelta(days=offset), "retired"
    return window.start, window.end, None


def _history(
    rng: random.Random,
    product: Product,
    others: list[Product],
    window: Window,
    *,
    first_day: date,
    last_day: date,
    retired: bool,
    moves: bool,
) -> tuple[Placement, ...]:
    versions: list[Placement] = []
    start = first_day
    if moves:
        # Move on the first day of a month in the middle of the window, to a product of the same domain.
        year, month = window.months()[MONTHS // 2]
        move_day = date(year, month, 1)
        same_domain = [p for p in others if p.domain_code == product.domain_code and p.code != product.code]
        target = rng.choice(same_domain or [p for p in others if p.code != product.code])
        versions.append(Placement(product, product.owner_group, "active", start, move_day - timedelta(days=1)))
        product, start = target, move_day
    if retired:
        retire_day = last_day + timedelta(days=1)
        versions.append(Placement(product, product.owner_group, "active", start, last_day))
        versions.append(Placement(product, product.owner_group, "retired", retire_day, None))
    else:
        versions.append(Placement(product, product.owner_group, "active", start, None))
    return tuple(versions)


def build_world(size: WorldSize, seed: int, end_month: str | None = None) -> World:
    """Build the enterprise of a size and seed, ending with ``end_month`` (default :data:`DEFAULT_END_MONTH`)."""
    profile = SIZES[size]
    window = month_window(parse_end_month(end_month))
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    products = _build_products(rng, profile)
    assigned = _assign_products(rng, products, profile.applications)
    # Platform applications come first so that everyone else can depend on them (dependencies point backwards).
    assigned.sort(key=lambda product: product.domain_code != "PLATFORM")
    movers = set(rng.sample(range(len(assigned)), max(1, profile.applications // 100)))
    taken: set[str] = set()
    applications: list[Application] = []
    platform_codes: list[str] = []
    for index, product in enumerate(assigned):
        code, name = _application_name(rng, product, taken)
        environments = tuple(env for env in ENVIRONMENTS if rng.random() < ENVIRONMENT_PRESENCE[env])
        first_day, last_day, retirement = _lifecycle(rng, window)
        moves = index in movers
        if moves:  # a mover lives the whole window, so its move is always visible
            first_day, last_day, retirement = window.start, window.end, None
        scale = rng.lognormvariate(0, 0.9)
        candidates = [app.code for app in applications[-50:] if app.current.product.family_code == product.family_code]
        dependencies = sorted(
            set(rng.sample(platform_codes, min(len(platform_codes), rng.randrange(0, 3))))
            | set(rng.sample(candidates, min(len(candidates), rng.randrange(0, 2))))
        )
        components = tuple(
            kind
            for kind in COMPONENT_KINDS
            if kind == "api" or rng.random() < {"web": 0.5, "worker": 0.4, "batch": 0.3, "db": 0.6}[kind]
        )
        provider = rng.choices(PROVIDERS, weights=PROVIDER_WEIGHTS)[0]
        application = Application(
            index=index,
            code=code,
            name=name,
            history=_history(
                rng,
                product,
                products,
                window,
                first_day=first_day,
                last_day=last_day,
                retired=retirement is not None,
                moves=moves,
            ),
            environments=environments,
            services=_environment_services(rng, product.domain_code, environments),
            provider=provider,
            components=components,
            dependencies=tuple(dependencies),
            criticality=rng.choices((1, 2, 3, 4), weights=(0.15, 0.3, 0.35, 0.2))[0],
            scale=scale,
            growth=rng.uniform(-0.01, 0.035),
            first_day=first_day,
            last_day=last_day,
            dora=rng.choices(DORA_PROFILES, weights=DORA_WEIGHTS)[0],
            requests_per_hour=round(rng.lognormvariate(math.log(20_000), 1.1) * math.sqrt(scale), 1),
            tagging=rng.choices(TAGGING, weights=(0.88, 0.07, 0.05))[0] if provider != "onprem" else "tagged",
        )
        applications.append(application)
        if product.domain_code == "PLATFORM":
            platform_codes.append(code)
    _ensure_tagging_cases(applications)
    return World(
        size=size, seed=seed, window=window, products=tuple(products), applications=tuple(applications), profile=profile
    )


def _ensure_tagging_cases(applications: list[Application]) -> None:
    """Every world has cloud resources tagged with the ``env`` alias and untagged ones, whatever its size."""
    cloud = [index for index, app in enumerate(applications) if app.provider != "onprem"]
    for tagging in TAGGING[1:]:
        if len(cloud) >= len(TAGGING) and not any(applications[index].tagging == tagging for index in cloud):
            # The smallest tagged cloud application, so the deliberate gap stays a realistic share of spend.
            chosen = min(
                (index for index in cloud if applications[index].tagging == "tagged"),
                key=lambda index: (applications[index].scale, index),
            )
            applications[chosen] = replace(applications[chosen], tagging=tagging)


def month_days(year: int, month: int) -> int:
    """Days in a month."""
    return calendar.monthrange(year, month)[1]


def growth_factor(app: Application, day: date, start: date) -> float:
    """How much an application's consumption and traffic grew between ``start`` and ``day``."""
    return float((1.0 + app.growth) ** ((day - start).days / 30.4))
