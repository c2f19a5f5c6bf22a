"""Jaeger from the harness receives OTLP/JSON spans and returns them through its query API."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator

import pytest

from e2e.harness import Jaeger, wait_until
from e2e.harness.processes import pid_alive

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    j = Jaeger.start()
    yield j
    j.stop()


def test_span_posted_as_otlp_json_is_returned_by_the_query_api(jaeger: Jaeger) -> None:
    trace_id, span_id, now = os.urandom(16).hex(), os.urandom(8).hex(), time.time_ns()
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "harness-probe"}}]}
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "reconcile Service",
        "kind": 1,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 2_000_000),
        "attributes": [{"key": "k8s.service.name", "value": {"stringValue": "web"}}],
    }
    body = {
        "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]
    }
    req = urllib.request.Request(
        f"{jaeger.otlp_http_endpoint}/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200

    traces = wait_until(lambda: jaeger.traces("harness-probe"), timeout=30)

    [trace] = traces
    assert trace["traceID"] == trace_id
    [got] = trace["spans"]
    assert got["operationName"] == "reconcile Service"
    assert {"key": "k8s.service.name", "type": "string", "value": "web"} in got["tags"]
    assert "harness-probe" in jaeger.services()


def test_jaeger_listens_on_loopback_only_and_stops_cleanly() -> None:
    j = Jaeger.start()
    pid = j.pid
    listening = _listening_addresses(pid)
    j.stop()
    assert listening and all(addr.startswith("127.0.0.1:") for addr in listening), listening
    assert not pid_alive(pid)
    assert not j.workdir.exists()


def _listening_addresses(pid: int) -> list[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}") if os.path.exists(f"/proc/{pid}/fd/{fd}") else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                    host, port = fields[1].split(":")
                    if len(host) == 8:
                        ip = ".".join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    else:
                        ip = "v6:" + host
                    found.append(f"{ip}:{int(port, 16)}")
    return found
