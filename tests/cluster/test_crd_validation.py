"""The IPPool CRD rejects malformed pools at admission, each with a message that says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.harness import LocalCluster

pytestmark = pytest.mark.cluster

POOLS = "/apis/stablelb.io/v1alpha1/ippools"

NOT_A_CIDR_OR_RANGE = "must be a CIDR such as 192.168.10.0/24 or a range"
BAD_CIDR = "is not a valid CIDR"
HOST_BITS = "CIDR has host bits set"
BAD_BOUND = "range bounds must be valid IP addresses"

# (id, spec, substring of the API server's message)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("garbage", {"addresses": ["banana"]}, NOT_A_CIDR_OR_RANGE),
    ("empty-string", {"addresses": [""]}, "should be at least 1 chars long"),
    ("empty-list", {"addresses": []}, "should have at least 1 items"),
    ("missing-addresses", {"autoAssign": True}, "spec.addresses: Required value"),
    ("bare-address", {"addresses": ["192.168.10.5"]}, NOT_A_CIDR_OR_RANGE),
    ("host-bits-v4", {"addresses": ["192.168.10.1/24"]}, HOST_BITS),
    ("host-bits-v6", {"addresses": ["fd00:10::1/120"]}, HOST_BITS),
    ("prefix-too-long-v4", {"addresses": ["192.168.10.0/33"]}, BAD_CIDR),
    ("prefix-too-long-v6", {"addresses": ["fd00::/129"]}, BAD_CIDR),
    ("prefix-leading-zero", {"addresses": ["10.0.0.0/08"]}, BAD_CIDR),
    ("octet-leading-zero", {"addresses": ["192.168.010.0/24"]}, BAD_CIDR),
    ("zone-id", {"addresses": ["fe80::1%eth0/128"]}, BAD_CIDR),
    ("ipv4-mapped-v6", {"addresses": ["::ffff:10.0.0.0/120"]}, BAD_CIDR),
    ("two-prefixes", {"addresses": ["10.0.0.0/24/8"]}, BAD_CIDR),
    ("space", {"addresses": ["10.0.0.0 /24"]}, "must not contain spaces"),
    ("cidr-and-range", {"addresses": ["10.0.0.0/24-10.0.1.0/24"]}, NOT_A_CIDR_OR_RANGE),
    (
        "reversed-v4-range",
        {"addresses": ["10.0.0.5-10.0.0.1"]},
        "range start must not be greater than its end",
    ),
    (
        "mixed-family-range",
        {"addresses": ["10.0.0.1-fd00::1"]},
        "range start and end must be of the same IP family",
    ),
    (
        "three-part-range",
        {"addresses": ["10.0.0.1-10.0.0.2-10.0.0.3"]},
        "exactly two addresses joined by one '-'",
    ),
    ("open-range", {"addresses": ["10.0.0.1-"]}, BAD_BOUND),
    ("range-leading-zero", {"addresses": ["10.0.0.01-10.0.0.9"]}, BAD_BOUND),
    ("range-with-prefix", {"addresses": ["10.0.0.1-10.0.0.9/32"]}, NOT_A_CIDR_OR_RANGE),
    ("duplicate-entry", {"addresses": ["10.0.0.0/24", "10.0.0.0/24"]}, "Duplicate value"),
    ("too-many-entries", {"addresses": [f"10.0.{i}.0/24" for i in range(65)]}, "must have at most 64 items"),
    ("too-long-entry", {"addresses": ["1" * 92]}, "may not be more than 91 bytes"),
    (
        "bad-allocation-order",
        {"addresses": ["10.0.0.0/24"], "allocationOrder": "Random"},
        "Unsupported value",
    ),
    (
        "negative-priority",
        {"addresses": ["10.0.0.0/24"], "serviceAllocation": {"priority": -1}},
        "should be greater than or equal to 0",
    ),
    (
        "bad-namespace-name",
        {"addresses": ["10.0.0.0/24"], "serviceAllocation": {"namespaces": ["Team_A"]}},
        "should match",
    ),
    (
        "bad-selector-operator",
        {
            "addresses": ["10.0.0.0/24"],
            "serviceAllocation": {
                "serviceSelectors": [{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}]
            },
        },
        "Unsupported value",
    ),
]

VALID: list[list[str]] = [
    ["192.168.10.0/24"],
    ["192.168.20.10-192.168.20.50"],
    ["fd00:10::/120"],
    ["fd00:10::1-fd00:10::ff"],
    ["10.0.0.7/32", "fd00::7/128"],
    ["10.0.0.9-10.0.0.9"],
    ["0.0.0.0/0"],
    ["2001:db8::/64"],
    ["192.168.10.0/24", "192.168.20.10-192.168.20.50", "fd00:10::/120"],
    [f"10.1.{i}.0/24" for i in range(64)],
]


def _pool(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "stablelb.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"generateName": "p-"},
        "spec": spec,
    }


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_malformed_pool_is_rejected_with_a_readable_message(
    stablelb_installed: LocalCluster, spec: dict[str, Any], message: str
) -> None:
    status, body = stablelb_installed.api.request("POST", POOLS, _pool(spec), query={"dryRun": "All"})

    assert status == 422, body
    assert body["reason"] == "Invalid"
    assert message in body["message"], body["message"]


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 15
    assert len({m for _, _, m in INVALID}) >= 12  # many distinct messages, not one catch-all


@pytest.mark.parametrize("addresses", VALID, ids=[",".join(a)[:40] for a in VALID])
def test_valid_pool_is_accepted_with_defaults(stablelb_installed: LocalCluster, addresses: list[str]) -> None:
    created = stablelb_installed.api.post(POOLS, _pool({"addresses": addresses}), query={"dryRun": "All"})

    assert created["spec"] == {
        "addresses": addresses,
        "autoAssign": True,
        "avoidBuggyIPs": False,
        "allocationOrder": "LeastRecentlyReleased",
        "disabled": False,
    }


def test_reversed_ipv6_range_is_left_to_the_controller(stablelb_installed: LocalCluster) -> None:
    # CEL has no IPv6 ordering: admission accepts it and the controller reports it in status (Invalid).
    status, _ = stablelb_installed.api.request(
        "POST", POOLS, _pool({"addresses": ["fd00::9-fd00::1"]}), query={"dryRun": "All"}
    )
    assert status == 201
