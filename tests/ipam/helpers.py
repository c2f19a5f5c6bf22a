"""Small builders for allocator tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.ipam import Allocator, Decision, PoolSpec, Port, ServiceKey, ServiceRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def svc(
    name: str,
    *,
    ns: str = "default",
    uid: str | None = None,
    created: float = 0.0,
    families: tuple[str, ...] = ("IPv4",),
    policy: str = "SingleStack",
    ports: tuple[tuple[str, int], ...] = (("TCP", 80),),
    **kw: Any,
) -> ServiceRequest:
    return ServiceRequest(
        key=ServiceKey(ns, name),
        uid=uid or f"uid-{ns}-{name}",
        created=created,
        families=families,
        family_policy=policy,
        ports=frozenset(Port(p, n) for p, n in ports),
        **kw,
    )


def allocator(*pools: PoolSpec, clock: Clock | None = None, window: float = 600.0) -> Allocator:
    a = Allocator(clock=clock or Clock(), reclaim_window=window)
    a.set_pools(pools)
    return a


def settle(a: Allocator, request: ServiceRequest) -> tuple[Decision, ServiceRequest]:
    """ensure, then feed the decision back as the Service's status, as the reconciler would."""
    d = a.ensure(request)
    return d, replace(request, current_ips=d.ips)
