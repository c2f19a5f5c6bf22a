"""What a new leader finds in Service status at start: duplicates resolved oldest-first; telemetry works."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from e2e.harness.jaeger import Jaeger
from e2e.support import Scenario

pytestmark = pytest.mark.cluster

T = 60.0


async def test_duplicate_claims_found_at_start_oldest_keeps_it(scenario: Scenario, wait_for: Any) -> None:
    s = scenario
    s.create_pool("p", ["192.168.50.0/24"])
    s.create_service("older")
    await asyncio.sleep(1.1)  # creationTimestamp has one-second resolution
    s.create_service("newer")
    s.create_service("innocent")
    for name in ("older", "newer"):
        s.patch_status(name, {"loadBalancer": {"ingress": [{"ip": "192.168.50.7", "ipMode": "VIP"}]}})
    s.patch_status("innocent", {"loadBalancer": {"ingress": [{"ip": "192.168.50.9", "ipMode": "VIP"}]}})
    rv_older, rv_innocent = s.rv("older"), s.rv("innocent")

    s.start(2)
    await wait_for(lambda: s.reason("newer") == "DuplicateIP", timeout=T, describe=s.describe)
    new_ips = s.ips("newer")
    assert len(new_ips) == 1 and new_ips[0] not in ("192.168.50.7", "192.168.50.9")
    await wait_for(lambda: "DuplicateIPResolved" in s.event_reasons("newer"), timeout=T, describe=s.describe)
    assert s.ips("older") == ["192.168.50.7"]
    assert s.ips("innocent") == ["192.168.50.9"]
    # The adopted Services only gain our condition; their ingress was already right.
    await wait_for(lambda: s.reason("older") == "Allocated", timeout=T, describe=s.describe)
    assert s.rv("older") != rv_older and s.rv("innocent") != rv_innocent


async def test_reconcile_traces_reach_jaeger_and_metrics_are_served(
    scenario: Scenario, wait_for: Any, tmp_path: Any
) -> None:
    s = scenario
    jaeger = Jaeger.start(workdir=tmp_path / "jaeger")
    try:
        service_name = f"stablelb-{s.ns}"[:60]
        s.create_pool("p", ["192.168.51.0/24"])
        s.start(
            1,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
                "OTEL_SERVICE_NAME": service_name,
                "OTEL_BSP_SCHEDULE_DELAY": "200",
            },
        )
        s.create_service("warmup")  # once it has an IP the leader's workers run: "traced" comes by watch
        await wait_for(lambda: s.ips("warmup"), timeout=T, describe=s.describe)
        s.create_service("traced")
        (ip,) = await wait_for(lambda: s.ips("traced"), timeout=T, describe=s.describe)

        def reconcile_span() -> dict[str, Any] | None:
            for trace in jaeger.traces(service_name):
                for span in trace.get("spans", []):
                    tags = {t["key"]: t.get("value") for t in span.get("tags", [])}
                    if (
                        span.get("operationName") == "reconcile Service"
                        and tags.get("stablelb.ips") == ip
                        and tags.get("stablelb.wrote")
                    ):
                        return {"span": span, "tags": tags, "trace": trace}
            return None

        found = await wait_for(
            reconcile_span, timeout=T, interval=0.5, describe=lambda: f"jaeger services: {jaeger.services()}"
        )
        assert found["tags"]["k8s.namespace.name"] == s.ns
        assert found["tags"]["k8s.service.name"] == "traced"
        names = {sp.get("operationName") for sp in found["trace"]["spans"]}
        assert {"allocate", "status write"} <= names
        assert found["span"].get("references"), "the reconcile is not linked to the watch event"

        status, body = s.http_get(0, "/metrics")
        assert status == 200
        for metric in (
            "stablelb_allocations_total",
            "stablelb_workqueue_depth",
            "stablelb_leader",
            "stablelb_reconcile_duration_seconds",
            "stablelb_pool_addresses",
        ):
            assert metric in body
        assert s.http_get(0, "/readyz")[0] == 200
        trace_id = found["trace"]["traceID"]
        await wait_for(
            lambda: trace_id.lstrip("0") in s.controllers.logs(0),
            timeout=T,
            describe=lambda: s.controllers.logs(0)[-3000:],
        )
    finally:
        jaeger.stop()
