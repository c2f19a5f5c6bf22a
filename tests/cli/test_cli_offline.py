"""kubectl-stablelb offline: pool files, the plan on a hand-made cluster state, output and errors."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.cli import plan as plan_cmd
from controller.cli.cluster import CliError, ClusterState, kubeconfig_path
from controller.cli.explain import not_handled_why
from controller.cli.render import Style, table
from controller.cli.replay import Policy, replay
from controller.cli.status import status_data
from controller.ipam import ServiceKey

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def pool(
    name: str, addresses: list[str], created: str = "2026-01-01T00:00:00Z", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "stablelb.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"addresses": addresses, **spec},
    }


def service(name: str, created: int, ips: list[str] = (), **annotations: str) -> dict[str, Any]:  # type: ignore[assignment]
    return {
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "creationTimestamp": f"2026-01-01T00:00:{created:02d}Z",
            "annotations": annotations,
        },
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilies": ["IPv4"]},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    }


def state(pools: list[dict[str, Any]], services: list[dict[str, Any]]) -> ClusterState:
    return ClusterState(services=services, pools=pools, namespaces={}, lease=None)


def test_plan_shrink_and_grow_keeps_orphans_and_serves_the_pending() -> None:
    run = replay(
        state(
            [pool("p", ["10.0.0.1-10.0.0.2"])],
            [service("a", 1, ["10.0.0.1"]), service("b", 2, ["10.0.0.2"]), service("c", 3)],
        ),
        Policy(),
    )
    data = plan_cmd.plan(run, [pool("p", ["10.0.0.2-10.0.0.3"], created="2030-01-01T00:00:00Z")], [], NOW)
    got = {e["service"]: (e["outcome"], e["after"]["ips"]) for e in data["services"]}
    assert got == {
        "ns/a": ("IPOutsidePool", ["10.0.0.1"]),
        "ns/b": ("keeps", ["10.0.0.2"]),
        "ns/c": ("served", ["10.0.0.3"]),
    }
    assert data["summary"] == {
        "keeps": 1,
        "IPOutsidePool": 1,
        "served": 1,
        "moves": 0,
        "loses": 0,
        "pending": 0,
    }


def test_plan_with_orphans_reassigned_moves_them() -> None:
    run = replay(
        state([pool("p", ["10.0.0.1/32"])], [service("a", 1, ["10.0.0.1"])]), Policy(reassign_orphans=True)
    )
    data = plan_cmd.plan(run, [pool("p", ["10.0.0.9/32"])], [], NOW)
    assert [(e["service"], e["outcome"], e["after"]["ips"]) for e in data["services"]] == [
        ("ns/a", "moves", ["10.0.0.9"])
    ]


def test_an_edited_pool_keeps_its_age_and_a_new_one_is_youngest() -> None:
    current = [pool("old", ["10.0.0.0/24"], created="2020-01-01T00:00:00Z")]
    objs, changed = plan_cmd.edited_pools(
        current,
        [pool("old", ["10.0.0.0/25"], created="2031-01-01T00:00:00Z"), pool("new", ["10.0.0.0/26"])],
        [],
        NOW,
    )
    created = {o["metadata"]["name"]: o["metadata"]["creationTimestamp"] for o in objs}
    assert created == {"old": "2020-01-01T00:00:00Z", "new": "2026-12-02T03:00:00Z"}
    assert changed == ["old", "new"]
    with pytest.raises(CliError, match="IPPool 'gone' does not exist"):
        plan_cmd.edited_pools(current, [], ["gone"], NOW)


def test_pool_files_yaml_json_lists_and_mistakes(tmp_path: Path) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text(
        "apiVersion: stablelb.io/v1alpha1\nkind: IPPool\nmetadata: {name: a}\n"
        "spec: {addresses: [10.0.0.0/30]}\n"
        "---\n"
        '{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "stablelb.io/v1alpha1",'
        ' "kind": "IPPool",'
        ' "metadata": {"name": "b"}, "spec": {"addresses": ["10.0.1.0/30"]}}]}\n'
    )
    assert [o["metadata"]["name"] for o in plan_cmd.read_pool_file(str(f))] == ["a", "b"]
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    with pytest.raises(CliError, match="plan takes IPPool objects"):
        plan_cmd.read_pool_file(str(f))
    f.write_text("apiVersion: stablelb.io/v1alpha1\nkind: IPPool\nmetadata: {}\n")
    with pytest.raises(CliError, match=r"without metadata\.name"):
        plan_cmd.read_pool_file(str(f))
    with pytest.raises(CliError, match="cannot read"):
        plan_cmd.read_pool_file(str(tmp_path / "missing.yaml"))


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert Style.for_stream(FakeTty(), {}).colour
    assert not Style.for_stream(FakeTty(), {"NO_COLOR": ""}).colour
    assert not Style.for_stream(io.StringIO(), {}).colour
    coloured = table(
        ["pool", "state"], [["a", Style(True).paint("Ready", "green")], ["long-name", "x"]], Style(True)
    )
    plain = table(["pool", "state"], [["a", "Ready"], ["long-name", "x"]], Style(False))
    assert [len(line) for line in plain.splitlines()] == [
        len("long-name   STATE"),
        len("a           Ready"),
        13,
    ]
    assert "\x1b[" in coloured and "\x1b[" not in plain


def test_kubeconfig_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="pass --kubeconfig=PATH or set KUBECONFIG"):
        kubeconfig_path(None, {"KUBECONFIG": str(tmp_path / "none")})
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("{}")
    b.write_text("{}")
    with pytest.raises(CliError, match="lists several files"):
        kubeconfig_path(None, {"KUBECONFIG": f"{a}:{b}"})
    assert kubeconfig_path(str(a), {}) == a


def test_services_stablelb_leaves_alone_say_why() -> None:
    obj = service("x", 1)
    obj["spec"]["loadBalancerClass"] = "other.io/lb"
    assert "another controller's" in (not_handled_why(obj, Policy()) or "")
    assert not_handled_why(service("y", 1), Policy()) is None
    assert "--handle-unclassed=false" in (
        not_handled_why(service("y", 1), Policy(handle_unclassed=False)) or ""
    )


def test_the_replay_restores_the_reuse_order_from_the_pools_release_ledger() -> None:
    p = pool("p", ["10.0.0.1-10.0.0.3"])
    p["status"] = {
        "releaseLedger": {
            "entries": [
                {"ip": "10.0.0.3", "releasedAt": "2026-12-02T01:00:00Z", "service": "ns/x", "uid": "u1",
                 "reason": "ServiceGone"},
                {"ip": "10.0.0.1", "releasedAt": "2026-12-02T01:00:05Z", "service": "ns/y", "uid": "u2",
                 "reason": "ServiceGone"},
            ],
            "truncated": False,
        }
    }  # fmt: skip
    run = replay(state([p], [service("a", 1, ["10.0.0.2"]), service("new", 2)]), Policy())
    # Least recently released first, as the leader that wrote the ledger would have: not the lowest free.
    assert run.decisions[ServiceKey("ns", "new")].ips == ("10.0.0.3",)
    ledger = status_data(run, NOW)["pools"][0]["ledger"]
    assert ledger == {"entries": 2, "truncated": False, "next": ["10.0.0.3", "10.0.0.1"], "ignored": None}
