"""OpenTelemetry tracing set-up from the standard ``OTEL_*`` environment (design §4 "Telemetry").

Honoured variables: ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_EXPORTER`` (``otlp`` — the default — ``console`` or ``none``, comma-separated),
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``/``HEADERS``/``TIMEOUT``/``COMPRESSION``/``CERTIFICATE``,
``OTEL_TRACES_SAMPLER[_ARG]`` and ``OTEL_BSP_*`` (the last ones are read by the SDK itself).

Spans are exported over OTLP/HTTP (protobuf) only when an endpoint is configured: a controller without a
collector should not spend its time retrying ``localhost:4318``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

__all__ = [
    "ATTR_IPS",
    "ATTR_K8S_NAMESPACE",
    "ATTR_K8S_SERVICE",
    "ATTR_POOL",
    "ATTR_QUEUE_WAIT_MS",
    "ATTR_REQUEUES",
    "ATTR_RESULT",
    "DEFAULT_SERVICE_NAME",
    "RESOURCE_K8S_NAMESPACE",
    "RESOURCE_K8S_POD",
    "SPAN_RECONCILE_POOL",
    "SPAN_RECONCILE_SERVICE",
    "TRACER_NAME",
    "build_resource",
    "current_provider",
    "get_tracer",
    "setup_tracing",
    "shutdown_tracing",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "stablelb-controller"
TRACER_NAME = "stablelb.controller"

# Span names of the reconcile roots.
SPAN_RECONCILE_SERVICE = "reconcile Service"
SPAN_RECONCILE_POOL = "reconcile IPPool"

# Span attribute names (design §4). The k8s.* ones are OpenTelemetry semantic conventions.
ATTR_K8S_NAMESPACE = "k8s.namespace.name"
ATTR_K8S_SERVICE = "k8s.service.name"
ATTR_POOL = "stablelb.pool"
ATTR_IPS = "stablelb.ips"
ATTR_RESULT = "stablelb.result"
ATTR_QUEUE_WAIT_MS = "stablelb.queue_wait_ms"
ATTR_REQUEUES = "stablelb.requeues"
# Resource attributes (semantic conventions) naming the Pod this process runs in.
RESOURCE_K8S_POD = "k8s.pod.name"
RESOURCE_K8S_NAMESPACE = "k8s.namespace.name"

_lock = threading.Lock()
_provider: TracerProvider | None = None


def _version() -> str | None:
    try:
        return importlib.metadata.version("stablelb")
    except importlib.metadata.PackageNotFoundError:
        return None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def build_resource(service_name: str = DEFAULT_SERVICE_NAME) -> Resource:
    """Resource with our service name/version and the Pod (``k8s.pod.name``, ``k8s.namespace.name`` from the
    downward API's ``POD_NAME``/``POD_NAMESPACE``, so the replicas' spans differ), unless
    ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` say otherwise (the environment wins, as the
    specification requires)."""
    defaults: dict[str, str] = {SERVICE_NAME: service_name}
    version = _version()
    if version:
        defaults[SERVICE_VERSION] = version
    for attr, env_name in ((RESOURCE_K8S_POD, "POD_NAME"), (RESOURCE_K8S_NAMESPACE, "POD_NAMESPACE")):
        value = os.environ.get(env_name, "").strip()
        if value:
            defaults[attr] = value
    env_attrs = OTELResourceDetector().detect().attributes
    merged = {**defaults, **{k: v for k, v in env_attrs.items() if isinstance(v, str)}}
    return Resource.create(merged)


def _configured_exporters() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    return [name.strip() for name in raw.split(",") if name.strip()]


def _otlp_endpoint_configured() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def _otlp_exporter() -> SpanExporter:
    env = os.environ
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol and protocol != "http/protobuf":
        log.warning(
            "OTLP protocol %r is not supported; exporting with http/protobuf (port 4318 on most collectors)",
            protocol,
        )
    # Imported here: the exporter pulls in requests and protobuf, which a tracing-less run does not need.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _env_processors() -> list[SpanProcessor]:
    names = _configured_exporters()
    if "none" in names:
        return []
    processors: list[SpanProcessor] = []
    for name in names:
        if name == "otlp":
            if _otlp_endpoint_configured():
                processors.append(BatchSpanProcessor(_otlp_exporter()))
            else:
                log.debug("no OTEL_EXPORTER_OTLP_ENDPOINT set; spans are not exported")
        elif name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            log.warning("OTEL_TRACES_EXPORTER %r is not supported (use otlp, console or none); ignored", name)
    return processors


def setup_tracing(
    service_name: str = DEFAULT_SERVICE_NAME,
    *,
    provider: TracerProvider | None = None,
    set_global: bool | None = None,
) -> TracerProvider:
    """Create (or adopt) the process's TracerProvider and make get_tracer() use it.

    An injected ``provider`` is used as-is: no resource or processors are added (tests pass one with an
    in-memory exporter). ``set_global`` also installs the provider as OpenTelemetry's global one, which
    can be done only once per process; it defaults to True for a provider built here and False for an
    injected one. Calling setup_tracing again replaces the provider get_tracer() hands out (the previous one
    is not shut down).
    """
    global _provider
    if provider is None:
        # TracerProvider itself turns into a no-op under OTEL_SDK_DISABLED; exporters would only idle.
        processors = [] if _truthy("OTEL_SDK_DISABLED") else _env_processors()
        # With nowhere to send spans, record none: spans are then non-recording (their trace and span ids
        # still reach the log lines) and cost no attribute copies, links or end-of-span processing. That
        # was about a tenth of the controller's CPU per assignment in the scale benchmark.
        sampler = None if processors else ALWAYS_OFF
        provider = TracerProvider(
            resource=build_resource(service_name), shutdown_on_exit=False, sampler=sampler
        )
        for processor in processors:
            provider.add_span_processor(processor)
        if set_global is None:
            set_global = True
    if set_global:
        trace.set_tracer_provider(provider)
    with _lock:
        _provider = provider
    return provider


def current_provider() -> TracerProvider | None:
    """The provider set by setup_tracing, if any."""
    return _provider


def get_tracer() -> trace.Tracer:
    """Tracer of the provider set by setup_tracing (OpenTelemetry's global one before that).

    A tracer is bound to the provider current at the time of the call; obtain it after setup_tracing.
    """
    provider = _provider
    if provider is None:
        return trace.get_tracer(TRACER_NAME, _version())
    return provider.get_tracer(TRACER_NAME, _version())


def shutdown_tracing(timeout_s: float = 5.0) -> bool:
    """Flush pending spans and shut the provider down, waiting at most about ``timeout_s`` seconds.

    Returns True when everything was flushed in time. Safe to call when tracing was never set up.
    """
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is None:
        return True
    deadline = time.monotonic() + max(timeout_s, 0.0)
    flushed = provider.force_flush(timeout_millis=int(max(timeout_s, 0.0) * 1000))
    # Shutdown can block on an exporter that is still mid-request; a daemon thread keeps our exit bounded.
    worker = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.1))
    if not flushed or worker.is_alive():
        log.warning("tracing shutdown did not finish within %.1fs; some spans may be lost", timeout_s)
        return False
    return True
