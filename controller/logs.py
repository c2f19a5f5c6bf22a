"""Process logging: one JSON object per line (for log pipelines) or readable text (for humans).

Every record logged inside a recording OpenTelemetry span carries ``trace_id`` and ``span_id``, so a log line
leads to its reconcile trace. Fields passed with ``extra={...}`` become top-level keys.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import IO, Any

import orjson
from opentelemetry import trace

__all__ = ["JsonFormatter", "TextFormatter", "setup_logging", "trace_fields"]

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted as a field.
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_LEVEL_NAMES = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def trace_fields() -> dict[str, str]:
    """``trace_id``/``span_id`` (lowercase hex, W3C widths) of the current span, or {} outside a valid one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _timestamp(created: float) -> str:
    # RFC 3339 in UTC with milliseconds; what log pipelines parse without configuration.
    secs = int(created)
    millis = int((created - secs) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z"


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", [trace_id, span_id], [exc], ...extra}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(trace_fields())
        for key, value in _extra_fields(record).items():
            # Core keys win: a stray extra={"msg": ...} must not hide the message itself.
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z INFO  logger: message key=value trace_id=...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = {**_extra_fields(record), **trace_fields()}
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return orjson.dumps(text).decode()
    return text


_handler: logging.Handler | None = None


def setup_logging(level: str = "info", fmt: str = "json", *, stream: IO[str] | None = None) -> None:
    """Route the root logger to one handler on ``stream`` (default stderr) in the given format.

    Calling it again replaces the handler it installed earlier (never duplicates it) and leaves handlers
    installed by others (pytest's caplog, for instance) alone.
    """
    global _handler
    try:
        numeric = _LEVEL_NAMES[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of debug, info, warning, error") from None
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter()
    elif fmt == "text":
        formatter = TextFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}: use json or text")

    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler
    # Warnings from libraries (deprecations, unclosed sessions) land in the same structured stream.
    logging.captureWarnings(True)
