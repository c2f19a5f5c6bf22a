"""Which series names the controller exports, and which ones a PromQL expression reads."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from controller.metrics import Metrics

# PromQL words that look like metric names.
_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "irate", "by", "without", "and", "or", "unless",
    "on", "ignoring", "group_left", "group_right", "histogram_quantile", "vector", "absent", "le", "bool",
    "offset", "topk", "bottomk", "label_values", "time", "clamp_min", "clamp_max", "delta", "deriv",
    "max_over_time", "min_over_time", "avg_over_time", "changes", "resets", "abs", "scalar", "sort",
}  # fmt: skip
_SUFFIXES = ("", "_total", "_created", "_bucket", "_count", "_sum")


def exported_series() -> set[str]:
    """Every sample name a controller's /metrics can carry, with label values filled in once each."""
    m = Metrics()
    m.set_pool("p", "IPv4", 4, 1, 3)
    m.allocation("allocated")
    m.set_leader("me", True)
    m.watch_restart("services", "closed")
    m.api_request("patch", "services/status", "200", 0.01)
    m.observe_reconcile("Service", 0.01)
    m.add("services")
    m.depth("services", 0)
    m.queue_latency("services", 0.1)
    m.work_duration("services", 0.1)
    m.retry("services")
    names: set[str] = set()
    for family in text_string_to_metric_families(m.render().decode()):
        names.update(family.name + suffix for suffix in _SUFFIXES)
        names.update(s.name for s in family.samples)
    return names


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABELS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def referenced_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (Grafana's $variables and [$__rate_interval] removed)."""
    text = _STRINGS.sub('""', expr)
    text = _LABELS.sub("", text)
    text = _GROUPING.sub("", text)
    text = _RANGES.sub("", text)
    found = {m.group(1) for m in _IDENT.finditer(text)}
    return {name for name in found if name not in _PROMQL_WORDS and not re.fullmatch(r"[0-9eE]+", name)}
