"""The pure checks behind the takeover fault scenarios (e2e/takeover_support.py) see what they must."""

from __future__ import annotations

from typing import Any

from e2e.takeover_support import Change, duplicates, ip_moves, late_writes, outside, status_writes


def svc(rv: int, name: str, *ips: str, type_: str = "MODIFIED", cond: str = "") -> Change:
    status: dict[str, Any] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}} if ips else {}
    if cond:
        status["conditions"] = [{"type": "stablelb.io/IPAllocated", "reason": cond}]
    return Change(rv, "Service", type_, "ns", name, f"uid-{name}", {"status": status})


def test_an_ip_that_changes_or_disappears_is_a_move_deletion_is_not() -> None:
    assert ip_moves([svc(1, "a", type_="ADDED"), svc(2, "a", "10.0.0.1"), svc(3, "a", "10.0.0.1")]) == []
    assert ip_moves([svc(2, "a", "10.0.0.1"), svc(5, "a", type_="DELETED")]) == []
    moved = ip_moves([svc(2, "a", "10.0.0.1"), svc(3, "a", "10.0.0.2")])
    assert len(moved) == 1 and "lost ['10.0.0.1']" in moved[0]
    assert ip_moves([svc(2, "a", "10.0.0.1"), svc(3, "a")]) != []


def test_a_moment_of_sharing_is_a_duplicate_even_if_resolved_later() -> None:
    history = [svc(2, "a", "10.0.0.1"), svc(3, "b", "10.0.0.1"), svc(4, "b", "10.0.0.2")]
    (found,) = duplicates(history)
    assert "rv=3" in found and "shares ['10.0.0.1'] with a" in found
    # Freed by deletion first: no overlap at any moment.
    assert duplicates([svc(2, "a", "10.0.0.1"), svc(3, "a", type_="DELETED"), svc(4, "b", "10.0.0.1")]) == []


def test_status_writes_ignore_spec_only_changes() -> None:
    history = [
        svc(1, "a", type_="ADDED"),
        svc(2, "a", "10.0.0.1"),
        svc(3, "a", "10.0.0.1"),
        svc(4, "a", "10.0.0.1", cond="Allocated"),
    ]
    assert [c.rv for c in status_writes(history)] == [2, 4]


def test_late_writes_and_outside() -> None:
    assert late_writes([3, 7, 9], [5, 8]) == (5, [7, 9])
    assert late_writes([3], []) == (None, [])
    assert outside([svc(2, "t", "10.0.1.5")], "10.0.0.0/24", ["t"]) != []
    assert outside([svc(2, "t", "10.0.0.5")], "10.0.0.0/24", ["t"]) == []
