"""The IPReservation CRD rejects malformed reservations at admission with a readable message, and its
printer columns show what `kubectl get iprs` promises."""

from __future__ import annotations

import json
import ssl
import urllib.request
import uuid
from typing import Any

import pytest

from e2e.harness import LocalCluster
from e2e.harness.rest import Api

pytestmark = pytest.mark.cluster

RESERVATIONS = "/apis/stablelb.io/v1alpha1/ipreservations"
NOT_AN_IP = "must be a single IP address"
ONE_OF = "set exactly one of name and selector"
WEB = {"namespace": "team-a", "name": "web"}

# (id, spec, substring of the API server's message)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("garbage", {"addresses": ["banana"], "service": WEB}, NOT_AN_IP),
    ("cidr", {"addresses": ["10.0.0.0/24"], "service": WEB}, NOT_AN_IP),
    ("range", {"addresses": ["10.0.0.1-10.0.0.2"], "service": WEB}, NOT_AN_IP),
    ("leading-zero", {"addresses": ["10.0.0.01"], "service": WEB}, NOT_AN_IP),
    ("zone", {"addresses": ["fe80::1%eth0"], "service": WEB}, NOT_AN_IP),
    ("empty", {"addresses": [], "service": WEB}, "should have at least 1 items"),
    ("duplicate", {"addresses": ["10.0.0.1", "10.0.0.1"], "service": WEB}, "Duplicate value"),
    ("two-spellings", {"addresses": ["fd00::1", "fd00:0::1"], "service": WEB}, "lists one address twice"),
    ("no-service", {"addresses": ["10.0.0.1"]}, "spec.service: Required value"),
    ("no-namespace", {"addresses": ["10.0.0.1"], "service": {"name": "web"}}, "namespace: Required value"),
    ("neither", {"addresses": ["10.0.0.1"], "service": {"namespace": "a"}}, ONE_OF),
    (
        "both",
        {"addresses": ["10.0.0.1"], "service": {**WEB, "selector": {"matchLabels": {"app": "web"}}}},
        ONE_OF,
    ),
    (
        "empty-selector",
        {"addresses": ["10.0.0.1"], "service": {"namespace": "a", "selector": {}}},
        "an empty selector would match every Service",
    ),
    ("bad-name", {"addresses": ["10.0.0.1"], "service": {"namespace": "a", "name": "Web_1"}}, "should match"),
    (
        "bad-operator",
        {
            "addresses": ["10.0.0.1"],
            "service": {"namespace": "a", "selector": {"matchExpressions": [{"key": "a", "operator": "No"}]}},
        },
        "Unsupported value",
    ),
]

VALID: list[dict[str, Any]] = [
    {"addresses": ["192.168.10.50"], "service": WEB},
    {"addresses": ["192.168.10.50", "fd00:10::50"], "service": WEB},
    {
        "addresses": ["10.0.0.1", "10.0.0.2"],
        "service": {"namespace": "a", "selector": {"matchLabels": {"a": "b"}}},
    },
    {
        "addresses": ["fd00::1"],
        "service": {"namespace": "a", "selector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}},
    },
]


def _reservation(spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    meta = {"name": name} if name else {"generateName": "r-"}
    return {"apiVersion": "stablelb.io/v1alpha1", "kind": "IPReservation", "metadata": meta, "spec": spec}


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in INVALID], ids=[i for i, _, _ in INVALID])
def test_malformed_reservation_is_rejected_with_a_readable_message(
    stablelb_installed: LocalCluster, spec: dict[str, Any], message: str
) -> None:
    status, body = stablelb_installed.api.request(
        "POST", RESERVATIONS, _reservation(spec), query={"dryRun": "All"}
    )
    assert status == 422, body
    assert message in body["message"], body["message"]


@pytest.mark.parametrize("spec", VALID)
def test_valid_reservation_is_accepted(stablelb_installed: LocalCluster, spec: dict[str, Any]) -> None:
    status, body = stablelb_installed.api.request(
        "POST", RESERVATIONS, _reservation(spec), query={"dryRun": "All"}
    )
    assert status == 201, body


def _table(api: Api, path: str) -> dict[str, Any]:
    """GET as a meta.k8s.io Table, what `kubectl get` shows (the harness client asks for plain JSON)."""
    req = urllib.request.Request(api.server + path)
    req.add_header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    if api.token:
        req.add_header("Authorization", f"Bearer {api.token}")
    ctx = api.ssl_context if api.ssl_context is not None else ssl._create_unverified_context()
    with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
        return dict(json.loads(resp.read()))


def test_printer_columns_show_addresses_target_and_state(stablelb_installed: LocalCluster) -> None:
    api = stablelb_installed.api
    name = f"cols-{uuid.uuid4().hex[:6]}"
    api.post(RESERVATIONS, _reservation({"addresses": ["192.168.10.50"], "service": WEB}, name))
    try:
        status = {"state": "HeldByOther", "target": "team-a/web", "addresses": [
            {"ip": "192.168.10.50", "state": "HeldByOther", "holders": ["team-b/x"], "pool": "default"}]}
        api.call("PATCH", f"{RESERVATIONS}/{name}/status", {"status": status},
                 content_type="application/merge-patch+json")  # fmt: skip
        table = _table(api, f"{RESERVATIONS}/{name}")
        columns = [c["name"] for c in table["columnDefinitions"]]
        assert columns == ["Name", "Addresses", "Namespace", "Service", "State", "Target", "Age"]
        cells = table["rows"][0]["cells"]
        assert cells[1:6] == ['["192.168.10.50"]', "team-a", "web", "HeldByOther", "team-a/web"]
    finally:
        api.delete(f"{RESERVATIONS}/{name}")
