"""The Helm chart and the Containerfile: what Kubernetes will run is what the code accepts.

The chart is rendered offline by the Helm SDK (``helm-python-sdk``), every manifest is validated against the
Kubernetes 1.30 schemas (``kubernetes-validate``, strict: an unknown field fails), and then checked against
the code itself: each container's arguments parse as a real ``rosetta`` command, its environment is accepted by
``Settings``, its probes name routes every API serves, and the Jobs' failure policy matches the CLI's exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import typer
from typer.core import TyperGroup

from chart_support import CHART, render
from rosetta.batch.runner import EXIT_FAILED, EXIT_LOCKED, EXIT_UNAVAILABLE, EXIT_USAGE
from rosetta.cli import app
from rosetta.core.errors import ConfigurationError
from rosetta.core.http import healthz, readyz
from rosetta.core.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = "1.30.0"
DATABASES_SECRET = {"ROSETTA_DATABASE_URL": "postgresql://rosetta:secret@pg.internal:5432/postgres"}
MINIMAL = {"secrets": {"databases": "rosetta-databases"}}
# Everything the chart can switch on at once.
EVERYTHING = {
    "secrets": {"databases": "rosetta-databases", "externalSystems": "rosetta-external-systems"},
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "registry"}],
    "oidcIssuers": [
        {
            "name": "entra",
            "kind": "entra",
            "issuer": "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0",
            "audiences": ["api://rosetta"],
            "discovery_url": "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001/v2.0/.well-known/openid-configuration",
            "algorithms": ["RS256"],
        }
    ],
    "groupRoles": {"6f1c0000-0000-0000-0000-00000000beef": "finops_admin", "Rosetta_User": "user"},
    "extraEnv": {"ROSETTA_DB_STATEMENT_TIMEOUT_MS": 30000},
    "ingress": {"enabled": True, "className": "nginx", "tlsSecret": "rosetta-tls"},
    "cronJobs": {name: {"enabled": True} for name in ("pull-cmdb", "pull-servicenow", "pull-dynatrace", "pull-argocd")},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}],
}


def pods(documents: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, pod spec) of every object that runs pods."""
    for document in documents:
        if document["kind"] in ("Deployment", "Job"):
            yield document, document["spec"]["template"]["spec"]
        elif document["kind"] == "CronJob":
            yield document, document["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def job_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(object, Job spec) of every Job and CronJob."""
    for document in documents:
        if document["kind"] == "Job":
            yield document, document["spec"]
        elif document["kind"] == "CronJob":
            yield document, document["spec"]["jobTemplate"]["spec"]


def by_name(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in documents if document["kind"] == kind}


@pytest.fixture(scope="module")
def minimal() -> list[dict[str, Any]]:
    return render(MINIMAL)


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render(EVERYTHING)


def test_the_chart_lints_clean_in_strict_mode() -> None:
    report = helm.lint(CHART, MINIMAL, strict=True, kube_version=f"v{KUBERNETES}")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


@pytest.mark.parametrize("values", [MINIMAL, EVERYTHING], ids=["minimal", "everything"])
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any]) -> None:
    documents = render(values)
    assert {document["kind"] for document in documents} >= {"Deployment", "Service", "CronJob", "Job"}
    for document in documents:
        try:
            kubernetes_validate.validate(document, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{document['kind']} {document['metadata']['name']}: {error.message} at {list(error.path)}")


def test_one_deployment_and_service_per_api_and_the_scheduled_jobs(everything: list[dict[str, Any]]) -> None:
    deployments = by_name(everything, "Deployment")
    services = by_name(everything, "Service")
    assert sorted(deployments) == ["rosetta-api-finops", "rosetta-api-monitoring", "rosetta-api-ref"]
    assert sorted(services) == sorted(deployments)
    for name, deployment in deployments.items():
        assert services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    cron_jobs = by_name(everything, "CronJob")
    finops = cron_jobs["rosetta-batch-finops"]["spec"]
    assert finops["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["batch", "finops"]
    assert finops["concurrencyPolicy"] == "Forbid"
    assert finops["timeZone"] == "Etc/UTC"
    assert finops["schedule"] == "30 2 * * *"
    assert "rosetta-pull-cmdb" in cron_jobs
    assert {"rosetta-audit-verify-ref", "rosetta-audit-verify-finops", "rosetta-audit-verify-monitoring"} <= set(
        cron_jobs
    )
    ingress = by_name(everything, "Ingress")["rosetta"]
    routes = {path["path"]: path["backend"]["service"]["name"] for path in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert routes == {
        "/api/finops/v1": "rosetta-api-finops",
        "/api/monitoring/v1": "rosetta-api-monitoring",
        "/api/ref/v1": "rosetta-api-ref",
    }


def test_migrations_run_before_every_install_and_upgrade(minimal: list[dict[str, Any]]) -> None:
    job = by_name(minimal, "Job")["rosetta-migrations"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    # A pre-install hook runs before the chart's ServiceAccount exists: it must not depend on it.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def _parse(arguments: list[str]) -> Any:
    """Resolve ``rosetta <arguments>`` to its command and parse its parameters (types, choices) without running it.

    Returns the command's context (typer's own copy of click's ``Context``: ``command``, ``params``).
    """
    command: Any = typer.main.get_command(app)
    remaining = list(arguments)
    path = ["rosetta"]
    while isinstance(command, TyperGroup):
        assert remaining, f"{' '.join(path)} needs a sub-command"
        name, *remaining = remaining
        found = command.get_command(command.make_context(path[-1], [], resilient_parsing=True), name)
        assert found is not None, f"no command {' '.join([*path, name])}"
        command, path = found, [*path, name]
    return command.make_context(" ".join(path), remaining)


def test_every_container_runs_a_real_rosetta_command(everything: list[dict[str, Any]]) -> None:
    parsed = {}
    for document, pod in pods(everything):
        for container in pod["containers"]:
            context = _parse(container["args"])
            parsed[document["metadata"]["name"]] = (context.command.name, context.params)
    assert parsed["rosetta-api-finops"] == (
        "serve",
        {"target": "finops", "host": "0.0.0.0", "port": 8000, "workers": 1},
    )
    assert parsed["rosetta-audit-verify-ref"] == ("verify", {"db": "ref"})
    assert parsed["rosetta-batch-finops"][0] == "finops"
    assert parsed["rosetta-migrations"] == ("upgrade", {"db": None})
    with pytest.raises(typer.BadParameter):
        _parse(["serve", "billing"])


def _environment(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    environment = {entry["name"]: entry["value"] for entry in container["env"]}
    assert all("value" in entry for entry in container["env"]), "every variable is a plain value or a secret"
    return {**environment, **secret}


def test_every_container_environment_is_a_valid_production_configuration(
    everything: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, pod in pods(everything):
        for container in pod["containers"]:
            secrets = [source["secretRef"]["name"] for source in container["envFrom"]]
            assert secrets == ["rosetta-databases", "rosetta-external-systems"]
            for key in [key for key in os.environ if key.startswith("ROSETTA_")]:
                monkeypatch.delenv(key)
            for key, value in _environment(container, DATABASES_SECRET).items():
                monkeypatch.setenv(key, value)
            settings = load_settings()
            assert settings.env == "prod"
            assert settings.effective_log_format == "json"
            assert settings.oidc_issuers[0].kind == "entra"
            assert settings.group_roles == {
                "6f1c0000-0000-0000-0000-00000000beef": "finops_admin",
                "Rosetta_User": "user",
            }
            assert settings.db_statement_timeout_ms == 30000
            monkeypatch.delenv("ROSETTA_DATABASE_URL")
            with pytest.raises(ConfigurationError, match="ROSETTA_ENV=prod needs ROSETTA_DATABASE_URL"):
                load_settings()
    api = by_name(everything, "Deployment")["rosetta-api-finops"]["spec"]["template"]["spec"]["containers"][0]
    assert _environment(api, {})["ROSETTA_DB_POOL_SIZE"] == "10"


def test_probes_name_routes_every_api_serves(minimal: list[dict[str, Any]]) -> None:
    served = set(healthz.paths) | set(readyz.paths)
    for deployment in by_name(minimal, "Deployment").values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        probes = {
            kind: container[kind]["httpGet"]["path"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["readinessProbe"] == "/readyz"
        assert set(probes.values()) <= served
        assert container["ports"][0]["containerPort"] == 8000 == _parse(container["args"]).params["port"]


def test_jobs_retry_only_what_may_pass(everything: list[dict[str, Any]]) -> None:
    for document, spec in job_specs(everything):
        rules = spec["podFailurePolicy"]["rules"]
        fail_at_once = next(rule for rule in rules if rule["action"] == "FailJob")["onExitCodes"]
        # A failed run, bad arguments and a run already in progress never pass by retrying; unavailable may.
        assert sorted(fail_at_once["values"]) == sorted([EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED]), document["metadata"]
        assert EXIT_UNAVAILABLE not in fail_at_once["values"]
        assert spec["backoffLimit"] >= 1
        assert spec["template"]["spec"]["restartPolicy"] == "Never"
        assert spec["activeDeadlineSeconds"] > 0


def test_pods_run_unprivileged_on_a_read_only_root(everything: list[dict[str, Any]]) -> None:
    for document, pod in pods(everything):
        assert pod["securityContext"]["runAsNonRoot"] is True, document["metadata"]["name"]
        # Only the finops API calls the Kubernetes API (it starts runs as Jobs): only it gets a token.
        assert pod["automountServiceAccountToken"] is (document["metadata"]["name"] == "rosetta-api-finops")
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
            assert container["image"] == "registry.example.com/platform/rosetta@sha256:" + "a" * 64


def test_a_missing_database_secret_stops_the_render_with_its_reason() -> None:
    with pytest.raises(helm.HelmError, match=r"secrets\.databases: name the Secret"):
        render({})


def test_a_mistyped_value_is_refused_not_ignored() -> None:
    with pytest.raises(helm.HelmError, match="replica"):
        render({**MINIMAL, "apis": {"finops": {"replica": 3}}})
    with pytest.raises(helm.HelmError, match="groupRoles"):
        render({**MINIMAL, "groupRoles": {"Some_Group": "superuser"}})


def test_the_containerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "warning", "--format", "json", str(REPO / "Containerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, json.loads(result.stdout or "[]")
    containerfile = (REPO / "Containerfile").read_text()
    assert 'ENTRYPOINT ["rosetta"]' in containerfile
    assert "USER 10001" in containerfile


def test_the_finops_api_may_read_its_cronjob_and_create_jobs_and_nothing_else(everything: list[dict[str, Any]]) -> None:
    role = by_name(everything, "Role")["rosetta-batch-launcher"]
    assert role["rules"] == [
        {
            "apiGroups": ["batch"],
            "resources": ["cronjobs"],
            "resourceNames": ["rosetta-batch-finops"],
            "verbs": ["get"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
    ]
    binding = by_name(everything, "RoleBinding")["rosetta-batch-launcher"]
    assert binding["roleRef"]["name"] == "rosetta-batch-launcher"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rosetta", "namespace": "platform"}]
    finops = by_name(everything, "Deployment")["rosetta-api-finops"]["spec"]["template"]["spec"]
    environment = _environment(finops["containers"][0], {})
    assert environment["ROSETTA_BATCH_LAUNCHER"] == "kubernetes"
    named = json.loads(environment["ROSETTA_KUBERNETES__CRONJOBS"])
    assert named == {"finops": "rosetta-batch-finops"}
    assert named["finops"] in by_name(everything, "CronJob")
    assert finops["serviceAccountName"] == "rosetta"
    # A launched run is expired only once Kubernetes can no longer start its Job's pod, by the API's next launch
    # or by the nightly run, whichever comes first: both are told the same expiry.
    batch = by_name(everything, "CronJob")["rosetta-batch-finops"]["spec"]["jobTemplate"]["spec"]
    expiry = int(environment["ROSETTA_BATCH_QUEUE_EXPIRY_SECONDS"])
    assert expiry == batch["activeDeadlineSeconds"] + 900
    assert _environment(batch["template"]["spec"]["containers"][0], {})["ROSETTA_BATCH_QUEUE_EXPIRY_SECONDS"] == str(
        expiry
    )


def test_the_in_process_launcher_needs_no_kubernetes_rights() -> None:
    documents = render({**MINIMAL, "batchLauncher": "in-process"})
    assert not [document for document in documents if document["kind"] in ("Role", "RoleBinding")]
    finops = by_name(documents, "Deployment")["rosetta-api-finops"]["spec"]["template"]["spec"]
    assert finops["automountServiceAccountToken"] is False
    assert "ROSETTA_BATCH_LAUNCHER" not in _environment(finops["containers"][0], {})
    with pytest.raises(helm.HelmError, match="batchLauncher=kubernetes copies the batch-finops CronJob"):
        render({**MINIMAL, "cronJobs": {"batch-finops": {"enabled": False}}})
