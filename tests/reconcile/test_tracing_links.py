"""EventLinks: a reconcile links back to the watch events behind it, only when those spans are recorded."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from controller.reconcile.tracing import MAX_LINKS_PER_KEY, EventLinks


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_recorded_watch_spans_are_linked_and_the_wait_measured() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = Ticks()
    links = EventLinks(provider.get_tracer("t"), clock)
    for rv in range(MAX_LINKS_PER_KEY + 2):
        links.note("ns/a", "MODIFIED", "Service", str(rv))
    clock.now += 0.25
    got, waited_ms = links.take("ns/a")
    spans = exporter.get_finished_spans()
    assert len(spans) == MAX_LINKS_PER_KEY + 2
    # The newest MAX_LINKS_PER_KEY events, in order; the wait counts from the first event.
    assert [link.context.span_id for link in got] == [s.context.span_id for s in spans[2:]]
    assert waited_ms == 250.0
    assert links.take("ns/a") == ([], 0.0)


def test_unsampled_watch_spans_are_not_linked_but_the_wait_still_is() -> None:
    clock = Ticks()
    links = EventLinks(TracerProvider(sampler=ALWAYS_OFF).get_tracer("t"), clock)
    links.note("ns/a", "ADDED", "Service", "1")
    clock.now += 1.5
    assert links.take("ns/a") == ([], 1500.0)
