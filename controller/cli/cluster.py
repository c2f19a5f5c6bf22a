"""Loading what the controller sees: LoadBalancer Services, IPPools, Namespaces and the leader Lease.

Objects go through the controller's own cache transforms (``slim_service``, ``slim_namespace``), so the
allocator gets exactly the input a leader would build from its informers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.app import LB_FIELD_SELECTOR, slim_namespace, slim_service
from controller.kube.client import ApiError, KubeClient
from controller.kube.kubeconfig import KubeconfigError, load_kubeconfig
from controller.kube.resources import IPPOOLS, LEASES, NAMESPACES, SERVICES, Resource

# Listed by name, not imported from resources.py: the plugin also works against a cluster whose CRDs predate
# IPReservation (then there are simply none).
IPRESERVATIONS = Resource("stablelb.io", "v1alpha1", "ipreservations", "IPReservation", namespaced=False)

PAGE = 500


class CliError(Exception):
    """A problem the user can fix; the message says how. The command exits non-zero with it."""


@dataclass(frozen=True)
class LeaseRef:
    namespace: str = "kube-system"
    name: str = "stablelb-controller"


@dataclass
class ClusterState:
    services: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    namespaces: dict[str, dict[str, Any]]
    lease: dict[str, Any] | None
    lease_ref: LeaseRef = field(default_factory=LeaseRef)
    reservations: list[dict[str, Any]] = field(default_factory=list)
    reservations_installed: bool = True

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        labels: Mapping[str, str] = (self.namespaces.get(name) or {}).get("metadata", {}).get("labels") or {}
        return labels


def kubeconfig_path(flag: str | None, env: Mapping[str, str] | None = None) -> Path:
    """As kubectl finds it: --kubeconfig, else $KUBECONFIG (one file), else ~/.kube/config."""
    env = os.environ if env is None else env
    if flag:
        path, source = Path(flag).expanduser(), "--kubeconfig"
    elif env.get("KUBECONFIG"):
        files = [p for p in env["KUBECONFIG"].split(os.pathsep) if p]
        existing = [p for p in files if Path(p).expanduser().is_file()]
        if len(existing) > 1:
            raise CliError(
                f"KUBECONFIG lists several files ({env['KUBECONFIG']}); kubectl stablelb reads one: "
                "pass --kubeconfig=PATH"
            )
        path, source = Path(existing[0] if existing else files[0]).expanduser(), "KUBECONFIG"
    else:
        path, source = Path("~/.kube/config").expanduser(), "the default location"
    if not path.is_file():
        raise CliError(
            f"no kubeconfig at {str(path)!r} (from {source}): pass --kubeconfig=PATH or set KUBECONFIG "
            "to a file with access to the cluster"
        )
    return path


async def connect(flag: str | None, context: str | None) -> KubeClient:
    path = kubeconfig_path(flag)
    try:
        conn = load_kubeconfig(path, context=context)
    except KubeconfigError as exc:
        raise CliError(f"{exc}; fix the kubeconfig or pass another with --kubeconfig") from exc
    return KubeClient.from_connection(conn)


async def list_all(client: KubeClient, resource: Resource, **query: str) -> list[dict[str, Any]]:
    """Every object of a kind, page by page (a consistent snapshot within each page)."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": PAGE, **query}
        if token:
            params["continue"] = token
        body = await client.request("GET", resource.path(), query=params)
        for item in body.get("items") or ():
            # List items carry no kind; the cache transforms and Events expect it.
            item.setdefault("kind", resource.kind)
            item.setdefault("apiVersion", resource.api_version)
            items.append(item)
        token = (body.get("metadata") or {}).get("continue") or None
        if not token:
            return items


async def get_optional(client: KubeClient, path: str) -> dict[str, Any] | None:
    try:
        return await client.request("GET", path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def load(client: KubeClient, lease_ref: LeaseRef) -> ClusterState:
    try:
        pools = await list_all(client, IPPOOLS)
    except ApiError as exc:
        if exc.status == 404:
            raise CliError(
                "the IPPool CRD (ippools.stablelb.io) is not installed in this cluster: install stablelb "
                "first (helm install stablelb charts/stablelb, or kubectl apply -k manifests/)"
            ) from exc
        raise
    services = [slim_service(o) for o in await list_all(client, SERVICES, fieldSelector=LB_FIELD_SELECTOR)]
    namespaces = {o["metadata"]["name"]: slim_namespace(o) for o in await list_all(client, NAMESPACES)}
    lease = await get_optional(client, LEASES.path(lease_ref.namespace, lease_ref.name))
    try:
        reservations, installed = await list_all(client, IPRESERVATIONS), True
    except ApiError as exc:
        if exc.status != 404:
            raise
        reservations, installed = [], False  # an older CRD set: no reservations to honour
    return ClusterState(services, pools, namespaces, lease, lease_ref, reservations, installed)


def describe_api_error(exc: ApiError) -> str:
    if exc.status == 401:
        return f"the API server rejected the credentials (401): log in again or fix the kubeconfig ({exc})"
    if exc.status == 403:
        return (
            f"not allowed (403): kubectl stablelb needs get/list on services, namespaces and "
            f"ippools.stablelb.io and get on the leader Lease ({exc.message})"
        )
    return str(exc)
