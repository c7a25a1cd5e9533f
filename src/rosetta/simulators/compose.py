"""All simulators together: built from one dataset, mounted under ``/_sim/<system>``, with their credentials.

``rosetta simulate all`` serves :func:`composed_app`; ``rosetta dev`` adds :func:`mount_handlers` to the
platform app (outside every context's API and OpenAPI document) and points the connectors at them with
:func:`connector_settings`. ``rosetta simulate <system>`` serves that system's app at the root, like the
real one (``/api/v2``, ``/api/now/table``, ``/api/v1``).

Credentials the simulators accept (and the connectors are given in development):
Dynatrace ``Api-Token`` :data:`rosetta.simulators.dynatrace.DEFAULT_TOKEN`;
ServiceNow Basic ``rosetta``/``rosetta`` or ``Bearer`` :data:`SERVICENOW_TOKEN`;
Argo CD ``Bearer`` :data:`rosetta.simulators.argocd.DEFAULT_TOKEN`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send
from pydantic import SecretStr

from rosetta.core.security.permissions import Permission, requires
from rosetta.core.settings import ExternalSystem
from rosetta.simulators import argocd, dynatrace, servicenow
from rosetta.simulators.app import SimulatorApp
from rosetta.simulators.dataset import Dataset, load_dataset
from rosetta.simulators.faults import FaultInjector

SystemName = Literal["dynatrace", "servicenow", "argocd"]
SYSTEMS: tuple[SystemName, ...] = ("dynatrace", "servicenow", "argocd")
MOUNT_PREFIX = "/_sim"
SERVICENOW_USER = ("rosetta", "rosetta")
SERVICENOW_TOKEN = "servicenow-simulator-token"  # noqa: S105 - a simulator's well-known OAuth bearer token

# Path of each system's API under its app's root (what a connector's base URL ends with).
API_ROOT: dict[SystemName, str] = {"dynatrace": "/api/v2", "servicenow": "", "argocd": ""}


@dataclass
class Simulators:
    """The simulators of one process, by system."""

    dynatrace: dynatrace.DynatraceSimulator | None = None
    servicenow: servicenow.ServiceNowSimulator | None = None
    argocd: argocd.ArgoCdSimulator | None = None

    def apps(self) -> dict[SystemName, SimulatorApp]:
        """The running apps, by system."""
        found: dict[SystemName, SimulatorApp] = {}
        for name in SYSTEMS:
            simulator = getattr(self, name)
            if simulator is not None:
                found[name] = simulator.app
        return found


def build_simulators(dataset: Dataset, systems: Iterable[SystemName] = SYSTEMS, *, seed: int = 0) -> Simulators:
    """One simulator per system asked for, each with its own fault injector seeded with ``seed``."""
    wanted = set(systems)
    built = Simulators()
    if "dynatrace" in wanted:
        built.dynatrace = dynatrace.DynatraceSimulator(dataset.dynatrace, faults=FaultInjector(seed=seed))
    if "servicenow" in wanted:
        built.servicenow = servicenow.ServiceNowSimulator(
            dataset.servicenow,
            users={SERVICENOW_USER[0]: SERVICENOW_USER[1]},
            tokens={SERVICENOW_TOKEN},
            faults=FaultInjector(seed=seed),
        )
    if "argocd" in wanted:
        built.argocd = argocd.ArgoCdSimulator(dataset.argocd_applications, faults=FaultInjector(seed=seed))
    return built


def mount_handlers(simulators: Simulators, prefix: str = MOUNT_PREFIX) -> list[Any]:
    """ASGI mounts ``<prefix>/<system>`` for each simulator (no OpenAPI, public: each checks its own auth)."""
    handlers = []
    for name, simulator in simulators.apps().items():
        handlers.append(_mount(f"{prefix}/{name}", simulator))
    return handlers


def _mount(path: str, simulator: SimulatorApp) -> Any:
    @asgi(
        path, is_mount=True, copy_scope=True, guards=[requires(Permission.PUBLIC)], name=f"simulator-{simulator.name}"
    )
    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        await simulator.asgi(scope, receive, send)

    return mounted


def composed_app(simulators: Simulators) -> Litestar:
    """One app serving every simulator under ``/_sim/<system>`` (``rosetta simulate all``)."""
    return Litestar(route_handlers=mount_handlers(simulators), openapi_config=None, logging_config=None)


def base_urls(server_url: str, systems: Sequence[SystemName], *, mounted: bool) -> dict[SystemName, str]:
    """The base URL a connector uses for each system served at ``server_url``."""
    root = server_url.rstrip("/")
    return {name: f"{root}{MOUNT_PREFIX + '/' + name if mounted else ''}{API_ROOT[name]}" for name in systems}


def connector_settings(server_url: str, *, mounted: bool = True) -> dict[SystemName, ExternalSystem]:
    """``settings.dynatrace/servicenow/argocd`` pointing at simulators served at ``server_url``."""
    urls = base_urls(server_url, SYSTEMS, mounted=mounted)
    return {
        "dynatrace": ExternalSystem(url=urls["dynatrace"], token=SecretStr(dynatrace.DEFAULT_TOKEN)),
        "servicenow": ExternalSystem(
            url=urls["servicenow"], username=SERVICENOW_USER[0], password=SecretStr(SERVICENOW_USER[1])
        ),
        "argocd": ExternalSystem(url=urls["argocd"], token=SecretStr(argocd.DEFAULT_TOKEN)),
    }


def development_wiring(
    dataset_dir: Path, server_url: str, configured: Mapping[SystemName, ExternalSystem]
) -> tuple[list[Any], dict[SystemName, ExternalSystem]]:
    """What ``rosetta dev`` adds: the simulators mounted under ``/_sim`` (serving ``dataset_dir``), and
    connector settings pointing at them for each system that has no URL configured."""
    mounts = mount_handlers(build_simulators(load_dataset(dataset_dir)))
    simulated = connector_settings(server_url)
    return mounts, {name: simulated[name] for name in SYSTEMS if not configured[name].url}
