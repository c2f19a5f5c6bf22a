"""`make demo`, last chapter: the reuse order survives a failover in the middle of churn, a reservation is
honoured, and `kubectl stablelb` says what the controller does (issue 12).

Played by e2e/demo.py after its own story, on the same control plane and controllers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.harness.binaries import REPO_ROOT
from e2e.harness.rest import Api, ApiError
from e2e.harness.waiting import wait_until

CHURN_NS = "churn"
CHURN_POOL = "churn-pool"
CHURN_RANGE = ("192.168.11.1", 8)  # first address, size: small, so freed addresses come round quickly
RESERVED_IP = "192.168.10.30"  # the demo pool's last address: nobody holds it by then
RESERVATION = "payments-vip"
POOLS = "/apis/stablelb.io/v1alpha1/ippools"
RESERVATIONS = "/apis/stablelb.io/v1alpha1/ipreservations"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def svc_body(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": 80}],
            "selector": {"app": name},
            "allocateLoadBalancerNodePorts": False,
        },
    }


class Chapter:
    """Needs from the demo: the admin Api and kubeconfig, the Lease name, a way to start a controller replica,
    the leader's identity and a way to kill it."""

    def __init__(
        self,
        api: Api,
        admin_kubeconfig: Path,
        lease: str,
        start_controller: Callable[[], None],
        kill_leader: Callable[[int], str],
    ) -> None:
        self.api = api
        self.admin_kubeconfig = admin_kubeconfig
        self.lease = lease
        self.start_controller = start_controller
        self.kill_leader = kill_leader
        self.checks: list[tuple[str, bool]] = []

    # -- helpers ----------------------------------------------------------------------------------
    def path(self, ns: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{ns}/services" + (f"/{name}" if name else "")

    def ips(self, ns: str, name: str) -> list[str]:
        obj = self.api.get(self.path(ns, name))
        ingress = (obj.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        return [e["ip"] for e in ingress if "ip" in e]

    def wait_ips(self, ns: str, *names: str) -> None:
        wait_until(lambda: all(self.ips(ns, n) for n in names), timeout=90)

    def ledger(self) -> list[dict[str, Any]]:
        status = self.api.get(f"{POOLS}/{CHURN_POOL}").get("status") or {}
        return list((status.get("releaseLedger") or {}).get("entries") or [])

    def events(self, ns: str, name: str) -> list[tuple[str, str]]:
        items = self.api.get(
            f"/api/v1/namespaces/{ns}/events", query={"fieldSelector": f"involvedObject.name={name}"}
        ).get("items", [])
        return [(str(e.get("reason")), str(e.get("message"))) for e in items]

    def plugin(self, *args: str) -> str:
        argv = [
            sys.executable, "-m", "controller.cli.main", *args,
            "--kubeconfig", str(self.admin_kubeconfig), "--lease-name", self.lease,
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False)
        return proc.stdout + proc.stderr

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, ok))
        print(f"    {'ok ' if ok else 'FAILED'}  {what}", flush=True)

    # -- (a) failover in the middle of churn ------------------------------------------------------
    def failover_in_churn(self) -> None:
        first, size = CHURN_RANGE
        prefix, last_octet = first.rsplit(".", 1)
        end = f"{prefix}.{int(last_octet) + size - 1}"
        self.api.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHURN_NS}}
        )
        self.api.post(
            POOLS,
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": CHURN_POOL},
                "spec": {"addresses": [f"{first}-{end}"], "serviceAllocation": {"namespaces": [CHURN_NS]}},
            },
        )
        say(f"churn: pool {CHURN_POOL} ({first}-{end}) for namespace {CHURN_NS}; c0..c7 fill it")
        names = [f"c{i}" for i in range(size)]
        for name in names:
            self.api.post(self.path(CHURN_NS), svc_body(name))
        self.wait_ips(CHURN_NS, *names)
        self.start_controller()  # a standby again (the demo's failover step left one replica)
        freed = ["c2", "c5", "c0"]
        freed_ips = [self.ips(CHURN_NS, n)[0] for n in freed]
        say(f"deleting {', '.join(freed)} (holding {', '.join(freed_ips)}) one by one")
        for name in freed:
            self.api.delete(self.path(CHURN_NS, name))
            time.sleep(1.2)  # distinct release times, so the order is the deletion order
        wait_until(lambda: {e.get("ip") for e in self.ledger()} >= set(freed_ips), timeout=60)
        ledger = self.ledger()
        print(f"    release ledger in IPPool {CHURN_POOL} status (oldest first, the reuse order):")
        for entry in ledger:
            print(f"      {entry.get('ip'):<15} released {entry.get('releasedAt')} by {entry.get('service')}")
        expected = [e["ip"] for e in ledger if e.get("ip") in freed_ips]

        leader = self.kill_leader(signal.SIGKILL)
        say(f"kill -9 the leader ({leader}) and keep creating Services while nobody leads: n1, n2, n3")
        started = time.monotonic()
        new = ["n1", "n2", "n3"]
        for name in new:
            self.api.post(self.path(CHURN_NS), svc_body(name))
            # A new leader serves pending Services oldest first by creationTimestamp, which has one-second
            # resolution: a second apart, so the creation order is the order they are served in.
            time.sleep(1.1)
        self.wait_ips(CHURN_NS, *new)
        got = [self.ips(CHURN_NS, n)[0] for n in new]
        took = time.monotonic() - started
        print(f"    after the takeover ({took:.1f}s): n1, n2, n3 got {', '.join(got)}")
        print(f"    the ledger's order (what the old leader would have handed out): {', '.join(expected)}")
        lowest = ", ".join(sorted(freed_ips, key=_ip_key))
        print(f"    lowest free (what a leader without the ledger hands out): {lowest}")
        self.check("the new leader hands out freed addresses in the old leader's LeastRecentlyReleased order",
                   got == expected)  # fmt: skip

    # -- (b) a reservation honoured ---------------------------------------------------------------
    def reservation(self, ns: str) -> None:
        say(f"IPReservation {RESERVATION}: {RESERVED_IP} for {ns}/payments (which does not exist yet)")
        self.api.post(
            RESERVATIONS,
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPReservation",
                "metadata": {"name": RESERVATION},
                "spec": {"addresses": [RESERVED_IP], "service": {"namespace": ns, "name": "payments"}},
            },
        )
        say(f"{ns}/thief asks for {RESERVED_IP} (stablelb.io/ips annotation)")
        self.api.post(self.path(ns), svc_body("thief", {"stablelb.io/ips": RESERVED_IP}))
        refused = wait_until(lambda: [e for e in self.events(ns, "thief") if "reserved" in e[1]], timeout=60)
        for reason, message in refused:
            print(f"    Event on {ns}/thief: {reason}: {message}")
        self.check("the reserved address is refused to another Service, with an Event naming the reservation",
                   bool(refused) and not self.ips(ns, "thief"))  # fmt: skip
        say(f"creating {ns}/payments, without any annotation")
        self.api.post(self.path(ns), svc_body("payments"))
        self.wait_ips(ns, "payments")
        got = self.ips(ns, "payments")
        print(f"    {ns}/payments got {', '.join(got)}")
        self.check("the named Service gets the reserved address on creation", got == [RESERVED_IP])
        try:
            state = (self.api.get(f"{RESERVATIONS}/{RESERVATION}").get("status") or {}).get("state")
        except ApiError:
            state = None
        print(f"    IPReservation {RESERVATION}: state {state}")

    # -- (c) kubectl stablelb ---------------------------------------------------------------------
    def plugin_output(self, ns: str, shrink_to: str) -> None:
        say("kubectl stablelb status")
        print(_indent(self.plugin("status")))
        say(f"kubectl stablelb explain svc/thief -n {ns}")
        print(_indent(self.plugin("explain", "svc/thief", "-n", ns)))
        pool_file = REPO_ROOT / ".stablelb" / "demo" / "churn-pool-shrunk.yaml"
        pool_file.write_text(
            f"apiVersion: stablelb.io/v1alpha1\nkind: IPPool\nmetadata: {{name: {CHURN_POOL}}}\n"
            f"spec:\n  addresses: [{shrink_to}]\n  serviceAllocation: {{namespaces: [{CHURN_NS}]}}\n"
        )
        say(f"kubectl stablelb plan -f {pool_file.name}   ({CHURN_POOL} shrunk to {shrink_to}; not applied)")
        print(_indent(self.plugin("plan", "-f", str(pool_file))))

    def play(self, ns: str) -> bool:
        self.failover_in_churn()
        self.reservation(ns)
        first, size = CHURN_RANGE
        prefix, last_octet = first.rsplit(".", 1)
        self.plugin_output(ns, f"{first}-{prefix}.{int(last_octet) + size - 3}")
        return all(ok for _, ok in self.checks)


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(p) for p in ip.split("."))


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip().splitlines())
