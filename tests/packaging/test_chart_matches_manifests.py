"""The two install paths must not drift: the chart rendered as release "stablelb" in kube-system equals
`kubectl apply -k manifests/` object for object, apart from the labels Helm adds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.binaries import REPO_ROOT
from tests.packaging.chart import CHART, by_identity, render_chart, render_kustomization


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


def _without_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without labels and label selectors (Helm adds instance, chart and version labels)."""
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("labels", None)
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "PodDisruptionBudget"):
        spec.pop("selector", None)
    if obj["kind"] == "Service":
        spec.pop("selector", None)
    template = spec.get("template")
    if template:
        template["metadata"].pop("labels", None)
        for constraint in template["spec"].get("topologySpreadConstraints", []):
            constraint.pop("labelSelector", None)
    return obj


@pytest.mark.parametrize("plural", ["ippools", "ipreservations"])
def test_chart_crd_is_the_manifests_crd_byte_for_byte(plural: str) -> None:
    chart_crd = CHART / "crds" / f"{plural}.stablelb.io.yaml"
    manifest_crd = REPO_ROOT / "manifests" / f"crd-{plural}.yaml"
    assert chart_crd.read_bytes() == manifest_crd.read_bytes(), (
        f"the chart's CRD differs from manifests/crd-{plural}.yaml: "
        f"cp manifests/crd-{plural}.yaml charts/stablelb/crds/{plural}.stablelb.io.yaml"
    )


def test_chart_with_default_values_renders_what_the_kustomization_applies(helm_home: Path) -> None:
    chart = by_identity(render_chart(helm_home, "--include-crds"))
    manifests = by_identity(render_kustomization())

    assert sorted(chart) == sorted(manifests)
    for key, manifest in manifests.items():
        assert _without_labels(chart[key]) == _without_labels(manifest), f"{key} differs"


def test_chart_selectors_select_what_the_manifests_select(helm_home: Path) -> None:
    chart = by_identity(render_chart(helm_home))
    manifests = by_identity(render_kustomization())
    deployment = ("Deployment", "kube-system", "stablelb-controller")
    manifest_selector = manifests[deployment]["spec"]["selector"]["matchLabels"]
    chart_selector = chart[deployment]["spec"]["selector"]["matchLabels"]
    assert manifest_selector.items() <= chart_selector.items()
    assert chart_selector == {**manifest_selector, "app.kubernetes.io/instance": "stablelb"}
    pod_labels = chart[deployment]["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service"):
        [obj] = [o for k, o in chart.items() if k[0] == kind]
        selector = obj["spec"]["selector"].get("matchLabels", obj["spec"]["selector"])
        assert selector == chart_selector and selector.items() <= pod_labels.items()
