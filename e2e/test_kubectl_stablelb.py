"""`kubectl stablelb` against the real API server, with the controller running: its answers are the
controller's (explain and status agree with what it wrote; a plan equals what applying the edit then does)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.cli import main as cli
from controller.cli.render import dump_json
from e2e.harness.binaries import REPO_ROOT
from e2e.support import Scenario, settle
from e2e.test_reservations import Reservations

pytestmark = pytest.mark.cluster

T = 60.0

# What the plugin needs, and nothing more: the test runs it as a ServiceAccount bound to exactly this.
VIEWER_RULES = [
    {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["get", "list"]},
    {"apiGroups": ["stablelb.io"], "resources": ["ippools", "ipreservations"], "verbs": ["get", "list"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]},
]


@pytest.fixture(scope="module")
def viewer_kubeconfig(stablelb_installed: Any) -> Path:
    """A kubeconfig for a ServiceAccount that may only read what the plugin reads."""
    api = stablelb_installed.api
    name = "stablelb-kubectl-viewer"
    api.post(
        "/api/v1/namespaces/kube-system/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    api.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
         "rules": VIEWER_RULES},
    )  # fmt: skip
    api.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "kube-system"}],
        },
    )
    path: Path = stablelb_installed.service_account_kubeconfig("kube-system", name)
    return path


class Plugin:
    """`kubectl-stablelb` with the scenario's controller flags: as a process (the real entry point, its exit
    code and output), or in-process for its JSON answers (the same code, without a process start each)."""

    def __init__(self, s: Scenario, kubeconfig: Path) -> None:
        self.s = s
        self.kubeconfig = kubeconfig

    def argv(self, *args: str) -> list[str]:
        return [
            *args,
            "--kubeconfig", str(self.kubeconfig),
            f"--lb-class={self.s.lb_class}", "--handle-unclassed=false",
            f"--lease-name={self.s.controllers.lease_name}",
        ]  # fmt: skip

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "controller.cli.main", *self.argv(*args)]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    async def json(self, *args: str) -> dict[str, Any]:
        answer = await cli.run(cli.build_parser().parse_args(self.argv(*args, "-o", "json")))
        data: dict[str, Any] = json.loads(dump_json(answer))
        return data


@pytest.fixture
def reservations(scenario: Scenario) -> Iterator[Reservations]:
    r = Reservations(scenario)
    yield r
    r.cleanup()


def verdicts(data: dict[str, Any], pools: set[str]) -> dict[str, tuple[str, str]]:
    return {p["pool"]: (p["verdict"], p["reason"]) for p in data["pools"] if p["pool"] in pools}


async def test_explain_and_status_say_what_the_controller_did(
    scenario: Scenario, wait_for: Any, viewer_kubeconfig: Path, reservations: Reservations
) -> None:
    s = scenario
    plugin = Plugin(s, viewer_kubeconfig)
    pool = s.create_pool("p", ["192.168.41.1-192.168.41.2"])
    other = s.create_pool("only-team-x", ["192.168.42.0/30"], serviceAllocation={"namespaces": ["team-x"]})
    s.start(2)
    s.create_service("a")
    await wait_for(lambda: s.ips("a"), timeout=T, describe=s.describe)
    s.create_service("b")
    await wait_for(lambda: s.ips("b"), timeout=T, describe=s.describe)
    s.create_service("c")
    await wait_for(lambda: s.reason("c") == "PoolExhausted", timeout=T, describe=s.describe)
    held_by_a = s.ips("a")[0]
    s.create_service("d", annotations={"stablelb.io/ips": held_by_a})
    await wait_for(lambda: s.reason("d") == "RequestedIPInUse", timeout=T, describe=s.describe)
    # autoAssign false: it serves only who asks for its addresses, so c stays pending.
    manual = s.create_pool("manual", ["192.168.44.0/30"], autoAssign=False)
    vip = reservations.create("vip", ["192.168.44.1"], "payments")
    s.create_service("e", annotations={"stablelb.io/ips": "192.168.44.1"})
    await wait_for(lambda: s.reason("e") == "IPReserved", timeout=T, describe=s.describe)

    served = await plugin.json("explain", "svc/a", "-n", s.ns)
    assert served["decision"]["ips"] == s.ips("a") and not served["decision"]["pending"]
    assert served["decision"]["summary"].startswith(f"has {held_by_a} from pool {pool}")
    assert verdicts(served, {pool, other}) == {
        pool: ("used", f"holds {held_by_a}"),
        other: ("skipped", f"namespace {s.ns!r} not in serviceAllocation.namespaces (team-x)"),
    }

    pending = await plugin.json("explain", "c", "-n", s.ns)
    assert pending["decision"]["pending"] and pending["decision"]["ips"] == []
    assert pending["decision"]["reason"] == s.reason("c") == "PoolExhausted"
    assert pending["decision"]["message"] == s.condition("c")["message"]  # type: ignore[index]
    assert verdicts(pending, {pool})[pool] == ("skipped", "exhausted: no free IPv4 address")

    refused = await plugin.json("explain", "svc/d", "-n", s.ns)
    assert refused["decision"]["reason"] == s.reason("d") == "RequestedIPInUse"
    assert refused["requestedIPs"] == [{"ip": held_by_a, "heldBy": [f"{s.ns}/a"], "reservedFor": None}]

    reserved = await plugin.json("explain", "svc/e", "-n", s.ns)
    assert reserved["decision"]["reason"] == "IPReserved"
    assert reserved["decision"]["message"] == s.condition("e")["message"]  # type: ignore[index]
    assert reserved["requestedIPs"] == [
        {"ip": "192.168.44.1", "heldBy": [], "reservedFor": f"{s.ns}/payments (IPReservation {vip})"}
    ]

    status = await plugin.json("status")
    assert status["leader"]["holder"] == s.leader() and not status["leader"]["expired"]
    row = next(p for p in status["pools"] if p["pool"] == pool)
    assert (row["state"], row["IPv4"], row["services"]) == (
        "Exhausted",
        {"total": 2, "assigned": 2, "available": 0, "reserved": 0},
        2,
    )
    assert status["services"]["pending"] == [f"{s.ns}/c", f"{s.ns}/d", f"{s.ns}/e"]
    [mine] = [r for r in status["reservations"] if r["reservation"] == vip]
    await wait_for(lambda: reservations.status(vip).get("state") == "Waiting", timeout=T, describe=s.describe)
    assert (mine["state"], mine["target"]) == ("Waiting", f"{s.ns}/payments")
    manual_row = next(p for p in status["pools"] if p["pool"] == manual)
    assert manual_row["IPv4"] == {"total": 4, "assigned": 0, "available": 3, "reserved": 1}

    # For people: a table, and no colour codes when stdout is not a terminal.
    table = plugin.run("status").stdout
    assert "\x1b[" not in table
    assert any(line.split()[:2] == [pool, "Exhausted"] for line in table.splitlines()), table

    missing = plugin.run("explain", "svc/nope", "-n", s.ns, check=False)
    assert missing.returncode == 1
    assert f"Service {s.ns}/nope not found" in missing.stderr


async def test_plan_equals_what_the_controller_then_does(
    scenario: Scenario, wait_for: Any, viewer_kubeconfig: Path, tmp_path: Path, reservations: Reservations
) -> None:
    s = scenario
    plugin = Plugin(s, viewer_kubeconfig)
    pool = s.create_pool("p", ["192.168.43.1-192.168.43.4"])
    s.start(2)
    names = [f"s{i}" for i in range(6)]
    for name in names:
        s.create_service(name)
        await wait_for(lambda n=name: s.reason(n) is not None, timeout=T, describe=s.describe)
    await wait_for(lambda: sum(bool(s.ips(n)) for n in names) == 4, timeout=T, describe=s.describe)
    before = {n: s.ips(n) for n in names}
    # Reserved for a Service yet to come, outside the pool for now: the edit brings it in.
    vip = reservations.create("vip", ["192.168.43.8"], "future")
    await wait_for(
        lambda: reservations.status(vip).get("state") == "NotInPool", timeout=T, describe=s.describe
    )

    # Shrink below two held addresses and grow past the pending: orphans kept, the pending served.
    edit = {
        "apiVersion": "stablelb.io/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": pool},
        "spec": {"addresses": ["192.168.43.3-192.168.43.8"]},
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(edit))
    plan = await plugin.json("plan", "-f", str(path))
    outcomes = {
        e["service"].split("/", 1)[1]: e for e in plan["services"] if e["service"].startswith(f"{s.ns}/")
    }
    assert set(outcomes) == set(names), plan
    assert sorted(e["outcome"] for e in outcomes.values()) == [
        "IPOutsidePool", "IPOutsidePool", "keeps", "keeps", "served", "served"
    ]  # fmt: skip

    [planned_vip] = [r for r in plan["reservations"] if r["reservation"] == vip]
    assert (planned_vip["before"], planned_vip["after"], planned_vip["conflict"]) == (
        "NotInPool",
        "Waiting",
        False,
    )

    s.patch_pool(pool, edit["spec"])
    for name, entry in outcomes.items():
        want_reason = "IPOutsidePool" if entry["outcome"] == "IPOutsidePool" else "Allocated"
        await wait_for(
            lambda n=name, r=want_reason, e=entry: s.reason(n) == r and s.ips(n) == e["after"]["ips"],
            timeout=T,
            describe=s.describe,
        )
    await wait_for(lambda: reservations.status(vip).get("state") == planned_vip["after"], timeout=T,
                   describe=s.describe)  # fmt: skip
    await settle(1.5)
    for name, entry in outcomes.items():
        assert s.ips(name) == entry["after"]["ips"], (name, entry)
        assert s.reason(name) == entry["after"]["reason"], (name, entry)
        if entry["outcome"] in ("keeps", "IPOutsidePool"):
            assert s.ips(name) == before[name]
        else:
            assert not before[name]

    # Deleting the pool: every holder is kept as IPOutsidePool, as the controller then does.
    in_pool = {n for n, e in outcomes.items() if e["outcome"] != "IPOutsidePool"}
    deletion = await plugin.json("plan", "--delete", pool)
    mine = [e for e in deletion["services"] if e["service"].startswith(f"{s.ns}/")]
    assert {e["service"].split("/", 1)[1] for e in mine} == in_pool, deletion
    assert {e["outcome"] for e in mine} == {"IPOutsidePool"}, deletion
    [planned_vip] = [r for r in deletion["reservations"] if r["reservation"] == vip]
    assert (planned_vip["after"], planned_vip["conflict"]) == ("NotInPool", True)
    s.delete_pool(pool)
    await wait_for(
        lambda: reservations.status(vip).get("state") == "NotInPool", timeout=T, describe=s.describe
    )
    for entry in mine:
        name = entry["service"].split("/", 1)[1]
        await wait_for(lambda n=name: s.reason(n) == "IPOutsidePool", timeout=T, describe=s.describe)
        assert s.ips(name) == entry["after"]["ips"]
