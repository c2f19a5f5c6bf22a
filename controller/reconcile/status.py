"""Desired Service status, computed from a decision; compared with what is there so equal means no write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.reconcile.service_input import CONDITION_TYPE


@dataclass(frozen=True)
class ConditionSpec:
    status: str  # "True" | "False"
    reason: str
    message: str


def desired_ingress(current: Sequence[Mapping[str, Any]], ips: Sequence[str]) -> list[dict[str, Any]]:
    """Our IPs in order, reusing an existing entry for the same IP so nothing changes needlessly.

    Entries without an IP (hostname-only) belong to someone else and are kept as they are.
    """
    by_ip = {entry.get("ip"): entry for entry in current if entry.get("ip")}
    out: list[dict[str, Any]] = []
    for ip in ips:
        existing = by_ip.get(ip)
        out.append(dict(existing) if existing is not None else {"ip": ip, "ipMode": "VIP"})
    out.extend(dict(entry) for entry in current if not entry.get("ip"))
    return out


def merge_conditions(
    current: Sequence[Mapping[str, Any]], ours: ConditionSpec | None, generation: int | None, now: str
) -> list[dict[str, Any]]:
    """Other writers' conditions untouched; ours replaced, keeping lastTransitionTime while status holds."""
    out: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for cond in current:
        if cond.get("type") == CONDITION_TYPE:
            previous = cond
        else:
            out.append(dict(cond))
    if ours is None:
        return out
    transition = now
    if previous is not None and previous.get("status") == ours.status and previous.get("lastTransitionTime"):
        transition = previous["lastTransitionTime"]
    mine: dict[str, Any] = {
        "type": CONDITION_TYPE,
        "status": ours.status,
        "reason": ours.reason,
        "message": ours.message[:32768],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        mine["observedGeneration"] = generation
    out.append(mine)
    return out


def current_ingress(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def status_patch(
    obj: Mapping[str, Any], ingress: list[dict[str, Any]], ours: ConditionSpec | None, now: str
) -> dict[str, Any] | None:
    """A merge patch for services/status, or None when the Service already shows the desired state.

    The resourceVersion in the patch makes the API server refuse it if the object moved on (409), so
    a decision made on a stale cache can never overwrite a newer status.
    """
    current_conditions = (obj.get("status") or {}).get("conditions") or []
    conditions = merge_conditions(current_conditions, ours, obj["metadata"].get("generation"), now)
    if ingress == current_ingress(obj) and _same_conditions(conditions, current_conditions):
        return None
    return {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
        "status": {
            "loadBalancer": {"ingress": ingress or None},
            "conditions": conditions or None,
        },
    }


def _same_conditions(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    return [dict(c) for c in a] == [dict(c) for c in b]
