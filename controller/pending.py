"""Since when each pending Service has waited for an address, for the scrape-time pending gauges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.reconcile.service_input import CONDITION_TYPE, parse_timestamp

if TYPE_CHECKING:
    from controller.app import Controller

__all__ = ["pending_since", "waiting_since"]


def waiting_since(obj: dict[str, Any]) -> float | None:
    """When a Service started waiting: our condition's lastTransitionTime to False (kept while it stays
    False), else its creation (not yet reconciled); None when neither is known."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == CONDITION_TYPE and cond.get("status") == "False":
            when = parse_timestamp(cond.get("lastTransitionTime"))
            if when:
                return when
    return parse_timestamp((obj.get("metadata") or {}).get("creationTimestamp")) or None


def pending_since(controller: Controller) -> list[float]:
    """The allocator's pending Services (only a leader has an allocator; others report none)."""
    reconciler = controller.service_reconciler
    if reconciler is None:
        return []
    out = []
    for key in reconciler.allocator.pending():
        obj = controller.services.store.get(str(key))
        when = waiting_since(obj) if obj is not None else None
        if when is not None:
            out.append(when)
    return out
