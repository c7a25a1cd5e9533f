"""The Helm chart rendered offline (Helm SDK, no binary), for the chart's tests and the Kubernetes launcher's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "rosetta"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart's manifests for ``values`` (merged over values.yaml), as parsed documents."""
    chart = helm.Chart.load(CHART)
    try:
        rendered = chart.render(values, name="rosetta", namespace="platform", is_install=True)
    finally:
        chart.close()
    documents: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            documents.extend(document for document in yaml.safe_load_all(text) if document)
    return documents


def manifest(values: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """The one rendered object of ``kind`` named ``name``."""
    found = [doc for doc in render(values) if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]
