"""What the takeover-under-faults scenarios record and check: the API server's own history.

`History` watches Services, Events and the controllers' Lease from the test (admin identity, straight to
the API server, not through any proxy) and keeps every change with its resourceVersion. The checks are
pure functions of that record:

- resourceVersions here are etcd revisions of one etcd, so they order writes across resources (Kubernetes
  calls them opaque; this harness owns the etcd, and the order is what fencing is about);
- the proxy in front of one replica records the revision at which each of that replica's writes landed;
  every other controller write in the history is the other replica's (the test writes no status or
  Events itself);
- one watch per resource delivers changes in revision order, so replaying a Service history reproduces
  every state the API server ever held, in order: an IP that moved or was held twice for a moment shows.

The scenario cluster runs without a watch cache for Services, so a watch resumed after an API server
restart starts exactly where it stopped (etcd keeps the revisions): the Service history has no gap.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.harness.rest import Api

CONDITION = "stablelb.io/IPAllocated"
DEFAULT_SEED = "20261202"
WATCH_SECONDS = 2  # each watch ends this soon on the server side, so a stop() never waits long


def seed_and_runs() -> tuple[str, int]:
    """STABLELB_TAKEOVER_SEED (default fixed for CI; `random` draws one), STABLELB_TAKEOVER_RUNS (1)."""
    seed = os.environ.get("STABLELB_TAKEOVER_SEED", DEFAULT_SEED)
    if seed == "random":
        seed = str(random.SystemRandom().randrange(1, 10**9))
    return seed, int(os.environ.get("STABLELB_TAKEOVER_RUNS", "1"))


def proxied_kubeconfig(source: Path, server: str, dest: Path) -> Path:
    """A copy of `source` whose cluster points at `server` (a fault proxy); TLS verification skipped."""
    config = yaml.safe_load(source.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"] = {"server": server, "insecure-skip-tls-verify": True}
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    dest.chmod(0o600)
    return dest


@dataclass(frozen=True)
class Change:
    rv: int
    kind: str  # Service | Event | Lease
    type: str  # ADDED | MODIFIED | DELETED | LISTED (after a relist)
    namespace: str
    name: str
    uid: str
    obj: dict[str, Any]

    @property
    def ips(self) -> tuple[str, ...]:
        if self.type == "DELETED":
            return ()
        ingress = ((self.obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return tuple(sorted(e["ip"] for e in ingress if "ip" in e))

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})

    @property
    def holder(self) -> str:
        return str((self.obj.get("spec") or {}).get("holderIdentity") or "")

    def __str__(self) -> str:
        extra = f" ips={list(self.ips)}" if self.kind == "Service" else ""
        if self.kind == "Event":
            extra = f" {self.obj.get('reason')}: {self.obj.get('message')}"
        if self.kind == "Lease":
            extra = f" holder={self.holder!r}"
        return f"rv={self.rv} {self.kind} {self.type} {self.namespace}/{self.name}{extra}"


class _Stream(threading.Thread):
    """LIST, then WATCH from that revision, resuming after every end; relist (marked) only on 410."""

    def __init__(self, history: History, kind: str, path: str, query: dict[str, str]) -> None:
        super().__init__(name=f"history-{kind}", daemon=True)
        self.history, self.kind, self.path, self.query = history, kind, path, query
        self.rv: str | None = None
        self.gaps = 0

    def run(self) -> None:
        while not self.history.stopping.is_set():
            try:
                if self.rv is None:
                    self._list()
                self._watch()
            except (OSError, ValueError, urllib.error.URLError):
                time.sleep(0.2)  # the API server restarting: keep trying

    def _open(self, query: dict[str, str]) -> Any:
        api = self.history.api
        url = f"{api.server}{self.path}?{urllib.parse.urlencode(query)}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api.token}"})
        ctx = ssl._create_unverified_context()
        return urllib.request.urlopen(req, timeout=WATCH_SECONDS + 28, context=ctx)

    def _list(self) -> None:
        with self._open(self.query) as resp:
            body = json.loads(resp.read())
        if self.history.started.is_set():
            self.gaps += 1
        for obj in body.get("items", []):
            self.history._add(self.kind, "LISTED", obj)
        self.rv = body["metadata"]["resourceVersion"]

    def _watch(self) -> None:
        query = {
            **self.query,
            "watch": "1",
            "resourceVersion": self.rv or "",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        with self._open(query) as resp:
            for line in resp:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        self.rv = None
                    return
                self.rv = obj["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self.history._add(self.kind, event["type"], obj)


class History:
    """Every change to Services, Events (cluster-wide) and one Lease, as the API server ordered them."""

    def __init__(self, api: Api, lease_namespace: str, lease_name: str) -> None:
        self.api = api
        self.stopping = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._changes: list[Change] = []
        self._markers = 0
        self._streams = [
            _Stream(self, "Service", "/api/v1/services", {}),
            _Stream(self, "Event", "/api/v1/events", {}),
            _Stream(
                self,
                "Lease",
                f"/apis/coordination.k8s.io/v1/namespaces/{lease_namespace}/leases",
                {"fieldSelector": f"metadata.name={lease_name}"},
            ),
        ]

    def start(self) -> History:
        for stream in self._streams:
            stream.start()
        deadline = time.monotonic() + 60
        while any(s.rv is None for s in self._streams):
            if time.monotonic() > deadline:
                raise AssertionError("history: initial lists did not finish within 60s")
            time.sleep(0.05)
        self.started.set()
        return self

    def flush(self, namespace: str, timeout: float = 60.0) -> None:
        """Returns once every Service and Event change made before the call is in the history.

        Writes a marker of each kind (a ClusterIP Service no controller handles, an Event) and waits for
        both: each stream delivers in revision order, so everything older has arrived by then.
        """
        self._markers += 1
        name = f"history-marker-{self._markers}"
        self.api.post(
            f"/api/v1/namespaces/{namespace}/services",
            {"metadata": {"name": name}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}},
        )
        self.api.post(
            f"/api/v1/namespaces/{namespace}/events",
            {
                "metadata": {"name": name},
                "involvedObject": {"kind": "Service", "namespace": namespace, "name": name},
                "reason": "HistoryMarker",
                "message": "test marker",
                "type": "Normal",
            },
        )
        deadline = time.monotonic() + timeout
        while not all(
            any(c.name == name and c.namespace == namespace for c in self.changes(kind))
            for kind in ("Service", "Event")
        ):
            if time.monotonic() > deadline:
                raise AssertionError(f"history: marker {namespace}/{name} not seen within {timeout:.0f}s")
            time.sleep(0.05)

    def service_gaps(self) -> int:
        """Relists of the Service stream after the start (each may hide changes; expected: none)."""
        return self._streams[0].gaps

    def stop(self) -> None:
        self.stopping.set()
        for stream in self._streams:
            stream.join(timeout=WATCH_SECONDS + 30)

    def _add(self, kind: str, type_: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        change = Change(
            int(meta["resourceVersion"]),
            kind,
            type_,
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
            obj,
        )
        with self._lock:
            self._changes.append(change)

    def changes(self, kind: str | None = None, namespaces: Iterable[str] | None = None) -> list[Change]:
        wanted = set(namespaces) if namespaces is not None else None
        with self._lock:
            found = [
                c
                for c in self._changes
                if (kind is None or c.kind == kind) and (wanted is None or c.namespace in wanted)
            ]
        return sorted(found, key=lambda c: c.rv)


# -- checks on a Service history (pure) -------------------------------------------------------------


def status_writes(services: list[Change]) -> list[Change]:
    """Changes that altered a Service's status: only controllers write status in these scenarios."""
    last: dict[str, dict[str, Any]] = {}
    out = []
    for c in services:
        if c.type == "MODIFIED" and c.status != last.get(c.uid, {}):
            out.append(c)
        last[c.uid] = c.status
    return out


def ip_moves(services: list[Change]) -> list[str]:
    """A Service that once held an IP and later, while it still existed, did not."""
    held: dict[str, set[str]] = {}
    problems = []
    for c in services:
        if c.type == "DELETED":
            held.pop(c.uid, None)
            continue
        before = held.get(c.uid, set())
        lost = before - set(c.ips)
        if lost:
            problems.append(f"{c}: lost {sorted(lost)} (held {sorted(before)})")
        held[c.uid] = before | set(c.ips)
    return problems


def duplicates(services: list[Change]) -> list[str]:
    """Any moment at which two Services held the same IP, replaying the history in order."""
    current: dict[str, tuple[str, tuple[str, ...]]] = {}
    problems = []
    for c in services:
        if c.type == "DELETED":
            current.pop(c.uid, None)
            continue
        current[c.uid] = (c.name, c.ips)
        for uid, (name, ips) in current.items():
            if uid != c.uid and set(ips) & set(c.ips):
                problems.append(f"{c}: shares {sorted(set(ips) & set(c.ips))} with {name}")
    return problems


def outside(services: list[Change], network: str, names: Iterable[str] | None = None) -> list[str]:
    """Any IP some Service (of `names`, default all) ever held outside `network`."""
    net = ipaddress.ip_network(network)
    wanted = set(names) if names is not None else None
    return [
        f"{c}: {ip} is outside {network}"
        for c in services
        if wanted is None or c.name in wanted
        for ip in c.ips
        if ipaddress.ip_address(ip) not in net
    ]


def late_writes(landed: Iterable[int], others: Iterable[int]) -> tuple[int | None, list[int]]:
    """(first of `others`, the revisions of `landed` after it)."""
    first = min(others, default=None)
    if first is None:
        return None, []
    return first, sorted(rv for rv in landed if rv > first)


def converged(api: Api, namespace: str, names: Iterable[str], network: str) -> list[str]:
    """What is still wrong with the live Services (each needs an IP in `network`, condition True)."""
    problems = []
    owners: dict[str, str] = {}
    for name in names:
        obj = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
        status = obj.get("status") or {}
        ips = [e["ip"] for e in (status.get("loadBalancer") or {}).get("ingress") or [] if "ip" in e]
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == CONDITION), None)
        if not ips:
            problems.append(f"{name}: no IP (condition {cond})")
        if cond is None or cond.get("status") != "True":
            problems.append(f"{name}: condition {cond}")
        for ip in ips:
            if ipaddress.ip_address(ip) not in ipaddress.ip_network(network):
                problems.append(f"{name}: {ip} outside {network}")
            if ip in owners:
                problems.append(f"{name}: {ip} also held by {owners[ip]}")
            owners[ip] = name
    return problems


def describe_history(changes: list[Change], limit: int = 200) -> str:
    lines = [str(c) for c in changes]
    if len(lines) > limit:
        lines = [f"... {len(lines) - limit} earlier changes", *lines[-limit:]]
    return "\n".join(lines)


@contextlib.contextmanager
def recording(api: Api, lease_namespace: str, lease_name: str) -> Any:
    history = History(api, lease_namespace, lease_name).start()
    try:
        yield history
    finally:
        history.stop()
