from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from controller.config import ConfigError
from controller.http import HealthState, bound_port, start_http_server, start_listeners
from controller.metrics import Metrics


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def health() -> HealthState:
    return HealthState()


@pytest.fixture
async def server(metrics: Metrics, health: HealthState) -> AsyncIterator[str]:
    runner = await start_http_server("127.0.0.1:0", metrics, health)
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), trust_env=False) as s:
        yield s


async def get(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str, str]:
    async with session.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_health_endpoints_ok_with_no_checks(server: str, session: aiohttp.ClientSession) -> None:
    for path in ("/healthz", "/readyz", "/livez"):
        status, ctype, body = await get(session, server + path)
        assert (status, body) == (200, "ok")
        assert ctype.startswith("text/plain")


async def test_readyz_lists_failing_checks(
    server: str, session: aiohttp.ClientSession, health: HealthState
) -> None:
    state = {"synced": False}

    def caches() -> tuple[bool, str]:
        return state["synced"], "done" if state["synced"] else "waiting for ippools"

    health.add_readiness("caches", caches)
    health.add_readiness("leader", lambda: (True, "standby"))

    status, _, body = await get(session, server + "/readyz")
    assert status == 500
    assert body.splitlines() == [
        "[-]caches failed: waiting for ippools",
        "[+]leader ok",
        "readyz check failed",
    ]
    # Readiness does not affect liveness.
    assert (await get(session, server + "/healthz"))[0] == 200

    state["synced"] = True
    assert (await get(session, server + "/readyz"))[::2] == (200, "ok")
    status, _, body = await get(session, server + "/readyz?verbose")
    assert status == 200
    assert body.splitlines() == ["[+]caches ok", "[+]leader ok", "readyz check passed"]


async def test_healthz_fails_on_failing_or_raising_check(
    server: str, session: aiohttp.ClientSession, health: HealthState
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("no heartbeat")

    health.add_liveness("informers", lambda: (False, "stopped: informer-services"))
    health.add_liveness("loop", broken)
    status, _, body = await get(session, server + "/healthz")
    assert status == 500
    assert "[-]informers failed: stopped: informer-services" in body
    assert "[-]loop failed: check raised RuntimeError: no heartbeat" in body
    assert body.rstrip().endswith("healthz check failed")
    assert (await get(session, server + "/readyz"))[0] == 200

    health.remove("informers")
    health.add_liveness("loop", lambda: (True, "beating"))  # replaces the broken one
    assert (await get(session, server + "/healthz"))[::2] == (200, "ok")


async def test_metrics_endpoint(server: str, session: aiohttp.ClientSession, metrics: Metrics) -> None:
    metrics.allocation("allocated")
    metrics.set_leader("me_1", True)
    status, ctype, body = await get(session, server + "/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["stablelb_allocations"].samples[0].value == 1
    assert "stablelb_workqueue_depth" in families
    assert 'stablelb_leader{identity="me_1"} 1.0' in body

    status, ctype, body = await get(
        session, server + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert ctype.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


async def test_unknown_path_is_404(server: str, session: aiohttp.ClientSession) -> None:
    assert (await get(session, server + "/nope"))[0] == 404


@pytest.mark.skipif(not ipv6_loopback(), reason="this host has no IPv6 loopback")
async def test_ipv6_bracket_address(
    metrics: Metrics, health: HealthState, session: aiohttp.ClientSession
) -> None:
    runner = await start_http_server("[::1]:0", metrics, health)
    try:
        port = bound_port(runner)
        assert port > 0
        assert (await get(session, f"http://[::1]:{port}/healthz"))[::2] == (200, "ok")
    finally:
        await runner.cleanup()


async def test_port_in_use_fails_and_cleans_up(metrics: Metrics, health: HealthState) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError):
            await start_http_server(f"127.0.0.1:{port}", metrics, health)


async def test_bad_address_is_rejected(metrics: Metrics, health: HealthState) -> None:
    with pytest.raises(ConfigError, match="missing port"):
        await start_http_server("8080", metrics, health)


async def test_bound_port_requires_a_listening_runner() -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    try:
        with pytest.raises(RuntimeError, match="not listening"):
            bound_port(runner)
    finally:
        await runner.cleanup()


async def test_listeners_split_by_address(
    metrics: Metrics, health: HealthState, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        metrics_port, probe_port = a.getsockname()[1], b.getsockname()[1]
    runners = await start_listeners(f"127.0.0.1:{metrics_port}", f"127.0.0.1:{probe_port}", metrics, health)
    try:
        assert sorted(bound_port(r) for r in runners) == sorted([metrics_port, probe_port])
        m, p = f"http://127.0.0.1:{metrics_port}", f"http://127.0.0.1:{probe_port}"
        assert (await get(session, m + "/metrics"))[0] == 200
        for path in ("/healthz", "/livez", "/readyz"):
            assert (await get(session, p + path))[::2] == (200, "ok")
            assert (await get(session, m + path))[0] == 404
        assert (await get(session, p + "/metrics"))[0] == 404
    finally:
        for r in runners:
            await r.cleanup()


async def test_one_address_gives_one_listener_and_zero_turns_one_off(
    metrics: Metrics, health: HealthState, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0))
        port = a.getsockname()[1]
    (runner,) = await start_listeners(f"127.0.0.1:{port}", f"127.0.0.1:{port}", metrics, health)
    try:
        base = f"http://127.0.0.1:{port}"
        assert (await get(session, base + "/metrics"))[0] == 200
        assert (await get(session, base + "/readyz"))[0] == 200
    finally:
        await runner.cleanup()
    (runner,) = await start_listeners("0", "127.0.0.1:0", metrics, health)
    try:
        base = f"http://127.0.0.1:{bound_port(runner)}"
        assert (await get(session, base + "/healthz"))[0] == 200
        assert (await get(session, base + "/metrics"))[0] == 404
    finally:
        await runner.cleanup()
    assert await start_listeners("0", "0", metrics, health) == []
