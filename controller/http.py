"""HTTP endpoints for kubelet probes (/healthz, /livez, /readyz) and Prometheus (/metrics).

Probes and metrics are separate listeners by default (controller-runtime's layout), so /metrics can be put
behind kube-rbac-proxy while the kubelet keeps probing plain HTTP; one address serves both.

Health responses follow kube-apiserver's shape: ``ok`` when every check passes; otherwise status 500 and one
``[+]name ok`` / ``[-]name failed: detail`` line per check. ``?verbose`` lists the checks on success too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from controller.config import DISABLED_ADDR, parse_host_port
from controller.metrics import Metrics

__all__ = [
    "Check",
    "CheckResult",
    "HealthState",
    "bound_port",
    "build_app",
    "start_http_server",
    "start_listeners",
]

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


class HealthState:
    """Named liveness and readiness checks, each a callable returning ``(ok, detail)``.

    Checks run on the event loop for every probe, so they must be cheap and must not block: read state that
    the controller keeps up to date (a heartbeat timestamp, a synced flag), don't do I/O.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._liveness: dict[str, Check] = {}
        self._readiness: dict[str, Check] = {}

    def add_liveness(self, name: str, check: Check) -> None:
        """Register (or replace) a check behind /healthz; a failing one makes the kubelet restart us."""
        with self._lock:
            self._liveness[name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        """Register (or replace) a check behind /readyz."""
        with self._lock:
            self._readiness[name] = check

    def remove(self, name: str) -> None:
        """Remove a liveness or readiness check of that name, if present."""
        with self._lock:
            self._liveness.pop(name, None)
            self._readiness.pop(name, None)

    def liveness(self) -> list[CheckResult]:
        with self._lock:
            checks = list(self._liveness.items())
        return [_run(name, fn) for name, fn in checks]

    def readiness(self) -> list[CheckResult]:
        with self._lock:
            checks = list(self._readiness.items())
        return [_run(name, fn) for name, fn in checks]


def _run(name: str, check: Check) -> CheckResult:
    try:
        ok, detail = check()
    except Exception as exc:  # a broken check is a failing check, not a broken endpoint
        log.warning("health check %s raised", name, exc_info=True)
        return CheckResult(name, False, f"check raised {type(exc).__name__}: {exc}")
    return CheckResult(name, bool(ok), str(detail))


def _health_response(endpoint: str, results: list[CheckResult], verbose: bool) -> web.Response:
    failed = [r for r in results if not r.ok]
    if not failed and not verbose:
        return web.Response(text="ok", content_type="text/plain")
    lines = [f"[+]{r.name} ok" if r.ok else f"[-]{r.name} failed: {r.detail}" for r in results]
    lines.append(f"{endpoint} check {'failed' if failed else 'passed'}")
    return web.Response(
        text="\n".join(lines) + "\n", status=500 if failed else 200, content_type="text/plain"
    )


def build_app(
    metrics: Metrics, health: HealthState, *, probes: bool = True, serve_metrics: bool = True
) -> web.Application:
    """The aiohttp application (exposed for aiohttp's test client): the probes, /metrics, or both."""

    async def healthz(request: web.Request) -> web.Response:
        return _health_response("healthz", health.liveness(), "verbose" in request.query)

    async def readyz(request: web.Request) -> web.Response:
        return _health_response("readyz", health.readiness(), "verbose" in request.query)

    async def metrics_handler(request: web.Request) -> web.Response:
        body, content_type = metrics.render_for(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    if probes:
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/livez", healthz)
        app.router.add_get("/readyz", readyz)
    if serve_metrics:
        app.router.add_get("/metrics", metrics_handler)
    return app


async def _serve(addr: str, app: web.Application, what: str) -> web.AppRunner:
    host, port = parse_host_port(addr)
    # Probes and scrapes every few seconds would drown the log in access lines.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=host, port=port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("serving %s", what, extra={"addr": addr, "port": bound_port(runner)})
    return runner


async def start_http_server(addr: str, metrics: Metrics, health: HealthState) -> web.AppRunner:
    """Serve the probes and /metrics on one address (``:8080``, ``127.0.0.1:8080``, ``[::1]:8080``; port 0
    picks a free port, see bound_port). Stop it with ``await runner.cleanup()``."""
    return await _serve(addr, build_app(metrics, health), "/healthz, /livez, /readyz and /metrics")


async def start_listeners(
    metrics_addr: str, probe_addr: str, metrics: Metrics, health: HealthState
) -> list[web.AppRunner]:
    """The metrics and probe listeners (one when both addresses are equal; none for an address of "0").

    Stop them with ``await runner.cleanup()`` each.
    """
    if metrics_addr == probe_addr:
        if metrics_addr == DISABLED_ADDR:
            return []
        return [await start_http_server(metrics_addr, metrics, health)]
    runners: list[web.AppRunner] = []
    try:
        if probe_addr != DISABLED_ADDR:
            app = build_app(metrics, health, serve_metrics=False)
            runners.append(await _serve(probe_addr, app, "/healthz, /livez and /readyz"))
        if metrics_addr != DISABLED_ADDR:
            app = build_app(metrics, health, probes=False)
            runners.append(await _serve(metrics_addr, app, "/metrics"))
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return runners


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the runner listens on (useful after binding port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening on a TCP port")
