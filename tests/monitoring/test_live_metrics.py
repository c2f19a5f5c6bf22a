"""A real controller process: metrics and probes on their own listeners, and its /metrics carries every series
the alerts and the dashboard read, with API request metrics recorded by the client layer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.harness import ControllerSet, LocalCluster
from e2e.harness.processes import free_port
from e2e.support import Scenario
from tests.monitoring.conftest import FILES
from tests.monitoring.exported import referenced_metrics

pytestmark = pytest.mark.cluster


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body = get(url)
    assert status == 200, body
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        # A labelled family with no child yet (no watch restarted) is declared by its HELP/TYPE lines only.
        for suffix in ("", "_total", "_bucket", "_count", "_sum"):
            out.setdefault(family.name + suffix, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def query_names() -> set[str]:
    names: set[str] = set()
    for group in yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            names |= referenced_metrics(rule["expr"])
    for panel in json.loads((FILES / "dashboard.json").read_text())["panels"]:
        for target in panel.get("targets", []):
            names |= referenced_metrics(target["expr"])
    return names


async def test_controller_serves_probes_and_metrics_apart_with_what_alerts_and_dashboard_read(
    stablelb_installed: LocalCluster,
    controller_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    wait_for: Any,
) -> None:
    cluster = stablelb_installed
    group = ControllerSet(tmp_path / "controllers", default_kubeconfig=controller_kubeconfig)
    sc = Scenario(cluster.api, namespace, group)
    metrics_port, probe_port = free_port(), free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    probes = f"http://127.0.0.1:{probe_port}"
    try:
        pool = sc.create_pool("p", ["203.0.113.10-203.0.113.11"])  # two addresses
        sc.start(
            1,
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}",
            env={"STABLELB_REVISION": "test-revision"},
        )
        await wait_for(lambda: get(probes + "/readyz")[0] == 200, timeout=60, describe=group.describe)
        assert get(probes + "/healthz")[0] == 200
        assert get(probes + "/metrics")[0] == 404
        assert get(metrics_url.replace("/metrics", "/readyz"))[0] == 404

        for name in ("a", "b"):
            sc.create_service(name)
        await wait_for(lambda: sc.ips("a") and sc.ips("b"), timeout=60, describe=lambda: sc.describe())
        sc.create_service("c")  # waits: the pool has two addresses
        await wait_for(
            lambda: sc.reason("c") == "PoolExhausted", timeout=60, describe=lambda: sc.describe("c")
        )

        def pending() -> bool:
            series = scrape(metrics_url)
            return series["stablelb_services_pending"][0][1] == 1 and (
                series["stablelb_services_pending_oldest_seconds"][0][1] > 0
            )

        await wait_for(pending, timeout=30)
        series = scrape(metrics_url)
        missing = {n for n in query_names() if n not in series}
        assert not missing, f"alerts or dashboard read series this controller does not export: {missing}"

        (build,) = series["stablelb_build_info"]
        assert build[0]["revision"] == "test-revision"

        def requests() -> set[tuple[str, str, str]]:
            total = scrape(metrics_url)["stablelb_api_requests_total"]
            return {(s["verb"], s["resource"], s["code"]) for s, _ in total}

        expected = {
            # The initial state comes as a watch-list; a fresh leader makes no quorum LIST (it listed after
            # winning the lease).
            ("watch", "services", "200"),
            ("patch", "services/status", "200"),
            ("update", "leases", "200"),  # renewals
        }
        await wait_for(lambda: expected <= requests(), timeout=30, describe=lambda: str(sorted(requests())))

        def counts() -> dict[str, float]:
            return {
                s["state"]: v
                for s, v in scrape(metrics_url)["stablelb_pool_addresses"]
                if s["pool"] == pool and s["family"] == "IPv4"
            }

        # The pool's counts follow its allocations after the pool-status batching delay (1 s).
        await wait_for(lambda: counts() == {"total": 2, "assigned": 2, "available": 0}, timeout=30,
                       describe=lambda: str(counts()))
        assert series["process_resident_memory_bytes"][0][1] > 0
        # The harness's own one-listener address was overridden by the flags given later: nothing there.
        assert get(f"http://{group.http_addr(0)}/metrics")[0] == 0
        assert "deprecated" not in group.logs(0)
    finally:
        group.stop_all()
        sc.cleanup()


async def test_deprecated_http_addr_alias_still_serves_probes_and_metrics_on_one_listener(
    controllers: ControllerSet, wait_for: Any
) -> None:
    [i] = controllers(1, deprecated_http_addr=True, args=["--lb-class=e2e.stablelb.io/alias-only"])
    base = f"http://{controllers.http_addr(i)}"
    await wait_for(lambda: get(base + "/readyz")[0] == 200, timeout=60, describe=controllers.describe)
    status, body = get(base + "/metrics")
    assert status == 200 and "stablelb_build_info" in body
    assert "--http-addr is deprecated" in controllers.logs(i)  # and says what to pass instead
