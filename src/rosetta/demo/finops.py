"""The FinOps side of the demo world: daily consumption, FOCUS bills, shared-cost pools, drivers, budgets.

Every function yields raw payloads exactly as ``docs/raw-zone.md`` specifies them, one at a time (streaming).
Money is computed in integer cents from integer quantities (hundredths) and integer unit prices (millionths),
so every amount is an exact decimal and a month total is the sum of its days whatever the granularity.

On-premises applications bill through the CMDB cost export (``cmdb/cost``); cloud-hosted applications bill
through their provider's FOCUS export (``aws/focus``, ``azure/focus``). The two are disjoint: no cost is in both.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from rosetta.demo.world import (
    CURRENCY,
    WEEKLY_TRAFFIC_MEAN,
    Application,
    Granularity,
    World,
    growth_factor,
    month_days,
    series_random,
    stable_id,
)

ONE_DAY = timedelta(days=1)
ENVIRONMENT_FACTOR: dict[str, float] = {"prod": 1.0, "preprod": 0.4, "test": 0.25, "dev": 0.2}


@dataclass(frozen=True, slots=True)
class Offer:
    """What one provider sells for one service category."""

    service_name: str
    unit: str
    price_micro: int  # unit price in millionths of a euro
    sku: str
    resource_type: str


@dataclass(frozen=True, slots=True)
class Usage:
    """How a service category is consumed: base daily quantity (prod, scale 1) and its day-to-day shape."""

    base: float
    noise: float
    weekend_nonprod: float  # non-production weekend factor (auto-shutdown of compute)
    spike_chance: float


USAGE: dict[str, Usage] = {
    "Compute": Usage(base=192.0, noise=0.06, weekend_nonprod=0.35, spike_chance=0.003),
    "Storage": Usage(base=2000.0, noise=0.01, weekend_nonprod=1.0, spike_chance=0.0),
    "Databases": Usage(base=96.0, noise=0.03, weekend_nonprod=0.6, spike_chance=0.001),
    "Networking": Usage(base=150.0, noise=0.2, weekend_nonprod=0.5, spike_chance=0.005),
    "Analytics": Usage(base=24.0, noise=0.25, weekend_nonprod=0.5, spike_chance=0.004),
}

OFFERS: dict[str, dict[str, Offer]] = {
    "onprem": {
        "Compute": Offer("Virtual machines", "vCPU-hours", 35_000, "ONP-VM-VCPU", "Virtual machine"),
        "Storage": Offer("Block storage", "GB-days", 1_100, "ONP-SAN-GB", "Volume"),
        "Databases": Offer("Managed databases", "vCore-hours", 240_000, "ONP-DBAAS-VCORE", "Database"),
        "Networking": Offer("Load balancers", "GB", 15_000, "ONP-LB-GB", "Load balancer"),
        "Analytics": Offer("Hadoop cluster", "Node-hours", 900_000, "ONP-HDP-NODE", "Cluster"),
    },
    "aws": {
        "Compute": Offer("Amazon Elastic Compute Cloud", "Hours", 48_000, "EC2-M6I-LARGE", "Instance"),
        "Storage": Offer("Amazon Simple Storage Service", "GB-days", 800, "S3-STD-GB", "Bucket"),
        "Databases": Offer("Amazon Relational Database Service", "Hours", 210_000, "RDS-PG-M6G", "DB instance"),
        "Networking": Offer("AWS Data Transfer", "GB", 90_000, "DT-OUT-GB", "Data transfer"),
        "Analytics": Offer("Amazon Athena", "Hours", 1_150_000, "ATHENA-DPU", "Workgroup"),
    },
    "azure": {
        "Compute": Offer("Virtual Machines", "Hours", 46_000, "D2S-V5", "Virtual machine"),
        "Storage": Offer("Storage", "GB-days", 700, "BLOB-HOT-LRS", "Storage account"),
        "Databases": Offer("Azure SQL Database", "vCore-hours", 230_000, "SQLDB-GP-VCORE", "SQL database"),
        "Networking": Offer("Bandwidth", "GB", 80_000, "BW-INTERNET-EGRESS", "Bandwidth"),
        "Analytics": Offer("Azure Synapse Analytics", "Hours", 1_200_000, "SYN-DWU100", "SQL pool"),
    },
}

PROVIDER_INFO: dict[str, dict[str, str]] = {
    "aws": {
        "ProviderName": "AWS",
        "PublisherName": "Amazon Web Services, Inc.",
        "InvoiceIssuerName": "Amazon Web Services EMEA SARL",
        "BillingAccountId": "418273645190",
        "BillingAccountName": "Rosetta Demo Payer",
        "RegionId": "eu-west-3",
        "RegionName": "Europe (Paris)",
        "AvailabilityZone": "eu-west-3a",
    },
    "azure": {
        "ProviderName": "Microsoft",
        "PublisherName": "Microsoft",
        "InvoiceIssuerName": "Microsoft Ireland Operations Limited",
        "BillingAccountId": "86419237",
        "BillingAccountName": "Rosetta Demo Enrollment",
        "RegionId": "francecentral",
        "RegionName": "France Central",
        "AvailabilityZone": "",
    },
}

SHARED_POOLS: tuple[tuple[str, str, float], ...] = (
    # pool, name, share of the month's expected direct cost
    ("network", "Network", 0.045),
    ("security", "Security", 0.03),
    ("observability", "Observability licences", 0.02),
    ("datacenter", "Datacenter facilities", 0.05),
    ("service_desk", "Service desk", 0.025),
)

USAGE_DRIVERS: tuple[str, ...] = ("requests", "compute_hours", "storage_gb_days")


def _cents(quantity_hundredths: int, price_micro: int) -> int:
    """Cost in cents of a quantity at a unit price, rounded half up."""
    return (quantity_hundredths * price_micro + 500_000) // 1_000_000


def money(cents: int) -> str:
    """Cents as a decimal string (``-12.05``)."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def quantity_text(hundredths: int) -> str:
    """A quantity in hundredths as a decimal string."""
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def daily_quantities(world: World, app: Application, environment: str, category: str) -> Iterator[tuple[date, int]]:
    """The consumption of one application, environment and service, day by day, in hundredths of a unit.

    A pure function of the world: calling it twice yields the same series (drivers and tests rely on it).
    This is the hot loop of the large world (millions of days), hence the locals.
    """
    usage = USAGE[category]
    rng = series_random(world.seed, "usage", app.code, environment, category)
    gauss, draw = rng.gauss, rng.random
    base = usage.base * app.scale * ENVIRONMENT_FACTOR[environment]
    weekend_factor = 0.92 if environment == "prod" else usage.weekend_nonprod
    storage = category == "Storage"
    first, last = app.first_day, app.last_day
    step = growth_factor(app, world.window.start + ONE_DAY, world.window.start)
    trend = level = 1.0
    day, weekday = world.window.start, world.window.start.weekday()
    for _ in range(world.window.days):
        # Draw every day, active or not, so a series does not shift when the lifecycle changes.
        noise = gauss(0.0, usage.noise)
        spike = draw() < usage.spike_chance
        if first <= day <= last:
            if storage:
                level *= 1.0 + max(noise, -0.5) * 0.1  # storage drifts slowly instead of jittering
                factor = level
            else:
                factor = max(0.05, 1.0 + noise) * (2.5 if spike else 1.0)
            weekly = weekend_factor if weekday >= 5 else 1.0
            yield day, max(0, round(base * weekly * factor * trend * 100))
        day += ONE_DAY
        weekday = (weekday + 1) % 7
        trend *= step


@dataclass(slots=True)
class CostLine:
    """One line of consumption: a period (a day or a month), an application, an environment, a service."""

    day: date  # first day of the period
    end: date  # day after the period
    app: Application
    environment: str
    category: str
    offer: Offer
    quantity: int  # hundredths
    cents: int


def cost_lines(world: World, provider: str, granularity: Granularity = Granularity.DAY) -> Iterator[CostLine]:
    """Every consumption line billed by ``provider`` (``onprem`` = the CMDB export), app by app, in order."""
    for app in world.applications:
        if app.provider != provider:
            continue
        for environment in app.environments:
            for category in app.services[environment]:
                offer = OFFERS[provider][category]
                series = daily_quantities(world, app, environment, category)
                if granularity is Granularity.DAY:
                    for day, quantity in series:
                        cents = _cents(quantity, offer.price_micro)
                        yield CostLine(day, day + ONE_DAY, app, environment, category, offer, quantity, cents)
                else:
                    for start, quantity, cents in _by_month(series, offer.price_micro):
                        end = start + timedelta(days=month_days(start.year, start.month))
                        yield CostLine(start, end, app, environment, category, offer, quantity, cents)


def _by_month(series: Iterator[tuple[date, int]], price_micro: int) -> Iterator[tuple[date, int, int]]:
    """Month totals of a daily series: (first day, quantity, cents), cents summed day by day so that a
    month's amount is exactly the sum of its daily amounts."""
    month: date | None = None
    quantity = cents = 0
    for day, amount in series:
        if month is None or (day.year, day.month) != (month.year, month.month):
            if month is not None:
                yield month, quantity, cents
            month, quantity, cents = day.replace(day=1), 0, 0
        quantity += amount
        cents += _cents(amount, price_micro)
    if month is not None:
        yield month, quantity, cents


def cmdb_cost_documents(world: World, granularity: Granularity = Granularity.DAY) -> Iterator[dict[str, Any]]:
    """``cmdb/cost`` payloads: the CMDB cost export of every on-premises application."""
    for line in cost_lines(world, "onprem", granularity):
        amount = money(line.cents)
        yield {
            "date": line.day.isoformat(),
            "app_code": line.app.code,
            "environment": line.environment,
            "service_category": line.category,
            "service_name": line.offer.service_name,
            "provider": "onprem",
            "quantity": quantity_text(line.quantity),
            "unit": line.offer.unit,
            "billed_cost": amount,
            "effective_cost": amount,
            "currency": CURRENCY,
        }


def _list_price_micro(provider: str, offer: Offer) -> int:
    # Negotiated discounts: the list price is what the contracted price would be without them.
    discount = {"aws": 0.18, "azure": 0.12}[provider]
    return round(offer.price_micro / (1 - discount))


def focus_tags(world: World, app: Application, environment: str, category: str) -> dict[str, str] | None:
    """The FOCUS ``Tags`` of a resource: mostly right, some with the ``env`` alias, some missing (unallocated)."""
    if app.tagging == "untagged":
        return None
    if app.tagging == "alias":
        return {"application": app.code, "env": environment}
    # A few resources of well-tagged applications still miss their tags (forgotten volumes, load balancers).
    if stable_id(world.seed, "untagged", app.code, environment, category, length=4) < "0a00":
        return None
    return {"application": app.code, "environment": environment}


def _sub_account(world: World, provider: str, app: Application, environment: str) -> tuple[str, str]:
    domain = app.current.product.domain_code
    scope = "prod" if environment == "prod" else "nonprod"
    if provider == "aws":
        account = str(int(stable_id(world.seed, "aws-account", domain, scope, length=12), 16) % 10**12).zfill(12)
        return account, f"{domain.lower()}-{scope}"
    raw = stable_id(world.seed, "azure-subscription", domain, scope)
    subscription = f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"
    return subscription, f"sub-{domain.lower()}-{scope}"


def _resource_id(world: World, provider: str, line: CostLine, account: str) -> tuple[str, str]:
    slug, env, category = line.app.slug, line.environment, line.category.lower()
    name = f"{slug}-{env}-{category}"
    if provider == "aws":
        region = PROVIDER_INFO["aws"]["RegionId"]
        token = stable_id(world.seed, "resource", line.app.code, env, line.category, length=17)
        return f"arn:aws:{category}:{region}:{account}:resource/{category}-{token}", name
    group = f"rg-{slug}-{env}"
    return f"/subscriptions/{account}/resourceGroups/{group}/providers/Microsoft.Resources/{category}/{name}", name


def _timestamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _focus_resource(world: World, provider: str, line: CostLine) -> dict[str, Any]:
    """The columns of a FOCUS row that are the same every day of one resource, in FOCUS column order."""
    info, offer = PROVIDER_INFO[provider], line.offer
    account, account_name = _sub_account(world, provider, line.app, line.environment)
    resource_id, resource_name = _resource_id(world, provider, line, account)
    list_micro = _list_price_micro(provider, offer)
    return {
        "AvailabilityZone": info["AvailabilityZone"] or None,
        "BilledCost": None,
        "BillingAccountId": info["BillingAccountId"],
        "BillingAccountName": info["BillingAccountName"],
        "BillingCurrency": CURRENCY,
        "BillingPeriodEnd": None,
        "BillingPeriodStart": None,
        "ChargeCategory": "Usage",
        "ChargeClass": None,
        "ChargeDescription": f"{offer.service_name} {offer.sku} usage ({offer.unit})",
        "ChargeFrequency": "Usage-Based",
        "ChargePeriodEnd": None,
        "ChargePeriodStart": None,
        "CommitmentDiscountCategory": None,
        "CommitmentDiscountId": None,
        "CommitmentDiscountName": None,
        "CommitmentDiscountStatus": None,
        "CommitmentDiscountType": None,
        "ConsumedQuantity": None,
        "ConsumedUnit": offer.unit,
        "ContractedCost": None,
        "ContractedUnitPrice": f"{offer.price_micro / 1_000_000:.6f}",
        "EffectiveCost": None,
        "InvoiceIssuerName": info["InvoiceIssuerName"],
        "ListCost": None,
        "ListUnitPrice": f"{list_micro / 1_000_000:.6f}",
        "PricingCategory": "Standard",
        "PricingQuantity": None,
        "PricingUnit": offer.unit,
        "ProviderName": info["ProviderName"],
        "PublisherName": info["PublisherName"],
        "RegionId": info["RegionId"],
        "RegionName": info["RegionName"],
        "ResourceId": resource_id,
        "ResourceName": resource_name,
        "ResourceType": offer.resource_type,
        "ServiceCategory": line.category,
        "ServiceName": offer.service_name,
        "SkuId": offer.sku,
        "SkuPriceId": f"{offer.sku}-{info['RegionId']}",
        "SubAccountId": account,
        "SubAccountName": account_name,
        "Tags": focus_tags(world, line.app, line.environment, line.category),
    }


def focus_documents(
    world: World, provider: str, granularity: Granularity = Granularity.DAY
) -> Iterator[dict[str, Any]]:
    """``<provider>/focus`` payloads: FOCUS 1.0 rows, every column, ``Tags`` parsed, amounts as strings."""
    resource_key: tuple[str, str, str] | None = None
    resource: dict[str, Any] = {}
    list_micro = 0
    periods: dict[tuple[int, int], tuple[str, str]] = {}
    for line in cost_lines(world, provider, granularity):
        key = (line.app.code, line.environment, line.category)
        if key != resource_key:
            resource_key, resource = key, _focus_resource(world, provider, line)
            list_micro = _list_price_micro(provider, line.offer)
        period = periods.get((line.day.year, line.day.month))
        if period is None:
            start = line.day.replace(day=1)
            period = (_timestamp(start), _timestamp(start + timedelta(days=month_days(start.year, start.month))))
            periods[(line.day.year, line.day.month)] = period
        amount = money(line.cents)
        quantity = quantity_text(line.quantity)
        row = resource.copy()
        row["BilledCost"] = row["ContractedCost"] = row["EffectiveCost"] = amount
        row["BillingPeriodStart"], row["BillingPeriodEnd"] = period
        row["ChargePeriodStart"], row["ChargePeriodEnd"] = _timestamp(line.day), _timestamp(line.end)
        row["ConsumedQuantity"] = row["PricingQuantity"] = quantity
        row["ListCost"] = money(_cents(line.quantity, list_micro))
        yield row


def application_documents(world: World) -> Iterator[dict[str, Any]]:
    """``cmdb/application`` payloads: one per application version (a move or retirement adds a version)."""
    for app in world.applications:
        for placement in app.history:
            product = placement.product
            yield {
                "app_code": app.code,
                "app_name": app.name,
                "product_code": product.code,
                "product_name": product.name,
                "family_code": product.family_code,
                "family_name": product.family_name,
                "domain_code": product.domain_code,
                "domain_name": product.domain_name,
                "owner_group": placement.owner_group,
                "status": placement.status,
                "valid_from": placement.valid_from.isoformat(),
                "valid_to": placement.valid_to.isoformat() if placement.valid_to else None,
            }


def expected_month_cents(world: World, app: Application, year: int, month: int) -> int:
    """The noise-free cost of an application for a month (all environments and services), in cents.

    Used to size budgets and shared pools the way a controller would: from the plan, not the actuals.
    """
    days = month_days(year, month)
    first, last = date(year, month, 1), date(year, month, days)
    # An application alive at the window's edges is planned as alive beyond them (budgets span whole years).
    first_day = date.min if app.first_day == world.window.start else app.first_day
    last_day = date.max if app.last_day == world.window.end else app.last_day
    active_days = max(0, (min(last, last_day) - max(first, first_day)).days + 1)
    if active_days == 0:
        return 0
    middle = first + timedelta(days=days // 2)
    trend = growth_factor(app, middle, world.window.start)
    total = 0.0
    for environment in app.environments:
        for category in app.services[environment]:
            usage = USAGE[category]
            weekly = (5 + 2 * (0.92 if environment == "prod" else usage.weekend_nonprod)) / 7
            quantity = usage.base * app.scale * ENVIRONMENT_FACTOR[environment] * weekly * trend * active_days
            total += quantity * OFFERS[app.provider][category].price_micro / 10_000
    return round(total)


def shared_cost_documents(world: World) -> Iterator[dict[str, Any]]:
    """``finance/shared_cost`` payloads: one amount per pool and month, sized on the month's planned spend."""
    for year, month in world.window.months():
        planned = sum(expected_month_cents(world, app, year, month) for app in world.applications)
        rng = series_random(world.seed, "shared", year, month)
        for pool, name, share in SHARED_POOLS:
            cents = round(planned * share * rng.uniform(0.93, 1.07))
            yield {
                "period": f"{year:04d}-{month:02d}",
                "pool": pool,
                "pool_name": name,
                "amount": money(cents),
                "currency": CURRENCY,
            }


def monthly_requests(world: World, app: Application, year: int, month: int) -> int:
    """Production requests in a month, from the same traffic model as the Dynatrace series."""
    days = month_days(year, month)
    first, last = date(year, month, 1), date(year, month, days)
    active_days = max(0, (min(last, app.last_day) - max(first, app.first_day)).days + 1)
    trend = growth_factor(app, first + timedelta(days=days // 2), world.window.start)
    return round(app.requests_per_hour * 24 * active_days * trend * WEEKLY_TRAFFIC_MEAN)


def usage_driver_documents(world: World) -> Iterator[dict[str, Any]]:
    """``finance/usage_driver`` payloads: requests, compute hours and storage GB-days per month and application."""
    for app in world.applications:
        sums: dict[tuple[str, str], int] = {}  # (period, driver) -> hundredths
        for environment in app.environments:
            for category, driver in (("Compute", "compute_hours"), ("Storage", "storage_gb_days")):
                if category not in app.services[environment]:
                    continue
                for day, quantity in daily_quantities(world, app, environment, category):
                    key = (f"{day.year:04d}-{day.month:02d}", driver)
                    sums[key] = sums.get(key, 0) + quantity
        for year, month in world.window.months():
            period = f"{year:04d}-{month:02d}"
            requests = monthly_requests(world, app, year, month)
            if requests == 0:
                continue
            yield {"period": period, "app_code": app.code, "driver": "requests", "quantity": str(requests)}
            for driver in USAGE_DRIVERS[1:]:
                yield {
                    "period": period,
                    "app_code": app.code,
                    "driver": driver,
                    "quantity": quantity_text(sums.get((period, driver), 0)),
                }


def budget_documents(world: World) -> Iterator[dict[str, Any]]:
    """``finance/budget`` payloads: for each year the window touches, twelve monthly lines per product.

    A product's plan is the planned spend of the applications placed in it that month, plus a share of
    indirect costs and a margin that differs per product, rounded to 100 euros.
    """
    years = sorted({year for year, _ in world.window.months()})
    for year in years:
        planned: dict[tuple[str, int], int] = {}
        for month in range(1, 13):
            first = date(year, month, 1)
            for app in world.applications:
                key = (app.placement_on(first).product.code, month)
                planned[key] = planned.get(key, 0) + expected_month_cents(world, app, year, month)
        for product in world.products:
            margin = series_random(world.seed, "budget", year, product.code).uniform(0.95, 1.3)
            for month in range(1, 13):
                cents = math.floor(planned.get((product.code, month), 0) * 1.15 * margin / 10_000 + 0.5) * 10_000
                yield {
                    "version": f"Budget {year} initial",
                    "year": year,
                    "month": month,
                    "scope_level": "product",
                    "scope_code": product.code,
                    "amount": money(cents),
                    "currency": CURRENCY,
                }
