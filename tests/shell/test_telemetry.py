from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller import telemetry
from controller.telemetry import (
    ATTR_IPS,
    ATTR_K8S_NAMESPACE,
    ATTR_K8S_SERVICE,
    ATTR_POOL,
    ATTR_QUEUE_WAIT_MS,
    ATTR_REQUEUES,
    ATTR_RESULT,
    SPAN_RECONCILE_SERVICE,
    current_provider,
    get_tracer,
    setup_tracing,
    shutdown_tracing,
)

OTEL_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "POD_NAME",
    "POD_NAMESPACE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    # Only loopback traffic, never through a proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    yield
    shutdown_tracing(timeout_s=2)


def processors(provider: TracerProvider) -> tuple[SpanProcessor, ...]:
    return provider._active_span_processor._span_processors


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_attribute_names_match_the_design() -> None:
    assert ATTR_K8S_NAMESPACE == "k8s.namespace.name"
    assert ATTR_K8S_SERVICE == "k8s.service.name"
    assert ATTR_POOL == "stablelb.pool"
    assert ATTR_IPS == "stablelb.ips"
    assert ATTR_RESULT == "stablelb.result"
    assert ATTR_QUEUE_WAIT_MS == "stablelb.queue_wait_ms"
    assert ATTR_REQUEUES == "stablelb.requeues"
    assert SPAN_RECONCILE_SERVICE == "reconcile Service"
    assert telemetry.SPAN_RECONCILE_POOL == "reconcile IPPool"


def test_injected_provider_records_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert setup_tracing(provider=provider) is provider
    assert current_provider() is provider
    # An injected provider is used as-is: nothing is added to it.
    assert len(processors(provider)) == 1

    tracer = get_tracer()
    with tracer.start_as_current_span(SPAN_RECONCILE_SERVICE) as root:
        root.set_attribute(ATTR_K8S_NAMESPACE, "team-a")
        root.set_attribute(ATTR_K8S_SERVICE, "web")
        root.set_attribute(ATTR_IPS, ["192.168.10.3"])
        with tracer.start_as_current_span("allocate"):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {SPAN_RECONCILE_SERVICE, "allocate"}
    root_span = spans[SPAN_RECONCILE_SERVICE]
    assert root_span.attributes is not None
    assert root_span.attributes[ATTR_K8S_NAMESPACE] == "team-a"
    assert tuple(root_span.attributes[ATTR_IPS]) == ("192.168.10.3",)  # type: ignore[arg-type]
    child = spans["allocate"]
    assert child.parent is not None
    assert child.parent.span_id == root_span.context.span_id
    assert spans["allocate"].instrumentation_scope is not None
    assert spans["allocate"].instrumentation_scope.name == telemetry.TRACER_NAME


def test_injected_provider_is_not_installed_globally() -> None:
    provider = TracerProvider()
    setup_tracing(provider=provider)
    assert trace.get_tracer_provider() is not provider


def test_shutdown_flushes_and_resets() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    setup_tracing(provider=provider)
    with get_tracer().start_as_current_span("pending"):
        pass
    assert exporter.get_finished_spans() == ()  # still batched
    assert shutdown_tracing(timeout_s=10) is True
    assert [s.name for s in exporter.get_finished_spans()] == ["pending"]
    assert current_provider() is None
    assert shutdown_tracing() is True  # nothing left to do


def test_no_exporter_without_an_endpoint() -> None:
    provider = setup_tracing(set_global=False)
    assert processors(provider) == ()
    assert provider.resource.attributes["service.name"] == "stablelb-controller"
    assert provider.resource.attributes["telemetry.sdk.language"] == "python"


def test_without_an_exporter_spans_are_not_recorded_but_still_carry_ids() -> None:
    # Nothing would ever read a recorded span: recording them only cost CPU per reconcile.
    setup_tracing(set_global=False)
    with get_tracer().start_as_current_span("x", attributes={"a": 1}) as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid  # log lines keep their trace_id/span_id


def test_with_an_exporter_spans_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    setup_tracing(set_global=False)
    with get_tracer().start_as_current_span("x") as span:
        assert span.is_recording()


@pytest.mark.parametrize("var", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_endpoint_selects_batched_otlp_http_exporter(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    port = unused_port()
    value = f"http://127.0.0.1:{port}" + ("/custom/traces" if "TRACES" in var else "")
    monkeypatch.setenv(var, value)
    provider = setup_tracing(set_global=False)
    (processor,) = processors(provider)
    assert isinstance(processor, BatchSpanProcessor)
    exporter = processor.span_exporter
    assert isinstance(exporter, OTLPSpanExporter)
    expected = value if "TRACES" in var else value + "/v1/traces"
    assert exporter._endpoint == expected


def test_traces_exporter_none_and_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{unused_port()}")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert processors(setup_tracing(set_global=False)) == ()

    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    provider = setup_tracing(set_global=False)
    assert processors(provider) == ()
    with get_tracer().start_as_current_span("x") as span:
        assert not span.is_recording()


def test_console_and_unknown_exporters(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,zipkin")
    provider = setup_tracing(set_global=False)
    (processor,) = processors(provider)
    assert isinstance(processor, SimpleSpanProcessor)
    assert "OTEL_TRACES_EXPORTER 'zipkin' is not supported" in caplog.text


def test_resource_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,k8s.pod.name=p-1")
    attrs = setup_tracing(set_global=False).resource.attributes
    assert attrs["service.name"] == "stablelb-controller"
    assert attrs["deployment.environment"] == "ci"
    assert attrs["k8s.pod.name"] == "p-1"

    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs")
    assert setup_tracing(set_global=False).resource.attributes["service.name"] == "from-attrs"

    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-name")
    assert setup_tracing(set_global=False).resource.attributes["service.name"] == "from-name"

    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    assert setup_tracing("custom", set_global=False).resource.attributes["service.name"] == "custom"


def test_resource_names_the_pod_from_the_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two replicas of the Deployment: their spans must be told apart.
    attrs = setup_tracing(set_global=False).resource.attributes
    assert "k8s.pod.name" not in attrs and "k8s.namespace.name" not in attrs
    monkeypatch.setenv("POD_NAME", "stablelb-controller-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "kube-system")
    attrs = setup_tracing(set_global=False).resource.attributes
    assert attrs["k8s.pod.name"] == "stablelb-controller-7d9f-abcde"
    assert attrs["k8s.namespace.name"] == "kube-system"
    monkeypatch.setenv("POD_NAME", "stablelb-controller-7d9f-fghij")
    other = setup_tracing(set_global=False).resource.attributes
    assert other["k8s.pod.name"] == "stablelb-controller-7d9f-fghij"
    # OTEL_RESOURCE_ATTRIBUTES still wins.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=explicit")
    assert setup_tracing(set_global=False).resource.attributes["k8s.pod.name"] == "explicit"


async def test_spans_arrive_at_a_local_otlp_receiver(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[tuple[str, str, bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, request.content_type, await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "stablelb-test")
        setup_tracing(set_global=False)
        with get_tracer().start_as_current_span(SPAN_RECONCILE_SERVICE) as span:
            span.set_attribute(ATTR_RESULT, "allocated")
        # The batch processor exports from its own thread; keep the loop free to serve the POST.
        assert await asyncio.to_thread(shutdown_tracing, 20.0) is True
    finally:
        await runner.cleanup()

    assert len(received) == 1
    path, content_type, body = received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "stablelb-test"
    (span_pb,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span_pb.name == SPAN_RECONCILE_SERVICE
    attrs = {a.key: a.value.string_value for a in span_pb.attributes}
    assert attrs[ATTR_RESULT] == "allocated"
