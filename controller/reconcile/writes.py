"""The one way this controller writes status: a merge patch guarded by the object's resourceVersion."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import Status, StatusCode, Tracer

from controller.kube.client import DEFAULT_TIMEOUT, ApiError, KubeClient
from controller.kube.events import rfc3339
from controller.reconcile.leadership import WriteGate

FIELD_MANAGER = "stablelb-controller"
MERGE_PATCH = "application/merge-patch+json"


class Requeue(Exception):
    """The reconcile should run again later (rate limited), e.g. after a 409 Conflict."""


def now_rfc3339() -> str:
    """Kubernetes' condition timestamp format, to the second, so a round trip compares equal."""
    return rfc3339(time.time())


async def patch_status(
    client: KubeClient, tracer: Tracer, gate: WriteGate, path: str, body: dict[str, Any], what: str
) -> dict[str, Any] | None:
    """PATCH `path` (a status subresource): the object as written, None when it is gone.

    `body` carries metadata.resourceVersion, so a decision made on a stale cache is refused (409) and
    retried with fresh data instead of overwriting a newer status.
    """
    timeout = gate.write_timeout(DEFAULT_TIMEOUT)
    with tracer.start_as_current_span("status write") as span:
        try:
            written = await client.request(
                "PATCH", path, query={"fieldManager": FIELD_MANAGER}, body=body, content_type=MERGE_PATCH,
                timeout=timeout,
            )
        except TimeoutError as exc:
            span.set_status(Status(StatusCode.ERROR, "timed out"))
            # Cut off by the lease bound: say so, the worker stops instead of retrying.
            gate.check()
            raise Requeue(f"{what}: no answer within {timeout:.1f}s") from exc
        except ApiError as exc:
            span.set_status(Status(StatusCode.ERROR, f"{exc.status} {exc.reason}"))
            if exc.status == 409:
                raise Requeue(f"{what} changed under us (409)") from exc
            if exc.status == 404:
                return None
            raise
    return written
