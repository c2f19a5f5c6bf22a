"""Prometheus metrics of the controller (design §3.5), on a registry owned by each Metrics instance.

A private registry keeps tests independent of one another and of the process-wide default registry.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["ADDRESS_STATES", "REVISION_ENV", "Metrics", "PendingSource", "build_revision", "build_version"]

ADDRESS_STATES = ("total", "assigned", "available")

# Reconciles are mostly sub-millisecond cache work plus one API write; the tail is API latency and retries.
_RECONCILE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Queue waits include rate-limited retries whose backoff reaches minutes.
_QUEUE_BUCKETS = (0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1000.0)
_WORK_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
# API calls: loopback/in-cluster round trips are milliseconds; the top buckets catch the 30 s client timeout.
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The image build sets this to the git commit it was built from (an OCI label carries the same value).
REVISION_ENV = "STABLELB_REVISION"

# Wall-clock times (Unix seconds) since which each currently pending Service has been waiting.
PendingSource = Callable[[], Iterable[float]]


def build_version() -> str:
    try:
        return importlib.metadata.version("stablelb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_revision() -> str:
    return os.environ.get(REVISION_ENV, "").strip() or "unknown"


class _PendingCollector:
    """Scrape-time view of the Services waiting for an address: how many, and for how long the oldest.

    Computed when scraped (from the source the controller installs) rather than kept up to date on every
    reconcile: the age grows by itself, and a gauge set at reconcile time would stand still.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.source: PendingSource = lambda: ()

    def collect(self) -> Iterator[Metric]:
        try:
            since = list(self.source())
        except Exception:  # a broken source must not break /metrics; the series then read "none pending"
            since = []
        now = self._clock()
        count = GaugeMetricFamily(
            "stablelb_services_pending",
            "LoadBalancer Services of this controller that wait for an address (leader only; 0 elsewhere).",
        )
        count.add_metric([], float(len(since)))
        oldest = GaugeMetricFamily(
            "stablelb_services_pending_oldest_seconds",
            "How long the longest-waiting pending Service has been without an address (0 when none).",
        )
        oldest.add_metric([], max((now - t for t in since), default=0.0))
        yield count
        yield oldest

    def describe(self) -> Iterator[Metric]:
        # Described without calling the source: registration happens before the controller exists.
        yield GaugeMetricFamily("stablelb_services_pending", "")
        yield GaugeMetricFamily("stablelb_services_pending_oldest_seconds", "")


class Metrics:
    """All stablelb metrics. Also the workqueue's ``QueueMetrics`` (add, depth, queue_latency,
    work_duration, retry), labelled by queue name.

    ``stablelb_pool_addresses`` is a float gauge: counts above 2**53 (IPv6 pools of a /75 or larger) are
    exported rounded to float precision, which is what Prometheus stores anyway.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        # process_* (CPU, memory, file descriptors) and python_* (version, GC), as client_python's default
        # registry has them; registered on ours because we do not use the default registry.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "stablelb_build_info",
            "Always 1; the labels name the running build.",
            ["version", "revision", "python_version"],
            registry=r,
        )
        self.build_info.labels(build_version(), build_revision(), platform.python_version()).set(1)
        self.api_requests = Counter(
            "stablelb_api_requests_total",
            "Requests to the Kubernetes API by verb (get, list, watch, create, update, patch, delete), "
            "resource (with subresource, e.g. services/status) and HTTP code (<error> without an answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.api_request_duration = Histogram(
            "stablelb_api_request_duration_seconds",
            "Time from sending a Kubernetes API request to its answer (a watch: to its response headers).",
            ["verb", "resource"],
            buckets=_API_BUCKETS,
            registry=r,
        )
        self._pending = _PendingCollector(clock)
        r.register(self._pending)
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

    def api_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        """One Kubernetes API call (the client's ``RequestMetrics`` protocol)."""
        self.api_requests.labels(verb, resource, code).inc()
        self.api_request_duration.labels(verb, resource).observe(seconds)

    def set_pending_source(self, source: PendingSource) -> None:
        """Where the pending-Service gauges come from at scrape time (the controller's cache)."""
        self._pending.source = source

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
