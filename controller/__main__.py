"""`python -m controller` and `stablelb-controller`: flags, logs, traces, then run until told to stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from controller.app import Controller
from controller.config import Settings, parse_args
from controller.http import HealthState, start_http_server
from controller.kube.client import KubeClient
from controller.logs import setup_logging
from controller.metrics import Metrics
from controller.telemetry import get_tracer, setup_tracing, shutdown_tracing

log = logging.getLogger("controller")


async def run(settings: Settings) -> int:
    try:
        client = await KubeClient.from_kubeconfig(settings.kubeconfig)
    except Exception as exc:
        log.error(
            "cannot load Kubernetes credentials: %s. Pass --kubeconfig=PATH (or set KUBECONFIG), "
            "or run inside a cluster with a ServiceAccount.",
            exc,
        )
        return 2
    metrics = Metrics()
    health = HealthState()
    controller = Controller(settings, client, metrics=metrics, tracer=get_tracer(), health=health)
    runner = await start_http_server(settings.http_addr, metrics, health)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stopping.set)
    log.info(
        "starting",
        extra={
            "identity": settings.identity,
            "leader_elect": settings.leader_elect,
            "lb_class": settings.lb_class,
            "http_addr": settings.http_addr,
        },
    )
    try:
        return await controller.run()
    finally:
        await runner.cleanup()
        await client.close()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_args(argv)
    setup_logging(settings.log_level, settings.log_format)
    setup_tracing()
    code = asyncio.run(run(settings))
    shutdown_tracing()
    log.info("stopped", extra={"exit_code": code})
    sys.exit(code)


if __name__ == "__main__":
    main()
