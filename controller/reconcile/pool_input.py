"""Reading an IPPool object (a dict from the cache) into the allocator's `PoolSpec`.

Shape errors the CRD schema should already have rejected still come back as a message, so a pool
created while the CRD was older (or with validation off) is reported, not crashed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.ipam import AllocationOrder, PoolSpec, Selector, SelectorRequirement, ServiceAllocation
from controller.reconcile.service_input import parse_timestamp


def read_selector(raw: Mapping[str, Any]) -> Selector:
    labels = tuple(sorted((raw.get("matchLabels") or {}).items()))
    exprs = tuple(
        SelectorRequirement(str(e["key"]), str(e["operator"]), tuple(str(v) for v in e.get("values") or ()))
        for e in raw.get("matchExpressions") or ()
    )
    return Selector(labels, exprs)


def read_pool(obj: Mapping[str, Any]) -> PoolSpec | str:
    """The pool, or a message saying what is wrong with its spec."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    addresses = spec.get("addresses")
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        return "spec.addresses must be a list of CIDRs or start-end ranges"
    order_raw = spec.get("allocationOrder") or AllocationOrder.LEAST_RECENTLY_RELEASED.value
    try:
        order = AllocationOrder(order_raw)
    except ValueError:
        return f"spec.allocationOrder {order_raw!r}: use Lowest or LeastRecentlyReleased"
    allocation: ServiceAllocation | None = None
    raw_alloc = spec.get("serviceAllocation")
    if raw_alloc:
        try:
            priority = raw_alloc.get("priority")
            allocation = ServiceAllocation(
                priority=int(priority) if priority is not None else None,
                namespaces=frozenset(str(n) for n in raw_alloc.get("namespaces") or ()),
                namespace_selectors=tuple(
                    read_selector(s) for s in raw_alloc.get("namespaceSelectors") or ()
                ),
                service_selectors=tuple(read_selector(s) for s in raw_alloc.get("serviceSelectors") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return f"spec.serviceAllocation is malformed: {exc}"
    return PoolSpec(
        name=meta["name"],
        addresses=tuple(addresses),
        created=parse_timestamp(meta.get("creationTimestamp")),
        auto_assign=bool(spec.get("autoAssign", True)),
        avoid_buggy_ips=bool(spec.get("avoidBuggyIPs", False)),
        allocation_order=order,
        service_allocation=allocation,
        disabled=bool(spec.get("disabled", False)),
    )
