"""pytest plugin (loaded by the repo-root conftest.py): a real API server and helpers for tests using it.

Fixtures: `cluster`, `single_stack_cluster`, `stablelb_installed`, `controller_kubeconfig`, `namespace`,
`wait_for`, `controllers`, `jaeger`. With STABLELB_E2E_EXTERNAL=1, `cluster` is the cluster $KUBECONFIG
points at (kind, in `make e2e`) instead of a local control plane, and `jaeger` is the one at
$STABLELB_JAEGER_QUERY_URL / $STABLELB_JAEGER_OTLP_URL.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.external import ExternalCluster
from e2e.harness.jaeger import Jaeger, JaegerQuery
from e2e.harness.manifests import MANIFESTS, install, load_kustomization
from e2e.harness.waiting import wait_for as _wait_for

CONTROLLER_SA_NAMESPACE = "kube-system"
CONTROLLER_SA_NAME = "stablelb-controller"


def _external() -> bool:
    return os.environ.get("STABLELB_E2E_EXTERNAL") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that reaches an API server through these fixtures is a cluster test even when its module
    # forgot `pytestmark`, so `-m "not cluster"` (make test-unit) never starts a control plane.
    for item in items:
        if {"cluster", "single_stack_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # A failed test's report carries the controllers' log tails, while the processes are still there.
    outcome = yield
    report = outcome.get_result()
    group = getattr(item, "funcargs", {}).get("controllers")
    if report.when == "call" and report.failed and isinstance(group, ControllerSet) and len(group):
        report.sections.append((f"controller logs ({group.logdir})", group.describe(60)))


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster | ExternalCluster]:
    """Session-wide dual-stack API server (or the external cluster with STABLELB_E2E_EXTERNAL=1)."""
    if _external():
        ext = ExternalCluster.from_environment()
        yield ext
        ext.stop()
        return
    local = LocalCluster.start(dual_stack=True, name="session")
    yield local
    local.stop()


@pytest.fixture(scope="session")
def single_stack_cluster() -> Iterator[LocalCluster]:
    """A second API server whose service CIDR is IPv4 only (MetalLB #2723 only shows there)."""
    if _external():
        pytest.skip("single_stack_cluster needs the local control plane")
    local = LocalCluster.start(dual_stack=False, name="single-stack")
    yield local
    local.stop()


@pytest.fixture(scope="session")
def stablelb_installed(cluster: LocalCluster | ExternalCluster) -> LocalCluster | ExternalCluster:
    """Everything from manifests/ except the Deployment applied for real: the CRD, ServiceAccount, RBAC.

    The Deployment is left out so that, on kind, an in-cluster leader never races the tests' own controllers.
    """
    install(cluster.api, [o for o in load_kustomization(MANIFESTS) if o["kind"] != "Deployment"])
    return cluster


@pytest.fixture(scope="session")
def controller_kubeconfig(stablelb_installed: LocalCluster | ExternalCluster) -> Path:
    """Kubeconfig of the controller's own ServiceAccount: tests run it with exactly the manifests' RBAC."""
    return stablelb_installed.service_account_kubeconfig(CONTROLLER_SA_NAMESPACE, CONTROLLER_SA_NAME)


@pytest.fixture
def namespace(cluster: LocalCluster | ExternalCluster, request: pytest.FixtureRequest) -> str:
    """A fresh Namespace per test (namespaces never finish deleting here, so names are never reused)."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-") or "t"
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    cluster.api.post(
        "/api/v1/namespaces",
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"stablelb.io/e2e": "1"}},
        },
    )
    return name


@pytest.fixture
def wait_for() -> Any:
    """`await wait_for(predicate, *, timeout=30.0, interval=0.1, describe=None)`; see waiting.wait_for."""
    return _wait_for


@pytest.fixture
def controllers(tmp_path: Path, controller_kubeconfig: Path) -> Iterator[ControllerSet]:
    """Factory for controller processes; by default they authenticate as the controller ServiceAccount."""
    group = ControllerSet(tmp_path / "controllers", default_kubeconfig=controller_kubeconfig)
    yield group
    group.stop_all()


@pytest.fixture(scope="session")
def jaeger() -> Iterator[JaegerQuery]:
    """A Jaeger to send spans to (`otlp_http_endpoint`) and read them back (`traces(service)`)."""
    if _external():
        yield JaegerQuery(
            query_url=os.environ["STABLELB_JAEGER_QUERY_URL"],
            otlp_http_endpoint=os.environ["STABLELB_JAEGER_OTLP_URL"],
        )
        return
    local = Jaeger.start()
    yield local
    local.stop()
