"""Reading an IPReservation object (a dict from the cache or the API) into the allocator's `ReservationSpec`.

Shape errors the CRD schema should already have rejected come back as a message (the reservation is then
reported Invalid and reserves nothing), so an object stored under an older CRD is reported, not crashed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.ipam import ReservationSpec
from controller.reconcile.pool_input import read_selector
from controller.reconcile.service_input import parse_timestamp


def read_reservation(obj: Mapping[str, Any]) -> ReservationSpec | str:
    """The reservation, or a message saying what is wrong with its spec."""
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    addresses = spec.get("addresses")
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        return "spec.addresses must be a list of IP addresses"
    service = spec.get("service")
    if not isinstance(service, Mapping) or not isinstance(service.get("namespace"), str):
        return "spec.service.namespace is required"
    name = service.get("name")
    raw_selector = service.get("selector")
    if name is not None and not isinstance(name, str):
        return "spec.service.name must be a string"
    try:
        selector = read_selector(raw_selector) if isinstance(raw_selector, Mapping) else None
    except (KeyError, TypeError, AttributeError) as exc:
        return f"spec.service.selector is malformed: {exc}"
    return ReservationSpec(
        name=str(meta["name"]),
        addresses=tuple(addresses),
        namespace=service["namespace"],
        service_name=name,
        selector=selector,
        created=parse_timestamp(meta.get("creationTimestamp")),
    )
