"""IPReservations as the allocator sees them: each one's state, target and addresses, for every command."""

from __future__ import annotations

from typing import Any

from controller.ipam import Allocator, ServiceKey
from controller.ipam.reservations import describe_target


def reservations_data(allocator: Allocator, errors: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per IPReservation, by name: its worst address state (the one `kubectl get iprs` shows)."""
    out: dict[str, dict[str, Any]] = {}
    for state in allocator.reservation_states():
        spec = next((s for a in state.addresses if (s := allocator.reserved_for(a.ip)) is not None), None)
        out[state.name] = {
            "reservation": state.name,
            "state": state.state.value,
            "target": describe_target(spec) if spec is not None and spec.name == state.name else None,
            "message": state.message,
            "addresses": [
                {"ip": a.ip, "state": a.state.value, "holders": [str(h) for h in a.holders], "pool": a.pool}
                for a in state.addresses
            ],
        }
    for name, why in errors.items():
        out[name] = {"reservation": name, "state": "Invalid", "target": None, "message": why, "addresses": []}
    return [out[name] for name in sorted(out)]


def reserved_for_service(
    allocator: Allocator, key: ServiceKey, labels: dict[str, str]
) -> list[dict[str, str]]:
    """The addresses reserved for this Service (by name or by its labels), with the reservation's name."""
    found = []
    for state in allocator.reservation_states():
        for address in state.addresses:
            spec = allocator.reserved_for(address.ip)
            if spec is not None and spec.name == state.name and spec.selects(key.namespace, key.name, labels):
                found.append({"ip": address.ip, "reservation": state.name, "state": address.state.value})
    return found
