"""One typed, cached settings object read from ``ROSETTA_*`` environment variables and an optional ``.env``.

A bad value stops start-up with one line per problem naming the variable. Secrets are ``SecretStr``:
they never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rosetta.core.errors import ConfigurationError

DatabaseRole = Literal["ref", "finops", "monitoring", "raw"]
DATABASE_ROLES: tuple[DatabaseRole, ...] = ("ref", "finops", "monitoring", "raw")

# Database names used when a server URL (embedded or ROSETTA_DATABASE_URL) is given instead of one URL per database.
DEFAULT_DATABASE_NAMES: dict[DatabaseRole, str] = {
    "ref": "platform_ref_db",
    "finops": "finops_db",
    "monitoring": "monitoring_db",
    "raw": "raw_db",
}

DEFAULT_GROUP_ROLES: dict[str, str] = {
    "Rosetta_Admin": "admin",
    "Rosetta_FinOps_Admin": "finops_admin",
    "Rosetta_Referentiel_Admin": "referentiel_admin",
    "Rosetta_User": "user",
}

ENV_PREFIX = "ROSETTA_"


class IssuerSettings(BaseModel):
    """One trusted token issuer (Entra ID v1/v2, ADFS, Backstage, or the local development issuer)."""

    name: str
    kind: Literal["entra", "adfs", "backstage", "generic"] = "generic"
    issuer: str
    audiences: list[str]
    jwks_url: str | None = None
    discovery_url: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    groups_claim: str = "groups"
    roles_claim: str = "roles"
    # Where the caller's groups come from: the token itself, Microsoft Graph (Entra overage),
    # or Backstage (user tokens carry no groups).
    group_source: Literal["token", "graph", "backstage_userinfo", "backstage_catalog"] = "token"
    # What to do on Entra group overage when group_source is "token": deny, or resolve through Graph.
    overage: Literal["deny", "graph"] = "deny"
    graph_url: str = "https://graph.microsoft.com"
    graph_token_url: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None
    backstage_base_url: str | None = None
    required_typ: str | None = None
    allowed_tenants: list[str] = Field(default_factory=list)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg.lower() == "none" or alg.upper().startswith("HS")]
        if bad:
            raise ValueError(f"only asymmetric algorithms are accepted, not {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _tenants_of_a_multi_tenant_issuer(self) -> IssuerSettings:
        # Entra's multi-tenant discovery documents name the issuer with a literal {tenantid}: which tenants are
        # trusted must be listed, never "any tenant that can get a token for our audience".
        if "{tenantid}" in self.issuer and not self.allowed_tenants:
            raise ValueError("an issuer with {tenantid} needs allowed_tenants (the tenant ids it trusts)")
        return self

    @model_validator(mode="after")
    def _has_key_source(self) -> IssuerSettings:
        if not self.jwks_url and not self.discovery_url:
            raise ValueError("set jwks_url or discovery_url")
        return self


class ExternalSystem(BaseModel):
    """Base URL and credentials of one external system (Dynatrace, ServiceNow, Argo CD)."""

    url: str | None = None
    token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    # OAuth client (ServiceNow): tokens from the instance's token endpoint instead of Basic authentication.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    timeout_seconds: float = 30.0
    max_concurrency: int = 4
    max_retries: int = 5
    # Records or objects per page (ServiceNow sysparm_limit, Dynatrace pageSize): 500-1000 is the advice.
    page_size: int = Field(default=500, ge=1, le=10_000)


_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesSettings(BaseModel):
    """How the Job launcher reaches the Kubernetes API from inside its pod (in-cluster defaults)."""

    # Default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, which every pod gets.
    api_url: str | None = None
    # Default: the pod's own namespace (read from the service account's files).
    namespace: str | None = None
    # Read at each call: projected service-account tokens are rotated by the kubelet.
    token_file: Path = _SERVICE_ACCOUNT / "token"
    ca_file: Path = _SERVICE_ACCOUNT / "ca.crt"
    # Batch job name -> the CronJob whose Job template a launched run copies, e.g. {"finops": "rosetta-batch-finops"}.
    cronjobs: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=10.0, gt=0)


def _database_url(value: Any) -> Any:
    if value is None or value == "":
        return None
    try:
        url = make_url(str(value))
    except ArgumentError:
        raise ValueError("not a database URL (expected postgresql://user:password@host:port/database)") from None
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported database backend {url.get_backend_name()!r}: only PostgreSQL is supported")
    return url.set(drivername="postgresql+asyncpg")


class Settings(BaseSettings):
    """Every setting of every Rosetta process. See ``docs/configuration.md`` for each one with an example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path(".rosetta")

    # Databases: one URL per database wins; otherwise ROSETTA_DATABASE_URL names a server and the
    # default database names are used; with neither, an embedded PostgreSQL is started in data_dir.
    database_url: Annotated[URL | None, NoDecode] = None
    ref_database_url: Annotated[URL | None, NoDecode] = None
    finops_database_url: Annotated[URL | None, NoDecode] = None
    monitoring_database_url: Annotated[URL | None, NoDecode] = None
    raw_database_url: Annotated[URL | None, NoDecode] = None
    db_pool_size: int = Field(default=5, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_sizes: dict[str, int] = Field(default_factory=dict)
    db_statement_timeout_ms: int = Field(default=60_000, ge=0)

    raw_store: Literal["postgres", "mongodb"] = "postgres"
    mongodb_url: SecretStr | None = None
    mongodb_database: str = "rosetta_raw"

    oidc_issuers: list[IssuerSettings] = Field(default_factory=list)
    oidc_clock_skew_seconds: int = Field(default=60, ge=0, le=300)
    oidc_jwks_refetch_interval_seconds: int = Field(default=300, ge=1)
    oidc_jwks_cache_seconds: int = Field(default=3600, ge=1)
    # Verified tokens' principals are reused for this long at most (never past exp); 0 verifies every request.
    oidc_token_cache_seconds: int = Field(default=60, ge=0, le=300)
    oidc_token_cache_entries: int = Field(default=10_000, ge=1)
    group_roles: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_GROUP_ROLES))
    group_cache_seconds: int = Field(default=300, ge=0)

    dynatrace: ExternalSystem = Field(default_factory=ExternalSystem)
    servicenow: ExternalSystem = Field(default_factory=ExternalSystem)
    argocd: ExternalSystem = Field(default_factory=ExternalSystem)

    # Where a run started through an API executes: in the API process, or as a Kubernetes Job made from the
    # job's CronJob template (its own pod and resources).
    batch_launcher: Literal["in-process", "kubernetes"] = "in-process"
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    # A run still queued this long after an API call queued it never started (its Job's pod was never scheduled
    # or its image never pulled, or the API process running it in-process restarted): the next run or launch of
    # the job records it failed. Keep it above the launched Job's activeDeadlineSeconds, after which Kubernetes
    # starts no more pods for it (the Helm chart derives it so).
    batch_queue_expiry_seconds: int = Field(default=10_800, ge=60)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] | None = None

    @field_validator(
        "database_url",
        "ref_database_url",
        "finops_database_url",
        "monitoring_database_url",
        "raw_database_url",
        mode="before",
    )
    @classmethod
    def _parse_database_url(cls, value: Any) -> Any:
        return _database_url(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("group_roles")
    @classmethod
    def _known_roles(cls, value: dict[str, str]) -> dict[str, str]:
        known = {"admin", "finops_admin", "referentiel_admin", "user"}
        unknown = sorted({role for role in value.values() if role not in known})
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(unknown)}; roles are {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _mongodb_needs_url(self) -> Settings:
        if self.raw_store == "mongodb" and self.mongodb_url is None:
            raise ValueError("ROSETTA_RAW_STORE=mongodb needs ROSETTA_MONGODB_URL")
        return self

    @model_validator(mode="after")
    def _kubernetes_launcher_needs_cronjobs(self) -> Settings:
        if self.batch_launcher == "kubernetes" and not self.kubernetes.cronjobs:
            raise ValueError(
                "ROSETTA_BATCH_LAUNCHER=kubernetes needs ROSETTA_KUBERNETES__CRONJOBS"
                ' (batch job -> CronJob, e.g. {"finops": "rosetta-batch-finops"})'
            )
        return self

    @model_validator(mode="after")
    def _production_needs_a_database(self) -> Settings:
        # Without a URL the process would start a private embedded PostgreSQL in its container: data that lives
        # and dies with one pod, and a batch that writes where no API reads. Never what production means.
        if self.env == "prod" and self.uses_embedded_database:
            raise ValueError(
                "ROSETTA_ENV=prod needs ROSETTA_DATABASE_URL or one ROSETTA_<DB>_DATABASE_URL per database"
                " (the embedded PostgreSQL is for development)"
            )
        return self

    @property
    def effective_log_format(self) -> Literal["json", "text"]:
        """JSON logs in production, readable text elsewhere, unless ``log_format`` says otherwise."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "prod" else "text"

    def explicit_database_url(self, role: DatabaseRole) -> URL | None:
        """The URL configured for one database, derived from ``database_url`` if only that is set."""
        url: URL | None = getattr(self, f"{role}_database_url")
        if url is not None:
            return url
        if self.database_url is not None:
            return self.database_url.set(database=DEFAULT_DATABASE_NAMES[role])
        return None

    @property
    def uses_embedded_database(self) -> bool:
        """True when no database URL at all is configured: the embedded PostgreSQL is used."""
        return all(self.explicit_database_url(role) is None for role in DATABASE_ROLES)


def _variable_name(loc: tuple[int | str, ...]) -> str:
    head, *rest = loc if loc else ("settings",)
    name = ENV_PREFIX + str(head).upper()
    for part in rest:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable; the offending value is never echoed."""
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        message = str(problem["msg"]).removeprefix("Value error, ")
        loc = tuple(problem["loc"])
        lines.append(f"{_variable_name(loc)}: {message}" if loc else message)
    return lines


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings now; raise ``ConfigurationError`` with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigurationError("invalid configuration: " + "; ".join(format_validation_error(error))) from None
    except SettingsError as error:
        # Raised before validation when a complex setting (a JSON object or list) is not valid JSON.
        raise ConfigurationError(f"invalid configuration: {_settings_error_line(error)}") from None


def _settings_error_line(error: SettingsError) -> str:
    """``ROSETTA_X: not valid JSON`` from pydantic-settings' 'error parsing value for field "x" ...'."""
    field = re.search(r'field "([^"]+)"', str(error))
    if field is None:
        return str(error)
    name = f"{ENV_PREFIX}{field[1].upper()}"
    info = Settings.model_fields.get(field[1])
    if info is not None and isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
        name += f" (or one of its {name}__* variables)"
    return f"{name}: not valid JSON ({error.__cause__ or error})"


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()`` after changing the env."""
    return load_settings()


def data_dir() -> Path:
    """The data directory, created if missing (embedded database, development keys, demo world)."""
    path = get_settings().data_dir.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
