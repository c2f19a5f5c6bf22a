"""Reconcile traces: the root span of each reconcile, and the links back to the watch events behind it.

Handlers only enqueue keys; `EventLinks` remembers why, so a reconcile's root span can link back to the
watch events that caused it and report how long the key waited in the queue.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Link, Span, Tracer
from opentelemetry.util.types import AttributeValue

from controller.metrics import Metrics
from controller.telemetry import ATTR_QUEUE_WAIT_MS, ATTR_REQUEUES

MAX_LINKS_PER_KEY = 8


@dataclass
class _Pending:
    since: float
    links: deque[Link]


class EventLinks:
    def __init__(self, tracer: Tracer, clock: Callable[[], float] = time.monotonic) -> None:
        self._tracer = tracer
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    def note(self, key: str, event: str, kind: str, resource_version: str | None = None) -> None:
        """Record one watch event for `key` as a short span the reconcile will link to."""
        span = self._tracer.start_span(
            f"watch {event} {kind}",
            kind=trace.SpanKind.CONSUMER,
            attributes={"k8s.object.key": key, "k8s.resource_version": resource_version or ""},
        )
        recording = span.is_recording()  # False once ended
        span.end()
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = _Pending(self._clock(), deque(maxlen=MAX_LINKS_PER_KEY))
        if recording:
            # A link to a span that is never exported (not sampled) would lead nowhere.
            entry.links.append(Link(span.get_span_context()))

    def take(self, key: str) -> tuple[list[Link], float]:
        """The links gathered for `key` and its queue wait in milliseconds; forgets them."""
        entry = self._pending.pop(key, None)
        if entry is None:
            return [], 0.0
        return list(entry.links), (self._clock() - entry.since) * 1000.0


@contextmanager
def reconcile_span(
    tracer: Tracer,
    metrics: Metrics,
    kind: str,
    *,
    links: Iterable[Link],
    queue_wait_ms: float,
    requeues: int,
    attributes: Mapping[str, AttributeValue],
) -> Iterator[Span]:
    """The root span `reconcile <kind>` (errors recorded) and the reconcile-duration metric."""
    started = time.perf_counter()
    try:
        with tracer.start_as_current_span(
            f"reconcile {kind}",
            links=list(links),
            attributes={ATTR_QUEUE_WAIT_MS: queue_wait_ms, ATTR_REQUEUES: requeues, **attributes},
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span
    finally:
        metrics.observe_reconcile(kind, time.perf_counter() - started)
