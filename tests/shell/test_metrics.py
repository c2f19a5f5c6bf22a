from __future__ import annotations

import importlib.metadata
import platform

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.kube.workqueue import QueueMetrics, WorkQueue
from controller.metrics import Metrics

DESIGN_NAMES = {
    # family name -> type, as in design §3.5 (counters are exposed with their _total suffix)
    "stablelb_pool_addresses": "gauge",
    "stablelb_allocations": "counter",
    "stablelb_orphaned_ips": "gauge",
    "stablelb_reconcile_duration_seconds": "histogram",
    "stablelb_workqueue_depth": "gauge",
    "stablelb_workqueue_adds": "counter",
    "stablelb_workqueue_queue_duration_seconds": "histogram",
    "stablelb_workqueue_work_duration_seconds": "histogram",
    "stablelb_workqueue_retries": "counter",
    "stablelb_leader": "gauge",
    "stablelb_watch_restarts": "counter",
    # issue 11: build, API client and pending-Service metrics, and client_python's process/runtime ones
    "stablelb_build_info": "gauge",
    "stablelb_api_requests": "counter",
    "stablelb_api_request_duration_seconds": "histogram",
    "stablelb_services_pending": "gauge",
    "stablelb_services_pending_oldest_seconds": "gauge",
    "process_cpu_seconds": "counter",
    "process_max_fds": "gauge",
    "process_open_fds": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "python_info": "gauge",
    "python_gc_objects_collected": "counter",
    "python_gc_objects_uncollectable": "counter",
    "python_gc_collections": "counter",
}


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_design_metric_is_exposed_with_its_type_before_use() -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(Metrics().render().decode())}
    assert families == DESIGN_NAMES


def test_instances_do_not_share_state() -> None:
    a, b = Metrics(), Metrics()
    a.allocation("allocated")
    assert samples(a)[("stablelb_allocations_total", (("result", "allocated"),))] == 1
    assert ("stablelb_allocations_total", (("result", "allocated"),)) not in samples(b)


def test_pool_addresses_and_removal() -> None:
    m = Metrics()
    m.set_pool("default", "IPv4", 256, 3, 253)
    m.set_pool("default", "IPv6", 2**64, 1, 2**64 - 1)
    m.set_pool("other", "IPv4", 10, 0, 10)
    s = samples(m)
    key = "stablelb_pool_addresses"
    assert s[(key, (("family", "IPv4"), ("pool", "default"), ("state", "total")))] == 256
    assert s[(key, (("family", "IPv4"), ("pool", "default"), ("state", "assigned")))] == 3
    assert s[(key, (("family", "IPv4"), ("pool", "default"), ("state", "available")))] == 253
    # Beyond 2**53 the gauge carries float precision.
    assert s[(key, (("family", "IPv6"), ("pool", "default"), ("state", "total")))] == float(2**64)

    m.remove_pool("default", "IPv6")
    s = samples(m)
    assert not any(k[0] == key and ("family", "IPv6") in k[1] for k in s)
    assert (key, (("family", "IPv4"), ("pool", "default"), ("state", "total"))) in s

    m.remove_pool("default")
    m.remove_pool("never-seen")
    s = samples(m)
    assert [k for k in s if k[0] == key] == [
        (key, (("family", "IPv4"), ("pool", "other"), ("state", state)))
        for state in ("total", "assigned", "available")
    ]


def test_ipv6_slash_zero_count_does_not_overflow() -> None:
    m = Metrics()
    m.set_pool("huge", "IPv6", 2**128, 0, 2**128)
    assert samples(m)[
        ("stablelb_pool_addresses", (("family", "IPv6"), ("pool", "huge"), ("state", "total")))
    ] == float(2**128)


def test_controller_helpers() -> None:
    m = Metrics()
    m.allocation("allocated")
    m.allocation("allocated")
    m.allocation("pending")
    m.set_orphaned(2)
    m.observe_reconcile("Service", 0.003)
    m.observe_reconcile("Service", 0.2)
    m.set_leader("a_1", True)
    m.set_leader("b_2", False)
    m.watch_restart("services", "expired")
    s = samples(m)
    assert s[("stablelb_allocations_total", (("result", "allocated"),))] == 2
    assert s[("stablelb_allocations_total", (("result", "pending"),))] == 1
    assert s[("stablelb_orphaned_ips", ())] == 2
    assert s[("stablelb_reconcile_duration_seconds_count", (("kind", "Service"),))] == 2
    assert s[("stablelb_reconcile_duration_seconds_sum", (("kind", "Service"),))] == pytest.approx(0.203)
    assert s[("stablelb_reconcile_duration_seconds_bucket", (("kind", "Service"), ("le", "0.005")))] == 1
    assert s[("stablelb_leader", (("identity", "a_1"),))] == 1
    assert s[("stablelb_leader", (("identity", "b_2"),))] == 0
    assert s[("stablelb_watch_restarts_total", (("reason", "expired"), ("resource", "services")))] == 1
    m.set_leader("a_1", False)
    assert samples(m)[("stablelb_leader", (("identity", "a_1"),))] == 0


def test_queue_metrics_protocol_direct() -> None:
    m = Metrics()
    qm: QueueMetrics = m
    qm.add("services")
    qm.depth("services", 3)
    qm.queue_latency("services", 0.5)
    qm.work_duration("services", 0.01)
    qm.retry("services")
    s = samples(m)
    name = (("name", "services"),)
    assert s[("stablelb_workqueue_adds_total", name)] == 1
    assert s[("stablelb_workqueue_depth", name)] == 3
    assert s[("stablelb_workqueue_queue_duration_seconds_count", name)] == 1
    assert s[("stablelb_workqueue_work_duration_seconds_count", name)] == 1
    assert s[("stablelb_workqueue_retries_total", name)] == 1


async def test_workqueue_reports_into_metrics() -> None:
    m = Metrics()
    queue: WorkQueue[str] = WorkQueue(metrics=m, name="services")
    queue.add("ns/a")
    queue.add("ns/b")
    item = await queue.get()
    queue.done(item)
    s = samples(m)
    name = (("name", "services"),)
    assert s[("stablelb_workqueue_adds_total", name)] == 2
    assert s[("stablelb_workqueue_depth", name)] == 1
    assert s[("stablelb_workqueue_queue_duration_seconds_count", name)] == 1
    assert s[("stablelb_workqueue_work_duration_seconds_count", name)] == 1
    queue.shutdown()


def test_render_for_negotiates_openmetrics() -> None:
    m = Metrics()
    body, content_type = m.render_for(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert body == m.render()
    body, content_type = m.render_for("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_build_info_names_version_revision_and_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLELB_REVISION", "0123abc")
    ((_, labels),) = [k for k in samples(Metrics()) if k[0] == "stablelb_build_info"]
    info = dict(labels)
    assert info["revision"] == "0123abc"
    assert info["version"] == importlib.metadata.version("stablelb")
    assert info["python_version"] == platform.python_version()
    monkeypatch.delenv("STABLELB_REVISION")
    ((_, labels),) = [k for k in samples(Metrics()) if k[0] == "stablelb_build_info"]
    assert dict(labels)["revision"] == "unknown"


def test_api_requests_are_counted_and_timed_by_verb_resource_and_code() -> None:
    m = Metrics()
    m.api_request("update", "services/status", "200", 0.02)
    m.api_request("update", "services/status", "409", 0.03)
    m.api_request("watch", "services", "<error>", 1.5)
    s = samples(m)
    total = "stablelb_api_requests_total"
    assert s[(total, (("code", "200"), ("resource", "services/status"), ("verb", "update")))] == 1
    assert s[(total, (("code", "409"), ("resource", "services/status"), ("verb", "update")))] == 1
    assert s[(total, (("code", "<error>"), ("resource", "services"), ("verb", "watch")))] == 1
    count = "stablelb_api_request_duration_seconds_count"
    assert s[(count, (("resource", "services/status"), ("verb", "update")))] == 2
    assert s[(count, (("resource", "services"), ("verb", "watch")))] == 1


def test_pending_gauges_read_the_source_at_scrape_time() -> None:
    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    assert samples(m)[("stablelb_services_pending", ())] == 0
    assert samples(m)[("stablelb_services_pending_oldest_seconds", ())] == 0
    waiting = [700.0, 940.0]
    m.set_pending_source(lambda: waiting)
    assert samples(m)[("stablelb_services_pending", ())] == 2
    assert samples(m)[("stablelb_services_pending_oldest_seconds", ())] == 300
    now[0] = 1600.0  # the age grows between scrapes without anything being set
    assert samples(m)[("stablelb_services_pending_oldest_seconds", ())] == 900


def test_a_failing_pending_source_does_not_break_the_scrape() -> None:
    m = Metrics()

    def broken() -> list[float]:
        raise RuntimeError("cache gone")

    m.set_pending_source(broken)
    assert samples(m)[("stablelb_services_pending", ())] == 0
