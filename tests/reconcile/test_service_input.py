from __future__ import annotations

from typing import Any

import pytest

from controller.ipam import Port, ServiceKey
from controller.ipam.sharing import SharingTerms, compatible
from controller.reconcile.service_input import (
    CONDITION_TYPE,
    EDITED_AFTER_STATUS,
    edited_after_status,
    is_ours,
    read_service,
    status_ips,
)


def svc(
    annotations: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    base_spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"port": 80, "protocol": "TCP"}],
    }
    base_spec.update(spec or {})
    return {
        "metadata": {
            "namespace": "ns",
            "name": "web",
            "uid": "u1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": annotations or {},
            **meta,
        },
        "spec": base_spec,
        "status": status or {},
    }


def test_plain_service_reads_into_a_request() -> None:
    inp = read_service(
        svc(status={"loadBalancer": {"ingress": [{"ip": "192.168.10.1"}]}}), reassign_orphans=False
    )
    assert inp.problem is None
    req = inp.request
    assert req.key == ServiceKey("ns", "web")
    assert req.families == ("IPv4",)
    assert req.ports == frozenset({Port("TCP", 80)})
    assert req.current_ips == ("192.168.10.1",)
    assert req.created == pytest.approx(1767225600.0)


@pytest.mark.parametrize(
    "annotation",
    ["stablelb.io/ips", "metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"],
)
def test_requested_ips_from_every_supported_annotation(annotation: str) -> None:
    inp = read_service(
        svc(
            {annotation: "192.168.10.5, fd00:10::5"},
            {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"},
        ),
        reassign_orphans=False,
    )
    assert inp.problem is None
    assert inp.request.requested_ips == ("192.168.10.5", "fd00:10::5")


def test_spec_load_balancer_ip_is_honoured_with_a_deprecation() -> None:
    inp = read_service(svc(spec={"loadBalancerIP": "192.168.10.7"}), reassign_orphans=False)
    assert inp.problem is None
    assert inp.request.requested_ips == ("192.168.10.7",)
    assert inp.deprecations and "deprecated" in inp.deprecations[0]


def test_disagreeing_sources_are_a_conflict() -> None:
    inp = read_service(
        svc({"stablelb.io/ips": "192.168.10.5"}, {"loadBalancerIP": "192.168.10.6"}), reassign_orphans=False
    )
    assert inp.problem is not None
    assert inp.problem.reason == "ConflictingRequests"
    assert "192.168.10.5" in inp.problem.message and "192.168.10.6" in inp.problem.message
    assert inp.request.requested_ips == ()


def test_agreeing_sources_are_fine() -> None:
    inp = read_service(
        svc({"stablelb.io/ips": "192.168.10.5", "metallb.io/loadBalancerIPs": "192.168.10.5"}),
        reassign_orphans=False,
    )
    assert inp.problem is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("not-an-ip", "'not-an-ip' is not an IP address"),
        ("192.168.10.1,192.168.10.2", "two IPv4 addresses"),
        (" , ", "is empty"),
        ("fd00::9%eth0", "has a zone id"),  # issue 9 defect 10: Python alone would accept it
    ],
)
def test_malformed_ip_annotation(value: str, needle: str) -> None:
    inp = read_service(svc({"stablelb.io/ips": value}), reassign_orphans=False)
    assert inp.problem is not None and inp.problem.reason == "InvalidRequest"
    assert needle in inp.problem.message


def test_requested_ip_of_a_family_the_service_does_not_have() -> None:
    inp = read_service(svc({"stablelb.io/ips": "fd00:10::5"}), reassign_orphans=False)
    assert inp.problem is not None and inp.problem.reason == "ConflictingRequests"
    assert "IPv6" in inp.problem.message


def test_pool_and_sharing_annotations_and_aliases() -> None:
    inp = read_service(
        svc({"metallb.io/address-pool": "gold", "metallb.universe.tf/allow-shared-ip": "k1"}),
        reassign_orphans=False,
    )
    assert inp.request.requested_pool == "gold"
    assert inp.request.sharing_key == "k1"


def test_conflicting_pool_annotations() -> None:
    inp = read_service(svc({"stablelb.io/pool": "a", "metallb.io/address-pool": "b"}), reassign_orphans=False)
    assert inp.problem is not None and inp.problem.reason == "ConflictingRequests"


def test_orphan_policy_annotation_overrides_global() -> None:
    assert read_service(
        svc({"stablelb.io/orphan-policy": "reassign"}), reassign_orphans=False
    ).request.reassign_orphans
    assert not read_service(
        svc({"stablelb.io/orphan-policy": "retain"}), reassign_orphans=True
    ).request.reassign_orphans
    bad = read_service(svc({"stablelb.io/orphan-policy": "move"}), reassign_orphans=False)
    assert bad.problem is not None and "reassign" in bad.problem.message


def test_local_traffic_policy_sets_backend_key() -> None:
    inp = read_service(
        svc(spec={"externalTrafficPolicy": "Local", "selector": {"b": "2", "a": "1"}}), reassign_orphans=False
    )
    assert inp.request.backend_key == "a=1,b=2"
    assert read_service(svc(), reassign_orphans=False).request.backend_key is None


def test_is_ours() -> None:
    assert is_ours(svc(), "stablelb.io/lb", True)
    assert not is_ours(svc(), "stablelb.io/lb", False)
    assert is_ours(svc(spec={"loadBalancerClass": "stablelb.io/lb"}), "stablelb.io/lb", False)
    assert not is_ours(svc(spec={"loadBalancerClass": "other.io/lb"}), "stablelb.io/lb", True)
    assert not is_ours(svc(spec={"type": "ClusterIP"}), "stablelb.io/lb", True)


def test_status_ips_ignores_hostnames_and_garbage() -> None:
    obj = svc(status={"loadBalancer": {"ingress": [{"hostname": "x"}, {"ip": "bad"}, {"ip": "fd00::1"}]}})
    assert status_ips(obj) == ("fd00::1",)


def test_legacy_metallb_annotations_work_and_are_flagged() -> None:
    inp = read_service(svc({"metallb.universe.tf/address-pool": "gold"}), reassign_orphans=False)
    assert inp.problem is None and inp.request.requested_pool == "gold"
    assert inp.deprecations == (
        "annotation metallb.universe.tf/address-pool is deprecated; "
        "use stablelb.io/pool (or metallb.io/address-pool)",
    )
    assert read_service(svc({"metallb.io/address-pool": "gold"}), reassign_orphans=False).deprecations == ()


def test_local_without_selector_may_share_with_cluster() -> None:
    # issue 9 defect 10: MetalLB's backend key is the (empty) selector for Local, "" for Cluster
    key = {"stablelb.io/sharing-key": "k"}
    local = read_service(svc(key, spec={"externalTrafficPolicy": "Local"}), reassign_orphans=False).request
    udp = {"ports": [{"port": 53, "protocol": "UDP"}]}
    cluster = read_service(svc(key, spec=udp), reassign_orphans=False).request
    assert compatible(SharingTerms.of(local), SharingTerms.of(cluster))


def test_an_input_problem_travels_in_the_request() -> None:
    # The reconciler calls ensure with it: nothing is added, what may no longer be kept still goes.
    inp = read_service(svc({"stablelb.io/pool": "a", "metallb.io/address-pool": "b"}), reassign_orphans=False)
    assert inp.problem is not None and inp.request.problem == inp.problem.message
    assert read_service(svc(), reassign_orphans=False).request.problem is None


def _managed(manager: str, time: str, subresource: str | None = None) -> dict[str, Any]:
    entry = {"manager": manager, "operation": "Update", "time": time}
    if subresource:
        entry["subresource"] = subresource
    return entry


def test_edited_after_status_compares_managed_fields_times() -> None:
    ours = _managed("stablelb-controller", "2026-01-01T00:00:05Z", "status")
    assert edited_after_status([_managed("kubectl", "2026-01-01T00:00:06Z"), ours], "stablelb-controller")
    assert not edited_after_status([_managed("kubectl", "2026-01-01T00:00:05Z"), ours], "stablelb-controller")
    # someone else's status write does not count as ours, nor as an edit
    other_status = _managed("restore", "2026-01-01T00:00:09Z", "status")
    edit = _managed("kubectl", "2026-01-01T00:00:06Z")
    assert not edited_after_status([edit, other_status], "stablelb-controller")
    assert not edited_after_status(None, "stablelb-controller")


def test_changed_since_grant_from_generation_or_the_cache_mark() -> None:
    cond = {"type": CONDITION_TYPE, "status": "True", "reason": "Allocated", "observedGeneration": 2}
    def changed(obj: dict[str, Any]) -> bool:
        return read_service(obj, reassign_orphans=False).request.changed_since_grant

    assert changed(svc(status={"conditions": [cond]}, generation=3))
    assert not changed(svc(status={"conditions": [cond]}, generation=2))
    assert changed({**svc(), EDITED_AFTER_STATUS: True})
    assert not changed(svc())
