from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from controller.logs import setup_logging, trace_fields

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def tracer() -> trace.Tracer:
    # A private provider: spans get valid ids without touching the global provider.
    return TracerProvider().get_tracer("test")


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_core_fields_and_extras() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log = logging.getLogger("stablelb.test")
    log.info("assigned %s to %s", "192.168.10.3", "ns/a", extra={"key": "ns/a"})
    (doc,) = json_lines(out)
    assert TS.match(doc["ts"]), doc["ts"]
    assert doc["level"] == "info"
    assert doc["logger"] == "stablelb.test"
    assert doc["msg"] == "assigned 192.168.10.3 to ns/a"
    assert doc["key"] == "ns/a"
    assert "trace_id" not in doc
    assert "span_id" not in doc


def test_json_line_carries_trace_id_inside_a_span_only(tracer: trace.Tracer) -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    log = logging.getLogger("stablelb.test")
    log.info("before")
    with tracer.start_as_current_span("reconcile Service") as span:
        log.info("inside")
        ctx = span.get_span_context()
    log.info("after")
    before, inside, after = json_lines(out)
    assert "trace_id" not in before and "trace_id" not in after
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert re.fullmatch(r"[0-9a-f]{32}", inside["trace_id"])


def test_no_trace_id_for_an_invalid_span_context() -> None:
    with trace.use_span(trace.INVALID_SPAN):
        assert trace_fields() == {}


def test_json_exception_and_unserialisable_extra() -> None:
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("failed", extra={"thing": Opaque(), "ips": ["10.0.0.1"]})
    (doc,) = json_lines(out)
    assert doc["level"] == "error"
    assert doc["thing"] == "<opaque>"
    assert doc["ips"] == ["10.0.0.1"]
    assert "Traceback" in doc["exc"]
    assert "RuntimeError: boom" in doc["exc"]


def test_extra_cannot_hide_core_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    logging.getLogger("x").info("real", extra={"level": "fake", "ts": "fake"})
    (doc,) = json_lines(out)
    assert doc["msg"] == "real"
    assert doc["level"] == "info"
    assert doc["ts"] != "fake"


def test_setup_is_idempotent_and_respects_foreign_handlers() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    count = len(root.handlers)
    setup_logging("info", "json", stream=first)
    setup_logging("info", "json", stream=second)
    assert len(root.handlers) == count + 1
    assert foreign in root.handlers
    logging.getLogger("x").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_level_filters_records() -> None:
    out = io.StringIO()
    setup_logging("warn", "json", stream=out)
    log = logging.getLogger("x")
    log.info("hidden")
    log.warning("shown")
    assert [d["msg"] for d in json_lines(out)] == ["shown"]
    assert json_lines(out)[0]["level"] == "warning"


def test_python_warnings_are_logged() -> None:
    out = io.StringIO()
    setup_logging("info", "json", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    (doc,) = json_lines(out)
    assert doc["logger"] == "py.warnings"
    assert "deprecated thing" in doc["msg"]


def test_text_format_is_readable_and_carries_trace_id(tracer: trace.Tracer) -> None:
    out = io.StringIO()
    setup_logging("info", "text", stream=out)
    log = logging.getLogger("stablelb.reconcile")
    log.info("plain")
    with tracer.start_as_current_span("s") as span:
        log.warning("with fields", extra={"key": "ns/a", "why": "pool exhausted"})
        trace_id = format(span.get_span_context().trace_id, "032x")
    plain, fields = out.getvalue().splitlines()
    assert re.match(r"^\S+Z INFO    stablelb\.reconcile: plain$", plain), plain
    assert " WARNING stablelb.reconcile: with fields " in fields
    assert "key=ns/a" in fields
    assert 'why="pool exhausted"' in fields
    assert f"trace_id={trace_id}" in fields


def test_rejects_unknown_level_and_format() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        setup_logging("loud", "json")
    with pytest.raises(ValueError, match="unknown log format 'xml': use json or text"):
        setup_logging("info", "xml")
