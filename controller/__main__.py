"""`python -m controller` and `stablelb-controller`: flags, logs, traces, then run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from controller.app import Controller
from controller.config import Settings, parse_args
from controller.http import HealthState, start_listeners
from controller.kube.client import KubeClient
from controller.logs import setup_logging
from controller.metrics import Metrics
from controller.pending import pending_since
from controller.telemetry import get_tracer, setup_tracing, shutdown_tracing

log = logging.getLogger("controller")


async def run(settings: Settings) -> int:
    metrics = Metrics()
    try:
        client = await KubeClient.from_kubeconfig(settings.kubeconfig, metrics=metrics)
    except Exception as exc:
        log.error(
            "cannot load Kubernetes credentials: %s. Pass --kubeconfig=PATH (or set KUBECONFIG), "
            "or run inside a cluster with a ServiceAccount.",
            exc,
        )
        return 2
    health = HealthState()
    controller = Controller(settings, client, metrics=metrics, tracer=get_tracer(), health=health)
    metrics.set_pending_source(lambda: pending_since(controller))
    runners = await start_listeners(
        settings.metrics_bind_address, settings.health_probe_bind_address, metrics, health
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stopping.set)
    log.info(
        "starting",
        extra={
            "identity": settings.identity,
            "leader_elect": settings.leader_elect,
            "lb_class": settings.lb_class,
            "metrics_bind_address": settings.metrics_bind_address,
            "health_probe_bind_address": settings.health_probe_bind_address,
        },
    )
    try:
        return await controller.run()
    finally:
        for runner in runners:
            await runner.cleanup()
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    setup_logging(settings.log_level, settings.log_format)
    for message in settings.deprecations:
        log.warning(message)
    setup_tracing()
    code = asyncio.run(run(settings))
    shutdown_tracing()
    log.info("stopped", extra={"exit_code": code})
    sys.exit(code)


if __name__ == "__main__":
    main()
