"""Settings: typed, validated, one line per problem naming the variable, secrets never echoed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rosetta.core.errors import ConfigurationError
from rosetta.core.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other tests export the session's database URLs; these tests read the environment from scratch."""
    for key in [key for key in os.environ if key.startswith("ROSETTA_") and not key.startswith("ROSETTA_TEST_")]:
        monkeypatch.delenv(key)


def test_defaults_use_the_embedded_database() -> None:
    settings = Settings()
    assert settings.uses_embedded_database
    assert settings.raw_store == "postgres"
    assert settings.group_roles["Rosetta_FinOps_Admin"] == "finops_admin"
    assert settings.effective_log_format == "text"


def test_server_url_derives_one_database_per_context() -> None:
    settings = Settings(database_url="postgresql://rosetta:pw@db.internal:5432/postgres")
    assert settings.explicit_database_url("finops") is not None
    assert settings.explicit_database_url("finops").database == "finops_db"  # type: ignore[union-attr]
    assert settings.explicit_database_url("ref").database == "platform_ref_db"  # type: ignore[union-attr]
    assert settings.explicit_database_url("finops").drivername == "postgresql+asyncpg"  # type: ignore[union-attr]
    assert not settings.uses_embedded_database


def test_per_database_url_wins_over_the_server_url() -> None:
    settings = Settings(
        database_url="postgresql://u:p@shared:5432/postgres",
        finops_database_url="postgresql://u:p@finops-host:5432/finops",
    )
    assert settings.explicit_database_url("finops").host == "finops-host"  # type: ignore[union-attr]
    assert settings.explicit_database_url("ref").host == "shared"  # type: ignore[union-attr]


def test_each_problem_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSETTA_FINOPS_DATABASE_URL", "mysql://root:hunter2@db/finops")
    monkeypatch.setenv("ROSETTA_REF_DATABASE_URL", "::not a url::")
    monkeypatch.setenv("ROSETTA_LOG_LEVEL", "loud")
    monkeypatch.setenv("ROSETTA_DB_POOL_SIZE", "0")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.detail
    assert "\n" not in message
    for variable in (
        "ROSETTA_FINOPS_DATABASE_URL",
        "ROSETTA_REF_DATABASE_URL",
        "ROSETTA_LOG_LEVEL",
        "ROSETTA_DB_POOL_SIZE",
    ):
        assert variable in message
    assert "hunter2" not in message


def test_mongodb_store_needs_a_url() -> None:
    with pytest.raises(ConfigurationError, match="ROSETTA_MONGODB_URL"):
        load_settings(raw_store="mongodb")


def test_production_refuses_the_embedded_database() -> None:
    with pytest.raises(ConfigurationError, match="ROSETTA_ENV=prod needs ROSETTA_DATABASE_URL"):
        load_settings(env="prod")
    settings = load_settings(env="prod", database_url="postgresql://u:p@db.internal:5432/postgres")
    assert not settings.uses_embedded_database
    assert settings.effective_log_format == "json"


def test_secrets_are_masked_in_repr() -> None:
    settings = Settings(
        database_url="postgresql://u:topsecretpw@h/postgres",
        servicenow={"url": "https://x.service-now.com", "username": "svc", "password": "sn-secret-pw"},
    )
    text = repr(settings)
    assert "topsecretpw" not in text
    assert "sn-secret-pw" not in text


def test_unknown_role_in_group_mapping_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ROSETTA_GROUP_ROLES: unknown role"):
        load_settings(group_roles={"Some_Group": "superuser"})


def test_cli_stops_on_a_bad_setting_with_one_line_naming_it(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ROSETTA_FINOPS_DATABASE_URL": "not-a-url-at-all://::",
        "ROSETTA_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "rosetta", "db", "current"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rosetta: error: invalid configuration: ROSETTA_FINOPS_DATABASE_URL")
