from __future__ import annotations

from typing import Any

from controller.reconcile.service_input import CONDITION_TYPE
from controller.reconcile.status import ConditionSpec, desired_ingress, merge_conditions, status_patch

NOW = "2026-11-26T00:00:00Z"
LATER = "2026-11-27T00:00:00Z"


def obj(ingress: list[dict[str, Any]], conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "a", "resourceVersion": "7", "generation": 2},
        "status": {"loadBalancer": {"ingress": ingress}, "conditions": conditions},
    }


def test_first_allocation_writes_ingress_and_condition() -> None:
    patch = status_patch(
        obj([], []), desired_ingress([], ["192.168.10.1"]), ConditionSpec("True", "Allocated", "ok"), NOW
    )
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.10.1", "ipMode": "VIP"}]
    (cond,) = patch["status"]["conditions"]
    assert cond["type"] == CONDITION_TYPE and cond["status"] == "True" and cond["observedGeneration"] == 2


def test_unchanged_state_writes_nothing_even_later() -> None:
    first = status_patch(
        obj([], []), desired_ingress([], ["192.168.10.1"]), ConditionSpec("True", "Allocated", "ok"), NOW
    )
    assert first is not None
    written = obj(first["status"]["loadBalancer"]["ingress"], first["status"]["conditions"])
    again = status_patch(
        written,
        desired_ingress(first["status"]["loadBalancer"]["ingress"], ["192.168.10.1"]),
        ConditionSpec("True", "Allocated", "ok"),
        LATER,
    )
    assert again is None


def test_other_writers_conditions_and_hostnames_are_kept() -> None:
    foreign = {
        "type": "example.com/Ready",
        "status": "True",
        "reason": "X",
        "message": "",
        "lastTransitionTime": NOW,
    }
    current = obj([{"hostname": "lb.example.com"}], [foreign])
    patch = status_patch(
        current,
        desired_ingress(current["status"]["loadBalancer"]["ingress"], ["10.0.0.1"]),
        ConditionSpec("False", "PoolExhausted", "full"),
        NOW,
    )
    assert patch is not None
    assert patch["status"]["conditions"][0] == foreign
    assert patch["status"]["loadBalancer"]["ingress"] == [
        {"ip": "10.0.0.1", "ipMode": "VIP"},
        {"hostname": "lb.example.com"},
    ]


def test_transition_time_kept_while_status_holds() -> None:
    prev = [
        {
            "type": CONDITION_TYPE,
            "status": "False",
            "reason": "PoolExhausted",
            "message": "a",
            "lastTransitionTime": NOW,
        }
    ]
    same = merge_conditions(prev, ConditionSpec("False", "NoPool", "b"), 1, LATER)
    assert same[0]["lastTransitionTime"] == NOW
    flipped = merge_conditions(prev, ConditionSpec("True", "Allocated", "c"), 1, LATER)
    assert flipped[0]["lastTransitionTime"] == LATER


def test_removing_our_condition() -> None:
    prev = [
        {
            "type": CONDITION_TYPE,
            "status": "True",
            "reason": "Allocated",
            "message": "",
            "lastTransitionTime": NOW,
        }
    ]
    patch = status_patch(obj([{"ip": "10.0.0.1"}], prev), [], None, NOW)
    assert patch is not None
    assert patch["status"]["conditions"] is None
    assert patch["status"]["loadBalancer"]["ingress"] is None
