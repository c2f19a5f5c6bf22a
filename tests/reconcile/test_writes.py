"""Status writes are fenced by the lease: bounded by the time left before the renew deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.trace import NoOpTracer

from controller.kube.client import DEFAULT_TIMEOUT, KubeClient
from controller.reconcile.leadership import NotLeader, WriteGate
from controller.reconcile.writes import patch_status

PATH = "/api/v1/namespaces/ns/services/web/status"
BODY = {"metadata": {"resourceVersion": "7"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}


class Recording:
    def __init__(self) -> None:
        self.timeouts: list[float] = []

    async def request(self, method: str, path: str, *, timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                      **kwargs: Any) -> dict[str, Any]:
        self.timeouts.append(timeout)
        return {}


def gate_with(remaining: list[float]) -> WriteGate:
    gate = WriteGate()
    gate.guard(lambda: remaining[0] > 0, lambda: remaining[0])
    gate.open()
    return gate


async def test_write_timeout_is_the_smaller_of_the_request_timeout_and_the_lease_time_left() -> None:
    client, remaining = Recording(), [3.5]
    gate = gate_with(remaining)
    assert await patch_status(client, NoOpTracer(), gate, PATH, BODY, "svc") is not None  # type: ignore[arg-type]
    remaining[0] = 1000.0
    assert await patch_status(client, NoOpTracer(), gate, PATH, BODY, "svc") is not None  # type: ignore[arg-type]
    assert client.timeouts == [3.5, DEFAULT_TIMEOUT]
    remaining[0] = 0.0
    with pytest.raises(NotLeader):
        await patch_status(client, NoOpTracer(), gate, PATH, BODY, "svc")  # type: ignore[arg-type]
    assert len(client.timeouts) == 2 and not gate.is_open


@pytest.fixture
async def hung_api() -> AsyncIterator[tuple[str, list[str]]]:
    """An API server that accepts every request and never answers: the fault a real one can't do on demand."""
    seen: list[str] = []

    async def hang(request: web.Request) -> web.Response:
        seen.append(request.method)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_a_hung_write_is_abandoned_when_the_lease_runs_out(hung_api: tuple[str, list[str]]) -> None:
    url, seen = hung_api
    client = KubeClient.for_host(url)
    loop = asyncio.get_running_loop()
    renew_deadline_at = loop.time() + 0.5
    gate = WriteGate()
    gate.guard(lambda: loop.time() < renew_deadline_at, lambda: renew_deadline_at - loop.time())
    gate.open()
    try:
        # Without the lease bound the PATCH would wait the client's 30 s; with it, it is given up at
        # the renew deadline and reported as lost leadership (generous bound: CPU contention).
        with pytest.raises(NotLeader):
            await asyncio.wait_for(
                patch_status(client, NoOpTracer(), gate, PATH, BODY, "svc"), DEFAULT_TIMEOUT / 2
            )
        assert seen == ["PATCH"]
    finally:
        await client.close()
