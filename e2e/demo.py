"""`make demo`: the whole story on a local control plane, in one command; `make demo-down` cleans up.

A local kube-apiserver + etcd, Jaeger, and two controller replicas (leader election on, running as the
controller's own ServiceAccount). Then: create Services, delete one, create another, re-create the deleted
one, restart every controller, kill the leader — and a table of Service → IP after each step, with the
number of status writes that hit Services nobody touched (it should be 0). The last chapter
(e2e/demo_chapter_issue12.py) kills the leader in the middle of churn and shows the reuse order kept (the
release ledger), a reservation honoured, and `kubectl stablelb` status, explain and plan.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from e2e.demo_chapter_issue12 import Chapter
from e2e.harness.binaries import REPO_ROOT
from e2e.harness.jaeger import Jaeger
from e2e.harness.processes import ManagedProcess, free_port, pid_alive, terminate_pid
from e2e.harness.rest import Api, ApiError
from e2e.harness.waiting import wait_until

STATE_DIR = REPO_ROOT / ".stablelb" / "demo"
STATE_FILE = STATE_DIR / "state.json"
CLUSTER_STATE = REPO_ROOT / ".stablelb" / "cluster" / "state.json"
NS = "demo"
POOL = "demo-pool"
LEASE = "stablelb-demo"
MERGE = "application/merge-patch+json"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


class Demo:
    def __init__(self, api: Api, controller_kubeconfig: str, jaeger: Jaeger) -> None:
        self.api = api
        self.kubeconfig = controller_kubeconfig
        self.jaeger = jaeger
        self.controllers: list[tuple[str, ManagedProcess]] = []
        self.columns: list[str] = []
        self.rows: dict[str, list[str]] = {}

    # -- controllers ------------------------------------------------------------------------------
    def start_controller(self) -> None:
        identity = f"demo-{uuid.uuid4().hex[:6]}"
        listen = f"127.0.0.1:{free_port()}"  # metrics and probes on one listener
        argv = [
            sys.executable, "-m", "controller", "--kubeconfig", self.kubeconfig,
            "--lease-name", LEASE, "--identity", identity,
            "--metrics-bind-address", listen, "--health-probe-bind-address", listen,
            "--leader-elect-lease-duration=6s", "--leader-elect-renew-deadline=4s",
            "--leader-elect-retry-period=1s",
        ]  # fmt: skip
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.otlp_http_endpoint,
            "OTEL_SERVICE_NAME": "stablelb-controller",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "PYTHONUNBUFFERED": "1",
        }
        proc = ManagedProcess(
            argv, STATE_DIR / f"{identity}.log", env=env, cwd=REPO_ROOT, die_with_parent=False
        )
        self.controllers.append((identity, proc))
        self.save()

    def kill_leader(self, sig: int) -> str:
        leader = self.leader()
        for ident, proc in self.controllers:
            if ident == leader and proc.alive():
                proc.signal(sig)
        self.save()
        return leader

    def leader(self) -> str:
        lease = self.api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{LEASE}")
        return str(lease.get("spec", {}).get("holderIdentity") or "")

    def save(self) -> None:
        STATE_FILE.write_text(
            json.dumps(
                {
                    "controllers": {ident: proc.pid for ident, proc in self.controllers if proc.alive()},
                    "jaeger": self.jaeger.pid,
                    "jaeger_ui": self.jaeger.query_url,
                },
                indent=2,
            )
        )

    # -- objects ----------------------------------------------------------------------------------
    def svc_path(self, name: str = "") -> str:
        return f"/api/v1/namespaces/{NS}/services" + (f"/{name}" if name else "")

    def create(self, name: str, **spec: Any) -> None:
        self.api.post(
            self.svc_path(),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name},
                "spec": {
                    "type": "LoadBalancer",
                    "ports": [{"port": 80}],
                    "selector": {"app": name},
                    "allocateLoadBalancerNodePorts": False,
                    **spec,
                },
            },
        )

    def ips(self, name: str) -> str:
        try:
            obj = self.api.get(self.svc_path(name))
        except ApiError as err:
            if err.status == 404:
                return "(deleted)"
            raise
        ingress = (obj.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        return ", ".join(e["ip"] for e in ingress if "ip" in e) or "(pending)"

    def rv(self, name: str) -> str:
        return str(self.api.get(self.svc_path(name))["metadata"]["resourceVersion"])

    def wait_assigned(self, *names: str) -> None:
        wait_until(lambda: all(not self.ips(n).startswith("(") for n in names), timeout=60)

    def snapshot(self, column: str) -> None:
        self.columns.append(column)
        names = [i["metadata"]["name"] for i in self.api.get(self.svc_path()).get("items", [])]
        for name in sorted(set(names) | set(self.rows)):
            self.rows.setdefault(name, [""] * (len(self.columns) - 1)).append(self.ips(name))

    def table(self) -> str:
        widths = [max(len("Service"), *(len(n) for n in self.rows))] + [
            max(len(c), *(len(r[i]) if i < len(r) else 0 for r in self.rows.values()))
            for i, c in enumerate(self.columns)
        ]
        lines = [" | ".join(h.ljust(w) for h, w in zip(["Service", *self.columns], widths, strict=True))]
        lines.append("-+-".join("-" * w for w in widths))
        for name, cells in sorted(self.rows.items()):
            cells = cells + [""] * (len(self.columns) - len(cells))
            lines.append(" | ".join(v.ljust(w) for v, w in zip([name, *cells], widths, strict=True)))
        return "\n".join(lines)

    # -- the story --------------------------------------------------------------------------------
    def play(self) -> int:
        self.api.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
        )
        self.api.post(
            "/apis/stablelb.io/v1alpha1/ippools",
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": POOL},
                "spec": {"addresses": ["192.168.10.10-192.168.10.30", "fd00:10::/124"]},
            },
        )
        say("starting two controller replicas (leader election on)")
        self.start_controller()
        self.start_controller()
        say("creating Services web, api, db (db dual-stack)")
        self.create("web")
        self.create("api")
        self.create("db", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
        self.wait_assigned("web", "api", "db")
        self.snapshot("created")

        untouched = ["web", "db"]
        rvs = {n: self.rv(n) for n in untouched}
        say("deleting api (MetalLB used to hand a survivor a new IP here), then creating cache")
        self.api.delete(self.svc_path("api"))
        self.create("cache")
        self.wait_assigned("cache")
        self.snapshot("api deleted, cache created")
        say("re-creating api within the reclaim window: it gets its old IP back")
        self.create("api")
        self.wait_assigned("api")
        self.snapshot("api re-created")

        say("restarting every controller")
        for _, proc in self.controllers:
            proc.stop(grace=15)
        self.controllers.clear()
        self.start_controller()
        self.start_controller()
        self.create("after-restart")
        self.wait_assigned("after-restart")
        self.snapshot("controllers restarted")

        leader = self.leader()
        say(f"kill -9 the leader ({leader}); the standby takes over within the lease duration")
        for ident, proc in self.controllers:
            if ident == leader:
                proc.signal(signal.SIGKILL)
        started = time.monotonic()
        self.create("after-failover")
        self.wait_assigned("after-failover")
        took = time.monotonic() - started
        self.snapshot("leader killed")
        self.save()

        cluster = json.loads(CLUSTER_STATE.read_text())
        chapter = Chapter(
            self.api, Path(cluster["kubeconfig"]), LEASE, self.start_controller, self.kill_leader
        )
        chapter_ok = chapter.play(NS)
        self.snapshot("reservation")

        writes = sum(self.rv(n) != rvs[n] for n in untouched)
        print()
        print(self.table())
        print()
        print(f"status writes to web and db after their first allocation: {writes} (expected 0)")
        print(f"failover: after-failover got its IP {took:.1f}s after the leader was killed (lease 6s)")
        print(f"traces: {self.jaeger.query_url}/search?service=stablelb-controller  (one per reconcile)")
        failed = [what for what, ok in chapter.checks if not ok]
        print(f"issue 12 chapter: {len(chapter.checks) - len(failed)}/{len(chapter.checks)} checks passed"
              + (f"; FAILED: {'; '.join(failed)}" if failed else ""))  # fmt: skip
        print(
            f"explore: export KUBECONFIG={cluster['kubeconfig']}; "
            f"kubectl get svc -n {NS}; kubectl get ippools; kubectl stablelb status --lease-name {LEASE}"
        )
        print(f"controller logs: {STATE_DIR}/*.log     stop everything: make demo-down")
        return 0 if writes == 0 and chapter_ok else 1


def up() -> int:
    down(quiet=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    say("starting the local control plane (etcd + kube-apiserver) and applying manifests/")
    subprocess.run([sys.executable, "-m", "e2e.harness", "up"], check=True, cwd=REPO_ROOT)
    cluster = json.loads(CLUSTER_STATE.read_text())
    api = Api.from_kubeconfig(Path(cluster["kubeconfig"]))
    say("starting Jaeger")
    jaeger = Jaeger.start(workdir=STATE_DIR / "jaeger", die_with_parent=False)
    return Demo(api, cluster["controller_kubeconfig"], jaeger).play()


def down(*, quiet: bool = False) -> int:
    try:
        state = json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    for pid in [*state.get("controllers", {}).values(), state.get("jaeger")]:
        if pid and pid_alive(int(pid)):
            terminate_pid(int(pid), grace=10)
    STATE_FILE.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "e2e.harness", "down"],
        check=False,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL if quiet else None,
    )
    if not quiet:
        say("demo stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.demo", description=__doc__)
    parser.add_argument("command", choices=["up", "down"], nargs="?", default="up")
    args = parser.parse_args()
    return up() if args.command == "up" else down()


if __name__ == "__main__":
    sys.exit(main())
