"""Scenario helpers for the e2e suite: Services and IPPools of one test, through the admin API.

Each test gets its own loadBalancerClass, so controllers started by one test never touch the Services
of another on the shared API server; pools are cluster-scoped, so every pool a test creates is deleted
when it ends.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from e2e.harness.controllers import ControllerSet
from e2e.harness.rest import Api, ApiError

CONDITION = "stablelb.io/IPAllocated"
MERGE = "application/merge-patch+json"


class Scenario:
    def __init__(self, api: Api, namespace: str, controllers: ControllerSet) -> None:
        self.api = api
        self.ns = namespace
        self.controllers = controllers
        self.lb_class = f"e2e.stablelb.io/c-{uuid.uuid4().hex[:8]}"
        self.pools: list[str] = []

    # -- controllers ------------------------------------------------------------------------------
    def start(self, n: int = 2, *args: str, **kwargs: Any) -> list[int]:
        flags = [
            f"--lb-class={self.lb_class}",
            "--handle-unclassed=false",
            "--leader-elect-lease-duration=4s",
            "--leader-elect-renew-deadline=3s",
            "--leader-elect-retry-period=500ms",
            *args,
        ]
        return self.controllers(n, args=flags, **kwargs)

    def leader(self) -> str | None:
        lease = self.api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{self.controllers.lease_name}"
        )
        holder = lease.get("spec", {}).get("holderIdentity")
        return str(holder) if holder else None

    def leader_index(self) -> int | None:
        holder = self.leader()
        for i in range(len(self.controllers)):
            if self.controllers.identity(i) == holder and self.controllers.alive(i):
                return i
        return None

    def http_get(self, i: int, path: str) -> tuple[int, str]:
        url = f"http://{self.controllers.http_addr(i)}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    # -- pools ------------------------------------------------------------------------------------
    def pool_path(self, name: str | None = None) -> str:
        base = "/apis/stablelb.io/v1alpha1/ippools"
        return f"{base}/{name}" if name else base

    def create_pool(self, name: str, addresses: Sequence[str], **spec: Any) -> str:
        full = f"{self.ns}-{name}"[:63]
        self.api.post(
            self.pool_path(),
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": full},
                "spec": {"addresses": list(addresses), **spec},
            },
        )
        self.pools.append(full)
        return full

    def patch_pool(self, full: str, spec: dict[str, Any]) -> None:
        self.api.call("PATCH", self.pool_path(full), {"spec": spec}, content_type=MERGE)

    def delete_pool(self, full: str) -> None:
        try:
            self.api.delete(self.pool_path(full))
        except ApiError as err:
            if err.status != 404:
                raise

    def pool(self, full: str) -> dict[str, Any]:
        return self.api.get(self.pool_path(full))

    def pool_condition(self, full: str, type_: str) -> dict[str, Any] | None:
        for cond in (self.pool(full).get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def cleanup(self) -> None:
        for full in self.pools:
            self.delete_pool(full)

    # -- services ---------------------------------------------------------------------------------
    def svc_path(self, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/v1/namespaces/{self.ns}/services"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base

    def create_service(
        self,
        name: str,
        *,
        ports: Sequence[int | tuple[str, int]] = (80,),
        annotations: dict[str, str] | None = None,
        families: Sequence[str] | None = None,
        policy: str | None = None,
        lb_class: str | None = "",
        local: bool = False,
        selector: dict[str, str] | None = None,
        spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        port_specs = []
        for p in ports:
            proto, number = p if isinstance(p, tuple) else ("TCP", p)
            port_specs.append({"name": f"{proto.lower()}-{number}", "protocol": proto, "port": number})
        body_spec: dict[str, Any] = {
            "type": "LoadBalancer",
            "ports": port_specs,
            "selector": selector or {"app": name},
            "allocateLoadBalancerNodePorts": False,
        }
        if lb_class is not None:
            body_spec["loadBalancerClass"] = lb_class or self.lb_class
        if families:
            body_spec["ipFamilies"] = list(families)
        if policy:
            body_spec["ipFamilyPolicy"] = policy
        if local:
            body_spec["externalTrafficPolicy"] = "Local"
        body_spec.update(spec or {})
        return self.api.post(
            self.svc_path(),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "annotations": annotations or {}},
                "spec": body_spec,
            },
        )

    def service(self, name: str) -> dict[str, Any]:
        return self.api.get(self.svc_path(name))

    def patch_service(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.api.call("PATCH", self.svc_path(name), patch, content_type=MERGE)

    def patch_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.api.call("PATCH", self.svc_path(name, "status"), {"status": status}, content_type=MERGE)

    def delete_service(self, name: str) -> None:
        self.api.delete(self.svc_path(name))

    def ips(self, name: str) -> list[str]:
        ingress = ((self.service(name).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [e["ip"] for e in ingress if "ip" in e]

    def rv(self, name: str) -> str:
        return str(self.service(name)["metadata"]["resourceVersion"])

    def condition(self, name: str) -> dict[str, Any] | None:
        for cond in (self.service(name).get("status") or {}).get("conditions") or []:
            if cond.get("type") == CONDITION:
                return dict(cond)
        return None

    def reason(self, name: str) -> str | None:
        cond = self.condition(name)
        return None if cond is None else str(cond.get("reason"))

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.api.get(
            f"/api/v1/namespaces/{self.ns}/events", query={"fieldSelector": f"involvedObject.name={name}"}
        ).get("items", [])
        return list(items)

    def event_reasons(self, name: str) -> set[str]:
        return {str(e.get("reason")) for e in self.events(name)}

    def describe(self, *names: str) -> str:
        """What a failing wait prints: each Service's status and events, and the controllers' logs."""
        parts = []
        for name in names or self.service_names():
            try:
                obj = self.service(name)
            except ApiError as err:
                parts.append(f"{name}: {err}")
                continue
            parts.append(
                f"{name}: spec.ipFamilies={obj['spec'].get('ipFamilies')} "
                f"status={json.dumps(obj.get('status'))} "
                f"events={[(e.get('reason'), e.get('message')) for e in self.events(name)]}"
            )
        for full in self.pools:
            try:
                parts.append(f"pool {full}: {json.dumps(self.pool(full).get('status'))}")
            except ApiError as err:
                parts.append(f"pool {full}: {err}")
        parts.append(self.controllers.describe(25))
        return "\n".join(parts)

    def service_names(self) -> Iterator[str]:
        for item in self.api.get(self.svc_path()).get("items", []):
            yield item["metadata"]["name"]


async def settle(seconds: float) -> None:
    """Give the controllers time to do something they should not do (tests then assert nothing changed)."""
    await asyncio.sleep(seconds)
