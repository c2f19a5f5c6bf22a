"""Side by side with MetalLB's controller: the same Services, the same pool, each on its own API server.

Every (controller, scenario) pair gets a fresh single-stack LocalCluster (service CIDR 10.96.0.0/16 only,
so the API server reduces a PreferDualStack Service to ipFamilies [IPv4]) and one controller process:

- metallb: MetalLB's `controller` binary (built once from the Go module proxy into
  ~/.cache/stablelb/bin/metallb-<version>/), its CRDs from the module cache (`config/crd/bases/`), namespace
  metallb-system, an unscheduled Pod object for it to own, one IPAddressPool; run with the admin kubeconfig.
- stablelb: `python -m controller` (default flags, leader election on) as the stablelb-controller
  ServiceAccount with the RBAC from manifests/, one IPPool (default allocationOrder LeastRecentlyReleased).

Both pools hold 192.168.10.0/24 and fd00:10::/120 (data only: nothing ever contacts them).

Scenarios:
1. prefer-dual-stack: 3 Services `type: LoadBalancer`, `ipFamilyPolicy: PreferDualStack`,
   `allocateLoadBalancerNodePorts: false`, no loadBalancerClass. Wait until each has an ingress IP, let it
   settle, then for --window seconds count status writes (MODIFIED watch events = resourceVersion changes),
   the API server's own write-request counters, and every ingress set the watch shows.
2. delete-one: 3 plain Services A, B, C (created one after another, each waiting for its IP), delete B;
   for --delete-window seconds count writes to A and C and whether their IPs changed; then create D and
   report its IP (B's old one, or one never handed out in this run).

Usage: .venv/bin/python bench/metallb_compare.py [--window 20] [--delete-window 10] [--settle 2]
       [--only metallb|stablelb] [--keep]
All traffic is on 127.0.0.1. Every process started here is stopped on exit, also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e.harness.binaries import cache_dir
from e2e.harness.cluster import LocalCluster
from e2e.harness.controllers import ControllerSet
from e2e.harness.manifests import MANIFESTS, install, load_kustomization
from e2e.harness.processes import ManagedProcess, free_port

METALLB_VERSION = os.environ.get("STABLELB_METALLB_VERSION", "v0.16.1")
METALLB_MODULE = "go.universe.tf/metallb"
METALLB_NAMESPACE = "metallb-system"
METALLB_POD = "controller"
NAMESPACE = "compare"
POOL_NAME = "compare"
POOL_ADDRESSES = ["192.168.10.0/24", "fd00:10::/120"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ------------------------------------------------------------------------------------------ MetalLB bits


def metallb_binary() -> Path:
    """MetalLB's controller from the per-version cache; `go install`ed from the module proxy when missing."""
    target = cache_dir() / f"metallb-{METALLB_VERSION}"
    binary = target / "controller"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if shutil.which("go") is None:
        raise RuntimeError(f"{binary} is missing and there is no `go` to build it with")
    target.mkdir(parents=True, exist_ok=True)
    log(
        f"building MetalLB controller {METALLB_VERSION} into {target} "
        f"(go install {METALLB_MODULE}/controller@{METALLB_VERSION}; ~4 min on 2 cores)"
    )
    started = time.monotonic()
    # An empty working directory: a go.mod around the caller must not take part in `go install pkg@version`.
    with tempfile.TemporaryDirectory(prefix="metallb-build-") as tmp:
        result = subprocess.run(
            ["go", "install", f"{METALLB_MODULE}/controller@{METALLB_VERSION}"],
            cwd=tmp,
            env={**os.environ, "GOBIN": str(target)},
            check=False,
        )
    if result.returncode != 0 or not binary.is_file():
        raise RuntimeError(f"building MetalLB's controller failed (exit {result.returncode}); see above")
    log(f"built {binary} in {time.monotonic() - started:.0f} s")
    return binary


def metallb_crd_dir() -> Path:
    """config/crd/bases of the MetalLB module, downloaded into the Go module cache if needed."""
    with tempfile.TemporaryDirectory(prefix="metallb-mod-") as tmp:
        out = subprocess.run(
            ["go", "mod", "download", "-json", f"{METALLB_MODULE}@{METALLB_VERSION}"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    crds = Path(json.loads(out)["Dir"]) / "config" / "crd" / "bases"
    if not crds.is_dir():
        raise RuntimeError(f"no CRDs at {crds}")
    return crds


def metallb_crds() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(metallb_crd_dir().glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


# ------------------------------------------------------------------------------------------ watch


@dataclass(frozen=True)
class Seen:
    at: float
    type: str
    name: str
    resource_version: str
    ingress: tuple[str, ...]


@dataclass
class ServiceWatch:
    """Every event on the namespace's Services from a resourceVersion on, in arrival order."""

    events: list[Seen] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def record(self, event: dict[str, Any]) -> None:
        if event["type"] == "BOOKMARK":
            return
        obj = event["object"]
        if event["type"] == "ERROR":
            raise RuntimeError(f"watch error: {obj}")
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        self.events.append(
            Seen(
                time.monotonic(),
                event["type"],
                obj["metadata"]["name"],
                obj["metadata"]["resourceVersion"],
                tuple(e["ip"] for e in ingress if "ip" in e),
            )
        )

    def latest(self, name: str) -> Seen | None:
        return next((s for s in reversed(self.events) if s.name == name), None)

    def ingress(self, name: str) -> tuple[str, ...]:
        seen = self.latest(name)
        return seen.ingress if seen is not None and seen.type != "DELETED" else ()

    def between(self, start: float, end: float, names: set[str]) -> list[Seen]:
        return [s for s in self.events if start <= s.at < end and s.name in names]

    def check(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()
            raise RuntimeError("watch ended early")


async def run_watch(session: aiohttp.ClientSession, base: str, rv: str, watch: ServiceWatch) -> None:
    query = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "3600"}
    url = f"{base}/api/v1/namespaces/{NAMESPACE}/services"
    async with session.get(url, params=query, timeout=aiohttp.ClientTimeout(total=None)) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.strip():
                watch.record(orjson.loads(line))


async def wait_until(predicate: Callable[[], bool], what: str, limit: float, watch: ServiceWatch) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        watch.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def transitions(events: list[Seen], name: str, before: tuple[str, ...]) -> tuple[int, list[tuple[str, ...]]]:
    """How often `name`'s ingress set changed in `events`, starting from `before`; the sets in order."""
    changes, current, order = 0, before, [before]
    for s in events:
        if s.name == name and s.type == "MODIFIED" and s.ingress != current:
            changes += 1
            current = s.ingress
            if current not in order:
                order.append(current)
    return changes, order


# ------------------------------------------------------------------------------------------ API counters


def write_counts(cluster: LocalCluster) -> Counter[str]:
    """The API server's own request counters for the writes that matter (our script makes none of them)."""
    text = cluster.api.get("/metrics").get("raw", "")
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != "apiserver_request_total":
                continue
            verb, resource = s.labels.get("verb"), s.labels.get("resource")
            sub, code = s.labels.get("subresource", ""), s.labels.get("code", "")
            if verb in ("PUT", "PATCH", "APPLY") and resource == "services":
                key = "services/status" if sub == "status" else "services"
                counts[key] += int(s.value)
                if code == "409":
                    counts[key + " 409"] += int(s.value)
            elif verb in ("POST", "PATCH") and resource == "events":
                counts["events"] += int(s.value)
    return counts


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in sorted(set(after) | set(before)) if after[k] != before[k]}


# ------------------------------------------------------------------------------------------ controllers


class Controller:
    """One controller process on one cluster; `stop()` is safe to call at any point."""

    name: str

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def start(self) -> None:
        raise NotImplementedError

    def pid(self) -> int:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def log_path(self) -> Path:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        lines = self.log_path().read_text(errors="replace").splitlines()[-30:]
        return f"{self.name} (alive={self.alive()}) last log lines:\n" + "\n".join(lines)


class MetalLB(Controller):
    name = "metallb"

    def __init__(self, cluster: LocalCluster, binary: Path, crds: list[dict[str, Any]]) -> None:
        super().__init__(cluster)
        self.binary = binary
        self.crds = crds
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        api = self.cluster.api
        install(api, self.crds)
        api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": METALLB_NAMESPACE}})  # fmt: skip
        # Never scheduled (no scheduler here): MetalLB only reads it to own its ConfigurationState.
        api.post(
            f"/api/v1/namespaces/{METALLB_NAMESPACE}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": METALLB_POD, "labels": {"app": "metallb", "component": "controller"}},
                "spec": {
                    "containers": [{"name": "controller", "image": f"metallb/controller:{METALLB_VERSION}"}]
                },
            },
        )
        api.post(
            f"/apis/metallb.io/v1beta1/namespaces/{METALLB_NAMESPACE}/ipaddresspools",
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": POOL_NAME},
                "spec": {"addresses": POOL_ADDRESSES},
            },
        )
        # Its metrics and health listeners bind every interface (not configurable); nothing connects to them.
        argv = [
            str(self.binary),
            "--namespace", METALLB_NAMESPACE,
            "--pod-name", METALLB_POD,
            "--webhook-mode=disabled",
            "--disable-cert-rotation",
            "--port", str(free_port()),
            "--health-probe-port", str(free_port()),
            "--log-level", "info",
        ]  # fmt: skip
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        self.process = ManagedProcess(argv, self.cluster.workdir / "logs" / "metallb-controller.log", env=env)

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_path(self) -> Path:
        return self.cluster.workdir / "logs" / "metallb-controller.log"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10.0)


class Stablelb(Controller):
    name = "stablelb"

    def __init__(self, cluster: LocalCluster) -> None:
        super().__init__(cluster)
        self.controllers: ControllerSet | None = None

    def start(self) -> None:
        api = self.cluster.api
        install(api, [o for o in load_kustomization(MANIFESTS) if o["kind"] != "Deployment"])
        api.post(
            "/apis/stablelb.io/v1alpha1/ippools",
            {
                "apiVersion": "stablelb.io/v1alpha1",
                "kind": "IPPool",
                "metadata": {"name": POOL_NAME},
                "spec": {"addresses": POOL_ADDRESSES},
            },
        )
        kubeconfig = self.cluster.service_account_kubeconfig("kube-system", "stablelb-controller")
        self.controllers = ControllerSet(self.cluster.workdir / "logs", default_kubeconfig=kubeconfig)
        self.controllers(1, args=["--log-level", "info"])

    def pid(self) -> int:
        assert self.controllers is not None
        return self.controllers.pid(0)

    def alive(self) -> bool:
        return self.controllers is not None and self.controllers.alive(0)

    def log_path(self) -> Path:
        assert self.controllers is not None
        return self.controllers.log_path(0)

    def stop(self) -> None:
        if self.controllers is not None:
            self.controllers.stop_all()


# ------------------------------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Row:
    controller: str
    scenario: str
    writes_per_s: str
    ip_changes: str
    notes: str


def service_body(name: str, *, prefer_dual_stack: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "allocateLoadBalancerNodePorts": False,
        "selector": {"app": name},
        "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
    }
    if prefer_dual_stack:
        spec["ipFamilyPolicy"] = "PreferDualStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def fmt_sets(sets: list[tuple[str, ...]]) -> str:
    return " / ".join("[" + ", ".join(s) + "]" if s else "[]" for s in sets)


class Run:
    """One controller on one fresh cluster, one scenario."""

    def __init__(self, args: argparse.Namespace, make: Callable[[LocalCluster], Controller]) -> None:
        self.args = args
        self.make = make
        self.cluster: LocalCluster | None = None
        self.controller: Controller | None = None
        self.watch = ServiceWatch()
        self.session: aiohttp.ClientSession | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def setup(self) -> Controller:
        self.cluster = LocalCluster.start(dual_stack=False, name="compare")
        self.cluster.api.post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        self.controller = self.make(self.cluster)
        self.controller.start()
        return self.controller

    def cleanup(self, label: str) -> None:
        try:
            if self.controller is not None:
                self.controller.stop()
        finally:
            if self.cluster is not None:
                if self.args.keep:
                    kept = Path(tempfile.mkdtemp(prefix=f"stablelb-compare-{label}-"))
                    shutil.copytree(self.cluster.workdir / "logs", kept / "logs")
                    log(f"logs kept in {kept / 'logs'}")
                self.cluster.stop()

    async def open(self) -> None:
        assert self.cluster is not None
        headers = {"Authorization": f"Bearer {self.cluster.token}", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(ssl=ssl._create_unverified_context())
        self.session = aiohttp.ClientSession(headers=headers, connector=connector)
        rv = self.cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/services")["metadata"]["resourceVersion"]
        self.watch.task = asyncio.create_task(run_watch(self.session, self.cluster.server, rv, self.watch))
        await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.watch.task is not None:
            self.watch.task.cancel()
            await asyncio.gather(self.watch.task, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    # -- helpers --------------------------------------------------------------------------------
    async def create(self, body: dict[str, Any]) -> None:
        assert self.cluster is not None
        await asyncio.to_thread(self.cluster.api.post, f"/api/v1/namespaces/{NAMESPACE}/services", body)

    async def wait_ingress(self, names: list[str], limit: float = 90.0) -> None:
        assert self.controller is not None
        controller = self.controller

        def ready() -> bool:
            if not controller.alive():
                raise RuntimeError("controller exited:\n" + controller.describe())
            return all(self.watch.ingress(n) for n in names)

        try:
            await wait_until(ready, f"an ingress IP on {names}", limit, self.watch)
        except TimeoutError as err:
            raise TimeoutError(f"{err}\n{controller.describe()}") from None

    # -- scenario 1 -----------------------------------------------------------------------------
    async def prefer_dual_stack(self) -> Row:
        assert self.cluster is not None and self.controller is not None
        names = ["pds-a", "pds-b", "pds-c"]
        t_create = time.monotonic()
        for name in names:
            await self.create(service_body(name, prefer_dual_stack=True))
        await self.wait_ingress(names)
        t_ingress = time.monotonic()
        log(f"{self.controller.name}: all 3 have an ingress IP after {t_ingress - t_create:.2f} s")
        await asyncio.sleep(self.args.settle)
        families = {
            n: self.cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{n}")["spec"].get("ipFamilies")
            for n in names
        }
        start_sets = {n: self.watch.ingress(n) for n in names}
        before = write_counts(self.cluster)
        cpu0, t0 = cpu_seconds(self.controller.pid()), time.monotonic()
        server0 = {k: cpu_seconds(p) for k, p in self.cluster.pids.items()}
        await asyncio.sleep(self.args.window)
        self.watch.check()
        t1 = time.monotonic()
        cpu = cpu_seconds(self.controller.pid()) - cpu0
        server = {k: cpu_seconds(p) - server0[k] for k, p in self.cluster.pids.items()}
        writes = delta(write_counts(self.cluster), before)
        window = self.watch.between(t0, t1, set(names))
        modified = Counter(s.name for s in window if s.type == "MODIFIED")
        early = Counter(s.name for s in self.watch.between(t_create, t0, set(names)) if s.type == "MODIFIED")
        changes, sets = 0, {}
        for n in names:
            c, order = transitions(window, n, start_sets[n])
            changes += c
            sets[n] = order
        v4_seen = {n: {ip for s in window if s.name == n for ip in s.ingress if ":" not in ip} for n in names}
        v4_moved = {n: sorted(v) for n, v in v4_seen.items() if len(v | {start_sets[n][0]}) > 1}
        elapsed = t1 - t0
        total = sum(modified.values())
        per_service = ", ".join(f"{n} {modified[n]}" for n in names)
        notes = [
            f"ipFamilies {families[names[0]]}",
            f"MODIFIED per Service in window: {per_service}",
            f"before window (create→settled): {sum(early.values())}",
            f"API write requests in window: {writes or 'none'}",
            "ingress sets seen: " + "; ".join(f"{n} {fmt_sets(sets[n])}" for n in names),
            f"IPv4 address changed: {v4_moved or 'no'}",
            f"CPU (share of one core): controller {cpu / elapsed:.0%}, "
            f"kube-apiserver {server.get('kube-apiserver', 0.0) / elapsed:.0%}, "
            f"etcd {server.get('etcd', 0.0) / elapsed:.0%}",
        ]
        return Row(
            self.controller.name,
            f"3 x PreferDualStack, {self.args.window:.0f} s",
            f"{total / elapsed:.1f} ({total} in {elapsed:.1f} s)",
            str(changes),
            "; ".join(notes),
        )

    # -- scenario 2 -----------------------------------------------------------------------------
    async def delete_one(self) -> Row:
        assert self.cluster is not None and self.controller is not None
        api = self.cluster.api
        ips: dict[str, tuple[str, ...]] = {}
        for name in ("svc-a", "svc-b", "svc-c"):
            await self.create(service_body(name, prefer_dual_stack=False))
            await self.wait_ingress([name])
            ips[name] = self.watch.ingress(name)
        log(f"{self.controller.name}: A, B, C hold {ips}")
        await asyncio.sleep(self.args.settle)
        kept = {"svc-a", "svc-c"}
        before = write_counts(self.cluster)
        t0 = time.monotonic()
        await asyncio.to_thread(api.delete, f"/api/v1/namespaces/{NAMESPACE}/services/svc-b")
        await asyncio.sleep(self.args.delete_window)
        self.watch.check()
        t1 = time.monotonic()
        writes = delta(write_counts(self.cluster), before)
        window = self.watch.between(t0, t1, kept)
        modified = Counter(s.name for s in window if s.type == "MODIFIED")
        changed = {n: self.watch.ingress(n) for n in kept if self.watch.ingress(n) != ips[n]}
        changes = sum(transitions(window, n, ips[n])[0] for n in kept)
        ever = {ip for s in self.watch.events for ip in s.ingress}
        stored_a = api.get(f"/api/v1/namespaces/{NAMESPACE}/services/svc-a")
        annotations = stored_a["metadata"].get("annotations")
        stored_ingress = stored_a.get("status", {}).get("loadBalancer", {}).get("ingress")
        await self.create(service_body("svc-d", prefer_dual_stack=False))
        await self.wait_ingress(["svc-d"])
        d = self.watch.ingress("svc-d")
        if d == ips["svc-b"]:
            verdict = "B's old IP"
        elif not set(d) & ever:
            verdict = "never used before"
        else:
            verdict = "an IP used before (not B's)"
        total = sum(modified.values())
        elapsed = t1 - t0
        notes = [
            f"A {fmt_sets([ips['svc-a']])}, B {fmt_sets([ips['svc-b']])}, C {fmt_sets([ips['svc-c']])}",
            f"MODIFIED on A/C after deleting B: A {modified['svc-a']}, C {modified['svc-c']}",
            f"API write requests in window: {writes or 'none'}",
            f"A/C IP changed: {changed or 'no'}",
            f"D got {fmt_sets([d])} = {verdict}",
            f"A as stored afterwards: annotations {annotations or 'none'}, ingress {stored_ingress}",
        ]
        return Row(
            self.controller.name,
            f"delete B of A,B,C; {self.args.delete_window:.0f} s; create D",
            f"{total / elapsed:.1f} ({total} in {elapsed:.1f} s)",
            str(changes),
            "; ".join(notes),
        )


async def run_scenario(run: Run, scenario: str) -> Row:
    await run.open()
    try:
        if scenario == "prefer-dual-stack":
            return await run.prefer_dual_stack()
        return await run.delete_one()
    finally:
        await run.close()


# ------------------------------------------------------------------------------------------ main


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "nproc": str(os.cpu_count()), "platform": platform.platform()}
    with contextlib.suppress(Exception):
        out["stablelb"] = subprocess.run(
            [sys.executable, "-m", "controller", "--version"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return out


def print_table(rows: list[Row], info: dict[str, str]) -> None:
    print()
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    print("| controller | scenario | writes/s after settling | IP changes | notes |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r.controller} | {r.scenario} | {r.writes_per_s} | {r.ip_changes} | {r.notes} |")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--window", type=float, default=20.0, help="scenario 1 measuring window (default 20 s)"
    )
    parser.add_argument(
        "--delete-window", type=float, default=10.0, help="scenario 2 window after deleting B (default 10 s)"
    )
    parser.add_argument("--settle", type=float, default=2.0, help="pause before each window (default 2 s)")
    parser.add_argument("--only", choices=["metallb", "stablelb"], help="run one controller only")
    parser.add_argument("--keep", action="store_true", help="keep controller/API server logs (path printed)")
    args = parser.parse_args()
    # A SIGTERM takes the same path as Ctrl-C, so the finally blocks stop every process started here.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    info = versions()
    makers: list[tuple[str, Callable[[LocalCluster], Controller]]] = []
    if args.only in (None, "metallb"):
        binary, crds = metallb_binary(), metallb_crds()
        info["metallb"] = f"{METALLB_VERSION} ({binary})"
        makers.append(("metallb", lambda c: MetalLB(c, binary, crds)))
    if args.only in (None, "stablelb"):
        makers.append(("stablelb", Stablelb))

    rows: list[Row] = []
    try:
        for scenario in ("prefer-dual-stack", "delete-one"):
            for label, make in makers:
                log(f"--- {label}: {scenario} (fresh single-stack cluster)")
                run = Run(args, make)
                try:
                    run.setup()
                    assert run.cluster is not None
                    info.setdefault("kube-apiserver", run.cluster.api.get("/version")["gitVersion"])
                    rows.append(asyncio.run(run_scenario(run, scenario)))
                    log(f"{label} {scenario}: {rows[-1]}")
                finally:
                    run.cleanup(f"{label}-{scenario}")
    finally:
        if rows:
            print_table(rows, info)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as err:
        log(f"interrupted ({err or 'SIGINT'}); every process started here has been stopped")
        sys.exit(130)
