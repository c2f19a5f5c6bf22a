"""Prometheus metrics of the controller (design §3.5), on a registry owned by each Metrics instance.

A private registry keeps tests independent of one another and of the process-wide default registry.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest

__all__ = ["ADDRESS_STATES", "Metrics"]

ADDRESS_STATES = ("total", "assigned", "available")

# Reconciles are mostly sub-millisecond cache work plus one API write; the tail is API latency and retries.
_RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Queue waits include rate-limited retries whose backoff reaches minutes.
_QUEUE_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1000.0)
_WORK_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)


class Metrics:
    """All stablelb metrics. Also the workqueue's ``QueueMetrics`` (add, depth, queue_latency,
    work_duration, retry), labelled by queue name.

    ``stablelb_pool_addresses`` is a float gauge: counts above 2**53 (IPv6 pools of a /75 or larger) are
    exported rounded to float precision, which is what Prometheus stores anyway.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.pool_addresses = Gauge(
            "stablelb_pool_addresses",
            "Addresses of an IPPool per family: total, assigned to Services, available for allocation.",
            ["pool", "family", "state"],
            registry=r,
        )
        self.allocations = Counter(
            "stablelb_allocations_total",
            "Allocation decisions by result (e.g. allocated, kept, pending, released, failed).",
            ["result"],
            registry=r,
        )
        self.orphaned_ips = Gauge(
            "stablelb_orphaned_ips",
            "Assigned IPs that no pool contains any more (kept under --orphaned-ips=retain).",
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "stablelb_reconcile_duration_seconds",
            "Time spent in one reconcile, by kind of object.",
            ["kind"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.workqueue_depth = Gauge(
            "stablelb_workqueue_depth", "Items waiting in a workqueue.", ["name"], registry=r
        )
        self.workqueue_adds = Counter(
            "stablelb_workqueue_adds_total", "Items added to a workqueue.", ["name"], registry=r
        )
        self.workqueue_queue_duration = Histogram(
            "stablelb_workqueue_queue_duration_seconds",
            "Time an item waited in a workqueue before a worker took it.",
            ["name"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_work_duration = Histogram(
            "stablelb_workqueue_work_duration_seconds",
            "Time a worker spent on one item.",
            ["name"],
            buckets=_WORK_BUCKETS,
            registry=r,
        )
        self.workqueue_retries = Counter(
            "stablelb_workqueue_retries_total", "Rate-limited re-adds to a workqueue.", ["name"], registry=r
        )
        self.leader = Gauge(
            "stablelb_leader",
            "1 while this process holds the leader Lease, else 0.",
            ["identity"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "stablelb_watch_restarts_total",
            "Watches restarted, by resource and reason (e.g. timeout, expired, error, disconnect).",
            ["resource", "reason"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._pool_families: dict[str, set[str]] = {}

    # --- workqueue QueueMetrics protocol ---------------------------------------------------------------

    def add(self, name: str) -> None:
        self.workqueue_adds.labels(name).inc()

    def depth(self, name: str, n: int) -> None:
        self.workqueue_depth.labels(name).set(n)

    def queue_latency(self, name: str, seconds: float) -> None:
        self.workqueue_queue_duration.labels(name).observe(seconds)

    def work_duration(self, name: str, seconds: float) -> None:
        self.workqueue_work_duration.labels(name).observe(seconds)

    def retry(self, name: str) -> None:
        self.workqueue_retries.labels(name).inc()

    # --- controller helpers -----------------------------------------------------------------------------

    def set_pool(self, pool: str, family: str, total: int, assigned: int, available: int) -> None:
        """Publish one family's address counts of a pool (family as the caller names it, e.g. IPv4)."""
        with self._lock:
            self._pool_families.setdefault(pool, set()).add(family)
            for state, value in zip(ADDRESS_STATES, (total, assigned, available), strict=True):
                self.pool_addresses.labels(pool, family, state).set(float(value))

    def remove_pool(self, pool: str, family: str | None = None) -> None:
        """Drop a deleted pool's series (or only one family's, when a pool loses its last range of it)."""
        with self._lock:
            families = self._pool_families.get(pool, set())
            targets = set(families) if family is None else {family} & families
            for fam in targets:
                for state in ADDRESS_STATES:
                    self.pool_addresses.remove(pool, fam, state)
                families.discard(fam)
            if not families:
                self._pool_families.pop(pool, None)

    def allocation(self, result: str) -> None:
        self.allocations.labels(result).inc()

    def set_orphaned(self, n: int) -> None:
        self.orphaned_ips.set(n)

    def observe_reconcile(self, kind: str, seconds: float) -> None:
        self.reconcile_duration.labels(kind).observe(seconds)

    def set_leader(self, identity: str, leading: bool) -> None:
        self.leader.labels(identity).set(1 if leading else 0)

    def watch_restart(self, resource: str, reason: str) -> None:
        self.watch_restarts.labels(resource, reason).inc()

    # --- exposition -------------------------------------------------------------------------------------

    def render(self) -> bytes:
        """Prometheus text exposition format (0.0.4) of every metric."""
        data: bytes = generate_latest(self.registry)
        return data

    def render_for(self, accept: str | None) -> tuple[bytes, str]:
        """Body and Content-Type negotiated from a scraper's Accept header (text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        body: bytes = encoder(self.registry)
        return body, str(content_type)
